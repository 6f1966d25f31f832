"""Layer scanner throughput and memory, against hashlib.sha256 on the same
bytes in the same run.

    python3 -m pytest bench/bench_scan.py --benchmark-only

Figures (issue: native core): on one thread the scanner should reach 0.30x
the hashlib SHA-256 throughput (it hashes every content byte twice and
gear-hashes most of them), 0.45x with the stream digest on a second thread;
scanning a 1 GiB stream keeps peak RSS under 64 MiB above the baseline.
"""
import io
import json
import os
import random
import subprocess
import sys
import tarfile

import pytest

from common import BENCH_DIR, CORPUS, hashlib_mb_per_s, mb_per_s, scaled
from inputs import file_content

from layerstore.scan import scan_layer

SYNTHETIC_SIZE = scaled(256 << 20, 8 << 20)
# Files of 16 MiB in the generated stream of the memory benchmark (1 GiB).
RSS_FILES = scaled(64, 2)


def synthetic_layer(total, seed=1, compressible=False):
    """A layer tar of ~total bytes: many small files, some medium, a few
    large, with content unique to each file (so nothing deduplicates);
    random bytes, or with ``compressible`` text-like bytes that gzip shrinks
    about 4x and LZ4 about 2x."""
    rnd = random.Random(seed)
    out = io.BytesIO()
    size_choices = [200, 3000, 20_000, 150_000, 1_000_000, 8_000_000]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        written, i = 0, 0
        while written < total:
            n = rnd.choice(size_choices)
            info = tarfile.TarInfo(f"usr/lib/pkg{i % 97}/file{i}")
            info.size = n
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(file_content(rnd, n, compressible)))
            written += n + 512
            i += 1
    return out.getvalue()


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_layer(SYNTHETIC_SIZE)


def real_layer():
    """The largest uncompressed layer of the real images."""
    path = CORPUS / "images" / "small-amd64.podman.docker-archive.tar"
    if not path.exists():
        pytest.skip(f"corpus image not found at {path}")
    with tarfile.open(path) as tf:
        members = [m for m in tf.getmembers() if m.name.endswith(".tar") and m.isfile()]
        biggest = max(members, key=lambda m: m.size)
        return tf.extractfile(biggest).read()


def _run_scan(benchmark, data, threads, label):
    def scan():
        return scan_layer(io.BytesIO(data), threads=threads)

    rounds = scaled(max(3, min(50, (512 << 20) // len(data))), 1)
    result = benchmark.pedantic(scan, rounds=rounds, iterations=1, warmup_rounds=1)
    rate = mb_per_s(len(data), benchmark.stats.stats.min)
    oracle = hashlib_mb_per_s(data)
    benchmark.extra_info.update(
        input=label,
        bytes=len(data),
        threads=threads,
        mb_per_s=round(rate, 1),
        hashlib_sha256_mb_per_s=round(oracle, 1),
        ratio_to_hashlib=round(rate / oracle, 3),
        chunks=len(result.chunks),
        entries=len(result.entries),
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_scan_synthetic_256mib(benchmark, synthetic, threads):
    _run_scan(benchmark, synthetic, threads, "synthetic 256 MiB tar")


@pytest.mark.parametrize("threads", [1, 2])
def test_scan_real_layer(benchmark, threads):
    data = real_layer()
    _run_scan(benchmark, data, threads, f"real layer ({len(data)} B)")


_RSS_CHILD = r"""
import io, json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[-1])
from common import peak_rss, reset_peak_rss
from layerstore.scan import scan_layer

class GeneratedTar(io.RawIOBase):
    # A tar generated on the fly: files of 16 MiB of pseudo-random bytes.
    def __init__(self, files=int(sys.argv[2]), size=16 << 20):
        import random, tarfile
        self.blocks = []
        self.rnd = random.Random(5)
        self.pattern = self.rnd.randbytes(1 << 20)
        self.files, self.size = files, size
        self.state = self._gen()
        self.pending = b""
    def _gen(self):
        import tarfile
        for i in range(self.files):
            info = tarfile.TarInfo(f"f{i}")
            info.size = self.size
            yield info.tobuf(format=tarfile.USTAR_FORMAT)
            for k in range(self.size >> 20):
                # vary each MiB so chunks are distinct
                yield bytes([i & 255, k & 255]) + self.pattern[2:]
        yield bytes(1024)
    def readable(self):
        return True
    def readinto(self, b):
        while not self.pending:
            try:
                self.pending = next(self.state)
            except StopIteration:
                return 0
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

import layerstore.scan  # imports done before measuring the baseline
base = reset_peak_rss()
scan = scan_layer(io.BufferedReader(GeneratedTar(), 1 << 20), threads=2)
peak = peak_rss()
print(json.dumps({"size": scan.size, "chunks": len(scan.chunks), "base_kib": base, "peak_kib": peak}))
"""


def test_scan_1gib_peak_rss(benchmark):
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

    def run():
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, src, str(RSS_FILES), BENCH_DIR], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    above = (result["peak_kib"] - result["base_kib"]) / 1024
    benchmark.extra_info.update(
        stream_bytes=result["size"],
        chunks=result["chunks"],
        peak_rss_above_baseline_mib=round(above, 1),
        mb_per_s=round(mb_per_s(result["size"], benchmark.stats.stats.min), 1),
    )
    assert result["size"] == RSS_FILES * ((16 << 20) + 512) + 1024
    assert above < 64, f"peak RSS {above:.1f} MiB above baseline"
