"""Store.compact: gzip layer blobs kept as compressed bytes are re-stored as
reconstruction data against their layer. Oracles: the corpus files
(sha256 of every blob), gzip/zlib, and the store's own verify()."""
import gzip
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import zstandard

import pytest

from conftest import corpus_path, make_tar
from layerstore import recipe as recipe_codec
from layerstore.cli import cli
from layerstore.errors import CorruptBlobError
from layerstore.store import Store
from click.testing import CliRunner


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def disk_bytes(root) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def layer_tar(seed=1, n=40):
    return make_tar([(f"dir/f{i}.txt", (b"line %d of file %d\n" % (i, seed)) * (200 + 37 * i)) for i in range(n)])


def test_corpus_images_compact_and_read_back_exactly(tmp_path):
    root = tmp_path / "s"
    layouts = [corpus_path("images", n) for n in ("small-amd64-umoci.oci-gzip", "small-multiarch.oci-gzip",
                                                  "small-amd64.oci-zstd", "small-multiarch.oci-zstd")]
    blobs = {}
    for layout in layouts:
        for p in (layout / "blobs" / "sha256").iterdir():
            blobs["sha256:" + p.name] = p.read_bytes()
    gz = {d for d, b in blobs.items() if b[:2] == b"\x1f\x8b" or b[:4] == b"\x28\xb5\x2f\xfd"}
    assert len(gz) >= 8
    with Store.open(root) as store:
        for i, layout in enumerate(layouts):
            store.load(layout, name=f"corpus/compact{i}")
    before = disk_bytes(root)  # closed: the catalog's WAL is checkpointed
    with Store.open(root) as store:
        report = store.compact()
        assert sorted(report.rebuilt) == sorted(gz) and not report.skipped
        assert report.blob_bytes == sum(len(blobs[d]) for d in gz)
        assert 0 < report.data_bytes < 0.2 * report.blob_bytes
        for d, data in blobs.items():
            assert store.read_blob(d) == data, d
            if d in gz:
                assert store.stat(d).kind == ("gzip" if data[:2] == b"\x1f\x8b" else "zstd")
        assert not store.verify().faults
        assert store.compact().examined == 0  # nothing left to do
        store.prune()
        store.repack(threshold=0.0)
        for d, data in blobs.items():
            assert hashlib.sha256(store.read_blob(d)).hexdigest() == d.split(":")[1]
        assert not store.verify().faults
    after = disk_bytes(root)
    # loaded, the layers are held as their compressed bytes alone (4.3 MB);
    # compacted, as their deduplicated files and the reconstruction data
    compressed = sum(len(blobs[d]) for d in gz)
    assert compressed < before < compressed + (512 << 10), (before, compressed)
    assert after < before, (before, after)
    with Store.open(root) as store:  # and it all survives reopening
        for d, data in blobs.items():
            assert store.read_blob(d) == data


@pytest.mark.parametrize("kind,level", [("gzip", 1), ("gzip", 6), ("gzip", 9), ("zstd", 1), ("zstd", 3),
                                        ("zstd", 19), ("zstd", -3)])
def test_library_written_layers(tmp_path, kind, level):
    tar = layer_tar(abs(level))
    if kind == "gzip":
        blob = gzip.compress(tar, level, mtime=0)
    else:
        blob = zstandard.ZstdCompressor(level=level, write_checksum=level % 2 == 1).compress(tar)
    with Store.open(tmp_path / "s") as store:
        info = store.ingest(blob)
        assert info.kind == kind
        # ingested, the layer is its compressed bytes
        usage = store.df()
        assert usage.unique_bytes == len(blob)
        assert (usage.layers_not_deduplicated, usage.not_deduplicated_bytes) == (1, len(tar))
        assert not store.layer_info(sha(tar)).deduplicated
        report = store.compact()
        assert report.deduplicated == [sha(tar)] and report.layer_bytes == len(tar)
        assert report.rebuilt == [sha(blob)]
        layer = store.layer_info(sha(tar))
        assert layer.deduplicated and layer.content_bytes == report.content_bytes_written
        # compacted, it is its file contents, its tar headers (segments) and
        # the reconstruction data
        usage = store.df()
        assert usage.unique_bytes == len(tar) + report.data_bytes
        assert (usage.layers_not_deduplicated, usage.not_deduplicated_bytes) == (0, 0)
        raw = store._catalog.get_blob(sha(blob))[6]
        assert recipe_codec.decode(raw).source == sha(tar)
        assert store.read_blob(sha(blob)) == blob
        assert store.read_blob(sha(tar)) == tar
        with store.open_blob(sha(blob)) as f:  # streaming reads in small pieces
            got = b"".join(iter(lambda: f.read(777), b""))
        assert got == blob
        assert not store.verify().faults


def test_multi_frame_zstd_with_skippable_frames(tmp_path):
    a, b = layer_tar(7), layer_tar(8)
    cz = zstandard.ZstdCompressor(level=5)
    tar = a + b
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    # two frames of one tar cut in the middle, with a skippable frame between
    blob = cz.compress(tar[:len(a) + 100]) + skippable + cz.compress(tar[len(a) + 100:])
    with Store.open(tmp_path / "s") as store:
        assert store.ingest(blob).kind == "zstd"
        assert store.compact().rebuilt == [sha(blob)]
        assert store.read_blob(sha(blob)) == blob
        assert not store.verify().faults


def test_streams_it_cannot_express_are_left_as_they_are(tmp_path):
    tar = layer_tar(2)
    blob = gzip.compress(tar, 6, mtime=0) + bytes(5)  # zero padding after the member
    with Store.open(tmp_path / "s") as store:
        store.ingest(blob)
        report = store.compact()
        assert report.rebuilt == [] and report.examined == 1
        ((d, why),) = report.skipped
        assert d == sha(blob) and "padding" in why
        assert store.read_blob(sha(blob)) == blob
        assert not recipe_codec.decode(store._catalog.get_blob(sha(blob))[6]).source


def test_a_blob_changed_meanwhile_is_not_swapped(tmp_path):
    tar = layer_tar(3)
    blob = gzip.compress(tar, 6, mtime=0)
    with Store.open(tmp_path / "s") as store:
        store.ingest(blob)
        old = store._catalog.get_blob(sha(blob))[6]
        other = recipe_codec.encode_rebuilt(len(blob), sha(tar), recipe_codec.METHOD_GZIP, [], 0)
        assert store._swap_recipe(sha(blob), old + b"x", other, [], []) is False
        assert store._catalog.get_blob(sha(blob))[6] == old
        assert store.read_blob(sha(blob)) == blob


def test_damaged_layer_makes_the_rebuilt_blob_fail_loudly(tmp_path):
    tar = layer_tar(4)
    blob = gzip.compress(tar, 6, mtime=0)
    root = tmp_path / "s"
    with Store.open(root) as store:
        store.ingest(blob)
        store.compact()
    pack = max((root / "packs").glob("*.pack"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0xFF
    pack.write_bytes(bytes(data))
    with Store.open(root) as store:
        with pytest.raises(CorruptBlobError):
            store.read_blob(sha(blob))
        faults = store.verify().faults
        assert any(f.subject == sha(blob) for f in faults), faults


def test_cli_compact(tmp_path):
    tar = layer_tar(5)
    blob = gzip.compress(tar, 6, mtime=0)
    root = tmp_path / "s"
    with Store.open(root) as store:
        store.ingest(blob)
    runner = CliRunner()
    info = json.loads(runner.invoke(cli, ["--store", str(root), "--format", "json", "blobs", "info", sha(blob)]).output)
    assert info["stored_as"] == "its compressed bytes"
    res = runner.invoke(cli, ["--store", str(root), "df"])
    assert res.exit_code == 0 and "Layers held as they came: 1 (" in res.output, res.output
    res = runner.invoke(cli, ["--store", str(root), "compact"])
    assert res.exit_code == 0, res.output
    assert "Layers deduplicated: 1 (" in res.output
    assert "Compressed blobs rebuilt from their layer: 1 of 1" in res.output
    res = runner.invoke(cli, ["--store", str(root), "--format", "json", "blobs", "info", sha(blob)])
    info = json.loads(res.output)
    assert info["stored_as"] == "reconstruction data, rebuilt from its layer"
    assert 0 < info["reconstruction_data_bytes"] < len(blob)
    res = runner.invoke(cli, ["--store", str(root), "compact", "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.output)["examined"] == 0
    res = runner.invoke(cli, ["--store", str(root), "repack"])
    assert res.exit_code == 0, res.output
    with Store.open(root) as store:
        assert store.read_blob(sha(blob)) == blob
        assert store.read_blob(sha(tar)) == tar
        assert store.verify().ok


_KILL_CHILD = r"""
import sys
from layerstore.store import Store
with Store.open(sys.argv[1]) as s:
    print("ready", flush=True)
    s.compact()
print("done", flush=True)
"""


def test_kill_during_compaction_loses_nothing(tmp_path):
    root = tmp_path / "s"
    blobs, tars = [], []
    with Store.open(root) as store:
        for i in range(6):
            tar = layer_tar(10 + i, n=200)
            blob = gzip.compress(tar, 6, mtime=0)
            store.ingest(blob)
            blobs.append(blob)
            tars.append(tar)
    for delay in (0.05, 0.15, 0.3, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(root)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Store.open(root) as store:
            for data in blobs + tars:
                assert store.read_blob(sha(data)) == data
            assert not store.verify().faults
    with Store.open(root) as store:
        store.compact()
        for blob in blobs:
            raw = store._catalog.get_blob(sha(blob))[6]
            assert recipe_codec.decode(raw).source
            assert store.read_blob(sha(blob)) == blob
        assert not store.verify().faults


def _ingest_gzip_and_zstd_layers(root, count, seed, n):
    """Ingest ``count`` layers of ``n`` files into the store at ``root``,
    alternately zstd and gzip; returns (compressed blobs, tars)."""
    blobs, tars = [], []
    with Store.open(root) as store:
        for i in range(count):
            tar = layer_tar(seed + i, n=n)
            blob = gzip.compress(tar, 6, mtime=0) if i % 2 else zstandard.ZstdCompressor(level=3).compress(tar)
            store.ingest(blob)
            blobs.append(blob)
            tars.append(tar)
    return blobs, tars


_KILL_POINT_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[3])
from killpoints import die_on_nth, half_pwrite
from layerstore import catalog, packs
from layerstore.store import Store
point, nth = sys.argv[2], int(sys.argv[4])
if point == "pack-append":
    packs._pwrite_all = die_on_nth(packs._pwrite_all, nth, partial=half_pwrite)
elif point == "swap":
    catalog.Catalog.mark_to_compress = die_on_nth(catalog.Catalog.mark_to_compress, nth)
with Store.open(sys.argv[1]) as s:
    s.compact()
"""


@pytest.mark.parametrize("point,nth", [("pack-append", 1), ("pack-append", 4), ("swap", 1), ("swap", 3)])
def test_sigkill_while_deduplicating_layers_loses_nothing(tmp_path, point, nth):
    """Compact's first pass killed inside a pack append (half written) or
    inside the transaction that swaps a layer's recipe: on reopening, every
    blob and layer reads back exact, verify is clean, and compact finishes
    the work."""
    root = tmp_path / "s"
    blobs, tars = _ingest_gzip_and_zstd_layers(root, 4, seed=30, n=60)
    datas = [x for pair in zip(blobs, tars) for x in pair]
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _KILL_POINT_CHILD, str(root), point, tests_dir, str(nth)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with Store.open(root) as store:
        for data in datas:
            assert store.read_blob(sha(data)) == data
        report = store.verify()
        assert report.ok, report.problems
        store.compact()
        for data in datas[1::2]:
            assert store.layer_info(sha(data)).deduplicated
        for data in datas:
            assert store.read_blob(sha(data)) == data
        report = store.verify()
        assert report.ok, report.problems


def test_repair_keeps_a_compacted_blob_whose_layer_it_restores_from_another(tmp_path):
    # layer L, gzip blob G (compacted), zstd blob Z (kept). Damage L: repair
    # rebuilds L from Z, and G, intact itself, reads again.
    tar = layer_tar(21, n=60)
    g = gzip.compress(tar, 6, mtime=0)
    z = zstandard.ZstdCompressor(level=3).compress(tar)
    root = tmp_path / "s"
    with Store.open(root) as store:
        store.ingest(g)
        assert store.compact().rebuilt == [sha(g)]
        store.ingest(z)
        layer = recipe_codec.decode(store._catalog.get_blob(sha(tar))[6])
        loc = store._catalog.chunk_locations([layer.chunks[0].digest])[layer.chunks[0].digest]
    pack = root / "packs" / f"{loc[0]}.pack"
    data = bytearray(pack.read_bytes())
    data[loc[1] + 70] ^= 0xFF  # inside the first chunk of the layer
    pack.write_bytes(bytes(data))
    with Store.open(root) as store:
        with pytest.raises(CorruptBlobError):
            store.read_blob(sha(tar))
        store.verify(repair=True)
        assert store.read_blob(sha(tar)) == tar
        assert store.read_blob(sha(g)) == g
        assert store.read_blob(sha(z)) == z
        assert not store.verify().faults


def test_zstd_layer_starting_with_a_skippable_frame(tmp_path):
    tar = layer_tar(30)
    skip = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    blob = skip + zstandard.ZstdCompressor(level=3).compress(tar)
    with Store.open(tmp_path / "s") as store:
        info = store.ingest(blob)
        assert info.kind == "zstd" and str(info.diff_id) == sha(tar)
        assert store.compact().rebuilt == [sha(blob)]
        assert store.read_blob(sha(blob)) == blob


def test_two_processes_compacting_at_once(tmp_path):
    root = tmp_path / "s"
    blobs, _tars = _ingest_gzip_and_zstd_layers(root, 8, seed=40, n=120)
    procs = [subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(root)], stdout=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0 and out.split() == [b"ready", b"done"]
    with Store.open(root) as store:
        for blob in blobs:
            assert recipe_codec.decode(store._catalog.get_blob(sha(blob))[6]).source
            assert store.read_blob(sha(blob)) == blob
        assert not store.verify().faults   # reference counts included
        store.repack(threshold=0.0)
        for blob in blobs:
            assert store.read_blob(sha(blob)) == blob
