"""Throughput of content-defined chunking: layerstore vs pyfastcdc.

Run:  pytest bench/bench_chunking.py --benchmark-only

Both chunkers cut the same 64 MiB of seeded random data (SHAKE-256 output)
in one thread with min/avg/max = 16/64/256 KiB and normalization level 2.
pyfastcdc uses its Cython backend (the fastest it has; it warns and falls
back to pure Python when that is missing, which this benchmark refuses).
The two use different gear tables and mask layouts, so the cut points
differ; only the speed is compared.

``extra_info`` of each result:
    mb_per_s            layerstore throughput, MB/s (10^6 bytes per second)
    pyfastcdc_mb_per_s  pyfastcdc throughput on the same data, same run
    ratio               mb_per_s / pyfastcdc_mb_per_s
    memcpy_mb_per_s     copying the same buffer, for scale
Throughputs are best-of-7 wall-clock times; pyfastcdc and memcpy run right
before each timed layerstore round, so all three see the same machine load.
The targets are >= 1000 MB/s and ratio > 1.
"""
import hashlib
import time

import pytest

from common import scaled

from layerstore.chunking import (
    DEFAULT_AVG_SIZE,
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_SIZE,
    Chunker,
    chunk_boundaries,
)

SIZE = scaled(64 << 20, 4 << 20)
ROUNDS = scaled(7, 2)
PARAMS = dict(min_size=DEFAULT_MIN_SIZE, avg_size=DEFAULT_AVG_SIZE, max_size=DEFAULT_MAX_SIZE)


@pytest.fixture(scope="module")
def data():
    return hashlib.shake_256(b"bench-chunking").digest(SIZE)


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _mb_per_s(seconds):
    return SIZE / seconds / 1e6


@pytest.fixture(scope="module")
def references(data):
    """Untimed-by-pytest-benchmark runs of pyfastcdc and memcpy on the same
    buffer; each call times one pass of each and records the seconds."""
    pyfastcdc = pytest.importorskip("pyfastcdc")
    from pyfastcdc.cy import FastCDC  # the compiled backend, or ImportError

    fast = FastCDC(normalized_chunking=2, **PARAMS)
    dst = memoryview(bytearray(SIZE))
    times = {"pyfastcdc": [], "memcpy": []}

    def run_pyfastcdc():
        for _ in fast.cut_buf(data):
            pass

    def run_memcpy():
        dst[:] = data  # one memcpy (bytearray slice assignment is far slower)

    def once():
        times["memcpy"].append(_seconds(run_memcpy))
        times["pyfastcdc"].append(_seconds(run_pyfastcdc))

    once.times = times
    once.version = pyfastcdc.__version__
    return once


def _bench(benchmark, references, fn, *args, **kwargs):
    """Benchmark fn with pyfastcdc and memcpy run just before each round, so
    all three see the same machine load; record best-of-round speeds."""
    for key in references.times:
        references.times[key].clear()

    def setup():
        references()
        return args, kwargs

    result = benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, iterations=1)
    mb = _mb_per_s(benchmark.stats.stats.min)
    ref = _mb_per_s(min(references.times["pyfastcdc"]))
    benchmark.extra_info.update(
        mb_per_s=mb,
        pyfastcdc_mb_per_s=ref,
        ratio=mb / ref,
        memcpy_mb_per_s=_mb_per_s(min(references.times["memcpy"])),
        pyfastcdc_version=references.version,
    )
    return result


def test_chunk_boundaries_64mib(benchmark, data, references):
    cuts = _bench(benchmark, references, chunk_boundaries, data, **PARAMS)
    assert cuts[-1] == SIZE


def test_chunker_feed_1mib_pieces_64mib(benchmark, data, references):
    """Streaming form: 1 MiB reads through Chunker.feed (zero-copy slices)."""
    view = memoryview(data)
    piece = 1024 * 1024

    def run():
        chunker = Chunker(**PARAMS)
        cuts = []
        for off in range(0, SIZE, piece):
            cuts += chunker.feed(view[off : off + piece])
        return cuts + chunker.finish()

    cuts = _bench(benchmark, references, run)
    assert cuts[-1] == SIZE
