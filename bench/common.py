"""Helpers shared by the benchmarks: corpus location, quick mode and
same-run oracles.

Quick mode (``LAYERSTORE_BENCH_QUICK=1``, what ``.ci/run`` uses): every
benchmark runs on inputs a few MiB in size, so the suite finishes in about a
minute and cannot rot; its figures are not the ones to report.
"""
import hashlib
import os
import time
import zlib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = str(Path(__file__).resolve().parent)
CORPUS = PROJECT_ROOT.parent / "shared" / "corpus"

MB = 1_000_000

QUICK = os.environ.get("LAYERSTORE_BENCH_QUICK", "") not in ("", "0")


def scaled(full, quick):
    """``quick`` in quick mode, else ``full``."""
    return quick if QUICK else full


def mb_per_s(nbytes, seconds):
    """Throughput in MB/s (10^6 bytes per second)."""
    return nbytes / seconds / MB


def best_time(fn, repeat=5):
    """Shortest wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def hashlib_mb_per_s(data, repeat=5):
    """hashlib.sha256 throughput on ``data`` (MB/s, best of ``repeat``)."""
    view = memoryview(data)
    return mb_per_s(len(view), best_time(lambda: hashlib.sha256(view).digest(), repeat))


def zlib_inflate_times(gz, repeat=3):
    """(streamed, one call): best wall times in seconds of zlib inflating
    the gzip blob ``gz`` alone, in two ways.

    ``streamed`` feeds 1 MiB of input at a time and takes at most 2 MiB of
    output per call, discarding it: bounded memory, as ingest works, and
    the faster of the two (on a 223 MB layer, about 25% faster than one
    call). It is the oracle the gzip ingest figure is judged against.
    ``one call`` is ``zlib.decompressobj(31).decompress(gz)``, which also
    pays for growing and joining one output object of the whole tar."""

    def streamed():
        d = zlib.decompressobj(31)
        view = memoryview(gz)
        for i in range(0, len(view), 1 << 20):
            data = view[i:i + (1 << 20)]
            while data:
                d.decompress(data, 2 << 20)
                data = d.unconsumed_tail
        while d.decompress(b"", 2 << 20):  # output still held back
            pass

    return best_time(streamed, repeat), best_time(lambda: zlib.decompressobj(31).decompress(gz), repeat)


def reset_peak_rss():
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs)
    and return the current RSS in KiB, the baseline for :func:`peak_rss`."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def peak_rss():
    """Peak RSS in KiB since the last :func:`reset_peak_rss` (VmHWM)."""
    return _status_kib("VmHWM")


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")
