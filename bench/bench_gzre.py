"""Exact gzip reconstruction (layerstore.gzre): analyzer and rebuilder
throughput, and the size of the reconstruction data, on a gzip -6 stream of
the synthetic small-files tree and on the real gzip layers of the corpus
images (written by klauspost pgzip in podman and skopeo).

Run: ``pytest bench/bench_gzre.py --benchmark-only``

``extra_info``: ``mb_per_s`` of plaintext (MB = 10**6 bytes, fastest round),
``zlib_inflate_mb_per_s`` (zlib inflating the same blob in the same test),
``side_bytes`` and ``side_over_blob`` (reconstruction data / gzip blob).
"""
import gzip
import time
import zlib

import pytest

import inputs
from common import CORPUS, best_time, mb_per_s, scaled

from layerstore.reconstruct import GzipAnalyzer, rebuild

ROUNDS = scaled(3, 1)


def _analyze(blob):
    side, plain = [], []
    an = GzipAnalyzer(side.append)
    for i in range(0, len(blob), 1 << 20):
        plain += an.feed(blob[i:i + (1 << 20)])
    plain += an.finish()
    assert an.exact, an.reason
    return plain, side


def _blobs():
    out = {}
    synth = b"".join(inputs.small_files(scaled(48 << 20, 4 << 20)))
    out["synthetic-small-files-gzip6"] = gzip.compress(synth, 6, mtime=0)
    real = [p for p in (CORPUS / "images").glob("*/blobs/sha256/*") if p.read_bytes()[:2] == b"\x1f\x8b"]
    if real:
        out["corpus-gzip-layers"] = b"".join(sorted({p.read_bytes() for p in real}, key=len))
    return out


BLOBS = _blobs()


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_analyze(benchmark, name):
    blob = BLOBS[name]
    z = best_time(lambda: zlib.decompress(blob, 47), repeat=2) if name.startswith("synthetic") else \
        best_time(lambda: gzip.decompress(blob), repeat=2)
    plain, side = benchmark.pedantic(lambda: _analyze(blob), rounds=ROUNDS, iterations=1)
    n = sum(map(len, plain))
    side_bytes = sum(map(len, side))
    benchmark.extra_info.update(
        blob_bytes=len(blob), plain_bytes=n, side_bytes=side_bytes,
        side_over_blob=round(side_bytes / len(blob), 4),
        mb_per_s=round(mb_per_s(n, benchmark.stats.stats.min), 1),
        zlib_inflate_mb_per_s=round(mb_per_s(n, z), 1))


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_rebuild(benchmark, name):
    blob = BLOBS[name]
    plain, side = _analyze(blob)

    def run():
        return b"".join(rebuild(side, plain))

    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    assert out == blob
    benchmark.extra_info.update(mb_per_s=round(mb_per_s(sum(map(len, plain)), benchmark.stats.stats.min), 1))
