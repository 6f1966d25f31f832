"""Helpers shared by the benchmarks: corpus location, quick mode and
same-run oracles.

Quick mode (``LAYERSTORE_BENCH_QUICK=1``, what ``.ci/run`` uses): every
benchmark runs on inputs a few MiB in size, so the suite finishes in about a
minute and cannot rot; its figures are not the ones to report.
"""
import hashlib
import os
import time
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
