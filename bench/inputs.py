"""Benchmark inputs shared by the pytest-benchmark suite and ``peers.py``.

Two kinds:

* **Real image set**: the distinct uncompressed layers of the docker-archives
  in an images folder (``LAYERSTORE_BENCH_IMAGES``; default the small set in
  ``../shared/corpus/images``; the full-size set is the ``images`` folder
  that ``../shared/corpus/make-images.sh OUTDIR`` writes). Layers are
  extracted once to a cache folder and named by their diff ID.
* **Synthetic trees**, seeded, each a list of layer tars (bytes):
  ``small-files`` (many files of 100 B to 16 KiB), ``large-files`` (a few
  files of 4 to 32 MiB) and ``base-derived`` (a base tree plus derived
  images, each a full tree with 5% of its files rewritten).

File contents are a mix the way real layers are: about 60% text-like bytes
(compress about 2x with LZ4, 4x with gzip) and 40% random bytes.
"""
import hashlib
import io
import json
import os
import random
import tarfile
import tempfile
from pathlib import Path

from common import CORPUS, QUICK

_SIXTEEN = bytes(b"etaoinshrdlucmfw"[i % 16] for i in range(256))


def file_content(rnd: random.Random, n: int, compressible: bool) -> bytes:
    """``n`` bytes unique to this call: random, or text-like (2 KiB blocks
    of 16 symbols, each block written twice)."""
    if not compressible:
        return rnd.randbytes(n)
    out = bytearray()
    while len(out) < n:
        block = rnd.randbytes(2048).translate(_SIXTEEN)
        out += block + block
    return bytes(out[:n])


def _tar(files) -> bytes:
    """A PAX tar of ``files`` (name, bytes) in order, fixed mtimes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        for name, data in files:
            parent = name.rpartition("/")[0]
            if parent and parent not in dirs:
                dirs.add(parent)
                d = tarfile.TarInfo(parent)
                d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                tf.addfile(d)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _tree(rnd: random.Random, total: int, sizes) -> list:
    """Files of sizes drawn log-uniformly from ``sizes`` = (low, high) until
    ``total`` bytes; 60% text-like."""
    files, n, i = [], 0, 0
    lo, hi = sizes
    while n < total:
        size = int(lo * (hi / lo) ** rnd.random())
        files.append((f"usr/share/pkg{i % 53}/f{i}", file_content(rnd, size, rnd.random() < 0.6)))
        n += size
        i += 1
    return files


def small_files(total: int, seed: int = 1) -> list:
    """One layer of many small files (100 B to 16 KiB), ``total`` content bytes."""
    return [_tar(_tree(random.Random(seed), total, (100, 16 << 10)))]


def large_files(total: int, seed: int = 2) -> list:
    """One layer of a few large files (4 to 32 MiB), ``total`` content bytes."""
    return [_tar(_tree(random.Random(seed), total, (4 << 20, 32 << 20)))]


def base_derived(total: int, seed: int = 3, derived: int = 3, change: float = 0.05) -> list:
    """A base tree of ``total`` content bytes (1 KiB to 2 MiB files) and
    ``derived`` full trees, each the base with ``change`` of its files
    rewritten (new content of the same size): ``derived + 1`` layers."""
    rnd = random.Random(seed)
    base = _tree(rnd, total, (1 << 10, 2 << 20))
    layers = [_tar(base)]
    for _ in range(derived):
        files = list(base)
        for k in rnd.sample(range(len(files)), max(1, int(len(files) * change))):
            name, old = files[k]
            files[k] = (name, file_content(rnd, len(old), rnd.random() < 0.6))
        layers.append(_tar(files))
    return layers


SYNTHETIC_MB = int(os.environ.get("LAYERSTORE_BENCH_TREE_MB", "4" if QUICK else "96"))

SYNTHETIC = {
    "small-files": lambda: small_files(SYNTHETIC_MB << 20),
    "large-files": lambda: large_files(SYNTHETIC_MB << 20),
    "base-derived": lambda: base_derived((SYNTHETIC_MB << 20) // 4),
}


def images_dir() -> Path:
    """The images folder of the real image set."""
    return Path(os.environ.get("LAYERSTORE_BENCH_IMAGES", CORPUS / "images"))


def _cache_dir() -> Path:
    d = Path(os.environ.get("LAYERSTORE_BENCH_TMP", tempfile.gettempdir())) / "layerstore-bench-layers"
    d.mkdir(parents=True, exist_ok=True)
    return d


def docker_archives(root: Path) -> list:
    """The docker-archive files under ``root``: tar files holding a
    ``manifest.json`` (Docker 25 archives also hold an ``index.json``),
    sorted by path."""
    out = []
    for p in sorted(root.rglob("*.tar")):
        try:
            with tarfile.open(p) as tf:
                names = set(tf.getnames())
        except (tarfile.TarError, OSError):
            continue
        if "manifest.json" in names:
            out.append(p)
    return out


def real_layers(root: Path = None) -> list:
    """Paths of the distinct uncompressed layers (by diff ID) of every
    docker-archive under ``root`` (default :func:`images_dir`), extracted
    to a cache folder on first use; sorted by diff ID. Empty if ``root``
    does not exist."""
    root = root or images_dir()
    if not root.exists():
        return []
    cache = _cache_dir()
    seen = {}
    for arc in docker_archives(root):
        with tarfile.open(arc) as tf:
            manifest = json.load(tf.extractfile("manifest.json"))
            for image in manifest:
                for member in image["Layers"]:
                    _extract_layer(tf, member, cache, seen)
    return [seen[k] for k in sorted(seen)]


def _extract_layer(tf: tarfile.TarFile, member: str, cache: Path, seen: dict):
    """Copy one layer member to ``cache/<diff ID>.tar`` unless already there;
    ``seen`` maps diff ID to path. Members named by digest
    (``blobs/sha256/<hex>``) are trusted by name when cached."""
    name = member.rsplit("/", 1)[-1].removesuffix(".tar")
    if len(name) == 64 and (cache / f"{name}.tar").exists():
        seen[name] = cache / f"{name}.tar"
        return
    src = tf.extractfile(member)
    tmp = cache / f".part-{os.getpid()}"
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        while True:
            b = src.read(1 << 20)
            if not b:
                break
            if out.tell() == 0 and b.startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd")):
                raise ValueError(f"{member}: compressed layer in a docker-archive; expected a plain tar")
            h.update(b)
            out.write(b)
    diff_id = h.hexdigest()
    path = cache / f"{diff_id}.tar"
    os.replace(tmp, path)
    seen[diff_id] = path


def _open_tar(t) -> tarfile.TarFile:
    """A layer tar given as bytes or as a path."""
    return tarfile.open(fileobj=io.BytesIO(t)) if isinstance(t, (bytes, bytearray)) else tarfile.open(t)


def tree_bytes(tars) -> int:
    """Total size of regular-file contents in the layer tars (bytes or paths)."""
    n = 0
    for t in tars:
        with _open_tar(t) as tf:
            n += sum(m.size for m in tf if m.isfile())
    return n


def distinct_content_bytes(tars) -> int:
    """Sum of sizes of the distinct regular-file contents (by SHA-256) in the
    layer tars: what a perfect file-level dedup without compression keeps."""
    seen = {}
    for t in tars:
        with _open_tar(t) as tf:
            for m in tf:
                if m.isfile():
                    f = tf.extractfile(m)
                    h = hashlib.sha256()
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        h.update(b)
                    seen[h.digest()] = m.size
    return sum(seen.values())
