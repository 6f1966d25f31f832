"""Crash safety: a writer process is SIGKILLed at many points of an ingest
(inside a pack append, between pack and catalog, inside the catalog
transaction, after it, while sealing a pack index); the store is reopened
(its own recovery runs on open) and must hold every earlier blob byte-exact,
hold the interrupted blob either whole or not at all, and verify clean.

The child process installs the kill points by wrapping internal functions
(test code only; the library has no crash hooks)."""
import hashlib
import io
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from layerstore.store import Store

SRC = str(Path(__file__).resolve().parent.parent / "src")


def layer(seed, files=12, max_size=600_000):
    rnd = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(files):
            data = rnd.randbytes(rnd.randrange(1, max_size))
            info = tarfile.TarInfo(f"s{seed}/f{i}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


CHILD = r"""
import io, sys, functools
sys.path.insert(0, sys.argv[1])
root, point, nth, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, sys.argv[6])
from test_crash import layer
from layerstore import packs, catalog, store as store_mod

from killpoints import die_on_nth as _die, half_index, half_pwrite

def die_on_nth(fn, partial=None):
    return _die(fn, nth, partial=partial)

if point == "pack-append":
    packs._pwrite_all = die_on_nth(packs._pwrite_all, partial=half_pwrite)
elif point == "before-commit":
    catalog.Catalog.write = die_on_nth(catalog.Catalog.write)
elif point == "in-commit":
    catalog.Catalog.add_blob = die_on_nth(catalog.Catalog.add_blob)
elif point == "after-commit":
    store_mod.Store.stat = die_on_nth(store_mod.Store.stat)
elif point == "seal":
    packs._write_index_file = die_on_nth(packs._write_index_file, partial=half_index)
# small packs so that sealing happens during the ingest
store_mod.PackSet = functools.partial(packs.PackSet, max_pack_size=1 << 20)

s = store_mod.Store.open(root)
s.ingest(io.BytesIO(layer(seed)))
s.ingest(io.BytesIO(layer(seed + 1)))
s.close()
print("completed")
"""

POINTS = [
    ("pack-append", [1, 2, 5, 9]),
    ("before-commit", [1, 2]),
    ("in-commit", [1, 2]),
    ("after-commit", [1, 2]),
    ("seal", [1, 2, 4]),
]


@pytest.mark.parametrize("point,nths", POINTS, ids=[p for p, _ in POINTS])
def test_sigkill_during_ingest_loses_nothing(tmp_path, point, nths):
    root = tmp_path / "store"
    base = {}
    with Store.open(root) as s:
        for seed in (100, 200):
            data = layer(seed, files=6)
            base[s.ingest(io.BytesIO(data)).digest] = data
    tests_dir = str(Path(__file__).resolve().parent)
    killed = 0
    for k, nth in enumerate(nths):
        seed = 1000 + 10 * k
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, SRC, str(root), point, str(nth), str(seed), tests_dir],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode in (-9, 0), proc.stderr
        killed += proc.returncode == -9
        first, second = layer(seed), layer(seed + 1)
        with Store.open(root) as s:
            for digest, data in base.items():
                assert s.read_blob(digest) == data
            present = []
            for data in (first, second):
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                present.append(s.has(digest))
                if s.has(digest):
                    assert s.read_blob(digest) == data
                    base[digest] = data
            if proc.returncode == 0:
                assert present == [True, True]
            elif point == "after-commit":
                # killed after a commit returned: that blob is durable
                assert present[nth - 1]
            report = s.verify()
            assert report.ok, report.problems
    assert killed >= 1, f"no child was killed at {point}"
