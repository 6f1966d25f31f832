"""Exact zstd reconstruction (layerstore.reconstruct, csrc/zstre.c): the
rebuilt bytes against the original stream, for streams written by libzstd
(python-zstandard, every strategy from fast to ultra, with and without
checksums, several frames, skippable frames) and the real encoder behind
the corpus images (klauspost/compress in podman and skopeo). The plaintext
oracle is python-zstandard's decompressor."""
import hashlib
import io
import random

import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from conftest import corpus_path
from layerstore.errors import CompressedLayerError, CorruptBlobError
from layerstore.reconstruct import ZstdAnalyzer, rebuild
from test_gzre import sample_text, split


def plain_of(blob):
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()


def analyze(blob, plain, piece=100_000, plain_piece=300_000):
    side = []
    an = ZstdAnalyzer(side.append)
    an.run(split(blob, piece), split(plain, plain_piece))
    return b"".join(side), an


def round_trip(blob, piece=100_000, plain_piece=300_000, side_piece=5000):
    plain = plain_of(blob)
    side, an = analyze(blob, plain, piece, plain_piece)
    assert an.exact, an.reason
    assert an.plain_size == len(plain)
    out = b"".join(rebuild(split(side, side_piece), split(plain, 65536), kind="zstd"))
    assert out == blob
    return side


@pytest.mark.parametrize("level", [-7, -1, 1, 2, 3, 5, 9, 13, 16, 19, 22])
def test_libzstd_levels(level):
    data = sample_text(400_000, seed=abs(level) + 1)
    blob = zstandard.ZstdCompressor(level=level, write_checksum=level % 2 == 0).compress(data)
    round_trip(blob)


def test_side_data_is_small_on_text():
    data = sample_text(2_000_000)
    blob = zstandard.ZstdCompressor(level=3).compress(data)
    side = round_trip(blob)
    assert len(side) < 0.25 * len(blob), (len(side), len(blob))


def test_corpus_zstd_layers_rebuild_exactly():
    blobs = {}
    for layout in ("small-amd64.oci-zstd", "small-multiarch.oci-zstd"):
        for p in (corpus_path("images", layout) / "blobs" / "sha256").iterdir():
            data = p.read_bytes()
            if data[:4] == b"\x28\xb5\x2f\xfd":
                assert hashlib.sha256(data).hexdigest() == p.name
                blobs[p.name] = data
    assert len(blobs) >= 6
    total = side_total = 0
    for name, data in sorted(blobs.items()):
        side_total += len(round_trip(data, piece=7000, plain_piece=50_000, side_piece=333))
        total += len(data)
    assert side_total < 0.2 * total, (side_total, total)


def test_frames_skippable_frames_and_raw_blocks():
    rng = random.Random(4)
    incompressible = rng.randbytes(300_000)          # stored as raw blocks
    runs = bytes(200_000)                            # RLE blocks
    text = sample_text(300_000, seed=9)
    cz = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=False)
    skip = (0x184D2A5A).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    blob = cz.compress(incompressible) + skip + cz.compress(runs) + cz.compress(text) + skip
    round_trip(blob)


def test_long_distance_matches():
    # offsets beyond the model window (4 MiB) are coded explicitly
    block = random.Random(1).randbytes(1 << 20)
    data = block + sample_text(4_500_000, seed=2) + block
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24, enable_ldm=True)
    blob = zstandard.ZstdCompressor(compression_params=params).compress(data)
    round_trip(blob, piece=1 << 20, plain_piece=1 << 20)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=4000), st.integers(-5, 19), st.booleans(), st.integers(1, 997))
def test_random_inputs_round_trip(data, level, checksum, piece):
    data = data * 4 + data[::-1]
    blob = zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(data)
    round_trip(blob, piece=piece, plain_piece=piece * 3 + 1, side_piece=piece)


# -- bad input --------------------------------------------------------------

def test_truncation_is_an_error():
    data = sample_text(20_000, seed=3)
    blob = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    for cut in list(range(0, 40)) + list(range(40, len(blob), 37)):
        with pytest.raises(CompressedLayerError):
            analyze(blob[:cut], data)


def test_wrong_plaintext_length_is_an_error():
    data = sample_text(20_000, seed=3)
    blob = zstandard.ZstdCompressor(level=3).compress(data)
    with pytest.raises(CompressedLayerError, match="plaintext"):
        analyze(blob, data[:-1])
    with pytest.raises(CompressedLayerError, match="plaintext"):
        analyze(blob, data + b"x")


def test_damage_never_passes_silently():
    data = sample_text(30_000, seed=5)
    blob = zstandard.ZstdCompressor(level=5).compress(data)
    rng = random.Random(8)
    for _ in range(300):
        bad = bytearray(blob)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        try:
            side, an = analyze(bytes(bad), data)
        except CompressedLayerError:
            continue
        if not an.exact:
            continue
        try:
            out = b"".join(rebuild([side], [data], kind="zstd"))
        except CorruptBlobError:
            continue
        if out != bytes(bad):
            continue  # the damaged stream does not come back: a compaction's digest check rejects it
        # Bytes kept verbatim (headers, jump tables, table descriptions) come
        # back as they were even when they are wrong: then the stream is one
        # libzstd refuses (it could never have been ingested as a layer), or
        # it still decodes to this plaintext.
        try:
            assert plain_of(bytes(bad)) == data
        except zstandard.ZstdError:
            pass


def test_damaged_reconstruction_data():
    data = sample_text(30_000, seed=6)
    blob = zstandard.ZstdCompressor(level=5).compress(data)
    side, _ = analyze(blob, data)
    rng = random.Random(2)
    for _ in range(200):
        bad = bytearray(side)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        try:
            out = b"".join(rebuild([bytes(bad)], [data], kind="zstd"))
        except CorruptBlobError:
            continue
        assert out == blob or hashlib.sha256(out).digest() != hashlib.sha256(blob).digest()
    with pytest.raises(CorruptBlobError):
        b"".join(rebuild([side[: len(side) // 2]], [data], kind="zstd"))
    with pytest.raises(CorruptBlobError):
        b"".join(rebuild([side], [data[:-10]], kind="zstd"))


def test_not_zstd():
    with pytest.raises(CompressedLayerError, match="magic"):
        analyze(b"\x1f\x8b" + bytes(100), b"")
    with pytest.raises(CompressedLayerError, match="empty"):
        analyze(b"", b"")


def test_dictionary_frames_are_not_exact():
    samples = [sample_text(2000, seed=i) for i in range(40)]
    d = zstandard.train_dictionary(4096, samples)
    data = sample_text(5000, seed=99)
    blob = zstandard.ZstdCompressor(dict_data=d, level=3).compress(data)
    _, an = analyze(blob, data)
    assert not an.exact and "dictionary" in an.reason


@pytest.mark.parametrize("analyzer_piece,rebuilder_piece", [(3 << 20, 100_000), (777_777, 1 << 20)])
def test_offsets_beyond_the_model_window_with_any_feeding(analyzer_piece, rebuilder_piece):
    # Offsets of 4-8 MiB: whether the model may use one must not depend on
    # how much history each side's buffer holds at that moment.
    rng = random.Random(5)
    blocks = [rng.randbytes(200_000) for _ in range(8)]
    data = b"".join(rng.choice(blocks) if rng.random() < 0.5 else rng.randbytes(200_000) for _ in range(60))
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24)
    blob = zstandard.ZstdCompressor(compression_params=params).compress(data)
    side = []
    ZstdAnalyzer(side.append).run(split(blob, 1 << 20), split(data, analyzer_piece))
    out = b"".join(rebuild(split(b"".join(side), 7777), split(data, rebuilder_piece), kind="zstd"))
    assert out == blob


def test_the_rebuilder_needs_bounded_plaintext_ahead():
    from layerstore.reconstruct import Rebuilder
    data = random.Random(3).randbytes(40 << 20)        # raw blocks: little reconstruction data
    blob = zstandard.ZstdCompressor(level=3).compress(data)
    rb = Rebuilder("zstd")
    most = 0
    out = []

    def seen(p):
        nonlocal most
        rb.plain(p)
        most = max(most, len(rb._plain))
        out.extend(rb.run())

    ZstdAnalyzer(rb.side, on_plain=seen).run(split(blob, 1 << 20), split(data, 1 << 20))
    rb.plain_end()
    out += rb.run()
    assert b"".join(out) == blob
    assert most < 24 << 20, most


def test_far_too_much_plaintext_is_an_error_not_a_hang():
    blob = zstandard.ZstdCompressor(level=3).compress(b"hello")
    with pytest.raises(CompressedLayerError, match="longer"):
        ZstdAnalyzer(lambda b: None).run([blob], split(b"hello" + bytes(20 << 20), 1 << 20))
