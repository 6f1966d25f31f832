"""Store benchmarks: ingest, dedup, export, memory, catalog size.

    python3 -m pytest bench/bench_store.py --benchmark-only

Each reports MB/s in extra_info next to the oracle measured in the same run
(hashlib.sha256 on the same bytes; zlib inflating the same gzip blob, streamed).
Targets (issue: packed chunk store): new layer >= 250 MB/s, already-stored
layer >= 500 MB/s, export >= 500 MB/s, gzip layer >= 1.5x zlib inflate alone,
peak RSS of a 1 GiB layer ingest < 128 MiB above baseline, a 10-million-chunk
catalog opens in < 1 s with O(log n) lookups.
"""
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from bench_scan import synthetic_layer
from common import BENCH_DIR, PROJECT_ROOT, hashlib_mb_per_s, mb_per_s, scaled, zlib_inflate_times
from inputs import images_dir

from layerstore.store import Store

LAYER_SIZE = int(os.environ.get("LAYERSTORE_BENCH_LAYER_MB", scaled("128", "8"))) << 20
# Files of 16 MiB in the generated layer of the memory benchmark (1 GiB).
RSS_FILES = scaled(64, 2)


@pytest.fixture(scope="module")
def layer():
    return synthetic_layer(LAYER_SIZE, seed=21)


@pytest.fixture
def store_dir():
    d = tempfile.mkdtemp(prefix="layerstore-bench-", dir=os.environ.get("LAYERSTORE_BENCH_TMP"))
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _report(benchmark, nbytes, oracle_name, oracle_rate, **extra):
    rate = mb_per_s(nbytes, benchmark.stats.stats.min)
    benchmark.extra_info.update(
        bytes=nbytes,
        mb_per_s=round(rate, 1),
        **{f"{oracle_name}_mb_per_s": round(oracle_rate, 1), f"ratio_to_{oracle_name}": round(rate / oracle_rate, 3)},
        **extra,
    )


def _ingest_into_fresh_stores(benchmark, store_dir, data, media_type=None, preload=None):
    """Time ingesting ``data`` into a new store per round (opened, and
    given ``preload`` first, outside the timed part)."""
    counter = iter(range(1000))

    def setup():
        store = Store.open(store_dir / f"s{next(counter)}")
        if preload is not None:
            store.ingest(io.BytesIO(preload))
        return (store,), {}

    def ingest(store):
        store.ingest(io.BytesIO(data), media_type=media_type)
        store.close()

    benchmark.pedantic(ingest, setup=setup, rounds=3, iterations=1)


def test_ingest_new_layer(benchmark, layer, store_dir):
    _ingest_into_fresh_stores(benchmark, store_dir, layer)
    _report(benchmark, len(layer), "hashlib_sha256", hashlib_mb_per_s(layer))


def test_ingest_already_stored_layer(benchmark, layer, store_dir):
    with Store.open(store_dir / "s") as store:
        store.ingest(io.BytesIO(layer))
        benchmark.pedantic(lambda: store.ingest(io.BytesIO(layer)), rounds=3, iterations=1)
    _report(benchmark, len(layer), "hashlib_sha256", hashlib_mb_per_s(layer))


def test_ingest_layer_with_stored_content(benchmark, layer, store_dir):
    """Same files, different tar (new mtimes): every chunk is a dedup hit but
    the blob itself is new."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as src:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
            for m in src.getmembers():
                m.mtime += 1
                dst.addfile(m, src.extractfile(m))
    retar = out.getvalue()
    _ingest_into_fresh_stores(benchmark, store_dir, retar, preload=layer)
    _report(benchmark, len(retar), "hashlib_sha256", hashlib_mb_per_s(retar))


def test_export_layer(benchmark, layer, store_dir):
    with Store.open(store_dir / "s") as store:
        digest = store.ingest(io.BytesIO(layer)).digest

        def export():
            n = 0
            with store.open_blob(digest) as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        return n
                    n += len(b)

        assert benchmark.pedantic(export, rounds=3, iterations=1) == len(layer)
    _report(benchmark, len(layer), "hashlib_sha256", hashlib_mb_per_s(layer))


@pytest.fixture(scope="module")
def text_layer():
    return synthetic_layer(LAYER_SIZE, seed=22, compressible=True)


def test_ingest_gzip_layer(benchmark, text_layer, store_dir):
    blob = zlib.compressobj(6, zlib.DEFLATED, 31)
    gz = blob.compress(text_layer) + blob.flush()
    _ingest_into_fresh_stores(benchmark, store_dir, gz, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    _report_gzip(benchmark, gz)


def _report_gzip(benchmark, gz, **extra):
    """Ingest of the gzip blob ``gz`` against zlib inflating it alone,
    streamed (the oracle of the figure) and in one call (for reference)."""
    streamed, one_call = zlib_inflate_times(gz)
    rate = mb_per_s(len(gz), benchmark.stats.stats.min)
    _report(benchmark, len(gz), "zlib_inflate", mb_per_s(len(gz), streamed), note="MB/s of the compressed blob",
            zlib_inflate_one_call_mb_per_s=round(mb_per_s(len(gz), one_call), 1),
            ratio_to_zlib_inflate_one_call=round(rate / mb_per_s(len(gz), one_call), 3), **extra)


def _largest_gzip_layer() -> Path:
    """The largest gzip blob of the OCI layouts in the images folder
    (``LAYERSTORE_BENCH_IMAGES``), or None."""
    best = None
    for blob in images_dir().glob("*/blobs/sha256/*"):
        with open(blob, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                continue
        if best is None or blob.stat().st_size > best.stat().st_size:
            best = blob
    return best


def test_ingest_real_gzip_layer(benchmark, store_dir):
    """A gzip layer written by a real tool, against zlib inflating it alone.
    With the full-size set (``LAYERSTORE_BENCH_IMAGES``) this is a 106 MB
    layer of binaries and libraries (268 MB of tar, 11.5k entries): more
    files and chunks per byte than the synthetic layer, and bytes that
    inflate slower. On the small default set (1 MB) start-up costs
    dominate."""
    path = _largest_gzip_layer()
    if path is None:
        pytest.skip(f"no gzip layer under {images_dir()}")
    gz = path.read_bytes()
    _ingest_into_fresh_stores(benchmark, store_dir, gz, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    _report_gzip(benchmark, gz, layer=path.name)


def test_dedup_on_real_images(benchmark, store_dir):
    """Logical bytes loaded vs physical bytes on disk (packs, indexes,
    catalog) for every real image (OCI layouts and docker-archives) of the
    images folder (``LAYERSTORE_BENCH_IMAGES``), after loading (gzip and
    zstd layers held as they came) and again after ``compact`` + ``prune`` +
    ``repack``, which deduplicate those layers' files and hold their blobs as
    reconstruction data against them."""
    images = images_dir()
    if not images.exists():
        pytest.skip(f"corpus not found at {images}")

    def load_all():
        root = store_dir / f"s{time.monotonic_ns()}"
        logical = 0
        with Store.open(root) as store:
            # OCI layouts (the full-size set also has skopeo "dir" copies of them)
            for layout in sorted(p for p in images.iterdir() if (p / "oci-layout").is_file()):
                logical += sum(b.stat().st_size for b in (layout / "blobs" / "sha256").iterdir())
                store.load(layout, name=f"corpus/{layout.name.replace('.', '-')}")
            for arc in sorted(images.glob("*.tar")):
                with tarfile.open(arc) as tf:
                    logical += sum(m.size for m in tf.getmembers() if m.isfile())
                store.load(arc, name=f"corpus/{arc.stem.replace('.', '-')}")
            layers = {str(row[4]) for row in store._catalog.iter_blobs() if row[3] in ("gzip", "zstd")}
            layers |= {row[0] for row in store._catalog.iter_blobs() if row[3] == "layer"}
            contents = {}
            for d in layers:
                with store.open_blob(d) as f, tarfile.open(fileobj=f, mode="r|") as tf:
                    for m in tf:
                        if m.isfile():
                            c = tf.extractfile(m).read()
                            contents[hashlib.sha256(c).digest()] = len(c)
            kept = {k: sum(row[1] for row in store._catalog.iter_blobs() if row[3] == k) for k in ("gzip", "zstd")}
        before = _disk_bytes(root)  # measured closed: the catalog's WAL is checkpointed
        with Store.open(root) as store:
            t0 = time.perf_counter()
            report = store.compact()
            store.prune()
            store.repack(threshold=0.0)
            seconds = time.perf_counter() - t0
        after = _disk_bytes(root)
        return logical, before, after, sum(contents.values()), kept, report, seconds

    logical, before, after, distinct, kept, report, seconds = benchmark.pedantic(load_all, rounds=1, iterations=1)
    benchmark.extra_info.update(
        logical_bytes=logical,
        physical_bytes_loaded=before,
        physical_bytes_compacted=after,
        ratio_logical_to_physical=round(logical / after, 2),
        distinct_file_content_bytes=distinct,
        gzip_blob_bytes=kept["gzip"],
        zstd_blob_bytes=kept["zstd"],
        layers_deduplicated_by_compact=len(report.deduplicated),
        compressed_blobs_rebuilt=len(report.rebuilt),
        reconstruction_data_bytes=report.data_bytes,
        physical_below_distinct_contents=after < distinct,
        compact_prune_repack_seconds=round(seconds, 2),
    )


def _disk_bytes(root):
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


_RSS_CHILD = r"""
import io, json, sys, tarfile, random
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[-1])
from common import peak_rss, reset_peak_rss
from layerstore.store import Store

class GeneratedTar(io.RawIOBase):
    # A tar generated on the fly: files of 16 MiB, distinct content.
    def __init__(self):
        self.rnd = random.Random(5)
        self.pattern = self.rnd.randbytes(1 << 20)
        self.it = self._gen()
        self.pending = memoryview(b"")
    def _gen(self):
        for i in range(int(sys.argv[3])):
            info = tarfile.TarInfo(f"f{i}")
            info.size = 16 << 20
            yield info.tobuf(format=tarfile.USTAR_FORMAT)
            for k in range(16):
                yield bytes([i, k]) + self.pattern[2:]
        yield bytes(1024)
    def readable(self):
        return True
    def readinto(self, b):
        while not self.pending:
            nxt = next(self.it, None)
            if nxt is None:
                return 0
            self.pending = memoryview(nxt)
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

store = Store.open(sys.argv[2])
base = reset_peak_rss()
info = store.ingest(io.BufferedReader(GeneratedTar(), 1 << 20))
peak = peak_rss()
store.close()
print(json.dumps({"size": info.size, "base_kib": base, "peak_kib": peak}))
"""


def test_ingest_1gib_layer_peak_rss(benchmark, store_dir):
    def run():
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(PROJECT_ROOT / "src"), str(store_dir / f"s{time.monotonic_ns()}"), str(RSS_FILES), BENCH_DIR],
            check=True, capture_output=True, text=True,
        )
        return json.loads(out.stdout)

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    above = (result["peak_kib"] - result["base_kib"]) / 1024
    benchmark.extra_info.update(
        layer_bytes=result["size"],
        peak_rss_above_baseline_mib=round(above, 1),
        mb_per_s=round(mb_per_s(result["size"], benchmark.stats.stats.min), 1),
    )
    assert above < 128, f"peak RSS {above:.1f} MiB above baseline"


CATALOG_CHUNKS = int(os.environ.get("LAYERSTORE_BENCH_CATALOG_CHUNKS", str(scaled(10_000_000, 50_000))))


def test_open_and_lookup_in_large_catalog(benchmark, store_dir):
    """A store whose catalog holds CATALOG_CHUNKS chunk rows (default 10
    million, written directly): time to open it and to look chunks up."""
    root = store_dir / "big"
    Store.open(root).close()
    con = sqlite3.connect(root / "catalog.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("INSERT INTO packs(id, name) VALUES (1, ?)", ("0" * 32,))
    rnd = random.Random(1)
    batch = 200_000
    sample = []
    for start in range(0, CATALOG_CHUNKS, batch):
        rows = [(rnd.randbytes(32), 1, i * 1000, 900, 1000, 1, 1) for i in range(start, min(start + batch, CATALOG_CHUNKS))]
        sample.extend(r[0] for r in rows[:: max(1, batch // 200)])
        con.executemany(
            "INSERT OR IGNORE INTO chunks(digest, pack, offset, stored_length, length, codec, refs) VALUES (?,?,?,?,?,?,?)", rows
        )
        con.commit()
    con.close()

    def open_and_lookup():
        t0 = time.perf_counter()
        store = Store.open(root)
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = store._catalog.chunk_locations(sample)
        looked = time.perf_counter() - t0
        store.close()
        return opened, looked, len(found)

    opened, looked, found = benchmark.pedantic(open_and_lookup, rounds=3, iterations=1)
    assert found == len(sample)
    benchmark.extra_info.update(
        chunks=CATALOG_CHUNKS,
        open_seconds=round(opened, 4),
        lookups=len(sample),
        lookup_microseconds_each=round(looked / len(sample) * 1e6, 2),
        catalog_bytes=(root / "catalog.db").stat().st_size,
    )
