"""Collection benchmarks: prune + repack after removing half of the images.

    python3 -m pytest bench/bench_gc.py --benchmark-only

``test_prune_repack_real_images``: every image of ``../shared/corpus/images``
loaded with ``Store.load``, one tag per top-level image; half of them
removed, then ``prune()`` and ``repack()`` timed. The reclaimed bytes
(pack and index files measured with ``os.stat`` before and after) are
compared with the bytes only the removed images used, measured
independently: the store's size minus the size of a fresh store holding
only the remaining images (exported from the first one and loaded). Both
stores are compacted, pruned and repacked first (``_settle``), so that
neither holds layers as they came. Target (issue: lifecycle): within 5%.

``test_prune_repack_synthetic``: the same on synthetic layers
(``LAYERSTORE_BENCH_GC_MB``, default 64 MiB of layer content, half of it
shared between images); reports repack MB/s (entry bytes copied per
second) and reclaimed bytes.

Each reports in ``extra_info``: ``reclaimed_bytes``, ``only_removed_bytes``,
``reclaim_error_percent``, ``prune_s``, ``repack_s``, ``repack_mb_per_s``.
"""
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from common import CORPUS, mb_per_s, scaled

from layerstore.store import Store

SYNTHETIC_MB = int(os.environ.get("LAYERSTORE_BENCH_GC_MB", scaled("64", "8")))
REPO = "bench.example/gc"


def disk_bytes(root: Path) -> int:
    return sum(os.stat(p).st_size for p in (root / "packs").iterdir() if p.suffix in (".pack", ".idx"))


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="layerstore-bench-gc-", dir=os.environ.get("LAYERSTORE_BENCH_TMP"))
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _one_tag_per_image(store):
    """Give each top-level image one tag of its own and drop the others;
    returns the tags, sorted by image digest."""
    tops = sorted({i.digest for i in store.images()})
    for t in store.tags():
        store.untag(t.reference)
    refs = []
    for k, d in enumerate(tops):
        refs.append(f"{REPO}/img:{k}")
        store.tag(d, refs[-1])
    return refs


def _oracle(root: Path, kept, work: Path, label: str) -> int:
    """Size of a fresh store holding only ``kept`` (exported from ``root``)."""
    ref_root = work / f"ref-{label}"
    with Store.open(root) as src, Store.open(ref_root) as dst:
        for k, tag in enumerate(kept):
            out = work / f"export-{label}-{k}"
            src.save(tag, out, "oci")
            dst.load(out, name=tag)
        _settle(dst)
    return disk_bytes(ref_root)


def _settle(store):
    """compact, prune and repack: a store holds gzip and zstd layers as they
    came until compact, so two stores of the same images loaded in different
    orders (or formats) differ in size until then."""
    store.compact()
    store.prune()
    store.repack(threshold=0.0)


def _run(benchmark, work, build, label):
    counter = iter(range(1000))
    state = {}

    def setup():
        root = work / f"{label}-{next(counter)}"
        refs = build(root)
        removed, kept = refs[::2], refs[1::2]
        with Store.open(root) as s:
            for r in removed:
                s.remove(r)
        state.update(root=root, kept=kept, before=disk_bytes(root))
        return (), {}

    def collect():
        with Store.open(state["root"]) as s:
            t0 = time.perf_counter()
            pruned = s.prune()
            t1 = time.perf_counter()
            packed = s.repack()
            t2 = time.perf_counter()
        state.update(pruned=pruned, packed=packed, prune_s=t1 - t0, repack_s=t2 - t1)

    benchmark.pedantic(collect, setup=setup, rounds=3, iterations=1)
    root = state["root"]
    full, after = state["before"], disk_bytes(root)
    reclaimed = full - after
    only_kept = _oracle(root, state["kept"], work, label)
    only_removed = full - only_kept
    packed = state["packed"]
    benchmark.extra_info.update(
        store_bytes_before=full,
        store_bytes_after=after,
        reclaimed_bytes=reclaimed,
        only_removed_bytes=only_removed,
        reclaim_error_percent=round(100.0 * (reclaimed - only_removed) / only_removed, 2),
        remaining_vs_fresh_store_bytes=after - only_kept,
        pruned_blobs=len(state["pruned"].blobs),
        pruned_chunks=state["pruned"].chunks,
        prune_s=round(state["prune_s"], 4),
        repack_s=round(state["repack_s"], 4),
        repack_bytes_moved=packed.bytes_moved,
        repack_mb_per_s=round(mb_per_s(packed.bytes_moved, state["repack_s"]), 1) if packed.bytes_moved else None,
        wall_s=round(state["prune_s"] + state["repack_s"], 4),
    )
    assert abs(reclaimed - only_removed) <= 0.05 * only_removed, (reclaimed, only_removed)


def test_prune_repack_real_images(benchmark, work):
    images = CORPUS / "images"
    if not images.exists():
        pytest.skip(f"corpus not found at {images}")

    def build(root):
        with Store.open(root) as s:
            for p in sorted(images.iterdir()):
                if p.name != "SHA256SUMS":
                    s.load(p, name=f"{REPO}/{p.name.split('.')[0]}")
            refs = _one_tag_per_image(s)
            _settle(s)
            return refs

    _run(benchmark, work, build, "real")


def _layer(files, seed):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files:
            info = tarfile.TarInfo(f"{seed}/{name}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_prune_repack_synthetic(benchmark, work):
    images = 8
    per_image = (SYNTHETIC_MB << 20) // images
    rnd = random.Random(5)
    shared = [(f"shared/{i}", rnd.randbytes(rnd.choice([20_000, 150_000, 1_000_000]))) for i in range(64)]

    def build(root):
        r = random.Random(6)
        with Store.open(root) as s:
            for k in range(images):
                own, n = [], 0
                while n < per_image // 2:
                    data = r.randbytes(r.choice([3_000, 20_000, 150_000, 1_000_000]))
                    own.append((f"own/{len(own)}", data))
                    n += len(data)
                picks, n = [], 0
                for f in r.sample(shared, len(shared)):
                    if n >= per_image // 2:
                        break
                    picks.append(f)
                    n += len(f[1])
                layout = root.parent / f"layout-{root.name}-{k}"
                _write_layout(layout, _layer(picks + own, k))
                s.load(layout, name=f"{REPO}/syn:{k}")
            return [f"{REPO}/syn:{k}" for k in range(images)]

    _run(benchmark, work, build, "synthetic")


def _write_layout(path: Path, tar: bytes):
    """An OCI image layout holding a one-layer image of ``tar``."""

    def put(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        (path / "blobs" / "sha256" / d[7:]).write_bytes(data)
        return d, len(data)

    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layer_d, layer_n = put(tar)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer_d]}}).encode()
    cfg_d, cfg_n = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d,
                                      "size": cfg_n},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d,
                                       "size": layer_n}]}).encode()
    m_d, m_n = put(manifest)
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_d, "size": m_n}]}))
