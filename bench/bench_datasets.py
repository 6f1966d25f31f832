"""Store benchmarks on whole data sets: the real image set and seeded
synthetic trees (see ``inputs.py``).

    python3 -m pytest bench/bench_datasets.py --benchmark-only
    LAYERSTORE_BENCH_IMAGES=/path/to/make-images-out/images python3 -m pytest bench/bench_datasets.py --benchmark-only

For each data set (``real``, ``small-files``, ``large-files``,
``base-derived``), timed in one process:

* ``test_ingest_new``: every layer into a fresh store, per codec (``lz4``,
  the default, and ``zstd``);
* ``test_ingest_stored``: every layer again into the store that holds them;
* ``test_export``: every layer read back (verified) to the end.

``extra_info`` gives ``input_bytes``, ``mb_per_s`` (input bytes per second of
the fastest round), and for ingest ``stored_bytes`` (every file under the
store root: packs, indexes, catalog), ``stored_ratio`` (stored / input),
``file_content_bytes`` and ``distinct_file_content_bytes`` (the file-level
dedup oracle, computed with ``tarfile`` and ``hashlib``).
"""
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import inputs
from common import mb_per_s, scaled

from layerstore.store import Store

ROUNDS = scaled(3, 1)
DATASETS = ["real", *inputs.SYNTHETIC]
_loaded = {}


def _dataset(name):
    """(layers, input bytes): layers are bytes, or paths for the real set."""
    if name not in _loaded:
        if name == "real":
            layers = inputs.real_layers()
            if not layers:
                pytest.skip(f"no docker-archives under {inputs.images_dir()}")
            total = sum(p.stat().st_size for p in layers)
        else:
            layers = inputs.SYNTHETIC[name]()
            total = sum(len(t) for t in layers)
        _loaded[name] = (layers, total)
    return _loaded[name]


def _source(layer):
    return io.BytesIO(layer) if isinstance(layer, (bytes, bytearray)) else layer


def ingest_all(store, layers):
    """Ingest every layer (as a plain tar layer); returns their digests."""
    return [store.ingest(_source(t), media_type="application/vnd.oci.image.layer.v1.tar").digest for t in layers]


def tree_size(root: Path) -> int:
    """Bytes of every file under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="layerstore-bench-ds-", dir=os.environ.get("LAYERSTORE_BENCH_TMP"))
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _report(benchmark, total, **extra):
    benchmark.extra_info.update(input_bytes=total, mb_per_s=round(mb_per_s(total, benchmark.stats.stats.min), 1), **extra)


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
@pytest.mark.parametrize("name", DATASETS)
def test_ingest_new(benchmark, work, name, codec):
    layers, total = _dataset(name)
    roots = []

    def setup():
        roots.append(work / f"s{len(roots)}")
        return (Store.open(roots[-1], codec=codec),), {}

    def ingest(store):
        ingest_all(store, layers)
        store.close()

    benchmark.pedantic(ingest, setup=setup, rounds=ROUNDS, iterations=1)
    stored = tree_size(roots[-1])
    _report(
        benchmark, total, layers=len(layers), codec=codec, stored_bytes=stored,
        stored_ratio=round(stored / total, 4),
        file_content_bytes=inputs.tree_bytes(layers),
        distinct_file_content_bytes=inputs.distinct_content_bytes(layers),
    )


@pytest.mark.parametrize("name", DATASETS)
def test_ingest_stored(benchmark, work, name):
    layers, total = _dataset(name)
    with Store.open(work / "s") as store:
        ingest_all(store, layers)
        benchmark.pedantic(lambda: ingest_all(store, layers), rounds=ROUNDS, iterations=1)
    _report(benchmark, total, layers=len(layers))


@pytest.mark.parametrize("name", DATASETS)
def test_export(benchmark, work, name):
    layers, total = _dataset(name)
    with Store.open(work / "s") as store:
        digests = ingest_all(store, layers)

        def export():
            n = 0
            for d in digests:
                with store.open_blob(d) as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        n += len(b)
            return n

        assert benchmark.pedantic(export, rounds=ROUNDS, iterations=1) == total
    _report(benchmark, total, layers=len(layers))
