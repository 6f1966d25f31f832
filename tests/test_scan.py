"""One-pass layer scanner: checked against hashlib (stream and chunk
digests), Python's tarfile (entries and file contents), the chunker run on
each file alone (cut points), and the input itself (exact rebuild)."""
import hashlib
import io
import random
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_path, make_tar
from layerstore import chunking
from layerstore.errors import TarFormatError
from layerstore.scan import LayerScanner, assemble, scan_layer

SMALL = dict(min_size=1024, avg_size=4096, max_size=16384)


def rebuild(scan, stream):
    """Reassemble from the scan, reading chunks from the original stream and
    checking each chunk's digest on the way."""

    def read_chunk(chunk):
        data = stream[chunk.offset:chunk.offset + chunk.length]
        assert hashlib.sha256(data).digest() == chunk.digest
        return data

    return b"".join(assemble(scan.segments, scan.chunks, read_chunk))


def check_against_oracles(stream, scan, params):
    assert scan.diff_id == "sha256:" + hashlib.sha256(stream).hexdigest()
    assert scan.size == len(stream)
    assert rebuild(scan, stream) == stream
    assert scan.segments_size + sum(c.length for c in scan.chunks) == len(stream)
    # Entries and contents per Python's tarfile; a file's chunks are exactly
    # the chunker's cuts of that file alone.
    with tarfile.open(fileobj=io.BytesIO(stream)) as tf:
        members = tf.getmembers()
        assert [e.name.rstrip("/") for e in scan.entries] == [m.name for m in members]
        for entry, member in zip(scan.entries, members):
            assert entry.size == member.size
            assert entry.offset == member.offset
            own = [c for c in scan.chunks if c.entry == entry.index]
            if member.isreg() and not member.issparse():
                content = tf.extractfile(member).read()
                cuts = chunking.chunk_boundaries(content, **params)
                starts = [0] + cuts[:-1]
                assert [c.length for c in own] == [b - a for a, b in zip(starts, cuts)]
                assert [c.digest for c in own] == [
                    hashlib.sha256(content[a:b]).digest() for a, b in zip(starts, cuts)
                ]
                assert all(c.offset == member.offset_data + a for c, a in zip(own, starts))


@pytest.mark.parametrize("threads", [1, 2])
def test_synthetic_layer_matches_oracles(threads):
    rnd = random.Random(7)
    files = [("dir", None)]
    for i in range(40):
        size = rnd.choice([0, 1, 511, 512, 513, 1500, 5000, 40000, 100000])
        files.append((f"dir/f{i}", rnd.randbytes(size)))
    files.append(("dup-a", files[5][1]))
    stream = make_tar(files)
    scan = scan_layer(io.BytesIO(stream), keep_segments=True, threads=threads, buffer_size=7919, **SMALL)
    check_against_oracles(stream, scan, SMALL)
    # identical files give identical chunks
    dup = [c.digest for c in scan.chunks if c.entry == len(files) - 1]
    orig = [c.digest for c in scan.chunks if c.entry == 5]
    assert dup == orig


def test_every_split_gives_the_same_scan():
    rnd = random.Random(11)
    stream = make_tar([(f"f{i}", rnd.randbytes(rnd.randrange(0, 30000))) for i in range(12)])
    ref = scan_layer(io.BytesIO(stream), keep_segments=True, threads=1, **SMALL)
    for sizes in ([1], [511], [513], [4096, 1, 3]):
        scanner = LayerScanner(**SMALL)
        chunks, entries, segs = [], [], []
        pos, k = 0, 0
        while pos < len(stream):
            n = sizes[k % len(sizes)]
            k += 1
            for batch in scanner.feed(stream[pos:pos + n]):
                chunks += batch.chunks
                entries += batch.entries
                segs.append(batch.segments)
            pos += n
        last = scanner.finish()
        chunks += last.chunks
        entries += last.entries
        segs.append(last.segments)
        assert chunks == ref.chunks
        assert entries == ref.entries
        assert b"".join(segs) == ref.segments
        assert scanner.digest == ref.diff_id


def test_chunk_data_is_readable_during_the_batch():
    rnd = random.Random(3)
    stream = make_tar([("big", rnd.randbytes(200_000)), ("small", b"x" * 10)])
    scanner = LayerScanner(**SMALL)
    seen = 0
    for pos in range(0, len(stream), 3000):
        for batch in scanner.feed(stream[pos:pos + 3000]):
            for chunk in batch.chunks:
                assert hashlib.sha256(batch.chunk_data(chunk)).digest() == chunk.digest
                seen += 1
    for chunk in scanner.finish().chunks:
        seen += 1
    assert seen >= 200_000 // SMALL["max_size"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(st.binary(max_size=20000), min_size=0, max_size=8),
    split=st.integers(min_value=1, max_value=20000),
)
def test_random_trees_round_trip(files, split):
    stream = make_tar([(f"d/{i}", data) for i, data in enumerate(files)], fmt=tarfile.GNU_FORMAT)
    scan = scan_layer(io.BytesIO(stream), keep_segments=True, threads=1, buffer_size=split, **SMALL)
    check_against_oracles(stream, scan, SMALL)


def test_corpus_writer_archives_round_trip():
    folder = corpus_path("tars")
    for path in sorted(folder.glob("*.tar")):
        stream = path.read_bytes()
        scan = scan_layer(io.BytesIO(stream), keep_segments=True)
        assert scan.diff_id == "sha256:" + hashlib.sha256(stream).hexdigest(), path.name
        assert rebuild(scan, stream) == stream, path.name
        with tarfile.open(path) as tf:
            assert len(scan.entries) == len(tf.getmembers()), path.name


def test_real_image_layers_match_oracles():
    root = corpus_path("images", "small-amd64.oci-zstd")
    import json

    index = json.loads((root / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((root / "blobs" / "sha256" / manifest_digest).read_bytes())
    config = json.loads((root / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes())
    import zstandard

    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        blob = (root / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
        stream = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        scan = scan_layer(io.BytesIO(stream), keep_segments=True)
        assert scan.diff_id == diff_id
        params = dict(
            min_size=chunking.DEFAULT_MIN_SIZE,
            avg_size=chunking.DEFAULT_AVG_SIZE,
            max_size=chunking.DEFAULT_MAX_SIZE,
        )
        check_against_oracles(stream, scan, params)


@pytest.mark.parametrize("cut", [1, 100, 512, 700, 1024, 1535, 1537, -1024, -1])
def test_truncated_layer_is_rejected(cut):
    stream = make_tar([("a", b"a" * 1000), ("b", b"b" * 3000)], fmt=tarfile.USTAR_FORMAT)
    # strip the end-of-archive blocks and record padding, then cut further
    body = stream[: (512 + 1024) + (512 + 3072)]
    data = body[:cut]
    with pytest.raises(TarFormatError) as exc:
        scan_layer(io.BytesIO(data), threads=1)
    assert exc.value.offset is not None


def test_corrupt_header_names_offset():
    stream = bytearray(make_tar([("a", b"a" * 1000), ("b", b"b" * 10)], fmt=tarfile.USTAR_FORMAT))
    stream[512 * 3 + 10] ^= 0xFF  # inside the second header's name
    with pytest.raises(TarFormatError) as exc:
        scan_layer(io.BytesIO(bytes(stream)), threads=1)
    assert exc.value.offset == 512 * 3


def test_errors_raised_from_memoryview_feeds_leave_no_dangling_buffers():
    import gc

    stream = bytearray(make_tar([("a", b"a" * 5000), ("b", b"b" * 10)], fmt=tarfile.USTAR_FORMAT))
    stream[512 * 11 + 3] ^= 0x55  # corrupt the second header (after 512 + 5120 bytes)
    for _ in range(20):
        scanner = LayerScanner(**SMALL)
        view = memoryview(bytes(stream))
        with pytest.raises(TarFormatError) as exc:
            for pos in range(0, len(view), 700):
                for _batch in scanner.feed(view[pos:pos + 700]):
                    pass
        del scanner, view
        tb = exc.value.__traceback__
        del exc, tb
        gc.collect()


def test_scanner_is_single_use():
    from layerstore.errors import LayerStoreError

    stream = make_tar([("a", b"x" * 100)])
    scanner = LayerScanner(**SMALL)
    for _ in scanner.feed(stream):
        pass
    scanner.finish()
    assert scanner.digest == "sha256:" + hashlib.sha256(stream).hexdigest()
    with pytest.raises(LayerStoreError):
        scanner.finish()
    with pytest.raises(LayerStoreError):
        list(scanner.feed(b"more"))
    assert scanner.digest == "sha256:" + hashlib.sha256(stream).hexdigest()


def test_bytes_after_the_end_are_chunked_not_kept():
    from layerstore.scan import TRAILING

    rnd = random.Random(21)
    body = make_tar([("a", rnd.randbytes(5000))], fmt=tarfile.USTAR_FORMAT)
    junk = rnd.randbytes(300_000) + bytes(2_000_000)
    stream = body + junk
    scan = scan_layer(io.BytesIO(stream), keep_segments=True, threads=1, **SMALL)
    assert scan.diff_id == "sha256:" + hashlib.sha256(stream).hexdigest()
    assert rebuild(scan, stream) == stream
    trailing = [c for c in scan.chunks if c.entry == TRAILING]
    # segments hold only headers, padding and the end-of-archive blocks
    assert scan.segments_size <= len(body) - 5000
    assert sum(c.length for c in trailing) == len(stream) - scan.segments_size - 5000


def _parse_only(stream, piece=7777):
    """Entries, digest and size of a parse-only scan fed in ``piece``-byte pieces."""
    s = LayerScanner(parse_only=True, threads=1)
    entries = []
    for i in range(0, len(stream), piece):
        for batch in s.feed(stream[i:i + piece]):
            assert not batch.chunks
            entries += batch.entries
    batch = s.finish()
    assert not batch.chunks
    return entries + list(batch.entries), s.digest, s.size


def test_parse_only_scan_matches_tarfile_on_the_corpus_archives():
    """A compressed layer's ingest parses its tar without chunking it: the
    same entries (tarfile as the oracle) and digest as a full scan."""
    for path in sorted(corpus_path("tars").glob("*.tar")):
        stream = path.read_bytes()
        entries, digest, size = _parse_only(stream)
        assert digest == "sha256:" + hashlib.sha256(stream).hexdigest(), path.name
        assert size == len(stream)
        with tarfile.open(path) as tf:
            members = tf.getmembers()
        assert [e.name.rstrip("/") for e in entries] == [m.name for m in members], path.name
        assert [e.size for e in entries] == [m.size for m in members], path.name


@pytest.mark.parametrize("cut", [1, 100, 512, 700, 1024, 1535, 1537, -1024, -1])
def test_parse_only_scan_rejects_truncated_layers(cut):
    stream = make_tar([("a", b"a" * 1000), ("b", b"b" * 3000)], fmt=tarfile.USTAR_FORMAT)
    body = stream[: (512 + 1024) + (512 + 3072)]
    with pytest.raises(TarFormatError) as exc:
        _parse_only(body[:cut], piece=300)
    assert exc.value.offset is not None


def test_parse_only_and_raw_do_not_mix():
    with pytest.raises(ValueError):
        LayerScanner(raw=True, parse_only=True)
