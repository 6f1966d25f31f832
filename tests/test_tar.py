"""layerstore.tar: event contract, split invariance, byte accounting,
truncation, bounded memory and the format details of the C parser."""
import hashlib
import io
import os
import random
import resource
import tarfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS, corpus_path
from layerstore.errors import TarFormatError
from layerstore.tar import MAX_EXTENDED_HEADER, TarParser, iter_entries, iter_events

BYTE_KINDS = ("header", "extdata", "data", "padding", "end", "trailing")
SPLITTABLE = ("extdata", "data", "padding", "trailing")


# ------------------------------------------------------------------ helpers

def corpus_archives():
    """Every plain tar stream of the corpus (relative paths)."""
    out = []
    for sub in ("tar", "tars"):
        base = CORPUS / sub
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix in (".tar", ".ustar"):
                out.append(str(p.relative_to(CORPUS)))
    return out or ["<corpus missing>"]


ARCHIVES = corpus_archives()


def load(rel):
    return corpus_path(*rel.split("/")).read_bytes()


def run(data, sizes=None):
    """Feed ``data`` in pieces of the given sizes (cycled); return (events, error)."""
    p = TarParser()
    events = []
    pos = 0
    i = 0
    try:
        while pos < len(data):
            n = len(data) - pos if not sizes else sizes[i % len(sizes)]
            i += 1
            for ev in p.events(data[pos:pos + n]):
                events.append(ev)
            pos += n
        events += p.close()
    except TarFormatError as e:  # events before the error were collected
        return events, (e.reason, e.offset, e.entry)
    return events, None


def merge(events):
    """Merge adjacent pieces that input boundaries may split."""
    out = []
    for ev in events:
        if out and ev.kind == out[-1].kind and ev.kind in SPLITTABLE:
            last = out[-1]
            contiguous = last.offset + last.length == ev.offset
            if ev.kind in ("data", "extdata"):
                contiguous = contiguous and last.file_offset + last.length == ev.file_offset
            if contiguous:
                out[-1] = type(last)(last.kind, last.offset, last.length + ev.length, last.data + ev.data,
                                     last.file_offset, None)
                continue
        out.append(ev)
    return out


def check_tiling(data, events, error):
    pos = 0
    chunks = []
    for ev in events:
        if ev.kind == "entry":
            assert ev.length == 0 and ev.entry is not None
            assert ev.offset == pos
            continue
        assert ev.kind in BYTE_KINDS
        assert ev.offset == pos, (ev.kind, ev.offset, pos)
        assert ev.length == len(ev.data) > 0
        chunks.append(ev.data)
        pos += ev.length
    if error is None:
        assert pos == len(data)
    assert b"".join(chunks) == data[:pos]


def _header(name=b"file", size=0, typeflag=b"0", mode=0o644, uid=0, gid=0, mtime=0, linkname=b"",
            magic=b"ustar\x0000", uname=b"", gname=b"", prefix=b"", raw=None, chksum=None, signed=False):
    """A 512-byte header block; ``raw`` maps offset -> bytes to overwrite."""
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108] = b"%07o\x00" % mode
    b[108:116] = b"%07o\x00" % uid
    b[116:124] = b"%07o\x00" % gid
    b[124:136] = b"%011o\x00" % size if isinstance(size, int) else size
    b[136:148] = b"%011o\x00" % mtime
    b[156:157] = typeflag
    b[157:157 + len(linkname)] = linkname
    b[257:265] = magic
    b[265:265 + len(uname)] = uname
    b[297:297 + len(gname)] = gname
    b[345:345 + len(prefix)] = prefix
    for off, val in (raw or {}).items():
        b[off:off + len(val)] = val
    b[148:156] = b" " * 8
    if chksum is None:
        chksum = sum((x - 256 if x >= 128 else x) for x in b) if signed else sum(b)
    b[148:156] = b"%06o\x00 " % chksum
    return bytes(b)


def _pad(data):
    return data + bytes(-len(data) % 512)


def _pax(records, typeflag=b"x", name=b"PaxHeader/x"):
    body = b""
    for k, v in records:
        rec = b" " + k + b"=" + v + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n += 1
        body += str(n).encode() + rec
    return _header(name=name, size=len(body), typeflag=typeflag) + _pad(body)


END = bytes(1024)


def _entries(data, **kw):
    return list(iter_entries(io.BytesIO(data), bufsize=kw.pop("bufsize", 4096), **kw))


def _error(data, **kw):
    with pytest.raises(TarFormatError) as ei:
        _entries(data, **kw)
    return ei.value


# -------------------------------------------- split invariance, byte accounting

@pytest.mark.parametrize("rel", ARCHIVES)
def test_byte_accounting_and_fixed_splits(rel):
    data = load(rel)
    ref, err = run(data)
    check_tiling(data, ref, err)
    ref_m = merge(ref)
    # every entry precedes its content
    seen_entry = False
    for ev in ref:
        if ev.kind == "entry":
            seen_entry = True
        elif ev.kind == "data":
            assert seen_entry
        elif ev.kind == "header":
            seen_entry = False
    for sizes in ([511], [513], [512], [1, 1023], [7, 4096, 3]):
        evs, err2 = run(data, sizes)
        assert err2 == err, (rel, sizes)
        check_tiling(data, evs, err2)
        assert merge(evs) == ref_m, (rel, sizes)


SMALL = [r for r in ARCHIVES if r != "<corpus missing>" and (CORPUS / r).stat().st_size <= 48 * 1024]


@pytest.mark.parametrize("rel", SMALL)
def test_one_byte_at_a_time(rel):
    data = load(rel)
    ref, err = run(data)
    evs, err1 = run(data, [1])
    assert err1 == err
    check_tiling(data, evs, err1)
    assert merge(evs) == merge(ref)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_splits(data):
    rel = data.draw(st.sampled_from(ARCHIVES))
    if rel == "<corpus missing>":
        corpus_path("tar")
    raw = load(rel)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, max(len(raw), 1)), max_size=40))))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [len(raw)]) if b > a] or [len(raw) or 1]
    ref, err = run(raw)
    evs, err2 = run(raw, sizes + [len(raw)])
    assert err2 == err
    check_tiling(raw, evs, err2)
    assert merge(evs) == merge(ref)


def test_entry_metadata_stays_valid_until_next_entry():
    """ls_tar_current() of an entry must survive the next entry's extended
    headers (which arrive before the next ENTRY)."""
    data = (_pax([(b"path", b"first/" + b"a" * 200)]) + _header(size=3) + _pad(b"abc")
            + _pax([(b"path", b"second/" + b"b" * 300)]) + _pax([(b"comment", b"x" * 5000)], typeflag=b"g")
            + _header(size=0) + END)
    p = TarParser()
    names = []
    for i in range(0, len(data), 100):
        for ev in p.feed(data[i:i + 100]):
            if ev.kind == "entry":
                names.append(ev.entry.name)
    assert names == ["first/" + "a" * 200, "second/" + "b" * 300]


# --------------------------------------------------------------- truncation

TRUNCATE = ["tar/go/sparse-formats.tar", "tar/go/pax.tar", "tar/go/gnu-multi-hdrs.tar",
            "tar/libarchive/test_read_format_gtar_sparse_1_17_posix10.tar", "tars/gnutar-gnu-sparse.tar"]


@pytest.mark.parametrize("rel", TRUNCATE)
def test_every_prefix_parses_or_raises(rel):
    data = load(rel)
    full = [e.name for e in _entries(data)]
    step = 1 if len(data) <= 20000 else 7
    t0 = time.monotonic()
    for n in range(0, len(data) + 1, step):
        prefix = data[:n]
        try:
            names = [e.name for e in _entries(prefix, bufsize=1000)]
        except TarFormatError as e:
            assert e.offset is not None and 0 <= e.offset <= n
            continue
        assert names == full[:len(names)]
    assert time.monotonic() - t0 < 60


def test_truncated_inside_data_names_entry_and_offset():
    data = _header(name=b"dir/big", size=10000) + b"x" * 3000
    e = _error(data)
    assert e.entry == "dir/big"
    assert e.offset == len(data)
    assert "truncated" in e.reason


def test_truncated_header_block():
    e = _error(_header() + b"\x01" * 100)
    assert e.offset == 512


def test_clean_end_without_marker_and_after_one_zero_block():
    one = _header(name=b"a", size=5) + _pad(b"hello")
    assert [e.name for e in _entries(one)] == ["a"]
    assert [e.name for e in _entries(one + bytes(512))] == ["a"]
    assert [e.name for e in _entries(one + END + b"garbage" * 100)] == ["a"]


def test_lone_zero_block_then_garbage_is_trailing():
    data = _header(name=b"a") + bytes(512) + b"garbage!" * 64 + _header(name=b"b")
    evs, err = run(data)
    assert err is None
    assert [e.entry.name for e in evs if e.kind == "entry"] == ["a"]
    assert [e.kind for e in evs if e.kind != "entry"] == ["header", "end", "trailing", "trailing"]
    check_tiling(data, evs, err)


# ----------------------------------------------------------- bounded memory

def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_huge_pax_claim_rejected_at_its_header():
    rss = _maxrss_mb()
    hdr = _header(name=b"PaxHeader/x", typeflag=b"x", size=b"\x80" + bytes(6) + b"\x01" + bytes(4))  # 2^32
    t0 = time.monotonic()
    p = TarParser()
    with pytest.raises(TarFormatError) as ei:
        p.feed(hdr)
    assert "exceeds" in ei.value.reason and ei.value.offset == 0
    huge = _header(name=b"PaxHeader/x", typeflag=b"x", size=(MAX_EXTENDED_HEADER + 1))
    with pytest.raises(TarFormatError):
        TarParser().feed(huge)
    for tf in (b"g", b"L", b"K"):
        with pytest.raises(TarFormatError):
            TarParser().feed(_header(name=b"././@LongLink", typeflag=tf, size=1 << 33))
    assert time.monotonic() - t0 < 1
    assert _maxrss_mb() - rss < 20


def test_huge_size_streams_without_allocation():
    rss = _maxrss_mb()
    p = TarParser()
    evs = p.feed(_header(name=b"big", size=b"\x80" + bytes(4) + b"\x01" + bytes(6)))  # 2^48 bytes
    assert [e.kind for e in evs] == ["header", "entry"]
    assert evs[1].entry.size == 1 << 48
    chunk = bytes(1 << 20)
    for _ in range(16):
        evs = p.feed(chunk, with_bytes=False)
        assert [e.kind for e in evs] == ["data"]
    with pytest.raises(TarFormatError):
        p.close()
    assert _maxrss_mb() - rss < 40


def test_huge_sparse_map_claims():
    # GNU sparse 1.0 map announcing 10^12 regions
    pax = _pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"100")])
    data = pax + _header(name=b"s", size=512) + _pad(b"1000000000000\n")
    assert "too many sparse regions" in _error(data).reason
    # 0.1 map whose numblocks lies
    pax = _pax([(b"GNU.sparse.major", b"0"), (b"GNU.sparse.minor", b"1"), (b"GNU.sparse.size", b"100"),
                (b"GNU.sparse.numblocks", b"99999999999"), (b"GNU.sparse.map", b"0,10")])
    assert "numblocks" in _error(pax + _header(name=b"s", size=10) + _pad(b"x" * 10)).reason
    # a 1.0 map that never ends (no newline) is bounded by the extended-header limit
    pax = _pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"100")])
    p = TarParser(max_ext=4096)
    p.feed(pax + _header(name=b"s", size=1 << 40))
    with pytest.raises(TarFormatError) as ei:
        for _ in range(10):
            p.feed(b"1" * 1000)
    assert "exceeds" in ei.value.reason
    # endless old-GNU extension blocks
    hdr = bytearray(_header(name=b"s", typeflag=b"S", magic=b"ustar  \x00", size=0,
                            raw={482: b"\x01", 483: b"%011o\x00" % 100}))
    ext = bytearray(512)
    ext[504] = 1
    p = TarParser()
    p.feed(bytes(hdr))
    with pytest.raises(TarFormatError) as ei:
        for _ in range(3000):
            p.feed(bytes(ext))
    assert "extension blocks exceed" in ei.value.reason


def test_sparse_region_limit():
    pairs = []
    for i in range(100):
        pairs += [(b"GNU.sparse.offset", b"%d" % (2 * i)), (b"GNU.sparse.numbytes", b"1")]
    pax = _pax([(b"GNU.sparse.size", b"200"), (b"GNU.sparse.numblocks", b"100")] + pairs)
    data = pax + _header(name=b"s", size=100) + _pad(b"x" * 100) + END
    assert len(_entries(data)[0].sparse) == 100
    assert "too many sparse regions" in _error(data, max_sparse=50).reason


# ------------------------------------------------------------ format details

def test_base256_and_negative_fields():
    data = _header(name=b"n", uid=0, raw={
        108: b"\x80" + bytes(3) + (3000000).to_bytes(4, "big"),            # uid
        136: b"\xff" * 8 + (-100 & 0xFFFFFFFF).to_bytes(4, "big"),        # mtime -100
    }) + END
    e = _entries(data)[0]
    assert e.uid == 3000000 and e.mtime_ns == -100 * 10**9
    neg = _header(name=b"neg", raw={124: b"\xff" * 12})
    assert "negative size" in _error(neg).reason
    overflow = _header(name=b"ovf", raw={124: b"\x80" + b"\xff" * 11})
    assert "size" in _error(overflow).reason


def test_checksum_signed_unsigned_and_bad():
    name = "caf\xe9-\xff".encode("latin-1")
    for signed in (False, True):
        e = _entries(_header(name=name, signed=signed) + END)[0]
        assert e.raw_name == name
    bad = _header(name=b"x", chksum=12345)
    err = _error(bad)
    assert "checksum" in err.reason and err.offset == 0


def test_non_numeric_fields_rejected():
    for off, field in ((100, b"06x4\x00"), (108, b"1 2\x00"), (124, b"12345678901x"), (136, b"abc")):
        e = _error(_header(raw={off: field}))
        assert e.offset == 0 and e.entry == "file"
    # NUL-terminated, space padded and empty fields are fine
    ok = _header(raw={100: b" 644 \x00\x00\x00", 108: bytes(8), 116: b"        "}) + END
    e = _entries(ok)[0]
    assert (e.mode, e.uid, e.gid) == (0o644, 0, 0)


def test_pax_records_applied_and_validated():
    data = (_pax([(b"path", "d/é".encode()), (b"linkpath", b"t" * 150), (b"uid", b"4294967294"),
                  (b"gid", b"-1"), (b"uname", b"u"), (b"gname", b""), (b"mtime", b"-1.5"),
                  (b"size", b"3"), (b"SCHILY.xattr.user.x", b"\x00\xff")])
            + _header(name=b"short", typeflag=b"2", size=0, gname=b"hdrgroup") + END)
    e = _entries(data)[0]
    assert e.name == "d/é" and e.linkname == "t" * 150
    assert (e.uid, e.gid, e.uname, e.gname) == (4294967294, -1, "u", "hdrgroup")
    assert e.mtime_ns == -1_500_000_000 and e.mtime == -1.5
    assert e.size == 3 and e.type == "symlink"  # symlinks carry no data whatever the size
    assert e.pax["SCHILY.xattr.user.x"].encode("utf-8", "surrogateescape") == b"\x00\xff"
    assert e.offset == 0 and e.header_offset == 1024


@pytest.mark.parametrize("body,why", [
    (b"10 path=abc\n", "length lie (too long)"),
    (b"11 path=abcd\n", "length lie (too short)"),
    (b"13 path=abc\n", "length beyond the payload"),
    (b"5 a\n", "no '='"),
    (b"11 path=a\x00c\n", "NUL in path"),
    (b"9 =abcd\n", "empty key"),
    (b"x path=a\n", "non-numeric length"),
    (b"99999999999999999999999 a=b\n", "overflowing length"),
])
def test_malformed_pax_records(body, why):
    data = _header(name=b"PaxHeader/f", typeflag=b"x", size=len(body)) + _pad(body) + _header(name=b"f") + END
    e = _error(data)
    assert e.offset == 0 and "PAX" in e.reason, why


@pytest.mark.parametrize("key,value", [(b"mtime", b"1.2.3"), (b"mtime", b"x"), (b"uid", b"1e3"),
                                       (b"size", b"-5"), (b"size", b"99999999999999999999"),
                                       (b"gid", b" 5")])
def test_bad_pax_values(key, value):
    e = _error(_pax([(key, value)]) + _header(name=b"f") + END)
    assert e.entry == "f" and e.offset == 1024


def test_pax_time_fractions():
    for text, ns in ((b"1.5", 1_500_000_000), (b"-0.25", -250_000_000), (b"7.1234567891", 7_123_456_789),
                     (b"0", 0), (b"-3", -3_000_000_000), (b"12.", 12_000_000_000)):
        e = _entries(_pax([(b"mtime", text)]) + _header() + END)[0]
        assert e.mtime_ns == ns, text


def test_global_headers_apply_and_empty_value_unsets():
    data = (_pax([(b"uname", b"guser"), (b"mtime", b"100"), (b"comment", b"hi")], typeflag=b"g")
            + _header(name=b"a", uname=b"hdr")
            + _pax([(b"uname", b"")])
            + _header(name=b"b", uname=b"hdr2")
            + _pax([(b"mtime", b"200")], typeflag=b"g")
            + _header(name=b"c") + END)
    a, b, c = _entries(data)
    assert (a.uname, a.mtime_ns, a.pax) == ("guser", 100 * 10**9, {"uname": "guser", "mtime": "100", "comment": "hi"})
    assert b.uname == "hdr2" and b.pax["uname"] == "" and b.mtime_ns == 100 * 10**9
    assert c.mtime_ns == 200 * 10**9 and c.pax_global == {"uname": "guser", "mtime": "200", "comment": "hi"}


def test_many_global_headers_stay_bounded():
    one = _pax([(b"comment", b"y" * 4000)], typeflag=b"g") + _header(name=b"f")
    data = one * 600 + END  # 2.4 MB of global records, all for one key
    entries = _entries(data)
    assert len(entries) == 600 and entries[-1].pax_global == {"comment": "y" * 4000}
    distinct = b"".join(_pax([(b"k%d" % i, b"y" * 4000)], typeflag=b"g") for i in range(300)) + END
    assert "global" in _error(distinct).reason


def test_gnu_long_names_and_precedence():
    def longrec(tf, text):
        return _header(name=b"././@LongLink", typeflag=tf, size=len(text) + 1, magic=b"ustar  \x00") + _pad(text + b"\x00")
    data = (longrec(b"L", b"first" * 50) + longrec(b"L", b"L/" + b"n" * 300) + longrec(b"K", b"k" * 200)
            + _pax([(b"path", b"paxname")])
            + _header(name=b"short", typeflag=b"1", magic=b"ustar  \x00") + END)
    e = _entries(data)[0]
    assert e.name == "L/" + "n" * 300  # the last L wins, and L wins over PAX path (as Go)
    assert e.linkname == "k" * 200 and e.type == "hardlink"
    assert e.offset == 0


def test_prefix_fields():
    ustar = _header(name=b"name", prefix=b"p" * 155) + END
    assert _entries(ustar)[0].name == "p" * 155 + "/name"
    star = _header(name=b"name", prefix=b"s" * 131, raw={508: b"tar\x00", 476: b"00000000000\x00"}) + END
    assert _entries(star)[0].name == "s" * 131 + "/name"
    gnu = _header(name=b"name", magic=b"ustar  \x00", raw={345: b"00000000000\x00"}) + END
    assert _entries(gnu)[0].name == "name"
    v7 = _header(name=b"dir/", typeflag=b"\x00", magic=bytes(8)) + END
    e = _entries(v7)[0]
    assert (e.type, e.typeflag, e.format) == ("dir", "5", "v7")


def test_header_only_types_carry_no_data():
    data = (_header(name=b"d/", typeflag=b"5", size=700) + _header(name=b"l", typeflag=b"2", size=5)
            + _header(name=b"f", size=2) + _pad(b"ok") + END)
    evs, err = run(data)
    assert err is None
    ents = [e.entry for e in evs if e.kind == "entry"]
    assert [(e.name, e.size, e.data_size) for e in ents] == [("d/", 700, 0), ("l", 5, 0), ("f", 2, 2)]
    assert [e.data for e in evs if e.kind == "data"] == [b"ok"]


def _sparse10(regions, realsize, payload, map_text=None):
    text = map_text if map_text is not None else (
        b"%d\n" % len(regions) + b"".join(b"%d\n%d\n" % r for r in regions))
    area = _pad(text) + payload
    pax = _pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.name", b"real"),
                (b"GNU.sparse.realsize", b"%d" % realsize), (b"size", b"%d" % len(area))])
    return pax + _header(name=b"GNUSparseFile.0/real", size=len(area)) + _pad(area) + END


def test_sparse_10_events_map_logical_offsets():
    data = _sparse10([(10, 3), (100, 2), (1000, 0)], 1000, b"abcde")
    evs, err = run(data, [3])
    assert err is None
    check_tiling(data, evs, err)
    e = next(ev.entry for ev in evs if ev.kind == "entry")
    assert (e.name, e.size, e.sparse, e.data_size, e.sparse_format) == ("real", 1000, [(10, 3), (100, 2), (1000, 0)], 5, "1.0")
    got = {}
    for ev in evs:
        if ev.kind == "data":
            for i, byte in enumerate(ev.data):
                got[ev.file_offset + i] = byte
    assert got == {10: 97, 11: 98, 12: 99, 100: 100, 101: 101}
    kinds = [ev.kind for ev in merge(evs)]
    assert kinds == ["header", "extdata", "padding", "header", "extdata", "padding", "entry", "data", "data",
                     "padding", "end", "end"]


@pytest.mark.parametrize("regions,realsize,why", [
    ([(10, 5), (12, 1)], 100, "overlap"),
    ([(50, 1), (10, 1)], 100, "unsorted"),
    ([(95, 10)], 100, "beyond size"),
    ([(-1, 1)], 100, "negative"),
    ([(9223372036854775807, 1)], 100, "overflow"),
])
def test_invalid_sparse_maps(regions, realsize, why):
    payload = b"x" * sum(max(r[1], 0) for r in regions)
    e = _error(_sparse10(regions, realsize, payload))
    assert e.entry == "real" and e.offset == 1024, why


def test_sparse_map_describing_missing_data():
    e = _error(_sparse10([(0, 10)], 100, b"x" * 5))
    assert "stores only" in e.reason


def test_sparse_unreferenced_bytes_are_padding():
    data = _sparse10([(0, 3)], 100, b"abcZ")
    evs, err = run(data)
    assert err is None
    check_tiling(data, evs, err)
    assert b"".join(ev.data for ev in evs if ev.kind == "data") == b"abc"


def test_old_gnu_sparse_with_extension_block():
    # 4 descriptors in the header + 2 in one extension block
    regs = [(i * 100, 10) for i in range(6)]
    raw = {483: b"%011o\x00" % 1000, 482: b"\x01"}
    for i, (o, l) in enumerate(regs[:4]):
        raw[386 + 24 * i] = b"%011o\x00%011o\x00" % (o, l)
    hdr = _header(name=b"sp", typeflag=b"S", magic=b"ustar  \x00", size=60, raw=raw)
    ext = bytearray(512)
    for i, (o, l) in enumerate(regs[4:]):
        ext[24 * i:24 * i + 24] = b"%011o\x00%011o\x00" % (o, l)
    data = hdr + bytes(ext) + _pad(bytes(range(60))) + END
    evs, err = run(data, [100])
    assert err is None
    check_tiling(data, evs, err)
    e = next(ev.entry for ev in evs if ev.kind == "entry")
    assert (e.size, e.sparse, e.type, e.typeflag) == (1000, regs, "file", "S")
    assert [ev.kind for ev in merge(evs)][:3] == ["header", "extdata", "entry"]
    offsets = sorted({ev.file_offset for ev in evs if ev.kind == "data"})
    assert offsets[0] == 0 and all(o % 100 < 10 for o in offsets)
    # the same sparse type with a ustar magic is refused (star's layout differs)
    bad = _header(name=b"sp", typeflag=b"S", size=0)
    assert "GNU" in _error(bad + END).reason


def test_empty_archives():
    assert _entries(b"") == []
    assert _entries(END) == []
    assert _entries(_pax([(b"comment", b"git")], typeflag=b"g") + END) == []


def test_iter_entries_without_readinto():
    class Reader:
        def __init__(self, data):
            self.b = io.BytesIO(data)

        def read(self, n=-1):
            return self.b.read(min(n, 77))

    data = _header(name=b"a", size=1000) + _pad(b"z" * 1000) + END
    assert [e.name for e in iter_entries(Reader(data), bufsize=100)] == ["a"]


def test_entry_fields_against_tarfile_roundtrip(tmp_path):
    """Archives written by Python's tarfile in all three formats read back with
    the same metadata."""
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        bio = io.BytesIO()
        with tarfile.open(fileobj=bio, mode="w", format=fmt) as tf:
            for i, (name, tt) in enumerate([("dir/" * 30 + "file", tarfile.REGTYPE), ("d", tarfile.DIRTYPE),
                                            ("s", tarfile.SYMTYPE), ("c", tarfile.CHRTYPE)]):
                ti = tarfile.TarInfo(name)
                ti.type = tt
                ti.mode = 0o4755 if i == 0 else 0o700
                ti.uid, ti.gid, ti.uname, ti.gname = 1000 + i, 2000, "user", "grp"
                ti.mtime = 1_600_000_000 + i
                ti.linkname = "target" * 20 if tt == tarfile.SYMTYPE and fmt != tarfile.USTAR_FORMAT else "t"
                ti.devmajor, ti.devminor = 4, 64
                data = os.urandom(700) if tt == tarfile.REGTYPE else b""
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        raw = bio.getvalue()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            theirs = tf.getmembers()
        ours = _entries(raw)
        for e, t in zip(ours, theirs):
            assert e.name.rstrip("/") == t.name and e.mode == t.mode and e.uid == t.uid and e.gid == t.gid
            assert (e.uname, e.gname, e.linkname, e.mtime) == (t.uname, t.gname, t.linkname, t.mtime)
            assert e.offset == t.offset and e.data_offset == t.offset_data
            if t.ischr():
                assert (e.devmajor, e.devminor) == (4, 64)
        assert len(ours) == len(theirs)


def test_error_carries_entry_name_for_ext_payload():
    body = b"30 path=x\n"
    data = _header(name=b"PaxHeaders/victim", typeflag=b"x", size=len(body)) + _pad(body)
    e = _error(data + _header(name=b"victim") + END)
    assert e.entry == "PaxHeaders/victim" and e.offset == 0


def test_parser_refuses_after_close_and_errors_are_sticky():
    p = TarParser()
    p.close()
    with pytest.raises(ValueError):
        p.feed(b"x")
    p = TarParser()
    with pytest.raises(TarFormatError):
        p.feed(_header(chksum=1))
    with pytest.raises(TarFormatError):
        p.feed(END)


def test_bytes_reconstruct_layer_exactly():
    """Rebuild a layer from its events (the tar-split use case)."""
    data = load("tars/gnutar-pax-sparse.tar")
    h = hashlib.sha256()
    for ev in iter_events(io.BytesIO(data), bufsize=3333):
        h.update(ev.data)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_random_mutations_never_crash():
    """Cheap structured fuzzing: flipped bytes, truncations and splices of
    corpus archives either parse or raise TarFormatError."""
    rng = random.Random(1234)
    pool = [load(r) for r in ARCHIVES if r != "<corpus missing>" and (CORPUS / r).stat().st_size < 40000]
    for _ in range(1500):
        data = bytearray(rng.choice(pool))
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            if op < 0.6 and data:
                i = rng.randrange(len(data))
                data[i] = rng.choice([0, 0x80, 0xff, ord("0"), ord("7"), ord(" "), ord("\n"), rng.randrange(256)])
            elif op < 0.8 and data:
                i = rng.randrange(len(data))
                del data[i:i + rng.randint(1, 1024)]
            else:
                other = rng.choice(pool)
                i = rng.randrange(len(other) + 1)
                data[rng.randrange(len(data) + 1):] = other[i:i + 2048]
        sizes = [rng.randint(1, 2000) for _ in range(5)]
        evs, err = run(bytes(data), sizes)
        check_tiling(bytes(data), evs, err)


def test_entry_has_exactly_the_dataclass_fields():
    import dataclasses
    from layerstore.tar import TarEntry
    e = _entries(_header(name=b"a") + END)[0]
    assert set(vars(e)) == {f.name for f in dataclasses.fields(TarEntry)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.name = "b"


def test_global_record_compaction_is_not_quadratic():
    """Two 'g' headers of ~1 MiB of tiny records each: merging them must stay
    fast (sorting, not pairwise comparison)."""
    one = _pax([(b"k%d" % i, b"v") for i in range(70000)], typeflag=b"g", name=b"g")
    assert 800_000 < len(one) < MAX_EXTENDED_HEADER  # two of them exceed the bound
    t0 = time.monotonic()
    data = one + one + _header(name=b"f") + END
    e = _entries(data)[0]
    assert len(e.pax_global) == 70000
    assert time.monotonic() - t0 < 5


def test_global_records_are_parsed_once_and_shared():
    big = _pax([(b"k%d" % i, b"v" * 40) for i in range(8000)], typeflag=b"g", name=b"g")
    files = b"".join(_header(name=b"f%d" % i) for i in range(200))
    entries = _entries(big + files + END)
    assert len(entries) == 200
    assert entries[0].pax_global["k7999"] == "v" * 40
    # one parsed mapping shared by every entry (not one copy per entry)
    assert all(e.pax_global is entries[0].pax_global for e in entries)


def test_global_headers_that_keep_overflowing_are_refused():
    # many distinct-key global headers near the limit: each would force a
    # full compaction; after one, the parser refuses instead of repeating it
    parts = [_pax([(b"a%d_%d" % (j, i), b"x" * 20) for i in range(4000)], typeflag=b"g", name=b"g") for j in range(12)]
    with pytest.raises(TarFormatError, match="global"):
        _entries(b"".join(parts) + _header(name=b"f") + END)
