"""SHA-256 throughput: layerstore vs hashlib on the same 64 MiB buffer.

Run: ``pytest bench/bench_sha256.py --benchmark-only``

``benchmark.extra_info`` records, per test, ``mb_per_s`` (MB = 10**6 bytes,
from the fastest round) and for layerstore ``hashlib_mb_per_s`` and
``ratio_to_hashlib``; hashlib is timed inside the same test, before and after
the benchmark rounds, so the ratio compares numbers from one run on one
machine state. Target: ratio >= 0.9 with a hardware backend.
"""
import hashlib
import os

import pytest

from common import hashlib_mb_per_s, scaled

from layerstore import hashing
from layerstore._native import ffi, lib

SIZE = scaled(64 << 20, 4 << 20)
ROUNDS = scaled(5, 2)


@pytest.fixture(scope="module")
def buf():
    return os.urandom(SIZE)


def test_layerstore_sha256_64mib(benchmark, buf):
    expected = hashlib.sha256(buf).digest()
    before = hashlib_mb_per_s(buf, repeat=3)
    result = benchmark.pedantic(lambda: hashing.Sha256(buf).digest(), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    after = hashlib_mb_per_s(buf, repeat=3)
    assert result == expected
    ours = SIZE / benchmark.stats.stats.min / 1e6
    ref = max(before, after)
    benchmark.extra_info.update(
        backend=hashing.backend(),
        mb_per_s=round(ours, 1),
        hashlib_mb_per_s=round(ref, 1),
        ratio_to_hashlib=round(ours / ref, 3),
    )


def test_hashlib_sha256_64mib(benchmark, buf):
    benchmark.pedantic(lambda: hashlib.sha256(buf).digest(), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["mb_per_s"] = round(SIZE / benchmark.stats.stats.min / 1e6, 1)


@pytest.mark.parametrize("name", ["x86-sha-ni", "armv8-sha2", "portable"])
def test_layerstore_backend_64mib(benchmark, buf, name):
    if lib.ls_sha256_force_backend(name.encode()) != 0:
        pytest.skip(f"{name} not supported by this CPU")
    try:
        benchmark.pedantic(lambda: hashing.sha256_digest(buf), rounds=3, iterations=1)
    finally:
        lib.ls_sha256_force_backend(ffi.NULL)
    benchmark.extra_info.update(backend=name, mb_per_s=round(SIZE / benchmark.stats.stats.min / 1e6, 1))
