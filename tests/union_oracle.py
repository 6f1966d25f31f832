"""Oracle for union views of layer stacks, independent of layerstore:
Python's ``tarfile`` reads each layer and the rules of the OCI image spec
(layer.md, "Applying Changesets" and "Whiteouts") are applied to a flat
dict of absolute paths:

* a layer's whiteouts (``.wh.<name>``; opaque ``.wh..wh..opq``) act on the
  lower layers only, so they are applied before the layer's other entries;
* an entry replaces its path (and everything under it), except that a
  directory over a directory only takes the new metadata;
* a parent directory a layer does not list is created (mode 0755, 0:0);
* names starting with ``.wh..wh.`` other than the opaque marker (aufs
  metadata) are ignored with everything under them;
* a hard link takes the content of its target as it is when the link is
  applied.

Besides the final view, it counts per layer the paths added, changed and
removed and the bytes of the layer's regular files that are not in the final
view (wasted), with the definitions docs of layerstore.views state.
"""
import gzip
import io
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from conftest import corpus_path

OPQ = ".wh..wh..opq"


@dataclass
class Rec:
    type: str
    mode: int
    uid: int
    gid: int
    mtime: float
    linkname: str = ""
    data: Optional[bytes] = None
    origin: Optional[Tuple[int, int]] = None  # (layer, member index) holding the content
    devmajor: int = 0
    devminor: int = 0

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else 0


@dataclass
class LayerCounts:
    added: int = 0
    changed: int = 0
    removed: int = 0
    whiteouts: int = 0
    content_bytes: int = 0
    file_members: List[Tuple[int, int]] = field(default_factory=list)  # (member index, size)
    wasted_bytes: int = 0


def _type(m: tarfile.TarInfo) -> Optional[str]:
    if m.isreg():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    if m.ischr():
        return "char"
    if m.isblk():
        return "block"
    if m.isfifo():
        return "fifo"
    return None


def norm(name: str) -> str:
    return "/" + "/".join(p for p in name.split("/") if p not in ("", "."))


def _under(state: Dict[str, Rec], path: str) -> List[str]:
    prefix = "/" if path == "/" else path + "/"
    return [p for p in state if p.startswith(prefix) and p != "/"]


def _remove_tree(state: Dict[str, Rec], path: str) -> int:
    gone = [p for p in _under(state, path)]
    if path in state:
        gone.append(path)
    for p in gone:
        del state[p]
    return len(gone)


def union(layers) -> Tuple[Dict[str, Rec], List[LayerCounts]]:
    """``layers``: the layer tars (bytes or paths), base first. Returns the
    final view (absolute path -> Rec; the root is not listed) and one
    LayerCounts per layer."""
    state: Dict[str, Rec] = {}
    counts: List[LayerCounts] = []
    for li, layer in enumerate(layers):
        c = LayerCounts()
        counts.append(c)
        src = tarfile.open(fileobj=io.BytesIO(layer)) if isinstance(layer, bytes) else tarfile.open(layer)
        with src as tf:
            members = tf.getmembers()
            whiteouts, adds = [], []
            for idx, m in enumerate(members):
                path = norm(m.name)
                base = posixpath.basename(path)
                if any(p.startswith(".wh..wh.") and p != OPQ for p in path.split("/")):
                    continue
                if m.isreg():
                    c.content_bytes += m.size
                if base == OPQ:
                    whiteouts.append(("opaque", posixpath.dirname(path)))
                elif base.startswith(".wh."):
                    whiteouts.append(("whiteout", posixpath.join(posixpath.dirname(path), base[4:])))
                elif _type(m) is not None:
                    adds.append((idx, path, m))
            for kind, path in whiteouts:
                c.whiteouts += 1
                if kind == "opaque":
                    if path == "/" or (path in state and state[path].type == "dir"):
                        for p in _under(state, path):
                            del state[p]
                            c.removed += 1
                elif path in state:
                    c.removed += _remove_tree(state, path)
            for idx, path, m in adds:
                if path == "/":
                    continue
                parts = path.strip("/").split("/")
                for i in range(1, len(parts)):
                    anc = "/" + "/".join(parts[:i])
                    if anc in state and state[anc].type == "dir":
                        continue
                    if anc in state:
                        c.changed += 1
                        c.removed += len(_under(state, anc))
                        _remove_tree(state, anc)
                    else:
                        c.added += 1
                    state[anc] = Rec("dir", 0o755, 0, 0, 0)
                kind = _type(m)
                rec = Rec(kind, m.mode & 0o7777, m.uid, m.gid, m.mtime, devmajor=m.devmajor, devminor=m.devminor)
                if kind == "file":
                    rec.data = tf.extractfile(m).read()
                    rec.origin = (li, idx)
                    c.file_members.append((idx, m.size))
                elif kind == "symlink":
                    rec.linkname = m.linkname
                elif kind == "hardlink":
                    rec.linkname = norm(m.linkname)
                    target = state.get(rec.linkname)
                    if target is not None and target.type in ("file", "hardlink") and target.data is not None:
                        rec.data, rec.origin = target.data, target.origin
                old = state.get(path)
                if old is not None and old.type == "dir" and kind == "dir":
                    state[path] = Rec("dir", rec.mode, rec.uid, rec.gid, rec.mtime)
                    c.changed += 1
                    continue
                if old is not None:
                    c.changed += 1
                    c.removed += len(_under(state, path))
                    _remove_tree(state, path)
                else:
                    c.added += 1
                state[path] = rec
    live = {r.origin for r in state.values() if r.origin is not None}
    for li, c in enumerate(counts):
        c.wasted_bytes = sum(size for idx, size in c.file_members if (li, idx) not in live)
    return state, counts


def children(state: Dict[str, Rec], directory: str) -> List[str]:
    """Paths directly inside ``directory``, sorted."""
    prefix = "/" if directory == "/" else directory + "/"
    return sorted(p for p in state if p.startswith(prefix) and "/" not in p[len(prefix):] and p != "/")


# --- layers of the corpus images, read with tarfile, json and gzip ---------------------------

def docker_archive_layers(name: str):
    """The layer tars of the (single) image of a corpus docker-archive, base first."""
    with tarfile.open(corpus_path("images", name)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        return [tf.extractfile(member).read() for member in manifest[0]["Layers"]]


def oci_layout_layers(name: str, ref_name: str):
    """The uncompressed layer tars of the image tagged ``ref_name`` in a corpus OCI layout."""
    root = corpus_path("images", name)
    index = json.loads((root / "index.json").read_text())
    (desc,) = [m for m in index["manifests"]
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name]
    blob = lambda d: (root / "blobs" / "sha256" / d.split(":")[1]).read_bytes()
    manifest = json.loads(blob(desc["digest"]))
    return [gzip.decompress(blob(layer["digest"])) for layer in manifest["layers"]]
