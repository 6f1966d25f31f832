"""Exact reconstruction of compressed layers (layerstore.reconstruct):
analyzer and rebuilder throughput, and the size of the reconstruction data,
for gzip (csrc/gzre.c) and zstd (csrc/zstre.c) on streams of the synthetic
small-files tree written by zlib -6 and libzstd -3, and on the real layers
of the corpus images (written by klauspost pgzip and zstd in podman and
skopeo).

Run: ``pytest bench/bench_reconstruct.py --benchmark-only``

``extra_info``: ``mb_per_s`` of plaintext (MB = 10**6 bytes, fastest
round), ``decompress_mb_per_s`` (zlib or libzstd decompressing the same
blob in the same test), ``side_bytes`` and ``side_over_blob``
(reconstruction data / compressed blob).
"""
import gzip
import io

import pytest
import zstandard

import inputs
from common import CORPUS, best_time, mb_per_s, scaled

from layerstore.reconstruct import GzipAnalyzer, ZstdAnalyzer, rebuild

ROUNDS = scaled(3, 1)
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}


def _decompress(kind, blob):
    if kind == "gzip":
        return gzip.decompress(blob)
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()


def _pieces(data, n=1 << 20):
    return [data[i:i + n] for i in range(0, len(data), n)]


def _analyze(kind, blob, plain):
    side = []
    if kind == "gzip":
        an = GzipAnalyzer(side.append)
        for piece in _pieces(blob):
            an.feed(piece)
        an.finish()
    else:
        an = ZstdAnalyzer(side.append)
        an.run(_pieces(blob), _pieces(plain))
    assert an.exact, an.reason
    return side


def _blobs():
    out = {}
    synth = b"".join(inputs.small_files(scaled(48 << 20, 4 << 20)))
    out["gzip", "synthetic-small-files-6"] = gzip.compress(synth, 6, mtime=0)
    out["zstd", "synthetic-small-files-3"] = zstandard.ZstdCompressor(level=3).compress(synth)
    for kind, magic in _MAGIC.items():
        real = {p.read_bytes() for p in (CORPUS / "images").glob("*/blobs/sha256/*")
                if p.read_bytes()[:len(magic)] == magic}
        if real:
            out[kind, "corpus-layers"] = b"".join(sorted(real, key=len))
    return out


BLOBS = _blobs()
IDS = sorted(BLOBS)


@pytest.mark.parametrize("key", IDS, ids=["-".join(k) for k in IDS])
def test_analyze(benchmark, key):
    kind, _name = key
    blob = BLOBS[key]
    plain = _decompress(kind, blob)
    native = best_time(lambda: _decompress(kind, blob), repeat=2)
    side = benchmark.pedantic(lambda: _analyze(kind, blob, plain), rounds=ROUNDS, iterations=1)
    side_bytes = sum(map(len, side))
    benchmark.extra_info.update(
        blob_bytes=len(blob), plain_bytes=len(plain), side_bytes=side_bytes,
        side_over_blob=round(side_bytes / len(blob), 4),
        mb_per_s=round(mb_per_s(len(plain), benchmark.stats.stats.min), 1),
        decompress_mb_per_s=round(mb_per_s(len(plain), native), 1))


@pytest.mark.parametrize("key", IDS, ids=["-".join(k) for k in IDS])
def test_rebuild(benchmark, key):
    kind, _name = key
    blob = BLOBS[key]
    plain = _decompress(kind, blob)
    side = _analyze(kind, blob, plain)
    out = benchmark.pedantic(lambda: b"".join(rebuild(side, _pieces(plain), kind)), rounds=ROUNDS, iterations=1)
    assert out == blob
    benchmark.extra_info.update(mb_per_s=round(mb_per_s(len(plain), benchmark.stats.stats.min), 1))
