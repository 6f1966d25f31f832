"""Lifecycle: remove, prune, repack, df, verify/repair, and the leases that
make collection safe next to ingests and readers.

Oracles, independent of the code under test: the object graph walked from
the tags with ``json`` (manifests, indexes) and ``gzip``/``zstandard``
(a compressed layer's diff ID is the SHA-256 of its decompressed bytes);
chunk reference counts recounted from every blob's recipe, each chunk's
bytes checked with ``hashlib`` against the blob read back; disk use
measured with ``os.stat``; a fresh store holding only the images that
should remain; index files compared byte for byte.
"""
import gzip
import hashlib
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import zstandard

from conftest import corpus_path, make_tar
from layerstore import recipe
from layerstore.errors import ImageNotFoundError, StoreError
from layerstore.gc import ImageInUseError, StoreBusyError, live_leases
from layerstore.store import Store

SRC = str(Path(__file__).resolve().parent.parent / "src")
TESTS = str(Path(__file__).resolve().parent)
REPO = "example.com/gc"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- synthetic images --------------------------------------------------------------------

def files(seed, n, lo=2_000, hi=120_000, prefix="f"):
    rnd = random.Random(seed)
    return [(f"{prefix}{seed}/{i}", rnd.randbytes(rnd.randrange(lo, hi))) for i in range(n)]


def tar_of(entries) -> bytes:
    return make_tar(entries, mtime=0)


def _put(blobs, data: bytes) -> dict:
    d = sha(data)
    blobs[d] = data
    return d


def manifest_for(blobs, layers, gzip_layers=False, arch="amd64"):
    """Stage config + layers + manifest into ``blobs``; returns the
    manifest descriptor (dict)."""
    descs, diff_ids = [], []
    for tar in layers:
        diff_ids.append(sha(tar))
        data = gzip.compress(tar, mtime=0) if gzip_layers else tar
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else ""),
                      "digest": _put(blobs, data), "size": len(data)})
    config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _put(blobs, config),
                   "size": len(config)},
        "layers": descs}).encode()
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _put(blobs, manifest),
            "size": len(manifest), "platform": {"architecture": arch, "os": "linux"}}


def write_layout(path: Path, blobs: dict, top: dict):
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    for d, data in blobs.items():
        (path / "blobs" / "sha256" / d[7:]).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {k: v for k, v in top.items() if k != "platform"}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def image(tmp_path, name, layers, gzip_layers=False):
    """An OCI layout holding one image; returns (path, manifest digest, blobs)."""
    blobs = {}
    top = manifest_for(blobs, layers, gzip_layers)
    path = tmp_path / f"layout-{name.replace('/', '_').replace(':', '_')}"
    write_layout(path, blobs, top)
    return path, top["digest"], blobs


def index_image(tmp_path, label, platforms):
    """An OCI layout holding an image index; ``platforms``: {arch: layers}.
    Returns (path, index digest, {arch: manifest digest}, blobs)."""
    blobs, children = {}, {}
    descs = []
    for arch, layers in platforms.items():
        desc = manifest_for(blobs, layers, arch=arch)
        children[arch] = desc["digest"]
        descs.append(desc)
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": descs}).encode()
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": _put(blobs, raw), "size": len(raw)}
    path = tmp_path / f"layout-{label}"
    write_layout(path, blobs, top)
    return path, top["digest"], children, blobs


# --- oracles -----------------------------------------------------------------------------

def catalog(store) -> sqlite3.Connection:
    return sqlite3.connect(str(store.root / "catalog.db"))


def reachable(store, all_=True):
    """Digests the roots reach, walked with json and gzip/zstandard."""
    con = catalog(store)
    present = defaultdict(set)
    for p, c in con.execute("SELECT parent, child FROM image_children WHERE present = 1"):
        present[p].add(c)
    stack = [d for (d,) in con.execute("SELECT digest FROM tags")]
    if not all_:
        stack += [d for (d,) in con.execute("SELECT digest FROM images WHERE toplevel = 0")]
    seen = set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        data = store.read_blob(d)
        if data[:2] == b"\x1f\x8b":
            stack.append(sha(gzip.decompress(data)))
            continue
        if data[:4] == b"\x28\xb5\x2f\xfd":
            stack.append(sha(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()))
            continue
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if isinstance(doc, dict) and "manifests" in doc:
            stack += [m["digest"] for m in doc["manifests"] if m["digest"] in present[d]]
        elif isinstance(doc, dict) and "config" in doc and "layers" in doc:
            stack += [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]
    return seen


def decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()


def check_refcounts(store):
    """Recount chunk references from every blob's recipe (each chunk's bytes
    checked with hashlib against the blob read back) and compare with the
    catalog's counts. Returns the recount."""
    con = catalog(store)
    counted = Counter()
    for d, raw in con.execute("SELECT digest, recipe FROM blobs"):
        rec = recipe.decode(raw)
        data = store.read_blob(d)
        assert sha(data) == d
        if rec.inflated:  # a layer held as its compressed bytes: they decompress to it
            locs = store._catalog.chunk_locations(list({r.digest for r in rec.chunks}))
            data = b"".join(store._read_chunk(r, locs[r.digest]) for r in rec.chunks)
            assert decompress(data) == store.read_blob(d)
        for ref in rec.chunks:
            assert hashlib.sha256(data[ref.offset:ref.offset + ref.length]).digest() == ref.digest
        for c in {r.digest for r in rec.chunks}:
            counted[c] += 1
    stored = dict(con.execute("SELECT digest, refs FROM chunks"))
    assert set(counted) <= set(stored), "a recipe uses a chunk the catalog does not hold"
    assert stored == {c: counted.get(c, 0) for c in stored}
    return counted


def disk_bytes(root: Path) -> int:
    packs = root / "packs"
    return sum(os.stat(p).st_size for p in packs.iterdir() if p.suffix in (".pack", ".idx"))


def blob_rows(store):
    return {d for (d,) in catalog(store).execute("SELECT digest FROM blobs")}


def assert_exports(store, blobs):
    for d, data in blobs.items():
        assert store.read_blob(d) == data, d


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "store") as s:
        yield s


BASE = files(1, 8)


# --- refcounts ---------------------------------------------------------------------------

def test_refcounts_match_a_walk_of_the_corpus_graph(tmp_path):
    root = tmp_path / "store"
    with Store.open(root) as s:
        for p in sorted(corpus_path("images").iterdir()):
            if p.name != "SHA256SUMS":
                s.load(p, name=f"{REPO}/{p.name.split('.')[0]}:{len(p.name)}")
        first = check_refcounts(s)
        assert max(first.values()) > 1  # layers shared between the inputs
        for tag in [t.reference for t in s.tags()][::2]:
            s.remove(tag)
        check_refcounts(s)
        plain = s.prune()
        assert plain.blobs and not plain.deferred
        check_refcounts(s)
        assert blob_rows(s) >= reachable(s, all_=False)
        s.prune(all=True)
        counted = check_refcounts(s)
        # exactly what the tags reach is left, and exactly the chunks it uses
        assert blob_rows(s) == reachable(s)
        assert {d for (d,) in catalog(s).execute("SELECT digest FROM chunks")} == set(counted)
        assert s.verify().ok


# --- remove ------------------------------------------------------------------------------

def test_remove_by_tag_untags_until_the_last_tag(store, tmp_path):
    path, m, blobs = image(tmp_path, "a", [tar_of(BASE)])
    store.load(path, name=f"{REPO}/a:1")
    store.tag(f"{REPO}/a:1", f"{REPO}/a:2")
    r = store.remove(f"{REPO}/a:1")
    assert r.untagged == (f"{REPO}/a:1",) and r.deleted == ()
    assert store.resolve(f"{REPO}/a:2").digest == m
    r = store.remove(f"{REPO}/a:2")
    assert r.untagged == (f"{REPO}/a:2",) and r.deleted == (m,)
    with pytest.raises(ImageNotFoundError):
        store.resolve(m)
    assert [e.origin for e in store.tag_history(f"{REPO}/a:2")][-1] == "untag"
    # the blobs stay until prune; removal is catalog rows only
    assert_exports(store, blobs)
    with pytest.raises(ImageNotFoundError):
        store.remove(f"{REPO}/a:2")


def test_remove_by_digest_refuses_while_tagged_unless_forced(store, tmp_path):
    path, m, _ = image(tmp_path, "b", [tar_of(BASE)])
    store.load(path, name=f"{REPO}/b:1")
    with pytest.raises(ImageInUseError) as err:
        store.remove(m)
    assert err.value.needed_by == (f"{REPO}/b:1",)
    assert store.resolve(f"{REPO}/b:1").digest == m
    r = store.remove(m, force=True)
    assert r.untagged == (f"{REPO}/b:1",) and r.deleted == (m,)
    assert store.tags() == []


def test_remove_by_image_id_removes_every_manifest_with_that_config(store, tmp_path):
    layers = [tar_of(BASE)]
    p1, m1, b1 = image(tmp_path, "plain", layers)
    p2, m2, b2 = image(tmp_path, "gz", layers, gzip_layers=True)
    store.load(p1)
    store.load(p2)
    config = json.loads(b1[m1])["config"]["digest"]
    assert json.loads(b2[m2])["config"]["digest"] == config and m1 != m2
    r = store.remove(config[7:19])  # a unique prefix of the image ID
    assert set(r.deleted) == {m1, m2}
    assert store.images() == []


def test_remove_index_takes_its_platforms_but_refuses_a_needed_child(store, tmp_path):
    path, idx, kids, blobs = index_image(tmp_path, "multi", {"amd64": [tar_of(BASE)], "arm64": [tar_of(files(2, 3))]})
    store.load(path, name=f"{REPO}/multi:1")
    with pytest.raises(ImageInUseError) as err:
        store.remove(kids["arm64"])
    assert err.value.needed_by == (f"index {idx}",)
    r = store.remove(f"{REPO}/multi:1")
    assert set(r.deleted) == {idx, kids["amd64"], kids["arm64"]}
    assert catalog(store).execute("SELECT count(*) FROM images").fetchone()[0] == 0


def test_forced_removal_of_a_platform_keeps_the_index(store, tmp_path):
    path, idx, kids, blobs = index_image(tmp_path, "multi2", {"amd64": [tar_of(BASE)], "arm64": [tar_of(files(2, 3))]})
    store.load(path, name=f"{REPO}/multi2:1")
    store.remove(kids["arm64"], force=True)
    assert store.resolve(f"{REPO}/multi2:1", platform="linux/amd64").digest == kids["amd64"]
    present = dict(catalog(store).execute("SELECT child, present FROM image_children WHERE parent = ?", (idx,)))
    assert present == {kids["amd64"]: 1, kids["arm64"]: 0}
    store.prune()
    assert store.save(f"{REPO}/multi2:1", tmp_path / "out", "oci")
    assert kids["arm64"] not in blob_rows(store)


# --- prune -------------------------------------------------------------------------------

def test_prune_removes_dangling_images_then_all_untagged(store, tmp_path):
    kept_path, kept, kept_blobs = image(tmp_path, "kept", [tar_of(BASE + files(3, 2))])
    store.load(kept_path, name=f"{REPO}/kept:1")
    path, idx, kids, _ = index_image(tmp_path, "dangling", {"amd64": [tar_of(files(4, 3))],
                                                          "arm64": [tar_of(BASE + files(5, 3))]})
    store.load(path)  # unnamed: a dangling index
    loose = store.ingest(io.BytesIO(random.Random(6).randbytes(300_000))).digest
    assert [i.digest for i in store.images(dangling=True)] == [idx]

    plan = store.prune(dry_run=True)
    assert blob_rows(store) >= {idx, loose}  # a dry run changes nothing
    done = store.prune()
    assert (done.images, done.blobs, done.chunks, done.reclaimed_bytes) == \
        (plan.images, plan.blobs, plan.chunks, plan.reclaimed_bytes)
    assert done.images == (idx,)
    assert set(done.blobs) == {idx, loose}
    # the index's platform manifests are not top-level: kept, as docker keeps intermediate images
    assert blob_rows(store) == reachable(store, all_=False)
    assert store.images(dangling=True) == []

    plan = store.prune(all=True, dry_run=True)
    done = store.prune(all=True)
    assert set(done.images) == set(plan.images) == set(kids.values())
    assert blob_rows(store) == reachable(store) == set(kept_blobs)
    assert_exports(store, kept_blobs)
    check_refcounts(store)
    assert store.verify().ok


def test_prune_keeps_blobs_of_images_and_compressed_layers(store, tmp_path):
    tar = tar_of(BASE)
    path, m, blobs = image(tmp_path, "gzipped", [tar], gzip_layers=True)
    store.load(path, name=f"{REPO}/gz:1")
    report = store.prune(all=True)
    assert report.blobs == () and report.chunks == 0
    assert store.read_blob(sha(tar)) == tar  # the diff-ID layer of the gzip layer
    assert_exports(store, blobs)


# --- prune + repack: the space comes back -------------------------------------------------

def _load(root, layouts):
    with Store.open(root) as s:
        for path, name in layouts:
            s.load(path, name=name)


def test_prune_and_repack_return_exactly_the_bytes_only_removed_images_used(tmp_path):
    shared = tar_of(BASE)
    x = image(tmp_path, "x", [shared, tar_of(files(10, 12, 50_000, 200_000))])
    y = image(tmp_path, "y", [shared, tar_of(files(11, 4))])
    a, b = tmp_path / "a", tmp_path / "b"
    _load(a, [(x[0], f"{REPO}/x:1"), (y[0], f"{REPO}/y:1")])
    _load(b, [(y[0], f"{REPO}/y:1")])  # what should remain
    full, only_y = disk_bytes(a), disk_bytes(b)
    with Store.open(a) as s:
        s.remove(f"{REPO}/x:1")
        pruned = s.prune()
        assert disk_bytes(a) == full  # prune frees catalog rows; the pack bytes are now dead
        packed = s.repack(threshold=0.0)
        assert (packed.bytes_before, packed.bytes_after) == (full, disk_bytes(a))
        assert_exports(s, y[2])
        check_refcounts(s)
        assert s.verify().ok
    reclaimed = full - disk_bytes(a)
    assert packed.reclaimed_bytes == reclaimed
    only_x = full - only_y
    # one pack and index on each side: the difference is a few index records at most
    assert abs(reclaimed - only_x) <= 0.01 * only_x, (reclaimed, only_x)
    assert abs(pruned.reclaimed_bytes - only_x) <= 0.01 * only_x, (pruned.reclaimed_bytes, only_x)


def test_repack_threshold_skips_packs_that_are_mostly_live(tmp_path):
    root = tmp_path / "s"
    big = image(tmp_path, "big", [tar_of(files(12, 10, 60_000, 120_000))])
    small = image(tmp_path, "small", [tar_of(files(13, 1, 20_000, 30_000))])
    _load(root, [(big[0], f"{REPO}/big:1"), (small[0], f"{REPO}/small:1")])
    with Store.open(root) as s:
        s.remove(f"{REPO}/small:1")
        s.prune()
        before = disk_bytes(root)
        r = s.repack(threshold=0.5)
        assert r.packs_rewritten == () and disk_bytes(root) == before
        r = s.repack(threshold=0.0)
        assert len(r.packs_rewritten) == 1 and disk_bytes(root) < before
        assert_exports(s, big[2])
    with pytest.raises(ValueError):
        Store.open(root).repack(threshold=1.5)


def test_repack_merges_packs_and_moves_every_row(tmp_path):
    root = tmp_path / "s"
    layouts = [image(tmp_path, f"m{i}", [tar_of(files(20 + i, 3))]) for i in range(4)]
    garbage = [image(tmp_path, f"g{i}", [tar_of(files(25 + i, 2))]) for i in range(4)]
    for k, ((path, _m, _b), (gpath, _gm, _gb)) in enumerate(zip(layouts, garbage)):
        _load(root, [(path, f"{REPO}/m:{k}"), (gpath, f"{REPO}/g:{k}")])  # one pack per session
    with Store.open(root) as s:
        for k in range(4):
            s.remove(f"{REPO}/g:{k}")
        s.remove(f"{REPO}/m:0")
        s.prune()
        old = {p.stem for p in (root / "packs").glob("*.pack")}
        assert len(old) == 4
        r = s.repack(threshold=0.0)
        assert set(r.packs_rewritten) == set(r.packs_deleted) == old and len(r.packs_written) == 1
        names = {n for (n,) in catalog(s).execute(
            "SELECT DISTINCT p.name FROM chunks c JOIN packs p ON p.id = c.pack")}
        assert names == set(r.packs_written)
        for _p, _m, blobs in layouts[1:]:
            assert_exports(s, blobs)
        assert s.verify().ok
        assert s.repack(threshold=0.0).packs_rewritten == ()  # nothing dead is left


# --- leases: collection next to ingests and readers -----------------------------------------

def test_repack_keeps_an_old_pack_until_its_reader_closes(tmp_path):
    root = tmp_path / "s"
    layer = tar_of(files(30, 30, 60_000, 120_000))
    keep = image(tmp_path, "keep", [layer])
    gone = image(tmp_path, "gone", [tar_of(files(31, 10))])
    _load(root, [(keep[0], f"{REPO}/keep:1"), (gone[0], f"{REPO}/gone:1")])
    with Store.open(root) as s:
        s.remove(f"{REPO}/gone:1")
        s.prune()
        (old,) = [p for p in (root / "packs").glob("*.pack")]
        reader = s.open_blob(sha(layer))
        head = reader.read(100_000)  # chunk locations fetched: all in the old pack
        r = s.repack(threshold=0.0, wait=0.2)
        assert r.deferred and r.packs_deleted == () and old.exists()
        rest = reader.read()
        reader.close()
        assert head + rest == layer
        r = s.repack(threshold=0.0)
        assert r.packs_deleted == (old.stem,) and not old.exists()
        assert s.read_blob(sha(layer)) == layer


def _pause_after_first(obj, name, reached: threading.Event, go: threading.Event, when=lambda *a: True):
    """Wrap ``obj.name`` so that its first call for which ``when(*args)``
    holds returns its result only once ``go`` is set (after setting
    ``reached``)."""
    original = getattr(obj, name)
    state = {"first": True}

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        if state["first"] and when(*args):
            state["first"] = False
            reached.set()
            assert go.wait(30)
        return result

    setattr(obj, name, wrapper)


def _ingest_paused_after_dedup(s, data):
    """Start ingesting ``data`` on a thread that stops right after its dedup
    lookup; returns (thread, results, go)."""
    reached, go = threading.Event(), threading.Event()
    _pause_after_first(s, "_live_chunks", reached, go)
    out = {}

    def run():
        try:
            out["info"] = s.ingest(io.BytesIO(data))
        except Exception as exc:  # examined by the test
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert reached.wait(30)
    return t, out, go


def test_prune_waits_for_an_ingest_that_deduplicated_against_dying_chunks(tmp_path):
    root = tmp_path / "s"
    content = files(40, 6)
    old = image(tmp_path, "old", [tar_of(content)])
    _load(root, [(old[0], f"{REPO}/old:1")])
    new_layer = tar_of(content[::-1])  # the same files: every chunk deduplicates
    with Store.open(root) as s:
        t, out, go = _ingest_paused_after_dedup(s, new_layer)
        s.remove(f"{REPO}/old:1")
        assert s.prune(wait=0.2).deferred  # the ingest's lease is older than the mark
        assert catalog(s).execute("SELECT count(*) FROM chunks WHERE refs = 0").fetchone()[0] == 0
        # a prune with time to wait finishes once the ingest has committed
        result = {}
        p = threading.Thread(target=lambda: result.update(r=s.prune(wait=30)))
        p.start()
        time.sleep(0.3)
        assert p.is_alive()
        go.set()
        t.join()
        p.join()
        assert "error" not in out, out.get("error")
        assert not result["r"].deferred and result["r"].blobs
        assert s.read_blob(sha(new_layer)) == new_layer
        check_refcounts(s)
        assert s.verify().ok


def test_without_leases_the_same_race_loses_the_deduplicated_chunks(tmp_path, monkeypatch):
    """Control: the race above is real. With leases replaced by no-ops, the
    prune deletes the chunks the paused ingest relies on, and its commit
    fails."""
    import layerstore.gc as gc

    root = tmp_path / "s"
    content = files(41, 6)
    old = image(tmp_path, "old", [tar_of(content)])
    _load(root, [(old[0], f"{REPO}/old:1")])
    with Store.open(root) as s:
        t, out, go = _ingest_paused_after_dedup(s, tar_of(content[::-1]))
        monkeypatch.setattr(gc, "live_leases", lambda directory: {})
        s.remove(f"{REPO}/old:1")
        assert not s.prune(wait=0.2).deferred
        go.set()
        t.join()
    assert isinstance(out.get("error"), StoreError) and "vanished" in str(out["error"])


def test_a_load_that_found_a_blob_keeps_it_and_a_later_load_restores_a_condemned_one(tmp_path):
    root = tmp_path / "s"
    layer = tar_of(files(42, 4))
    path, m, blobs = image(tmp_path, "late", [layer])
    with Store.open(root) as s:
        s.ingest(io.BytesIO(layer))  # stored but referenced by nothing: prunable
        reached, go = threading.Event(), threading.Event()
        _pause_after_first(s, "_has_live", reached, go, when=lambda d: d == sha(layer))
        out = {}
        t = threading.Thread(target=lambda: out.update(r=s.load(path, name=f"{REPO}/late:1")))
        t.start()
        assert reached.wait(30)
        # the load found the layer stored; a prune condemns it and waits for the load
        assert s.prune(wait=0.2).deferred
        assert s.has(sha(layer)) and not s._has_live(sha(layer))
        result = {}
        p = threading.Thread(target=lambda: result.update(r=s.prune(wait=30)))
        p.start()
        time.sleep(0.3)
        assert p.is_alive()
        go.set()
        t.join()
        p.join()
        # the load committed while the prune waited: the sweep sees the layer reachable
        assert result["r"].blobs == () and not result["r"].deferred
        assert_exports(s, blobs)

        # condemned while a reader holds a lease; a new load stores it again
        s.remove(f"{REPO}/late:1")
        reader = s.open_blob(sha(layer))
        assert s.prune(wait=0.1).deferred
        assert not s._has_live(sha(layer))
        s.load(path, name=f"{REPO}/late:2")
        reader.close()
        assert s.prune().blobs == ()
        assert_exports(s, blobs)
        check_refcounts(s)


def test_a_blob_stored_again_during_a_prune_survives_it(tmp_path):
    root = tmp_path / "s"
    data = random.Random(43).randbytes(400_000)
    with Store.open(root) as s:
        d = s.ingest(io.BytesIO(data)).digest
        reader = s.open_blob(d)  # holds the prune between its mark and its sweep
        result = {}
        p = threading.Thread(target=lambda: result.update(r=s.prune(wait=30)))
        p.start()
        deadline = time.monotonic() + 30
        while s._has_live(d):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert s.ingest(io.BytesIO(data)).digest == d  # condemned, so stored again: revived
        reader.close()
        p.join()
        assert result["r"].blobs == ()
        assert s.read_blob(d) == data


def test_ingest_does_not_deduplicate_against_chunks_at_zero_references(tmp_path):
    """A prune has found chunks at zero references and is about to delete
    them; an ingest of the same content that starts now must write its own
    copies, since no lease of it was seen."""
    root = tmp_path / "s"
    content = files(44, 5)
    old = image(tmp_path, "zero", [tar_of(content)])
    _load(root, [(old[0], f"{REPO}/zero:1")])
    new_layer = tar_of(content[::-1])
    with Store.open(root) as s:
        s.remove(f"{REPO}/zero:1")
        calls = {"n": 0}
        at_delete, resume = threading.Event(), threading.Event()
        original = s._wait_quiescent

        def second_wait_pauses(deadline):
            ok = original(deadline)
            calls["n"] += 1
            if calls["n"] == 2:  # after the chunk candidates were read and waited for
                at_delete.set()
                assert resume.wait(30)
            return ok

        s._wait_quiescent = second_wait_pauses
        result = {}
        p = threading.Thread(target=lambda: result.update(r=s.prune(wait=30)))
        p.start()
        assert at_delete.wait(30)
        t, out, go = _ingest_paused_after_dedup(s, new_layer)
        resume.set()
        p.join()
        go.set()
        t.join()
        assert "error" not in out, out.get("error")
        assert result["r"].chunks > 0
        assert s.read_blob(sha(new_layer)) == new_layer
        check_refcounts(s)
        assert s.verify().ok


def test_repack_leaves_packs_an_ingest_sealed_before_committing(tmp_path):
    root = tmp_path / "s"
    layer = tar_of(files(45, 12, 60_000, 120_000))
    with Store.open(root) as s:
        s._packs.max_pack_size = 300_000  # the ingest seals several packs before it commits
        reached, go = threading.Event(), threading.Event()
        _pause_after_first(s, "_prepare", reached, go)
        out = {}
        t = threading.Thread(target=lambda: out.update(r=s.ingest(io.BytesIO(layer))))
        t.start()
        assert reached.wait(30)
        sealed = {p.stem for p in (root / "packs").glob("*.idx")}
        assert len(sealed) >= 2
        r = s.repack(threshold=0.0, wait=0.2)  # every sealed pack looks dead: no row points at it yet
        assert r.deferred and r.packs_deleted == ()
        assert {p.stem for p in (root / "packs").glob("*.pack")} >= sealed
        go.set()
        t.join()
        assert s.read_blob(sha(layer)) == layer
        r = s.repack(threshold=0.0)
        assert not set(r.packs_deleted) & sealed
        assert s.read_blob(sha(layer)) == layer
        assert s.verify().ok


def test_repack_rechecks_a_pack_before_deleting_it(tmp_path):
    """The ingest commits after the repack listed its sealed pack as empty
    but before the repack looked for leases: the last check before
    unlinking sees the new rows and keeps the pack."""
    root = tmp_path / "s"
    layer = tar_of(files(46, 12, 60_000, 120_000))
    with Store.open(root) as s:
        s._packs.max_pack_size = 300_000
        reached, go = threading.Event(), threading.Event()
        _pause_after_first(s, "_prepare", reached, go)
        out = {}
        t = threading.Thread(target=lambda: out.update(r=s.ingest(io.BytesIO(layer))))
        t.start()
        assert reached.wait(30)
        switched, resume = threading.Event(), threading.Event()
        original = s._switch

        def switch_then_pause(*args):
            retire = original(*args)
            switched.set()
            assert resume.wait(30)
            return retire

        s._switch = switch_then_pause
        result = {}
        p = threading.Thread(target=lambda: result.update(r=s.repack(threshold=0.0, wait=30)))
        p.start()
        assert switched.wait(30)
        go.set()
        t.join()  # committed: its rows point into the packs the repack found empty
        resume.set()
        p.join()
        assert result["r"].packs_deleted == ()
        assert s.read_blob(sha(layer)) == layer
        assert s.verify().ok


def test_one_collection_at_a_time(tmp_path):
    root = tmp_path / "s"
    with Store.open(root) as s, Store.open(root) as other:
        with other._gc_lock(1.0):
            with pytest.raises(StoreBusyError):
                s.prune(wait=0.1)
            with pytest.raises(StoreBusyError):
                s.repack(wait=0.1)
        assert not s.prune(wait=0.1).deferred


LEASE_CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from layerstore.store import Store
s = Store.open(sys.argv[2])
reader = s.open_blob(sys.argv[3])
reader.read(10)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_leases_of_dead_processes_do_not_hold_collections(tmp_path):
    root = tmp_path / "s"
    with Store.open(root) as s:
        d = s.ingest(io.BytesIO(random.Random(7).randbytes(200_000))).digest
    proc = subprocess.run([sys.executable, "-c", LEASE_CHILD, SRC, str(root), d], timeout=60)
    assert proc.returncode == -9
    assert len(list((root / "locks").glob("*.lease"))) == 1
    with Store.open(root) as s:
        r = s.prune(wait=5)
        assert not r.deferred and r.blobs == (d,)
    assert live_leases(str(root / "locks")) == {}
    assert list((root / "locks").glob("*.lease")) == []


# --- df ----------------------------------------------------------------------------------

def test_df_against_measured_and_recounted_figures(store, tmp_path):
    shared = tar_of(BASE)
    x = image(tmp_path, "dx", [shared, tar_of(files(50, 3))])
    y = image(tmp_path, "dy", [shared, tar_of(files(51, 3))], gzip_layers=True)
    z = image(tmp_path, "dz", [tar_of(files(52, 2))])
    store.load(x[0], name=f"{REPO}/x:1")
    store.load(y[0], name=f"{REPO}/y:1")
    store.load(z[0])  # dangling
    store._packs.rotate()  # sealed: its index is on disk before and after
    u = store.df()
    con = catalog(store)
    blobs = {d: store.read_blob(d) for (d,) in con.execute("SELECT digest FROM blobs")}
    assert (u.images, u.active, u.blobs) == (3, 2, len(blobs))
    assert u.pack_bytes == disk_bytes(store.root)
    assert u.logical_bytes == sum(len(b) for b in blobs.values())
    chunk_rows = {d: (slen, length) for d, slen, length in
                  con.execute("SELECT digest, stored_length, length FROM chunks WHERE refs > 0")}
    seg = 0
    for d, raw in con.execute("SELECT digest, recipe FROM blobs"):
        rec = recipe.decode(raw)
        seg += len(rec.segments)
        if not rec.method:  # chunks and segments tile the blob
            assert len(blobs[d]) == len(rec.segments) + sum(r.length for r in rec.chunks)
    assert u.unique_bytes == seg + sum(length for _s, length in chunk_rows.values())
    assert u.dedup_ratio == round(u.logical_bytes / u.unique_bytes, 3)
    # reclaimable = what prune(all=True) and a full repack free: measured
    before = disk_bytes(store.root)
    store.prune(all=True)
    store.repack(threshold=0.0)
    freed = before - disk_bytes(store.root)
    assert abs(u.reclaimable - freed) <= 0.02 * freed, (u.reclaimable, freed)
    per = {i.digest: i for i in u.per_image}
    assert per[x[1]].shared_bytes > 0 and per[y[1]].shared_bytes > 0 and per[z[1]].shared_bytes == 0
    assert per[z[1]].dangling and per[x[1]].tags == (f"{REPO}/x:1",)
    assert per[z[1]].size == sum(len(b) for b in z[2].values())


# --- verify and repair -------------------------------------------------------------------

def _chunk_location(store, digest: bytes):
    return catalog(store).execute(
        "SELECT p.name, c.offset, c.stored_length FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.digest = ?",
        (digest,)).fetchone()


def _flip(root, pack, offset):
    path = root / "packs" / f"{pack}.pack"
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def _first_chunk(store, blob):
    raw = catalog(store).execute("SELECT recipe FROM blobs WHERE digest = ?", (blob,)).fetchone()[0]
    return recipe.decode(raw).chunks[0].digest


def test_flipped_byte_in_a_layer_is_repaired_from_its_gzip_blob(tmp_path):
    root = tmp_path / "s"
    tar = tar_of(files(60, 4))
    path, m, blobs = image(tmp_path, "g", [tar], gzip_layers=True)
    _load(root, [(path, f"{REPO}/g:1")])
    with Store.open(root) as s:
        # the layer deduplicated, its gzip blob still held as its bytes
        assert s.compact([sha(tar)]).deduplicated == [sha(tar)]
        c = _first_chunk(s, sha(tar))
        pack, off, _slen = _chunk_location(s, c)
        _flip(root, pack, off + 64 + 5)
        report = s.verify()
        assert not report.ok
        faults = {(f.kind, f.subject) for f in report.faults}
        assert ("chunk", c.hex()) in faults and ("blob", sha(tar)) in faults
        assert f"{REPO}/g:1" in report.broken_images
        fixed = s.verify(repair=True)
        assert any("rebuilt from its compressed blob" in line for line in fixed.repairs), fixed.repairs
        after = s.verify()
        assert after.ok, after.problems
        assert s.resolve(f"{REPO}/g:1").digest == m
        assert s.read_blob(sha(tar)) == tar
        assert_exports(s, blobs)
        check_refcounts(s)


def test_flipped_byte_in_an_unrecoverable_layer_drops_that_image_only(tmp_path):
    root = tmp_path / "s"
    good = image(tmp_path, "good", [tar_of(BASE)])
    bad_tar = tar_of(BASE + files(61, 2))
    bad = image(tmp_path, "bad", [bad_tar])
    _load(root, [(good[0], f"{REPO}/good:1"), (bad[0], f"{REPO}/bad:1")])
    with Store.open(root) as s:
        own = [r.digest for r in recipe.decode(catalog(s).execute(
            "SELECT recipe FROM blobs WHERE digest = ?", (sha(bad_tar),)).fetchone()[0]).chunks]
        shared = set(r.digest for r in recipe.decode(catalog(s).execute(
            "SELECT recipe FROM blobs WHERE digest = ?", (sha(tar_of(BASE)),)).fetchone()[0]).chunks)
        c = next(d for d in own if d not in shared)
        pack, off, _ = _chunk_location(s, c)
        _flip(root, pack, off + 64 + 100)
        report = s.verify()
        chunk_fault = next(f for f in report.faults if f.kind == "chunk")
        assert chunk_fault.subject == c.hex() and chunk_fault.breaks == (f"{REPO}/bad:1",)
        assert report.broken_images == [f"{REPO}/bad:1"]
        s.verify(repair=True)
        assert s.verify().ok
        assert [t.reference for t in s.tags()] == [f"{REPO}/good:1"]
        assert s.tag_history(f"{REPO}/bad:1")[-1].origin == "repair"
        assert_exports(s, good[2])
        check_refcounts(s)


def test_truncated_pack_loses_only_what_it_held(tmp_path):
    root = tmp_path / "s"
    first = image(tmp_path, "first", [tar_of(files(62, 4))])
    second = image(tmp_path, "second", [tar_of(files(63, 4))])
    _load(root, [(first[0], f"{REPO}/first:1")])
    before = {p.stem for p in (root / "packs").glob("*.pack")}
    _load(root, [(second[0], f"{REPO}/second:1")])
    (pack,) = [p for p in (root / "packs").glob("*.pack") if p.stem not in before]
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 2)
    with Store.open(root) as s:
        report = s.verify()
        assert f"{REPO}/second:1" in report.broken_images and f"{REPO}/first:1" not in report.broken_images
        assert any(f.kind == "pack" and f.subject == pack.stem for f in report.faults)
        s.verify(repair=True)
        after = s.verify()
        assert after.ok, after.problems
        assert [t.tag for t in s.tags()] == ["1"] and s.resolve(f"{REPO}/first:1").digest == first[1]
        assert_exports(s, first[2])
        check_refcounts(s)


def test_deleted_index_is_rebuilt_byte_for_byte(tmp_path):
    root = tmp_path / "s"
    path, m, blobs = image(tmp_path, "idx", [tar_of(files(64, 4))])
    _load(root, [(path, f"{REPO}/idx:1")])
    (idx,) = (root / "packs").glob("*.idx")
    original = idx.read_bytes()
    with Store.open(root) as s:
        idx.unlink()
        report = s.verify()
        assert [(f.kind, f.subject) for f in report.faults] == [("pack", idx.stem)]
        assert report.broken_images == []
        s.verify(repair=True)
        assert idx.read_bytes() == original
        assert s.verify().ok
        assert_exports(s, blobs)


def test_corrupt_tag_row_is_restored_from_its_history(tmp_path):
    root = tmp_path / "s"
    path, m, blobs = image(tmp_path, "t", [tar_of(files(65, 2))])
    _load(root, [(path, f"{REPO}/t:1")])
    with sqlite3.connect(str(root / "catalog.db")) as con:
        con.execute("UPDATE tags SET digest = ?", ("sha256:" + "0" * 64,))
    with Store.open(root) as s:
        report = s.verify()
        assert [(f.kind, f.subject, f.breaks) for f in report.faults] == [("tag", f"{REPO}/t:1", (f"{REPO}/t:1",))]
        s.verify(repair=True)
        assert s.verify().ok
        assert s.resolve(f"{REPO}/t:1").digest == m
        assert_exports(s, blobs)


def test_wrong_reference_counts_are_reported_and_set_from_the_recipes(tmp_path):
    root = tmp_path / "s"
    path, m, blobs = image(tmp_path, "r", [tar_of(files(66, 3))])
    _load(root, [(path, f"{REPO}/r:1")])
    with sqlite3.connect(str(root / "catalog.db")) as con:
        con.execute("UPDATE chunks SET refs = refs + 3 WHERE digest IN "
                    "(SELECT digest FROM chunks ORDER BY digest LIMIT 2)")
    with Store.open(root) as s:
        report = s.verify()
        assert [f.kind for f in report.faults] == ["refcount", "refcount"]
        s.verify(repair=True)
        assert s.verify().ok
        check_refcounts(s)


# --- crash safety of repack ----------------------------------------------------------------

REPACK_CHILD = r"""
import functools, os, signal, sys
sys.path.insert(0, sys.argv[1])
from layerstore import catalog, gc, packs
from layerstore.store import Store
root, point, nth = sys.argv[2], sys.argv[3], int(sys.argv[4])
s = Store.open(root)
sys.path.insert(0, sys.argv[5])
from killpoints import die_on_nth as _die, half_index

def die_on_nth(fn, when=None, partial=None):
    return _die(fn, nth, when=when, partial=partial)

if point == "copy":
    packs.PackWriter._append = die_on_nth(packs.PackWriter._append)
elif point == "seal":
    packs._write_index_file = die_on_nth(packs._write_index_file, partial=half_index)
elif point == "switch":
    catalog.Catalog.pack_id = die_on_nth(catalog.Catalog.pack_id)
elif point == "wait":
    gc.LifecycleMixin._wait_quiescent = die_on_nth(gc.LifecycleMixin._wait_quiescent)
elif point == "delete":
    os.unlink = die_on_nth(os.unlink, when=lambda path, *a, **k: str(path).endswith(".idx"))
s.repack(threshold=0.0)
print("completed")
"""

REPACK_POINTS = [("copy", 1), ("copy", 7), ("seal", 1), ("switch", 1), ("wait", 1), ("delete", 1)]


@pytest.mark.parametrize("point,nth", REPACK_POINTS, ids=[f"{p}-{n}" for p, n in REPACK_POINTS])
def test_sigkill_during_repack_loses_nothing(tmp_path, point, nth):
    root, ref = tmp_path / "s", tmp_path / "ref"
    keep = [image(tmp_path, f"k{i}", [tar_of(BASE + files(70 + i, 3, 30_000, 90_000))]) for i in range(2)]
    drop = image(tmp_path, "drop", [tar_of(files(79, 6, 30_000, 90_000))])
    _load(root, [(keep[0][0], f"{REPO}/k:0"), (drop[0], f"{REPO}/drop:1")])
    _load(root, [(keep[1][0], f"{REPO}/k:1")])
    _load(ref, [(keep[0][0], f"{REPO}/k:0"), (keep[1][0], f"{REPO}/k:1")])
    with Store.open(root) as s:
        s.remove(f"{REPO}/drop:1")
        s.prune()
    proc = subprocess.run([sys.executable, "-c", REPACK_CHILD, SRC, str(root), point, str(nth),
                           str(Path(__file__).resolve().parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)
    with Store.open(root) as s:
        for _p, _m, blobs in keep:
            assert_exports(s, blobs)
        check_refcounts(s)
        s.repack(threshold=0.0)  # finishes the interrupted work
        report = s.verify()
        assert report.ok, report.problems
        for _p, _m, blobs in keep:
            assert_exports(s, blobs)
    assert abs(disk_bytes(root) - disk_bytes(ref)) <= 0.01 * disk_bytes(ref), (disk_bytes(root), disk_bytes(ref))


def test_repack_reencodes_linked_chunks_whose_group_head_died(tmp_path):
    """Small compressible files are stored as linked groups (each chunk
    compressed against the ones before it). When the files that head the
    groups die, repack moves the live members re-encoded alone, and they
    read back exact."""
    rnd = random.Random(11)
    words = [b"usr", b"lib", b"share", b"python3", b"dist-packages", b"__init__.py", b"\n", b" = ", b"import"]

    def text(n):
        out = bytearray()
        while len(out) < n:
            out += rnd.choice(words)
        return bytes(out[:n])

    contents = [(f"pkg/m{i}.py", text(rnd.randrange(500, 9000))) for i in range(40)]
    first = tar_of(contents)                         # every file: heads and members
    kept = tar_of(contents[20:] + [("own", text(3000))])  # the later half only
    root = tmp_path / "s"
    with Store.open(root) as s:
        s.ingest(io.BytesIO(first))
        codecs = [c for (c,) in catalog(s).execute("SELECT codec FROM chunks")]
        assert 3 in codecs
        path, digest, _ = image(tmp_path, "kept", [kept])
        s.load(path, name="example.test/kept:1")
        s.prune()  # the untagged first layer goes; its chunks that only it used die
        r = s.repack(threshold=0.0)
        assert r.packs_deleted
        assert s.read_blob(sha(kept)) == kept
        report = s.verify()
        assert report.ok, report.problems


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_repack_compresses_the_chunks_a_compressed_layer_left_uncompressed(tmp_path, compression):
    """Compact, deduplicating a gzip or zstd layer, writes its new file
    chunks as they are and lists their packs; the next repack compresses
    them (linked groups included) as an uncompressed layer's would have
    been at ingest, and every blob still reads back exact."""
    rnd = random.Random(5)
    words = [b"usr", b"lib", b"share", b"python3", b"site-packages", b"__init__.py", b"\n", b" = ", b"def "]

    def text(n):
        return b"".join(rnd.choice(words) for _ in range(n // 4))[:n]

    entries = [(f"src/m{i}.py", text(rnd.randrange(300, 9000))) for i in range(60)]
    entries += [(f"data/{i}.txt", text(rnd.randrange(200_000, 700_000))) for i in range(4)]
    entries += [("bin/random", rnd.randbytes(300_000))]  # does not compress: stays as it is
    layer = tar_of(entries)
    blob = gzip.compress(layer, 6, mtime=0) if compression == "gzip" else zstandard.ZstdCompressor(level=3).compress(layer)

    with Store.open(tmp_path / "plain") as s:
        s.ingest(io.BytesIO(layer))
        plain_codecs = dict(catalog(s).execute("SELECT digest, codec FROM chunks").fetchall())
        plain_stored = sum(n for (n,) in catalog(s).execute("SELECT stored_length FROM chunks"))
    assert {0, 1, 3} <= set(plain_codecs.values())  # as they are, lz4, lz4 linked to the chunk before

    root = tmp_path / "s"
    with Store.open(root) as s:
        info = s.ingest(io.BytesIO(blob))
        assert info.diff_id == sha(layer)
        assert s.compact([sha(layer)]).deduplicated == [sha(layer)]  # the layer only: its blob stays as it is
        rows = dict(catalog(s).execute("SELECT digest, codec FROM chunks").fetchall())
        assert set(plain_codecs) <= set(rows)
        assert all(rows[d] == 0 for d in plain_codecs)  # written as they are
        listed = {n for (n,) in catalog(s).execute("SELECT p.name FROM to_compress t JOIN packs p ON p.id = t.pack")}
        assert listed == {p.stem for p in (root / "packs").glob("*.pack")}
        layer_bytes = sum(n for d, n in catalog(s).execute("SELECT digest, length FROM chunks") if d in plain_codecs)
        assert layer_bytes >= sum(len(data) for _name, data in entries)  # files, and bytes after the archive's end
        assert s.df().to_compress_bytes == layer_bytes  # not the chunks of the kept gzip/zstd stream
        before = disk_bytes(root)

        r = s.repack(threshold=1.0)  # nothing is dead: only the listed packs are rewritten
        assert set(r.packs_rewritten) == listed and not r.problems
        assert r.chunks_compressed == sum(1 for c in plain_codecs.values() if c)
        assert catalog(s).execute("SELECT count(*) FROM to_compress").fetchone()[0] == 0
        after = dict(catalog(s).execute("SELECT digest, codec FROM chunks").fetchall())
        assert {d: after[d] for d in plain_codecs} == plain_codecs
        stored = sum(n for d, n in catalog(s).execute("SELECT digest, stored_length FROM chunks")
                     if d in plain_codecs)
        assert stored <= plain_stored
        assert disk_bytes(root) < before - (len(layer) - plain_stored) // 2
        assert s.read_blob(info.digest) == blob
        assert s.read_blob(info.diff_id) == layer
        report = s.verify()
        assert report.ok, report.problems
        assert s.repack(threshold=1.0).packs_rewritten == ()
        assert s.df().to_compress_bytes == 0


def _gzip_text_layer(seed, n_small=30, big=()):
    rnd = random.Random(seed)
    words = [b"usr", b"lib", b"share", b"python3", b"site-packages", b"__init__.py", b"\n", b" = ", b"def "]

    def text(n):
        return b"".join(rnd.choice(words) for _ in range(n // 4))[:n]

    layer = tar_of([(f"s{seed}/m{i}.py", text(rnd.randrange(300, 9000))) for i in range(n_small)]
                   + [(f"s{seed}/big{i}", text(n)) for i, n in enumerate(big)])
    return layer, gzip.compress(layer, 6, mtime=0)


def _compressible_left_uncompressed(store) -> int:
    """Chunks stored as they are that lz4 would shrink."""
    from layerstore.packs import encode_chunk
    n = 0
    for d, pack, off, length in catalog(store).execute(
            "SELECT c.digest, p.name, c.offset, c.length FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.codec = 0"):
        with open(store.root / "packs" / f"{pack}.pack", "rb") as f:
            f.seek(off + 64)
            n += encode_chunk(f.read(length))[0] != 0
    return n


@pytest.mark.parametrize("commit_before", ["copy", "switch"])
def test_repack_racing_a_compressed_layer_commit_leaves_nothing_uncompressed(tmp_path, commit_before):
    """A compaction fills a pack with a gzip layer's uncompressed chunks
    (the pack is sealed on the way) and commits while another store handle
    repacks: before the repack copies the rows (the pack was not listed
    when the repack started) or between the copy and the switch (the pack
    keeps rows the copy did not see). Either way the next repack leaves no
    compressible chunk uncompressed and nothing listed."""
    root = tmp_path / "s"
    layer1, gz1 = _gzip_text_layer(1, big=(150_000,))
    layer2, gz2 = _gzip_text_layer(2, big=(350_000,) * 6)
    writer = Store.open(root)
    writer._packs.max_pack_size = 1 << 20  # so that a pack is sealed inside the compaction
    if commit_before == "switch":
        writer.ingest(io.BytesIO(gz1))
        writer.compact([sha(layer1)])
    writer.ingest(io.BytesIO(gz2))
    repacker = Store.open(root)
    step = "_copy_live" if commit_before == "copy" else "_switch"
    original = getattr(repacker, step)
    done = []

    def commit_then(*args, **kwargs):
        setattr(repacker, step, original)
        done.append(writer.compact([sha(layer2)]))
        return original(*args, **kwargs)

    setattr(repacker, step, commit_then)
    repacker.repack(threshold=1.0, wait=0.5)
    assert done and done[0].deduplicated == [sha(layer2)]
    writer.close()
    with repacker:
        repacker.repack(threshold=1.0)
        assert _compressible_left_uncompressed(repacker) == 0
        listed = catalog(repacker).execute("SELECT count(*) FROM to_compress").fetchone()[0]
        assert listed == 0
        assert repacker.read_blob(sha(gz2)) == gz2 and repacker.read_blob(sha(layer2)) == layer2
        if commit_before == "switch":
            assert repacker.read_blob(sha(gz1)) == gz1
        report = repacker.verify()
        assert report.ok, report.problems


def test_a_store_without_compression_does_not_defer(tmp_path):
    layer, gz = _gzip_text_layer(3)
    with Store.open(tmp_path / "s", codec="none") as s:
        s.ingest(io.BytesIO(gz))
        assert s.compact().deduplicated == [sha(layer)]
        assert catalog(s).execute("SELECT count(*) FROM to_compress").fetchone()[0] == 0
        assert s.repack(threshold=1.0).packs_rewritten == ()


def test_a_rolled_back_commit_does_not_leave_a_stale_pack_id(tmp_path):
    """A batch whose commit fails rolls back the pack row it inserted; the
    id goes to the next pack another process registers, and this process's
    next commit must not write its rows under that id."""
    root = tmp_path / "s"
    layer1, gz1 = _gzip_text_layer(4)
    layer2, gz2 = _gzip_text_layer(5)
    a = Store.open(root)
    with pytest.raises(RuntimeError):
        with a.batch() as b:
            b.ingest(io.BytesIO(gz1))

            def fail(cur):
                raise RuntimeError("tag insert failed")

            b.commit(extra=fail)
    with Store.open(root) as other:  # another process: its pack takes the freed id
        other.ingest(io.BytesIO(random.Random(6).randbytes(50_000)))
    a.ingest(io.BytesIO(gz2))
    a.close()
    with Store.open(root) as s:
        assert s.read_blob(sha(gz2)) == gz2 and s.read_blob(sha(layer2)) == layer2
        report = s.verify()
        assert report.ok, report.problems


def test_an_interrupted_pack_deletion_is_not_a_fault(tmp_path):
    """Deleting a pack unlinks .pack, then .idx: a crash in between leaves
    an index alone. Nothing is lost: verify reports no fault and recovery
    (run by repack) removes the index."""
    root = tmp_path / "s"
    with Store.open(root) as s:
        s.ingest(io.BytesIO(tar_of(files(7, 3))))
        s.ingest(io.BytesIO(b"kept" * 1000))
    (root / "packs" / ("0" * 32 + ".idx")).write_bytes(b"left behind")
    with Store.open(root) as s:
        report = s.verify()
        assert report.ok, report.problems
        s.repack()
        assert not (root / "packs" / ("0" * 32 + ".idx")).exists()
        assert s.read_blob(sha(b"kept" * 1000)) == b"kept" * 1000
