"""Throughput of pack writes and reads for 64 KiB chunks.

Usage: python bench/bench_packs.py [--codec lz4] [--mib 256] [--chunk 65536]

Data is semi-compressible: each chunk mixes 64-byte pieces drawn from a small
shared pool (repeats lz4 finds) with fresh random pieces. Reported MB/s are of
plaintext bytes. "encode only" is the codec alone; "add" is compression,
checksums and buffered writes; "add+flush(sync)" adds the final fdatasync.
Each write run creates a new pack; on VMs where first-touch memory is slow,
run 0 pays for fresh page-cache pages and later runs reuse those freed by the
previous pack. Reads cover pread, header and xxh3 checks and decompression
(pack in the page cache), then the same with SHA-256 verification.
"""
import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from layerstore.packs import PackReader, PackWriter, encode_chunk  # noqa: E402


def make_chunks(total, chunk, seed=1, repeat_share=0.6):
    rnd = random.Random(seed)
    pool = [rnd.randbytes(64) for _ in range(256)]
    pieces = chunk // 64
    chunks = []
    for _ in range(max(1, total // chunk)):
        chunks.append(b"".join(rnd.choice(pool) if rnd.random() < repeat_share else rnd.randbytes(64)
                               for _ in range(pieces)))
    return chunks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="lz4", choices=["lz4", "zstd", "none"])
    ap.add_argument("--mib", type=int, default=256, help="plaintext MiB to write")
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--distinct", type=int, default=512, help="distinct chunks generated and cycled")
    ap.add_argument("--runs", type=int, default=2, help="write passes (each a new pack)")
    args = ap.parse_args()

    base = make_chunks(args.distinct * args.chunk, args.chunk)
    n = args.mib * (1 << 20) // args.chunk
    data = [base[i % len(base)] for i in range(n)]
    digests = [hashlib.sha256(c).digest() for c in base]
    total = sum(len(c) for c in data)
    tmp = tempfile.mkdtemp(prefix="bench-packs-")
    try:
        t0 = time.perf_counter()
        for c in base:
            encode_chunk(c, args.codec)
        t_codec = (time.perf_counter() - t0) / len(base)

        results = []
        for run in range(args.runs):  # later runs reuse the page cache the previous pack freed
            w = PackWriter.create(tmp, codec=args.codec)
            t0 = time.perf_counter()
            locs = [w.add(digests[i % len(base)], c) for i, c in enumerate(data)]
            t_add = time.perf_counter() - t0
            w.flush(sync=True)
            t_write = time.perf_counter() - t0
            stored = w.size
            w.seal()
            results.append((t_add, t_write))
            if run + 1 < args.runs:
                os.unlink(w.path)
                os.unlink(os.path.join(tmp, w.pack_id + ".idx"))

        r = PackReader.open(w.path)
        t0 = time.perf_counter()
        for loc in locs:
            r.read(loc)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, loc in enumerate(locs):
            r.read(loc, digests[i % len(base)], verify_sha256=True)
        t_read_sha = time.perf_counter() - t0
        r.close()

        mb = total / 1e6
        print(f"codec={args.codec} chunk={args.chunk} entries={n} plaintext={mb:.0f} MB "
              f"stored/plain={stored / total:.3f}")
        print(f"encode only:       {args.chunk / t_codec / 1e6:8.0f} MB/s  {t_codec * 1e6:6.1f} us/entry")
        for run, (t_add, t_write) in enumerate(results):
            print(f"write run {run} add:   {mb / t_add:8.0f} MB/s  {t_add / n * 1e6:6.1f} us/entry; "
                  f"add+flush(sync): {mb / t_write:6.0f} MB/s")
        print(f"read:              {mb / t_read:8.0f} MB/s  {t_read / n * 1e6:6.1f} us/entry")
        print(f"read + SHA-256:    {mb / t_read_sha:8.0f} MB/s  {t_read_sha / n * 1e6:6.1f} us/entry")
    finally:
        shutil.rmtree(tmp)

if __name__ == "__main__":
    main()
