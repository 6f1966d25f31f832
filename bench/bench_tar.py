"""Parse throughput of layerstore.tar on a large tar stream.

    python bench/bench_tar.py [ARCHIVE.tar] [--size-mb N]

Without an archive, a synthetic one is written to a temporary file (PAX
format; a mix of 1 KiB..4 MiB files, long names and symlinks), about
``--size-mb`` megabytes. Reports MB/s and entries/s for:

* ``iter_entries``   entries only (content skipped by the C parser),
* ``iter_events``    every event, without copying the bytes to Python,
* ``python tarfile`` for comparison (``getmembers`` on the same file).
"""
import argparse
import io
import os
import random
import sys
import tarfile
import tempfile
import time

from layerstore.tar import iter_entries, iter_events


def make_archive(path, size_mb):
    rng = random.Random(7)
    target = size_mb << 20
    written = 0
    blob = os.urandom(4 << 20)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        i = 0
        while written < target:
            i += 1
            r = rng.random()
            if r < 0.7:
                n = rng.randint(0, 16 << 10)
            elif r < 0.97:
                n = rng.randint(16 << 10, 512 << 10)
            else:
                n = rng.randint(512 << 10, 4 << 20)
            name = "usr/lib/pkg%d/%s/file%d" % (i % 97, "deep/" * (i % 30), i)
            ti = tarfile.TarInfo(name)
            ti.size = n
            ti.mtime = 1_700_000_000 + i
            tf.addfile(ti, io.BytesIO(blob[:n]))
            written += n + 1024
            if i % 10 == 0:
                s = tarfile.TarInfo("usr/bin/link%d" % i)
                s.type = tarfile.SYMTYPE
                s.linkname = "../lib/pkg%d/file%d" % (i % 97, i)
                tf.addfile(s)


def bench(label, fn, size):
    t0 = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t0
    print(f"{label:16s} {size / dt / 1e6:9.1f} MB/s  {n / dt:10.0f} entries/s  ({n} entries, {dt:.2f} s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("archive", nargs="?")
    ap.add_argument("--size-mb", type=int, default=512)
    args = ap.parse_args()
    tmp = None
    path = args.archive
    if path is None:
        tmp = tempfile.NamedTemporaryFile(suffix=".tar", delete=False)
        tmp.close()
        path = tmp.name
        make_archive(path, args.size_mb)
    size = os.path.getsize(path)
    print(f"{path}: {size / 1e6:.1f} MB")
    try:
        for _ in range(2):  # the second round runs with a warm page cache
            with open(path, "rb") as f:
                bench("iter_entries", lambda: sum(1 for _ in iter_entries(f)), size)
            with open(path, "rb") as f:
                bench("iter_events", lambda: sum(1 for e in iter_events(f, with_bytes=False) if e.kind == "entry"),
                      size)
            with tarfile.open(path) as tf:
                bench("python tarfile", lambda: len(tf.getmembers()), size)
    finally:
        if tmp is not None:
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
