"""Collection while other processes ingest and read.

For a bounded time (``LAYERSTORE_GC_STRESS_SECONDS``, default 12) three
processes load images (layers built from a shared pool of files, so every
ingest deduplicates against chunks that removed images also used) and
remove their older tags; one process reads tagged images slowly and checks
every byte; one process runs prune and repack in a loop. Packs are small
(1 MiB) so ingests seal packs before committing and repack always has
work; the reader keeps at most two pack files open, so a deleted pack
cannot hide behind a cached descriptor.

Afterwards every tagged image must read back and export byte-exact (the
oracle regenerates each image from its seed), reference counts must match
a recount from the recipes, and verify must be clean. Errors must be 0.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from layerstore.store import Store

from test_gc import check_refcounts, files, manifest_for, sha, tar_of

SRC = str(Path(__file__).resolve().parent.parent / "src")
TESTS = str(Path(__file__).resolve().parent)
REPO = "example.com/stress"
WORKERS = 3
SECONDS = float(os.environ.get("LAYERSTORE_GC_STRESS_SECONDS", "12"))

SHARED = files(900, 12, 5_000, 80_000, prefix="shared")


def build(w: int, n: int):
    """Image ``n`` of worker ``w``: (manifest digest, {digest: bytes},
    uncompressed layers). Deterministic."""
    import random

    rnd = random.Random(w * 100_000 + n)
    base = tar_of(files(800 + n % 3, 6, 20_000, 100_000, prefix="base"))
    own = files(10_000 + w * 1000 + n, 3, 5_000, 150_000, prefix="own")
    layers = [base, tar_of(rnd.sample(SHARED, 4) + own)]
    blobs = {}
    top = manifest_for(blobs, layers, gzip_layers=n % 2 == 1)
    return top, blobs, layers


PRELUDE = r"""
import functools, json, os, random, sys, time, traceback
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
root, stop, role, arg = sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
from layerstore import packs, store as store_mod
from layerstore.errors import BlobNotFoundError, ImageNotFoundError
readers = 2 if role == "reader" else 256
store_mod.PackSet = functools.partial(packs.PackSet, max_pack_size=1 << 20, max_open_readers=readers)
from test_gc_concurrency import REPO, build
from test_gc import write_layout
counts = {"errors": []}
def bump(k, n=1):
    counts[k] = counts.get(k, 0) + n
def failed(what):
    counts["errors"].append(what + ": " + traceback.format_exc(limit=3))
s = store_mod.Store.open(root)
"""

INGESTER = PRELUDE + r"""
n = 0
while not os.path.exists(stop):
    top, blobs, _ = build(arg, n)
    layout = os.path.join(os.path.dirname(stop), f"layout-{arg}-{n}")
    write_layout(__import__("pathlib").Path(layout), blobs, top)
    try:
        s.load(layout, name=f"{REPO}/w{arg}:{n}")
        bump("images_ingested")
        if n >= 2:
            s.remove(f"{REPO}/w{arg}:{n - 2}")
            bump("images_removed")
    except Exception:
        failed(f"worker {arg} image {n}")
    n += 1
s.close()
print(json.dumps(counts))
"""

READER = PRELUDE + r"""
rnd = random.Random(arg)
while not os.path.exists(stop):
    tags = s.tags()
    if not tags:
        time.sleep(0.01)
        continue
    t = rnd.choice(tags)
    w, n = map(int, t.repository.rsplit("/w", 1)[1:] + [t.tag])
    top, blobs, layers = build(w, n)
    wanted = sorted(blobs) + [sha for sha in (__import__("test_gc").sha(x) for x in layers) if sha not in blobs]
    expected = dict(blobs)
    expected.update({__import__("test_gc").sha(x): x for x in layers})
    for d in wanted:
        try:
            f = s.open_blob(d)
        except (BlobNotFoundError, ImageNotFoundError):
            bump("reads_skipped")  # the image was removed before this read began
            break
        try:
            with f:
                got = bytearray()
                while True:
                    piece = f.read(65536)
                    if not piece:
                        break
                    got += piece
                    time.sleep(0.005)  # slow: collections run while the blob streams
            if bytes(got) != expected[d]:
                counts["errors"].append(f"{d}: bytes differ")
            else:
                bump("reads_verified")
                bump("bytes_verified", len(got))
        except Exception:
            failed(f"reading {d} of {t.reference}")
s.close()
print(json.dumps(counts))
"""

COLLECTOR = PRELUDE + r"""
rnd = random.Random(arg)
while not os.path.exists(stop):
    try:
        p = s.prune(wait=5)
        bump("prunes_run")
        bump("prunes_deferred", p.deferred)
        bump("blobs_pruned", len(p.blobs))
        bump("chunks_pruned", p.chunks)
        r = s.repack(threshold=rnd.choice([0.0, 0.1, 0.3]), wait=5)
        bump("repacks_run")
        bump("repacks_deferred", r.deferred)
        bump("packs_deleted", len(r.packs_deleted))
        bump("bytes_reclaimed", r.reclaimed_bytes)
    except Exception:
        failed("collector")
    time.sleep(0.02)
s.close()
print(json.dumps(counts))
"""


def test_collection_while_processes_ingest_and_read(tmp_path):
    root = tmp_path / "store"
    stop = tmp_path / "stop"
    Store.open(root).close()
    args = lambda code, role, arg: [sys.executable, "-c", code, SRC, TESTS, str(root), str(stop), role, str(arg)]
    procs = [subprocess.Popen(args(INGESTER, "ingester", w), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in range(WORKERS)]
    procs.append(subprocess.Popen(args(READER, "reader", 7), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
    procs.append(subprocess.Popen(args(COLLECTOR, "collector", 9), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
    time.sleep(SECONDS)
    stop.touch()
    totals = {"errors": []}
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        counts = json.loads(out.strip().splitlines()[-1])
        for k, v in counts.items():
            totals[k] = totals[k] + v if k in totals else v
    print("\nconcurrency counts:", json.dumps({k: v for k, v in totals.items() if k != "errors"}),
          "errors:", len(totals["errors"]))
    assert totals["errors"] == []
    assert totals["images_ingested"] >= 2 * WORKERS
    assert totals["reads_verified"] >= 5
    assert totals["prunes_run"] >= 2 and totals["repacks_run"] >= 2
    assert totals["chunks_pruned"] > 0 and totals["packs_deleted"] > 0  # collection did real work meanwhile

    with Store.open(root) as s:
        tags = s.tags()
        assert len(tags) == 2 * WORKERS  # each worker's last two images
        for t in tags:
            w, n = int(t.repository.rsplit("/w", 1)[1]), int(t.tag)
            top, blobs, layers = build(w, n)
            assert s.resolve(t.reference).digest == top["digest"]
            for d, data in blobs.items():
                assert s.read_blob(d) == data
            for layer in layers:
                assert s.read_blob(sha(layer)) == layer
            out = tmp_path / f"export-{w}-{n}"
            s.save(t.reference, out, "oci")
            exported = {"sha256:" + p.name: p.read_bytes() for p in (out / "blobs" / "sha256").iterdir()}
            assert exported == blobs
        s.prune(all=True)
        s.repack(threshold=0.0)
        check_refcounts(s)
        report = s.verify()
        assert report.ok, report.problems
