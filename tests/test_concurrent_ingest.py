"""Several writers at once: two processes and several threads ingest
overlapping layers (shared files) into one store; every blob reads back
byte-exact, shared chunks are stored once, and verify is clean."""
import hashlib
import io
import random
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

from layerstore.store import Store

SRC = str(Path(__file__).resolve().parent.parent / "src")


def shared_files():
    rnd = random.Random(42)
    return [(f"lib/common{i}", rnd.randbytes(rnd.randrange(1000, 200_000))) for i in range(15)]


def layer(seed):
    rnd = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        files = shared_files() + [(f"own/{seed}/f{i}", rnd.randbytes(rnd.randrange(1, 100_000))) for i in range(5)]
        rnd.shuffle(files)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


CHILD = r"""
import io, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
from test_concurrent_ingest import layer
from layerstore.store import Store
with Store.open(sys.argv[3]) as s:
    for seed in map(int, sys.argv[4].split(",")):
        s.ingest(io.BytesIO(layer(seed)))
"""


def test_two_processes_and_threads_ingest_at_once(tmp_path):
    root = tmp_path / "store"
    Store.open(root).close()
    tests_dir = str(Path(__file__).resolve().parent)
    seeds_a = list(range(0, 12))
    seeds_b = list(range(6, 18))  # overlaps with a: the same layers, concurrently
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, SRC, tests_dir, str(root), ",".join(map(str, seeds))])
        for seeds in (seeds_a, seeds_b)
    ]
    errors = []
    with Store.open(root) as s:
        def work(seeds):
            try:
                for seed in seeds:
                    s.ingest(io.BytesIO(layer(seed)))
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(range(k, 24, 3),)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [p.wait(timeout=300) for p in procs] == [0, 0]
        assert errors == []
    with Store.open(root) as s:
        for seed in range(24):
            data = layer(seed)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            assert s.read_blob(digest) == data
        info = s.layer_info("sha256:" + hashlib.sha256(layer(0)).hexdigest())
        assert info.shared_bytes >= sum(len(d) for _, d in shared_files())
        assert s.verify().ok
        # each shared file's first chunk is referenced by all 24 layers, once each
        from layerstore.chunking import chunk_boundaries

        for _, data in shared_files():
            first = hashlib.sha256(data[: chunk_boundaries(data)[0]]).digest()
            assert s._chunk_refs([first]) == {first: 24}
