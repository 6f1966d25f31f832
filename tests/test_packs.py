"""Tests of layerstore.packs: pack and index formats, writer, reader, recovery.

Oracles: hashlib (digests), a plain dict of what was written, lz4/zstd round
trips, and the byte layouts in docs/format.md (struct offsets below are
written from that document, not imported from the module).
"""
import hashlib
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import lz4.block
import pytest
import xxhash
import zstandard

from layerstore.errors import CorruptBlobError, LayerStoreError, PackFormatError, PackLockedError
from layerstore.packs import (
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_ZSTD,
    MAX_RAW_LENGTH,
    PackIndex,
    PackLocation,
    PackReader,
    PackSet,
    PackWriter,
    encode_chunk,
    rebuild_index,
)

SRC = str(Path(__file__).resolve().parent.parent / "src")
CODECS = {"none": CODEC_NONE, "lz4": CODEC_LZ4, "zstd": CODEC_ZSTD}
PACK_HEADER = 40  # docs/format.md, "Pack files"
ENTRY_HEADER = 64
INDEX_TRAILER = 48


def sha(data):
    return hashlib.sha256(data).digest()


def compressible(rnd, n):
    words = [b"layer", b"usr/lib/", b"python3", b"\x00" * 7, b"README", b"etc/passwd", b"  "]
    unit = b"".join(rnd.choices(words, k=min(600, n // 2 + 1)))
    return (unit * (n // max(1, len(unit)) + 1))[:n]


def chunk_set(seed, count, big=True):
    """List of chunk byte strings of varied sizes and compressibility."""
    rnd = random.Random(seed)
    chunks = [b"", b"\x01", b"x" * 65536, rnd.randbytes(65536)]
    if big:
        chunks += [rnd.randbytes(1 << 20), compressible(rnd, 1 << 20),
                   rnd.randbytes(5 << 20), compressible(rnd, 3 << 20)]
    for i in range(count):
        n = rnd.choice([rnd.randrange(0, 64), rnd.randrange(64, 4096), rnd.randrange(4096, 70000)])
        chunks.append(rnd.randbytes(n) if i % 2 else compressible(rnd, n))
    return chunks


def write_pack(directory, chunks, codec="lz4", seal=True, **kw):
    """Write ``chunks``; returns (writer, {digest: first location}, [(digest, loc, data)])."""
    w = PackWriter.create(directory, codec=codec, **kw)
    first, written = {}, []
    for c in chunks:
        d = sha(c)
        loc = w.add(d, c)
        first.setdefault(d, loc)
        written.append((d, loc, c))
    if seal:
        w.seal()
    else:
        w.flush()
    return w, first, written


def flip(path, offset, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


# ---------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_round_trip_every_codec(tmp_path, codec):
    chunks = chunk_set(seed=len(codec), count=1500)
    chunks += chunks[:50]  # duplicates: a second entry each, the index keeps the first
    w, first, written = write_pack(tmp_path, chunks, codec=codec)
    assert w.closed and (tmp_path / f"{w.pack_id}.idx").exists()
    assert os.path.getsize(w.path) == w.size

    with PackIndex.open(tmp_path / f"{w.pack_id}.idx") as index, PackReader.open(w.path) as reader:
        assert len(index) == len(first)
        assert dict(index) == first
        for d, loc, data in written:
            assert index.lookup(d) == first[d]
            assert reader.read(loc, expected_digest=d, verify_sha256=True) == data
        by_digest = {x: c for x, _, c in written}
        for d, loc in first.items():
            assert reader.read(loc.offset) == by_digest[d]

    zc = zstandard.ZstdCompressor(level=3)
    oracle = {"lz4": lambda x: lz4.block.compress(x, store_size=False), "zstd": zc.compress}
    for d, loc, data in written:
        assert loc.raw_length == len(data)
        if codec == "none" or not data:
            assert loc.codec == CODEC_NONE and loc.stored_length == len(data)
            continue
        ref = oracle[codec](data)
        if len(ref) <= len(data) - max(1, len(data) // 16):
            assert loc.codec == CODECS[codec] and loc.stored_length == len(ref)
        else:
            assert loc.codec == CODEC_NONE and loc.stored_length == len(data)
    # compressible data is stored smaller, incompressible data raw
    big_text = compressible(random.Random(1), 1 << 20)
    big_rand = random.Random(2).randbytes(1 << 20)
    w2 = PackWriter.create(tmp_path, codec=codec)
    lt, lr = w2.add(sha(big_text), big_text), w2.add(sha(big_rand), big_rand)
    w2.abort(delete=True)
    assert lr.codec == CODEC_NONE and lr.stored_length == len(big_rand)
    if codec == "none":
        assert lt.codec == CODEC_NONE and lt.stored_length == len(big_text)
    else:
        assert lt.codec == CODECS[codec] and lt.stored_length < len(big_text) // 2


def test_codec_choice_rule_matches_lz4_and_zstd_oracles():
    rnd = random.Random(3)
    zc = zstandard.ZstdCompressor(level=3)
    seen = set()
    for share in [i / 40 for i in range(41)]:
        n = 32768
        data = bytes(b if rnd.random() < share else 0 for b in rnd.randbytes(n))
        for codec, comp in (("lz4", lambda x: lz4.block.compress(x, store_size=False)), ("zstd", zc.compress)):
            cid, stored = encode_chunk(data, codec)
            ref = comp(data)
            should = len(ref) <= n - n // 16
            seen.add(should)
            assert (cid == CODECS[codec]) == should
            if should:
                assert stored == ref
            else:
                assert cid == CODEC_NONE and bytes(stored) == data
    assert seen == {True, False}  # the sweep crossed the 1/16 threshold
    assert encode_chunk(b"", "zstd") == (CODEC_NONE, b"")
    with pytest.raises(ValueError):
        encode_chunk(b"x", "gzip")


def test_bytes_like_inputs_are_copied_before_add_returns(tmp_path):
    w = PackWriter.create(tmp_path, codec="none")
    buf = bytearray(b"abc" * 1000)
    loc1 = w.add(sha(buf), memoryview(buf))
    expected = bytes(buf)
    buf[:] = b"z" * len(buf)  # caller reuses its buffer
    arr = memoryview(bytes(range(256)) * 4).cast("I")  # multi-byte items: byte length counts
    loc2 = w.add(sha(arr.tobytes()), arr)
    w.seal()
    with PackReader.open(w.path) as r:
        assert r.read(loc1, sha(expected), True) == expected
        assert loc2.raw_length == 1024
        assert r.read(loc2, verify_sha256=True) == arr.tobytes()


def test_limits_and_argument_errors(tmp_path):
    w = PackWriter.create(tmp_path, codec="lz4", buffer_size=1 << 16)
    big = bytes(MAX_RAW_LENGTH)
    loc = w.add(sha(big), big)
    with pytest.raises(ValueError):
        w.add(b"\0" * 32, bytes(MAX_RAW_LENGTH + 1))
    with pytest.raises(ValueError):
        w.add(b"short", b"data")
    with pytest.raises(ValueError):
        w.add(b"\0" * 32, b"data", check_digest=True)
    w.seal()
    with pytest.raises(ValueError):
        w.add(sha(b"x"), b"x")
    with PackReader.open(w.path) as r:
        assert r.read(loc, sha(big), verify_sha256=True) == big
        with pytest.raises(ValueError):
            r.read(loc._replace(pack_id="0" * 32))
    with pytest.raises(ValueError):
        PackWriter.create(tmp_path, codec="brotli")


# ---------------------------------------------------------------------------
# Index


def _digests_with_skewed_buckets(rnd):
    ds = {rnd.randbytes(32) for _ in range(2000)}
    ds |= {b"\x00" + rnd.randbytes(31) for _ in range(300)}  # one crowded bucket
    ds |= {b"\x7f" + rnd.randbytes(31) for _ in range(3)}
    ds |= {b"\xff" * 31 + bytes([i]) for i in range(0, 250, 2)}  # crowded last bucket
    ds.discard(b"\xff" * 32)
    ds.discard(b"\x00" * 32)
    return sorted(ds)


def test_index_lookup_agrees_with_dict(tmp_path):
    rnd = random.Random(11)
    digests = _digests_with_skewed_buckets(rnd)
    rnd.shuffle(digests)
    w = PackWriter.create(tmp_path, codec="none")
    truth = {}
    for i, d in enumerate(digests):  # digests taken as given: data need not match here
        truth[d] = w.add(d, i.to_bytes(4, "little"))
    # digests absent: before / after all entries, and sharing buckets with present ones
    absent = [b"\x00" * 32, b"\xff" * 32, b"\x7f" + b"\x00" * 31, b"\x7f" + b"\xff" * 31,
              b"\x80" + b"\x00" * 31, b"\xff" * 31 + b"\x01"]
    for d in digests[:500]:
        for pos in (31, 16, 1):
            m = bytearray(d)
            m[pos] ^= 0x40
            absent.append(bytes(m))
    absent = [d for d in absent if d not in truth]
    w.seal()
    idx_path = tmp_path / f"{w.pack_id}.idx"
    with PackIndex.open(idx_path) as index:
        index.verify()
        assert len(index) == len(truth)
        assert index.pack_id == w.pack_id and index.pack_length == w.size
        for d, loc in truth.items():
            assert index.lookup(d) == loc
            assert d in index
        for d in absent:
            assert index.lookup(d) is None
        listed = list(index)
        assert [d for d, _ in listed] == sorted(truth)
        with pytest.raises(ValueError):
            index.lookup(b"\x00" * 20)

    sealed = idx_path.read_bytes()
    # layout per docs/format.md: size, fan-out, trailer
    n = len(truth)
    assert len(sealed) == 16 + 1024 + 56 * n + INDEX_TRAILER
    fan = struct.unpack_from("<256I", sealed, 16)
    assert fan[255] == n and fan[0] == sum(1 for d in truth if d[0] == 0)
    count, pack_len, pid, body_sum, tsum = struct.unpack_from("<QQ16sQQ", sealed, len(sealed) - 48)
    assert (count, pack_len, pid.hex()) == (n, w.size, w.pack_id)
    assert body_sum == xxhash.xxh3_64_intdigest(sealed[:-48])
    assert tsum == xxhash.xxh3_64_intdigest(sealed[-48:-8])

    idx_path.unlink()
    rebuild_index(w.path)
    assert idx_path.read_bytes() == sealed


def test_empty_pack_index(tmp_path):
    w = PackWriter.create(tmp_path)
    idx = w.seal()
    with PackIndex.open(idx) as index:
        index.verify()
        assert len(index) == 0 and list(index) == []
        assert index.lookup(sha(b"")) is None
    before = Path(idx).read_bytes()
    rebuild_index(w.path)
    assert Path(idx).read_bytes() == before


def test_rebuild_index_identical_with_duplicates_and_all_codecs(tmp_path):
    for codec in ("lz4", "zstd"):
        chunks = chunk_set(seed=5, count=200, big=False)
        chunks = chunks + chunks[::3]
        w, first, _ = write_pack(tmp_path, chunks, codec=codec)
        idx = tmp_path / f"{w.pack_id}.idx"
        sealed = idx.read_bytes()
        idx.write_bytes(b"junk")
        rebuild_index(w.path)
        assert idx.read_bytes() == sealed
        with PackIndex.open(idx) as index:
            assert dict(index) == first


def test_corrupt_index_detected(tmp_path):
    chunks = chunk_set(seed=8, count=100, big=False)
    w, first, _ = write_pack(tmp_path, chunks)
    idx = tmp_path / f"{w.pack_id}.idx"
    good = idx.read_bytes()
    size = len(good)

    def damaged(offset):
        b = bytearray(good)
        b[offset] ^= 0x10
        idx.write_bytes(bytes(b))

    # trailer fields and trailer checksum: open fails
    for off in (size - 48, size - 40, size - 30, size - 12, size - 1):
        damaged(off)
        with pytest.raises(PackFormatError):
            PackIndex.open(idx)
    # header: open fails
    for off in (0, 9, 12):
        damaged(off)
        with pytest.raises(PackFormatError):
            PackIndex.open(idx)
    # truncated index: open fails
    idx.write_bytes(good[:-1])
    with pytest.raises(PackFormatError):
        PackIndex.open(idx)
    idx.write_bytes(good[:100])
    with pytest.raises(PackFormatError):
        PackIndex.open(idx)
    # a record or fan-out byte: open is O(1) and succeeds, verify() fails
    for off in (16 + 4 * 100, 1040 + 56 * 3 + 5, 1040 + 56 * 7 + 33, size - 48 - 1):
        damaged(off)
        with PackIndex.open(idx) as index:
            with pytest.raises(PackFormatError):
                index.verify()
    # index renamed to another pack's name: open fails
    idx.write_bytes(good)
    other = tmp_path / ("0" * 32 + ".idx")
    other.write_bytes(good)
    with pytest.raises(PackFormatError):
        PackIndex.open(other)
    other.unlink()

    # PackSet: verify reports a bad index; recover replaces an unreadable one
    damaged(1040 + 56 * 3 + 5)
    ps = PackSet(tmp_path)
    problems = ps.verify()
    assert any(p.pack_id == w.pack_id and "index" in p.what for p in problems)
    damaged(size - 20)
    actions = ps.recover()
    assert [(a.pack_id, a.action) for a in actions] == [(w.pack_id, "reindexed")]
    assert idx.read_bytes() == good
    assert ps.verify() == []
    ps.close()


# ---------------------------------------------------------------------------
# Corruption of pack bytes


def _small_sealed_pack(tmp_path, codec="lz4"):
    rnd = random.Random(21)
    chunks = [compressible(rnd, 3000 + 100 * i) if i % 2 else rnd.randbytes(2000 + 50 * i) for i in range(12)]
    w, first, written = write_pack(tmp_path, chunks, codec=codec)
    return w, written


def _assert_others_fine(path, written, bad_index):
    with PackReader.open(path) as r:
        for i, (d, loc, data) in enumerate(written):
            if i != bad_index:
                assert r.read(loc, d, verify_sha256=True) == data


@pytest.mark.parametrize("where", ["stored_first", "stored_last", "stored_mid"])
def test_flipped_stored_byte(tmp_path, where):
    w, written = _small_sealed_pack(tmp_path)
    k = 5
    d, loc, data = written[k]
    pos = {"stored_first": 0, "stored_last": loc.stored_length - 1, "stored_mid": loc.stored_length // 2}[where]
    flip(w.path, loc.offset + ENTRY_HEADER + pos)
    with PackReader.open(w.path) as r:
        with pytest.raises(CorruptBlobError) as ei:
            r.read(loc, d)
        assert (ei.value.pack_id, ei.value.offset, ei.value.digest) == (w.pack_id, loc.offset, d.hex())
        with pytest.raises(CorruptBlobError):
            r.read(loc.offset)
    _assert_others_fine(w.path, written, k)
    problems = PackSet(tmp_path).verify()
    assert any(p.offset == loc.offset and p.digest == d.hex() and "checksum" in p.what for p in problems)


@pytest.mark.parametrize("field_offset", [0, 3, 4, 5, 8, 12, 16, 47, 48, 55, 56, 63])
def test_flipped_entry_header_byte(tmp_path, field_offset):
    w, written = _small_sealed_pack(tmp_path)
    k = 4
    d, loc, data = written[k]
    flip(w.path, loc.offset + field_offset, 0x80)
    with PackReader.open(w.path) as r:
        with pytest.raises(CorruptBlobError) as ei:
            r.read(loc, d)
        assert ei.value.pack_id == w.pack_id and ei.value.offset == loc.offset
        with pytest.raises(CorruptBlobError):
            r.read(loc.offset)
    _assert_others_fine(w.path, written, k)
    problems = PackSet(tmp_path).verify()
    assert any(p.offset == loc.offset for p in problems), problems
    # the walk resynchronises past the damaged header: later entries are still found
    with PackReader.open(w.path) as r:
        found = {e.offset for e in r.iter_entries()}
    assert {l.offset for _, l, _ in written} - found == {loc.offset}


def test_truncated_pack_mid_entry(tmp_path):
    w, written = _small_sealed_pack(tmp_path)
    d, loc, data = written[-1]
    os.truncate(w.path, loc.offset + ENTRY_HEADER + loc.stored_length // 2)
    with PackReader.open(w.path) as r:
        with pytest.raises(CorruptBlobError):
            r.read(loc, d)
        with pytest.raises(CorruptBlobError):
            r.read(loc.offset)
    _assert_others_fine(w.path, written, len(written) - 1)
    problems = PackSet(tmp_path).verify()
    assert any(p.offset == loc.offset for p in problems)
    assert any("index covers" in p.what for p in problems)


def test_consistent_checksums_but_bad_content(tmp_path):
    """Bytes whose checksums were recomputed after damage (or a wrong digest
    given to add) are still caught: decompression, raw length, SHA-256."""
    rnd = random.Random(4)
    good = compressible(rnd, 20000)
    w = PackWriter.create(tmp_path, codec="lz4")
    l_ok = w.add(sha(good), good)
    l_wrong_digest = w.add(sha(b"something else"), good)  # writer trusts the digest
    l_lz = w.add(sha(good + b"!"), good + b"!")
    w.seal()
    # rewrite l_lz's stored bytes with garbage and fix both checksums
    with open(w.path, "r+b") as f:
        f.seek(l_lz.offset)
        head = bytearray(f.read(ENTRY_HEADER))
        garbage = bytes(rnd.randbytes(l_lz.stored_length))
        struct.pack_into("<Q", head, 48, xxhash.xxh3_64_intdigest(garbage))
        struct.pack_into("<Q", head, 56, xxhash.xxh3_64_intdigest(bytes(head[:56])))
        f.seek(l_lz.offset)
        f.write(bytes(head) + garbage)
    with PackReader.open(w.path) as r:
        assert r.read(l_wrong_digest) == good  # no SHA check requested
        with pytest.raises(CorruptBlobError):
            r.read(l_wrong_digest, verify_sha256=True)
        with pytest.raises(CorruptBlobError):
            r.read(l_ok, expected_digest=sha(b"other"))
        with pytest.raises(CorruptBlobError):
            r.read(l_lz)
        with pytest.raises(CorruptBlobError):
            r.read(l_ok._replace(raw_length=l_ok.raw_length + 1))
        with pytest.raises(CorruptBlobError):
            r.read(7)  # inside the pack header
        with pytest.raises(CorruptBlobError):
            r.read(l_ok.offset + 1)
    problems = PackSet(tmp_path).verify()
    bad = {p.offset for p in problems}
    assert l_wrong_digest.offset in bad and l_lz.offset in bad and l_ok.offset not in bad


def test_bad_pack_header(tmp_path):
    w, written = _small_sealed_pack(tmp_path)
    for off in (0, 8, 12, 20, 35):
        flip(w.path, off)
        with pytest.raises(PackFormatError):
            PackReader.open(w.path)
        flip(w.path, off)
    PackReader.open(w.path).close()
    # a pack file renamed to another id
    other = tmp_path / ("1" * 32 + ".pack")
    os.link(w.path, other)
    with pytest.raises(PackFormatError):
        PackReader.open(other)
    assert any(p.pack_id == "1" * 32 for p in PackSet(tmp_path).verify())


# ---------------------------------------------------------------------------
# Torn tails and recovery


def _unsealed_pack_bytes(tmp_path, chunks, codec="lz4"):
    w, first, written = write_pack(tmp_path / "src", chunks, codec=codec, seal=False)
    w.abort()
    return w.pack_id, Path(w.path).read_bytes(), written


def _recover_cut(base, pack_id, blob, cut, written):
    d = base / f"cut{cut}"
    d.mkdir()
    (d / f"{pack_id}.pack").write_bytes(blob[:cut])
    ps = PackSet(d)
    actions = ps.recover()
    complete = [(dg, loc, data) for dg, loc, data in written if loc.end <= cut]
    if not complete:
        assert [a.action for a in actions] == ["removed"]
        assert not any(d.iterdir())
        return
    good_end = complete[-1][1].end
    assert len(actions) == 1
    a = actions[0]
    assert a.pack_id == pack_id and a.new_size == good_end and a.entries == len(complete)
    assert a.action == ("sealed" if good_end == cut else "truncated")
    assert os.path.getsize(d / f"{pack_id}.pack") == good_end
    with ps.open_index(pack_id) as index:
        index.verify()
        assert len(index) == len({dg for dg, _, _ in complete})
        for dg, loc, data in complete:
            assert ps.read(index.lookup(dg), dg, verify_sha256=True) == data
        for dg, loc, data in written:
            if loc.end > cut:
                assert index.lookup(dg) is None
    assert ps.recover() == []
    assert ps.verify() == []
    ps.close()


def test_torn_tail_every_offset_of_last_two_entries(tmp_path):
    rnd = random.Random(9)
    chunks = [rnd.randbytes(300), compressible(rnd, 5000), b"", rnd.randbytes(23), b"x" * 40]
    pack_id, blob, written = _unsealed_pack_bytes(tmp_path, chunks)
    start = written[-2][1].offset
    assert written[-1][1].end == len(blob)
    for cut in range(start, len(blob) + 1):
        _recover_cut(tmp_path, pack_id, blob, cut, written)
    # cuts leaving no complete entry: the pack is removed
    for cut in (PACK_HEADER, PACK_HEADER + 5, written[0][1].end - 1):
        _recover_cut(tmp_path, pack_id, blob, cut, written)
    # a pack header cut short cannot come from a writer (it is complete before the
    # pack is visible): the file is reported and left alone
    for cut in (0, 10, PACK_HEADER - 1):
        d = tmp_path / f"short{cut}"
        d.mkdir()
        (d / f"{pack_id}.pack").write_bytes(blob[:cut])
        ps = PackSet(d)
        assert [a.action for a in ps.recover()] == ["damaged"]
        assert (d / f"{pack_id}.pack").read_bytes() == blob[:cut]
        assert [p.offset for p in ps.verify()] == [0]


def test_torn_tail_inside_large_compressed_entry(tmp_path):
    rnd = random.Random(10)
    chunks = [rnd.randbytes(1000), compressible(rnd, 1 << 20), rnd.randbytes(300000)]
    pack_id, blob, written = _unsealed_pack_bytes(tmp_path, chunks, codec="zstd")
    cuts = {written[1][1].offset + k for k in (0, 1, 32, 63, 64, 65)}
    cuts |= {rnd.randrange(written[1][1].offset, len(blob)) for _ in range(12)}
    cuts |= {len(blob) - 1, len(blob)}
    for cut in sorted(cuts):
        _recover_cut(tmp_path, pack_id, blob, cut, written)


@pytest.mark.parametrize("tail", [b"\0" * 5000, b"\0" * 63, b"garbage", "random", "header_only"])
def test_garbage_tail_is_cut(tmp_path, tail):
    rnd = random.Random(12)
    chunks = [rnd.randbytes(500), compressible(rnd, 9000)]
    pack_id, blob, written = _unsealed_pack_bytes(tmp_path, chunks)
    if tail == "random":
        tail = rnd.randbytes(70000)
    elif tail == "header_only":  # a complete, valid header whose bytes never arrived
        tail = blob[written[1][1].offset:written[1][1].offset + ENTRY_HEADER]
    d = tmp_path / "g"
    d.mkdir()
    (d / f"{pack_id}.pack").write_bytes(blob + tail)
    ps = PackSet(d)
    [a] = ps.recover()
    assert a.action == "truncated" and a.new_size == len(blob) and a.entries == 2
    assert (d / f"{pack_id}.pack").read_bytes() == blob
    with ps.open_index(pack_id) as index:
        for dg, loc, data in written:
            assert ps.read(index.lookup(dg), dg, True) == data


def test_mid_pack_damage_is_not_cut(tmp_path):
    """Damage followed by valid entries is corruption, not a torn tail:
    recover keeps everything, indexes both sides, and verify reports it."""
    rnd = random.Random(13)
    chunks = [rnd.randbytes(700 + i) for i in range(6)]
    pack_id, blob, written = _unsealed_pack_bytes(tmp_path, chunks)
    d = tmp_path / "m"
    d.mkdir()
    path = d / f"{pack_id}.pack"
    path.write_bytes(blob)
    flip(path, written[2][1].offset + 1)  # header magic of entry 2
    flip(path, written[4][1].offset + ENTRY_HEADER + 10)  # stored byte of entry 4
    ps = PackSet(d)
    [a] = ps.recover()
    assert a.action == "sealed" and a.new_size == len(blob) and a.entries == 4
    with ps.open_index(pack_id) as index:
        present = {dg for dg, _ in index}
    assert present == {written[i][0] for i in (0, 1, 3, 5)}
    bad = {p.offset for p in ps.verify()}
    assert written[2][1].offset in bad and written[4][1].offset in bad
    ps.close()


def test_iter_entries_reports_torn_tail(tmp_path):
    rnd = random.Random(14)
    chunks = [rnd.randbytes(100) for _ in range(5)]
    pack_id, blob, written = _unsealed_pack_bytes(tmp_path, chunks)
    p = tmp_path / f"{pack_id}.pack"
    p.write_bytes(blob[:-30])
    with PackReader.open(p) as r:
        problems = []
        entries = list(r.iter_entries(verify_data=True, problems=problems))
    assert [e.offset for e in entries] == [loc.offset for _, loc, _ in written[:-1]]
    assert [e.digest for e in entries] == [dg for dg, _, _ in written[:-1]]
    [prob] = problems
    assert prob.offset == written[-1][1].offset and "torn tail" in prob.what
    assert prob.digest == written[-1][0].hex()


# ---------------------------------------------------------------------------
# Crashes and locks (real processes)

CHILD = textwrap.dedent(r"""
    import hashlib, os, random, signal, sys
    from layerstore.packs import PackWriter

    directory, mode = sys.argv[1], sys.argv[2]

    def chunk(i):
        rnd = random.Random(1000 + i)
        n = [0, 1, 700, 65536, 200000, 4 << 20][i % 6]
        return rnd.randbytes(n // 2) + bytes(n - n // 2)

    def say(*words):
        sys.stdout.write(" ".join(map(str, words)) + "\n")
        sys.stdout.flush()

    w = PackWriter.create(directory, codec="lz4", buffer_size=1 << 18)
    say("P", w.pack_id)
    for i in range(60):
        if mode == "large" and i == 40:
            big = random.Random(5).randbytes(48 << 20)
            say("L")
            w.add(hashlib.sha256(big).digest(), big)
        data = chunk(i)
        loc = w.add(hashlib.sha256(data).digest(), data)
        say("A", i, loc.offset, loc.stored_length)
        if i % 7 == 6:
            say("D", w.flush())
        if mode == "self" and i == 45:
            os.kill(os.getpid(), signal.SIGKILL)
    say("D", w.flush())
    if mode == "hold":
        say("READY")
        line = sys.stdin.readline()
        if line.strip() == "seal":
            w.seal()
            say("SEALED")
    else:
        sys.stdin.readline()
""")


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(directory, mode):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(directory), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env())


def _read_until(proc, predicate, timeout=20):
    """Lines from the child until predicate(line) is true."""
    lines = []
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"child timed out: {lines[-3:]}"
        line = proc.stdout.readline().decode()
        assert line, f"child ended early: {lines[-3:]}"
        lines.append(line.split())
        if predicate(lines[-1]):
            return lines


def _child_chunk(i):
    rnd = random.Random(1000 + i)
    n = [0, 1, 700, 65536, 200000, 4 << 20][i % 6]
    return rnd.randbytes(n // 2) + bytes(n - n // 2)


@pytest.mark.parametrize("mode,kill_after", [
    ("plain", ("D", 3)),      # right after the third durable flush
    ("plain", ("A", 31)),     # mid-buffer, between flushes
    ("large", ("L", 0)),      # while a 48 MiB entry is being written
    ("large", ("L", 0.004)),
    ("self", None),           # the child kills itself mid-buffer
])
def test_writer_sigkilled_then_recovered(tmp_path, mode, kill_after):
    proc = _spawn(tmp_path, mode)
    try:
        lines = _read_until(proc, lambda l: l[0] == "P")
        pack_id = lines[0][1]
        if kill_after is not None:
            tag, arg = kill_after
            if tag == "D":
                seen = []
                lines += _read_until(proc, lambda l: l[0] == "D" and seen.append(1) is None and len(seen) == arg)
            elif tag == "A":
                lines += _read_until(proc, lambda l: l[0] == "A" and int(l[1]) == arg)
            else:
                lines += _read_until(proc, lambda l: l[0] == "L")
                time.sleep(arg)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        assert proc.returncode == -signal.SIGKILL
        lines += [l.split() for l in proc.stdout.read().decode().splitlines()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stdin.close()

    durable = max([int(l[1]) for l in lines if l[0] == "D"], default=PACK_HEADER)
    added = [(int(l[1]), int(l[2]), int(l[3])) for l in lines if l[0] == "A"]
    ps = PackSet(tmp_path)
    actions = ps.recover()
    assert [a.pack_id for a in actions if a.action != "removed"] == [pack_id]
    assert actions[-1].action in ("sealed", "truncated")
    with ps.open_index(pack_id) as index:
        index.verify()
        checked = 0
        for i, offset, stored in added:
            if offset + ENTRY_HEADER + stored > durable:
                continue
            data = _child_chunk(i)
            loc = index.lookup(sha(data))
            assert loc is not None and loc.offset <= offset
            assert ps.read(loc, sha(data), verify_sha256=True) == data
            checked += 1
    assert checked >= (1 if mode != "plain" or kill_after[0] != "D" else 20)
    assert ps.verify() == []
    ps.close()


def test_live_writer_pack_untouched(tmp_path):
    proc = _spawn(tmp_path, "hold")
    try:
        lines = _read_until(proc, lambda l: l[0] == "READY")
        pack_id = lines[0][1]
        path = tmp_path / f"{pack_id}.pack"
        # append a torn-looking tail the live writer "is writing": recover must not cut it
        with open(path, "ab") as f:
            f.write(b"LSEN" + b"\0" * 20)
        before = (path.read_bytes(), os.stat(path).st_mtime_ns)
        ps = PackSet(tmp_path)
        actions = ps.recover()
        assert [(a.pack_id, a.action) for a in actions] == [(pack_id, "in-use")]
        assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
        assert not (tmp_path / f"{pack_id}.idx").exists()
        with pytest.raises(PackLockedError):
            rebuild_index(path)
        assert not (tmp_path / f"{pack_id}.idx").exists()
        assert ps.verify() == []  # a live pack's growing tail is not a fault
        proc.stdin.write(b"seal\n")
        proc.stdin.flush()
        _read_until(proc, lambda l: l[0] == "SEALED")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    # sealed by its writer (the appended bytes were below nothing the writer knew)
    assert (tmp_path / f"{pack_id}.idx").exists()
    assert ps.recover() == []
    ps.close()


def test_stale_temporary_pack_file(tmp_path):
    import fcntl
    stale = tmp_path / (".%s.pack.tmp" % ("a" * 32))
    stale.write_bytes(b"")
    held = tmp_path / (".%s.pack.tmp" % ("b" * 32))
    held.write_bytes(b"")
    fd = os.open(held, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ps = PackSet(tmp_path)
        actions = ps.recover()
        assert [(a.pack_id, a.action) for a in actions] == [("a" * 32, "removed")]
        assert not stale.exists() and held.exists()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# PackSet


def test_packset_rotation_durability_and_reads(tmp_path):
    rnd = random.Random(15)
    chunks = [rnd.randbytes(rnd.randrange(1, 20000)) for _ in range(400)]
    ps = PackSet(tmp_path, codec="zstd", max_pack_size=1 << 20, max_open_readers=2, buffer_size=1 << 16)
    locs = [(sha(c), ps.add(sha(c), c), c) for c in chunks]
    active = ps.active_pack_id
    durable = ps.flush()
    assert all(loc.end <= durable for _, loc, _ in locs if loc.pack_id == active)
    infos = ps.packs()
    assert len(infos) >= 4
    assert [i.sealed for i in infos if i.pack_id != active] == [True] * (len(infos) - 1)
    assert all(i.size <= (1 << 20) + 20000 + 64 for i in infos)
    # reads from several threads through a 2-handle cache
    errors = []

    def reader(part):
        try:
            for dg, loc, c in part:
                assert ps.read(loc, dg, verify_sha256=True) == c
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(locs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ps.close()
    assert all(i.sealed for i in PackSet(tmp_path).packs())
    with pytest.raises(ValueError):
        ps.add(sha(b"x"), b"x")
    ps2 = PackSet(tmp_path)
    for dg, loc, c in locs[::17]:
        assert ps2.read(loc, dg) == c
    assert ps2.verify() == []
    ps2.close()


def test_packset_read_of_unflushed_entry_and_empty_close(tmp_path):
    ps = PackSet(tmp_path)
    loc = ps.add(sha(b"hello"), b"hello")
    assert ps.read(loc, sha(b"hello")) == b"hello"  # still in the write buffer
    ps.close()
    ps = PackSet(tmp_path / "empty")
    assert ps.flush() is None
    ps.close()
    assert list((tmp_path / "empty").iterdir()) == []


def test_two_writers_share_a_directory(tmp_path):
    a, b = PackSet(tmp_path), PackSet(tmp_path)
    rnd = random.Random(16)
    chunks = [rnd.randbytes(3000) for _ in range(300)]
    out = {}

    def ingest(ps, part, key):
        out[key] = [(sha(c), ps.add(sha(c), c), c) for c in part]
        ps.flush()

    ta = threading.Thread(target=ingest, args=(a, chunks[::2], "a"))
    tb = threading.Thread(target=ingest, args=(b, chunks[1::2], "b"))
    ta.start(), tb.start(), ta.join(), tb.join()
    assert a.active_pack_id != b.active_pack_id
    c = PackSet(tmp_path)
    assert sorted(x.action for x in c.recover()) == ["in-use", "in-use"]
    assert c.verify() == []
    a.close(), b.close()
    for dg, loc, data in out["a"] + out["b"]:
        assert c.read(loc, dg, True) == data
    assert c.recover() == [] and c.verify() == []
    c.close()


def test_abort_leaves_pack_for_recover(tmp_path):
    w = PackWriter.create(tmp_path)
    l1 = w.add(sha(b"one"), b"one")
    w.flush()
    w.add(sha(b"two"), b"two")  # buffered, dropped by abort
    w.abort()
    ps = PackSet(tmp_path)
    [a] = ps.recover()
    assert a.action == "sealed" and a.entries == 1
    assert ps.read(l1, sha(b"one")) == b"one"
    with ps.open_index(w.pack_id) as index:
        assert index.lookup(sha(b"two")) is None
    ps.close()


def test_errors_share_the_base_class():
    assert issubclass(CorruptBlobError, LayerStoreError)
    assert issubclass(PackFormatError, LayerStoreError)
    assert issubclass(PackLockedError, LayerStoreError)
    assert PackLocation("a" * 32, 40, 10, 20, 1).end == 114


def test_reader_in_use_survives_cache_eviction(tmp_path):
    ps = PackSet(tmp_path, max_open_readers=1, max_pack_entries=1)
    locs = [(sha(c), ps.add(sha(c), c), c) for c in (b"a" * 100, b"b" * 200, b"c" * 300)]
    assert len({loc.pack_id for _, loc, _ in locs}) == 3
    d0, l0, c0 = locs[0]
    with ps.reader(l0.pack_id) as r:
        for dg, loc, c in locs[1:]:  # evicts r from the one-handle cache
            assert ps.read(loc, dg) == c
        assert r.read(l0, d0) == c0  # still open while in use
    assert ps.read(l0, d0) == c0
    ps.close()


# --- linked groups (lz4: small chunks compressed against the ones before them) ----------

def _texty(rnd, n):
    """Compressible bytes sharing vocabulary across calls (as small files of
    one package do): words from a fixed list."""
    words = [b"lib", b"usr", b"share", b"python3", b"config", b"version", b"=", b"\n", b"debian", b"x86_64"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + rnd.choice([b" ", b"/", b"\n"])
    return bytes(out[:n])


def _small_chunks(seed, count=60):
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        data = _texty(rnd, rnd.randrange(200, 12_000)) if rnd.random() < 0.8 else rnd.randbytes(rnd.randrange(1, 3000))
        out.append((hashlib.sha256(data).digest(), data))
    out.append((hashlib.sha256(b"L" * 200_000).digest(), b"L" * 200_000))  # a large chunk ends a group
    out += [(hashlib.sha256(d).digest(), d) for d in (_texty(rnd, 5000), _texty(rnd, 7000))]
    return out


def test_linked_groups_round_trip_and_shrink_more(tmp_path):
    items = _small_chunks(1)
    ps = PackSet(tmp_path / "packs", codec="lz4")
    locs = ps.add_many(items)
    codecs = [l.codec for l in locs]
    assert 3 in codecs  # CODEC_LZ4_LINKED
    # each linked entry's stored bytes start with the distance back to its group's head
    for loc, (d, data) in zip(locs, items):
        assert loc.raw_length == len(data)
    # reads in order, in reverse and at random give the plaintext (SHA-256 checked)
    order = list(range(len(items)))
    for seq in (order, order[::-1], random.Random(2).sample(order, len(order))):
        fresh = PackSet(tmp_path / "packs", codec="lz4") if seq is not order else ps
        for i in seq:
            d, data = items[i]
            assert fresh.read(locs[i], expected_digest=d, verify_sha256=True) == data
    # smaller than each chunk compressed alone (the lz4 oracle)
    alone = sum(len(lz4.block.compress(data, store_size=False)) if len(lz4.block.compress(data, store_size=False))
                <= len(data) - max(1, len(data) // 16) else len(data) for _, data in items)
    assert sum(l.stored_length for l in locs) < alone
    ps.close()


def test_linked_entries_only_with_lz4(tmp_path):
    for codec in ("zstd", "none"):
        ps = PackSet(tmp_path / codec, codec=codec)
        assert 3 not in {l.codec for l in ps.add_many(_small_chunks(3))}
        ps.close()


def test_linked_group_index_rebuild_and_verify(tmp_path):
    items = _small_chunks(4)
    ps = PackSet(tmp_path / "packs", codec="lz4")
    locs = ps.add_many(items)
    pack_id = locs[0].pack_id
    ps.close()  # seals
    idx = tmp_path / "packs" / f"{pack_id}.idx"
    sealed = idx.read_bytes()
    idx.unlink()
    rebuild_index(tmp_path / "packs" / f"{pack_id}.pack")
    assert idx.read_bytes() == sealed
    with PackReader.open(tmp_path / "packs" / f"{pack_id}.pack") as r:
        for e in r.iter_entries(verify_data=True):
            assert hashlib.sha256(r.read(e.offset, verify_sha256=True)).digest() == e.digest


def test_damaged_group_head_fails_its_linked_members_only(tmp_path):
    items = _small_chunks(5)
    ps = PackSet(tmp_path / "packs", codec="lz4")
    locs = ps.add_many(items)
    ps.flush()
    linked = next(i for i, l in enumerate(locs) if l.codec == 3)
    head_off = locs[linked].offset - struct.unpack_from("<I", _stored_bytes(tmp_path, locs[linked]))[0]
    head = next(i for i, l in enumerate(locs) if l.offset == head_off)
    ps.close()
    path = tmp_path / "packs" / f"{locs[0].pack_id}.pack"
    raw = bytearray(path.read_bytes())
    raw[head_off + 64] ^= 0x40  # a stored byte of the head entry
    path.write_bytes(bytes(raw))
    ps = PackSet(tmp_path / "packs", codec="lz4")
    with pytest.raises(CorruptBlobError, match="checksum mismatch") as exc:
        ps.read(locs[linked], expected_digest=items[linked][0], verify_sha256=True)
    assert f"offset {head_off}" in str(exc.value)
    with pytest.raises(CorruptBlobError):
        ps.read(locs[head])
    after_large = next(i for i, (_d, data) in enumerate(items) if len(data) == 200_000)
    for i in range(after_large, len(items)):  # other groups read fine
        assert ps.read(locs[i], expected_digest=items[i][0], verify_sha256=True) == items[i][1]
    ps.close()


def test_linked_entry_with_impossible_distance(tmp_path):
    """A linked entry whose (checksummed) distance points before the first
    entry is refused, not followed."""
    data = _texty(random.Random(6), 4000)
    body = lz4.block.compress(data, store_size=False)
    stored = struct.pack("<I", 10_000) + body
    w = PackWriter.create(tmp_path, codec="lz4")
    loc = w._append(hashlib.sha256(data).digest(), len(data), 3, stored)
    w.seal()
    with PackReader.open(tmp_path / f"{loc.pack_id}.pack") as r:
        with pytest.raises(CorruptBlobError, match="group head"):
            r.read(loc)


def _stored_bytes(tmp_path, loc):
    with open(tmp_path / "packs" / f"{loc.pack_id}.pack", "rb") as f:
        f.seek(loc.offset + 64)
        return f.read(loc.stored_length)


def test_linked_entry_too_short_or_too_large_is_invalid(tmp_path):
    """A codec 3 entry must hold its 4-byte distance and at least one byte,
    and be under 64 KiB: otherwise its header is invalid (checksums right)."""
    w = PackWriter.create(tmp_path, codec="lz4")
    head = _texty(random.Random(8), 3000)
    w._append(hashlib.sha256(head).digest(), len(head), CODEC_LZ4, lz4.block.compress(head, store_size=False))
    short = w._append(b"\1" * 32, 100, 3, b"\x40\0")
    big = w._append(b"\2" * 32, 70_000, 3, struct.pack("<I", 64) + b"x" * 100)
    w.seal()
    with PackReader.open(tmp_path / f"{short.pack_id}.pack") as r:
        for loc in (short, big):
            with pytest.raises(CorruptBlobError, match="linked entry"):
                r.read(loc)
    ps = PackSet(tmp_path, codec="lz4")
    problems = ps.verify()  # the walk skips both invalid headers and says so
    assert len(problems) >= 2, problems
    ps.close()


def test_group_with_too_much_plaintext_is_refused(tmp_path):
    """Members compress well, so a crafted group can claim much plaintext in
    few stored bytes; a reader stops at the writer's bound (192 KiB)."""
    w = PackWriter.create(tmp_path, codec="lz4")
    zeros = bytes(60_000)
    for i in range(8):  # codec 1 members of 60,000 zero bytes: 480,000 B of plaintext
        w._append(hashlib.sha256(zeros + bytes([i])).digest(), len(zeros), CODEC_LZ4,
                  lz4.block.compress(zeros, store_size=False))
    first = 40  # the first entry (docs/format.md: pack header of 40 bytes)
    data = _texty(random.Random(9), 2000)
    body = lz4.block.compress(data, store_size=False)
    end = w.size
    loc = w._append(hashlib.sha256(data).digest(), len(data), 3, struct.pack("<I", end - first) + body)
    w.seal()
    with PackReader.open(tmp_path / f"{loc.pack_id}.pack") as r:
        with pytest.raises(CorruptBlobError, match="too large"):
            r.read(loc)


def test_background_sync_during_a_long_write(tmp_path):
    """Past 16 MiB written, a writer syncs in the background; sealing waits
    for that sync, and every entry reads back."""
    ps = PackSet(tmp_path / "packs", codec="none")
    rnd = random.Random(10)
    items = []
    for _ in range(10):
        data = rnd.randbytes(4 << 20)
        items.append((hashlib.sha256(data).digest(), data))
    locs = ps.add_many(items)
    w = ps._writer
    assert w is not None and w._early is not None  # started at 16 MiB
    ps.close()  # seals: waits for the background sync before closing the file
    assert w._early is None
    ps = PackSet(tmp_path / "packs", codec="none")
    for loc, (d, data) in zip(locs, items):
        assert ps.read(loc, expected_digest=d, verify_sha256=True) == data
    ps.close()
