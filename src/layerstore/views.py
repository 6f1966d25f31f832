"""Filesystem views of images: the union of a layer stack, as a container
runtime unpacks it, read straight from the store.

An image's root filesystem is its layers (``rootfs.diff_ids``, base first)
applied in order as changesets (OCI image spec, layer.md, "Applying
Changesets"):

* an entry adds or replaces the path it names; when both the old and the new
  entry are directories, the new one only updates the directory's metadata
  and its children stay, otherwise the old path (and everything under it)
  goes;
* a *whiteout* ``<dir>/.wh.<name>`` removes ``<dir>/<name>`` (and everything
  under it); an *opaque whiteout* ``<dir>/.wh..wh..opq`` hides every child
  that ``<dir>`` had in the lower layers. Whiteouts apply only to the lower
  layers: an entry of the same layer stays, whatever the order of the entries
  in the tar (layer.md, "Whiteouts"), so a layer's whiteouts are applied
  before its other entries. Whiteout entries are never part of the view;
  other names starting with ``.wh..wh.`` are aufs metadata and are ignored,
  with everything under them, as Docker does;
* a hard link (typeflag ``1``) shares the content of its target, looked up
  in the view as it stands when the link is applied (the same layer or a
  lower one); it keeps that content when a later layer removes or replaces
  the target.

Paths are absolute in the view (``/etc/motd``). A member name with a ``..``
component is refused (:class:`layerstore.errors.UnsafePathError`); ``./``
prefixes and repeated slashes are dropped. A parent directory that a layer
does not list is created with mode 0755, owner 0:0 and mtime 0.

What is here:

* :class:`ImageView` -- the view of a layer stack: :meth:`ImageView.lookup`,
  :meth:`ImageView.listdir`, :meth:`ImageView.walk`, :meth:`ImageView.iter_content`
  (streams one file, ``docker cp`` without a container), :meth:`ImageView.export`
  (the flattened root filesystem as one tar, ``docker export``) and
  :attr:`ImageView.changes` (per layer: paths added, changed and removed,
  and bytes wasted, as ``dive`` estimates);
* :func:`diff` -- what changed from one image's filesystem to another's;
* :func:`import_rootfs` -- the mirror of export: a directory or a flat tar
  stored as a one-layer image (``docker import``).

Memory grows with the number of entries of the layers (their metadata),
never with file or layer sizes: file contents are streamed from the store
in buffers of at most 1 MiB.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import stat as stat_mod
import tarfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import (BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

from . import mediatypes as mt
from .digest import Digest
from .errors import ImageFormatError, InvalidDocumentError, LayerStoreError, ReferenceError, UnsafePathError
from .formats import STORED, ALREADY_EXISTS, ImageRecord, LayerStatus, LoadedImage, LoadResult
from .manifest import Platform, host_platform, parse_config, parse_manifest
from .reference import TAG_INVALID, parse_normalized
from .tar import TarEntry, iter_entries, iter_events

__all__ = [
    "WHITEOUT_PREFIX",
    "OPAQUE_WHITEOUT",
    "MAX_SYMLINK_HOPS",
    "ViewError",
    "PathNotFoundError",
    "LayerSource",
    "Node",
    "LayerChanges",
    "Change",
    "ImageView",
    "MeteredReader",
    "diff",
    "image_layers",
    "import_rootfs",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_AUFS_PREFIX = ".wh..wh."
MAX_SYMLINK_HOPS = 40  # Linux MAXSYMLINKS
_BLOCK = 512
_PIECE = 1 << 20
_ZEROS = bytes(_PIECE)

Progress = Optional[Callable[[int], None]]


# --- errors -------------------------------------------------------------------------------

class ViewError(LayerStoreError, ValueError):
    """A path of an image's filesystem cannot be used as asked: a directory
    where a file is needed (or the reverse), a symbolic link loop, a
    dangling hard link.

    Attributes:
        image: the image (reference as given, or a label) (str).
        path: the path asked for (str).
        problem: what is wrong, without the location (str).
    """

    def __init__(self, image: str, path: str, problem: str):
        super().__init__(f"{image}: {path}: {problem}")
        self.image = image
        self.path = path
        self.problem = problem


class PathNotFoundError(ViewError, LookupError):
    """No such file or directory in the image's filesystem."""

    def __init__(self, image: str, path: str, problem: str = "no such file or directory"):
        super().__init__(image, path, problem)


# --- layers and nodes ----------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSource:
    """One layer of a stack: ``diff_id`` (digest of the uncompressed layer
    tar), ``size`` (its length in bytes) and ``open()``, which returns a new
    binary file object reading the uncompressed tar from the start."""

    diff_id: str
    size: int
    open: Callable[[], BinaryIO]


class Node:
    """A path of the view.

    ``path``: absolute (``/`` for the root); ``type``: ``file``, ``dir``,
    ``symlink``, ``hardlink``, ``char``, ``block`` or ``fifo``; ``layer``:
    index of the layer whose entry gives the path its current metadata (-1
    for a directory no layer lists); ``entry``: that
    :class:`layerstore.tar.TarEntry` (None for such a directory);
    ``children``: name -> Node for a directory, else None; ``link``: for a
    hard link, the node whose content it shares (None when its target was
    absent). The metadata properties (``mode``, ``uid``, ``size``,
    ``mtime``, ...) read the entry."""

    __slots__ = ("path", "layer", "entry", "children", "link", "_type")

    def __init__(self, path: str, layer: int, entry: Optional[TarEntry], kind: str):
        self.path = path
        self.layer = layer
        self.entry = entry
        self._type = kind
        self.children: Optional[Dict[str, "Node"]] = {} if kind == "dir" else None
        self.link: Optional["Node"] = None

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) or "/"

    @property
    def type(self) -> str:
        return self._type

    @property
    def is_dir(self) -> bool:
        return self._type == "dir"

    @property
    def mode(self) -> int:
        """Permission bits, with setuid, setgid and sticky (int)."""
        return self.entry.mode if self.entry is not None else 0o755

    @property
    def uid(self) -> int:
        return self.entry.uid if self.entry is not None else 0

    @property
    def gid(self) -> int:
        return self.entry.gid if self.entry is not None else 0

    @property
    def uname(self) -> str:
        return self.entry.uname if self.entry is not None else ""

    @property
    def gname(self) -> str:
        return self.entry.gname if self.entry is not None else ""

    @property
    def size(self) -> int:
        """Bytes of content: a file's logical size (a sparse file's holes
        included), a hard link's target's; 0 for the other types."""
        if self._type == "file":
            return self.entry.size
        if self._type == "hardlink" and self.link is not None and self.link.type == "file":
            return self.link.entry.size
        return 0

    @property
    def mtime(self) -> float:
        """Modification time, seconds since the epoch."""
        return self.entry.mtime if self.entry is not None else 0.0

    @property
    def mtime_ns(self) -> int:
        return self.entry.mtime_ns if self.entry is not None else 0

    @property
    def linkname(self) -> str:
        """A symbolic link's target as stored; a hard link's target as an
        absolute path of the view; "" otherwise."""
        if self._type == "symlink":
            return self.entry.linkname
        if self._type == "hardlink":
            return "/" + "/".join(_components(self.entry.linkname))
        return ""

    @property
    def devmajor(self) -> int:
        return self.entry.devmajor if self.entry is not None else 0

    @property
    def devminor(self) -> int:
        return self.entry.devminor if self.entry is not None else 0

    @property
    def content(self) -> Optional["Node"]:
        """The node whose entry holds this path's bytes: itself for a file,
        the target for a hard link; None for the other types."""
        if self._type == "file":
            return self
        if self._type == "hardlink" and self.link is not None and self.link.type == "file":
            return self.link
        return None

    def permissions(self) -> str:
        """``ls -l`` style: type letter and rwx bits (``drwxr-xr-x``)."""
        letter = {"dir": "d", "symlink": "l", "hardlink": "h", "char": "c", "block": "b",
                  "fifo": "p"}.get(self._type, "-")
        return letter + stat_mod.filemode(self.mode)[1:]

    def to_json(self) -> dict:
        """The node as a JSON object: path, type, mode (int), permissions,
        uid, gid, uname, gname, size (bytes), mtime (seconds since the
        epoch), linkname, devmajor/devminor (devices), layer (index)."""
        out = {
            "path": self.path, "type": self._type, "mode": self.mode, "permissions": self.permissions(),
            "uid": self.uid, "gid": self.gid, "uname": self.uname, "gname": self.gname,
            "size": self.size, "mtime": self.mtime, "linkname": self.linkname, "layer": self.layer,
        }
        if self._type in ("char", "block"):
            out["devmajor"], out["devminor"] = self.devmajor, self.devminor
        return out

    def __repr__(self):
        return f"<Node {self._type} {self.path!r} layer {self.layer}>"


@dataclass(frozen=True)
class LayerChanges:
    """What one layer does to the view below it.

    ``index``: position in the stack (0 = base); ``diff_id``; ``size``:
    bytes of the layer tar; ``entries``: its tar entries; ``added``: paths
    it creates; ``changed``: paths that existed and that it replaces or
    whose metadata it updates; ``removed``: paths that it removes (by
    whiteouts, opaque whiteouts, or by replacing a directory with something
    else), each path under a removed directory counted; ``whiteouts``:
    whiteout entries (opaque ones included); ``content_bytes``: bytes of the
    regular files it holds; ``wasted_bytes``: of those, the bytes of files
    that are not in the final view because a later layer (or a later entry
    of the same layer) overwrote or removed them -- space an image pays for
    and cannot use, as ``dive`` estimates it."""

    index: int
    diff_id: str
    size: int
    entries: int
    added: int
    changed: int
    removed: int
    whiteouts: int
    content_bytes: int
    wasted_bytes: int


@dataclass(frozen=True)
class Change:
    """One difference between two views (``docker diff`` letters):
    ``kind`` ``"A"`` (added), ``"C"`` (changed) or ``"D"`` (deleted);
    ``path``; ``what``: for ``C``, the attributes that differ, among
    ``type``, ``mode``, ``owner``, ``device``, ``size``, ``mtime``,
    ``target`` (a link's target) and ``content``."""

    kind: str
    path: str
    what: Tuple[str, ...] = ()


class _Counts:
    __slots__ = ("entries", "added", "changed", "removed", "whiteouts", "content_bytes")

    def __init__(self):
        self.entries = self.added = self.changed = self.removed = self.whiteouts = self.content_bytes = 0


def _components(name: str) -> Tuple[str, ...]:
    """A member name as path components: ``.`` and empty parts dropped;
    ``..`` refused by the caller."""
    return tuple(p for p in name.split("/") if p not in ("", "."))


def _join(parts: Sequence[str]) -> str:
    return "/" + "/".join(parts)


def _count(node: Node) -> int:
    """Paths in the subtree of ``node``, itself included."""
    n = 1
    stack = [node]
    while stack:
        cur = stack.pop()
        if cur.children:
            n += len(cur.children)
            stack.extend(cur.children.values())
    return n


# --- the view ---------------------------------------------------------------------------------

class ImageView:
    """The union view of a layer stack (see the module docstring).

    Building one reads every layer once (entry metadata only is kept).

    Args:
        layers: the stack, base first (:class:`LayerSource`).
        label: how errors name the image (e.g. the reference given).
        progress: called with the number of bytes just read from a layer
            while the view is built.

    Raises TarFormatError (a layer is not a valid tar), UnsafePathError
    (a member name with ``..``), and what ``LayerSource.open`` raises.
    """

    def __init__(self, layers: Sequence[LayerSource], label: str = "image", progress: Progress = None):
        self.layers: Tuple[LayerSource, ...] = tuple(layers)
        self.label = label
        self.root = Node("/", -1, None, "dir")
        self._files: List[List[Node]] = []  # per layer: the file nodes it created
        counts: List[_Counts] = []
        for i, layer in enumerate(self.layers):
            with layer.open() as f:
                entries = list(iter_entries(MeteredReader(f, progress) if progress else f))
            counts.append(self._apply(i, layer, entries))
        live = set()
        for node in self.walk():
            content = node.content
            if content is not None:
                live.add(id(content))
        self.changes: Tuple[LayerChanges, ...] = tuple(
            LayerChanges(i, layer.diff_id, layer.size, c.entries, c.added, c.changed, c.removed, c.whiteouts,
                         c.content_bytes,
                         sum(n.entry.size for n in self._files[i] if id(n) not in live))
            for i, (layer, c) in enumerate(zip(self.layers, counts)))

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def of_image(cls, store, reference, platform: Union[str, Platform, None] = None,
                 progress: Progress = None) -> "ImageView":
        """The view of the image ``reference`` names in ``store`` (for an
        index: the manifest for ``platform``, default this machine's, as
        :meth:`layerstore.store.Store.resolve` picks it).

        Raises ImageNotFoundError, PlatformNotFoundError, InvalidDocumentError
        (not an image), BlobNotFoundError (a layer is not in the store),
        and the errors of :class:`ImageView`."""
        return cls(image_layers(store, reference, platform), str(reference), progress)

    def _clean(self, layer: LayerSource, name: str) -> Tuple[str, ...]:
        parts = _components(name)
        if ".." in parts:
            raise UnsafePathError(f"layer {layer.diff_id}", name, "member name has a '..' component")
        return parts

    def _apply(self, index: int, layer: LayerSource, entries: List[TarEntry]) -> _Counts:
        counts = _Counts()
        counts.entries = len(entries)
        files: List[Node] = []
        self._files.append(files)
        additions = []
        for e in entries:
            parts = self._clean(layer, e.name)
            if any(p.startswith(_AUFS_PREFIX) and p != OPAQUE_WHITEOUT for p in parts):
                continue
            if e.type == "file":
                counts.content_bytes += e.size
            if parts and parts[-1] == OPAQUE_WHITEOUT:
                counts.whiteouts += 1
                parent = self._find(parts[:-1])
                if parent is not None and parent.is_dir:
                    for child in parent.children.values():
                        counts.removed += _count(child)
                    parent.children.clear()
            elif parts and parts[-1].startswith(WHITEOUT_PREFIX):
                counts.whiteouts += 1
                parent = self._find(parts[:-1])
                name = parts[-1][len(WHITEOUT_PREFIX):]
                if parent is not None and parent.is_dir and name in parent.children:
                    counts.removed += _count(parent.children.pop(name))
            elif e.type != "other":
                additions.append((parts, e))
        for parts, e in additions:
            if not parts:  # the root directory itself
                if e.type == "dir":
                    self.root.entry, self.root.layer = e, index
                continue
            parent = self._make_dirs(parts[:-1], counts)
            old = parent.children.get(parts[-1])
            path = _join(parts)
            if old is not None and old.is_dir and e.type == "dir":
                old.entry, old.layer = e, index
                counts.changed += 1
                continue
            if old is not None:
                counts.changed += 1
                if old.children:
                    counts.removed += _count(old) - 1
            node = Node(path, index, e, e.type)
            if e.type == "hardlink":
                target = self._find(self._clean(layer, e.linkname))
                if target is not None and target.type == "hardlink":
                    target = target.link
                node.link = target if target is not None and not target.is_dir else None
            elif e.type == "file":
                files.append(node)
            parent.children[parts[-1]] = node
            if old is None:
                counts.added += 1
        return counts

    def _find(self, parts: Sequence[str]) -> Optional[Node]:
        """The node at ``parts`` without following symbolic links."""
        node = self.root
        for p in parts:
            if not node.is_dir:
                return None
            node = node.children.get(p)
            if node is None:
                return None
        return node

    def _make_dirs(self, parts: Sequence[str], counts: _Counts) -> Node:
        """The directory at ``parts``, creating the missing ones (and
        replacing what is not a directory) with the defaults of the module
        docstring."""
        node = self.root
        for i, p in enumerate(parts):
            child = node.children.get(p)
            if child is None or not child.is_dir:
                if child is None:
                    counts.added += 1
                else:
                    counts.changed += 1
                child = Node(_join(parts[:i + 1]), -1, None, "dir")
                node.children[p] = child
            node = child
        return node

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, path: str, follow_symlinks: bool = True) -> Node:
        """The node at ``path`` (absolute, or relative to ``/``). Symbolic
        links in the directories of the path are always followed, inside
        the view (an absolute target starts at the view's root, ``..`` stops
        at it); the last component is followed when ``follow_symlinks``.

        Raises PathNotFoundError; ViewError for a loop of symbolic links
        (more than :data:`MAX_SYMLINK_HOPS`) or a non-directory used as one."""
        todo = list(reversed(_components(path)))
        stack: List[Node] = [self.root]  # the directories from the root to the current one
        hops = 0
        node = self.root
        while todo:
            part = todo.pop()
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                node = stack[-1]
                continue
            cur = stack[-1]
            if not cur.is_dir:
                raise ViewError(self.label, path, f"{cur.path} is not a directory")
            node = cur.children.get(part)
            if node is None:
                raise PathNotFoundError(self.label, path)
            if node.type == "symlink" and (todo or follow_symlinks):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise ViewError(self.label, path, "too many levels of symbolic links")
                target = node.entry.linkname
                if target.startswith("/"):
                    stack = [self.root]
                todo.extend(reversed(_components(target)))
                node = stack[-1]
                continue
            stack.append(node)
        return node

    def listdir(self, path: str = "/") -> List[Node]:
        """The entries of the directory at ``path`` (symbolic links followed),
        sorted by name. Raises PathNotFoundError, ViewError (not a directory)."""
        node = self.lookup(path)
        if not node.is_dir:
            raise ViewError(self.label, path, "not a directory")
        return [node.children[k] for k in sorted(node.children)]

    def walk(self, path: str = "/") -> Iterator[Node]:
        """Every node under ``path`` (itself excluded), depth first, each
        directory before its children, siblings sorted by name."""
        start = self.lookup(path)
        if not start.is_dir:
            return
        stack = [start.children[k] for k in sorted(start.children, reverse=True)]
        while stack:
            node = stack.pop()
            yield node
            if node.children:
                stack.extend(node.children[k] for k in sorted(node.children, reverse=True))

    # -- contents --------------------------------------------------------------------------
    def _stream(self, layer: int, wanted: Dict[int, TarEntry], progress: Progress
                ) -> Iterator[Tuple[int, Optional[bytes]]]:
        """Read layer ``layer`` once and give the content of the entries in
        ``wanted`` (header offset -> entry), in tar order: ``(offset, b"")``
        when an entry starts, ``(offset, piece)`` for its bytes in order
        (holes of sparse files as zeros, pieces of at most 1 MiB),
        ``(offset, None)`` when it is complete. Stops reading once the last
        wanted entry is complete."""
        left = len(wanted)
        if not left:
            return
        with self.layers[layer].open() as f:
            src = MeteredReader(f, progress) if progress else f
            cur: Optional[TarEntry] = None
            pos = 0
            for ev in iter_events(src):
                if ev.kind == "data":
                    if cur is not None:
                        if ev.file_offset > pos:
                            yield from _zeros(cur.header_offset, ev.file_offset - pos)
                        yield cur.header_offset, ev.data
                        pos = ev.file_offset + len(ev.data)
                    continue
                if ev.kind not in ("entry", "end", "trailing"):
                    continue
                if cur is not None:
                    yield from _zeros(cur.header_offset, cur.size - pos)
                    yield cur.header_offset, None
                    cur = None
                    left -= 1
                    if not left:
                        return
                if ev.kind == "entry" and ev.entry.header_offset in wanted:
                    cur, pos = ev.entry, 0
                    yield cur.header_offset, b""
            if cur is not None:
                yield from _zeros(cur.header_offset, cur.size - pos)
                yield cur.header_offset, None

    def iter_content(self, path: str, progress: Progress = None) -> Iterator[bytes]:
        """The bytes of the regular file at ``path`` (symbolic links
        followed; a hard link gives its target's bytes), in pieces of at
        most 1 MiB, read from the layer that holds them.

        Raises PathNotFoundError, ViewError (a directory, a device, a
        dangling hard link), and the store's read errors (CorruptBlobError)."""
        node = self.lookup(path)
        content = node.content
        if content is None:
            what = {"dir": "is a directory", "hardlink": "hard link to a missing file"}.get(
                node.type, f"not a regular file ({node.type})")
            raise ViewError(self.label, path, what)
        for _off, piece in self._stream(content.layer, {content.entry.header_offset: content.entry}, progress):
            if piece:
                yield piece

    def open(self, path: str) -> BinaryIO:
        """A binary file object streaming the file at ``path`` (see
        :meth:`iter_content`)."""
        return io.BufferedReader(_IterReader(self.iter_content(path)), _PIECE)

    def content_digest(self, nodes: Iterable[Node], progress: Progress = None) -> Dict[int, str]:
        """SHA-256 (``sha256:<hex>``) of the content of each file or hard link
        in ``nodes``, keyed by ``id(node)``; each layer involved is read
        once."""
        by_layer: Dict[int, Dict[int, TarEntry]] = {}
        owners: Dict[Tuple[int, int], List[int]] = {}
        for node in nodes:
            content = node.content
            if content is None:
                continue
            off = content.entry.header_offset
            by_layer.setdefault(content.layer, {})[off] = content.entry
            owners.setdefault((content.layer, off), []).append(id(node))
        out: Dict[int, str] = {}
        for layer, wanted in sorted(by_layer.items()):
            hashers: Dict[int, object] = {}
            for off, piece in self._stream(layer, wanted, progress):
                if piece is None:
                    digest = "sha256:" + hashers.pop(off).hexdigest()
                    for key in owners[(layer, off)]:
                        out[key] = digest
                elif off not in hashers:
                    hashers[off] = hashlib.sha256(piece)
                else:
                    hashers[off].update(piece)
        return out

    # -- export -----------------------------------------------------------------------------
    def _export_plan(self):
        """What :meth:`export` writes: (nodes without content, in write
        order; {layer: {header offset: node carrying that entry's content}};
        hard links, written last, as (node, path linked to; "" for a copy of
        the target's header; None for a dangling link)). A hard link whose
        target is no longer in the view carries the content itself (the
        first such link of a target); the others link to it."""
        early: List[Node] = []
        carriers: Dict[int, Dict[int, Node]] = {}
        links: List[Tuple[Node, Optional[str]]] = []
        hardlinks: List[Node] = []
        live = set()
        for node in self.walk():
            if node.type == "hardlink":
                hardlinks.append(node)
                continue
            live.add(id(node))
            if node.type == "file":
                carriers.setdefault(node.layer, {})[node.entry.header_offset] = node
            else:
                early.append(node)
        carrier_of: Dict[int, str] = {}
        for node in hardlinks:
            target = node.link
            if target is None:
                links.append((node, None))
            elif id(target) in live:
                links.append((node, target.path))
            elif id(target) in carrier_of:
                links.append((node, carrier_of[id(target)]))
            else:
                carrier_of[id(target)] = node.path
                if target.type == "file":
                    carriers.setdefault(target.layer, {})[target.entry.header_offset] = node
                else:
                    links.append((node, ""))
        return early, carriers, links

    def export_size(self) -> int:
        """Bytes of layer tars :meth:`export` reads (each layer holding a
        file of the view, once)."""
        _early, carriers, _links = self._export_plan()
        return sum(self.layers[i].size for i in carriers)

    def export(self, out: BinaryIO, progress: Progress = None) -> int:
        """Write the flattened root filesystem to ``out`` as one POSIX tar
        (pax format where a header needs it), as ``docker export`` does:
        every path of the view once, no whiteouts, names relative to the
        root (``etc/motd``, directories with a trailing ``/``), the metadata
        of the entry that set each path, extended attributes
        (``SCHILY.xattr.*`` pax records) kept, sparse files written dense.

        Order: directories, symbolic links, devices and FIFOs (parents before
        children), then regular files in layer and tar order (each layer read
        once, streamed), then hard links. A hard link whose target a later
        layer removed or replaced carries the target's content.

        Returns the number of bytes written. Raises the store's read errors,
        TarFormatError, and OSError from ``out``."""
        early, carriers, links = self._export_plan()
        w = _TarWriter(out)
        for node in early:
            w.header(node, node.path)
        for layer in sorted(carriers):
            by_offset = carriers[layer]
            wanted = {off: node.content.entry for off, node in by_offset.items()}
            current = None
            for off, piece in self._stream(layer, wanted, progress):
                if piece is None:
                    w.end_content()
                    current = None
                elif off != current:
                    current = off
                    carrier = by_offset[off]
                    w.header(carrier.content, carrier.path, as_file=True)
                    w.write(piece)
                else:
                    w.write(piece)
        for node, target in links:
            if target:
                w.hardlink(node.path, target, node)
            elif target == "":
                w.header(node.link, node.path)
            else:
                w.hardlink(node.path, node.linkname, node)
        return w.close()


def _zeros(key: int, n: int) -> Iterator[Tuple[int, bytes]]:
    while n > 0:
        k = min(n, _PIECE)
        yield key, _ZEROS[:k]
        n -= k


class MeteredReader(io.RawIOBase):
    """A raw binary reader over ``inner`` (which must have ``readinto``)
    that calls ``callback(n)`` with the number of bytes of each read, for
    progress reporting; closing it closes ``inner``."""

    def __init__(self, inner, callback: Callable[[int], None]):
        super().__init__()
        self._inner = inner
        self._cb = callback

    def readable(self):
        return True

    def readinto(self, b) -> int:
        n = self._inner.readinto(b)
        if n:
            self._cb(n)
        return n

    def close(self):
        try:
            self._inner.close()
        finally:
            super().close()


class _IterReader(io.RawIOBase):
    """A raw reader over an iterator of byte strings."""

    def __init__(self, pieces: Iterator[bytes]):
        super().__init__()
        self._pieces = pieces
        self._buf = memoryview(b"")

    def readable(self):
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buf = memoryview(piece)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self):
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        super().close()


_TYPEFLAGS = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE,
}
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")


class _TarWriter:
    """Writes tar headers and streamed contents (pax format as tarfile
    writes it)."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.written = 0
        self.in_content = False
        self._left = 0
        self._size = 0

    def _emit(self, data: bytes):
        self.out.write(data)
        self.written += len(data)

    def _info(self, node: Node, path: str, kind: str) -> tarfile.TarInfo:
        name = path.lstrip("/")
        info = tarfile.TarInfo(name + "/" if kind == "dir" else name)
        info.type = _TYPEFLAGS[kind]
        info.mode = node.mode
        info.uid, info.gid = node.uid, node.gid
        info.uname, info.gname = node.uname, node.gname
        ns = node.mtime_ns
        info.mtime = ns // 1_000_000_000 if ns % 1_000_000_000 == 0 else ns / 1e9
        if node.entry is not None:
            info.pax_headers = {k: v for k, v in node.entry.pax.items() if k.startswith(_XATTR_PREFIXES)}
        if kind in ("char", "block"):
            info.devmajor, info.devminor = node.devmajor, node.devminor
        if kind == "symlink":
            info.linkname = node.entry.linkname
        return info

    def _header(self, info: tarfile.TarInfo):
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def header(self, node: Node, path: str, as_file: bool = False):
        """The header of ``node`` written as ``path``; for a file, its
        content must follow (:meth:`write`, :meth:`end_content`)."""
        kind = "file" if as_file else node.type
        info = self._info(node, path, kind)
        if kind == "file":
            info.size = node.entry.size
            self._header(info)
            self.in_content, self._left, self._size = True, info.size, info.size
        else:
            self._header(info)

    def hardlink(self, path: str, target: str, node: Node):
        info = self._info(node, path, "hardlink")
        info.linkname = target.lstrip("/")
        self._header(info)

    def write(self, data: bytes):
        if len(data) > self._left:
            raise ImageFormatError("export", None, "a file's content is longer than its header says")
        self._emit(data)
        self._left -= len(data)

    def end_content(self):
        if self._left:
            raise ImageFormatError("export", None, f"a file's content is {self._left} bytes short")
        pad = -self._size % _BLOCK
        if pad:
            self._emit(bytes(pad))
        self.in_content = False

    def close(self) -> int:
        self._emit(bytes(2 * _BLOCK))
        return self.written


# --- diff ---------------------------------------------------------------------------------------

def _metadata_changes(a: Node, b: Node) -> List[str]:
    """The attributes that differ, compared as ``docker diff`` does
    (moby pkg/archive changes.go): type and mode, owner, device numbers,
    and, except for directories, size and mtime; plus link targets."""
    what = []
    if a.type != b.type:
        return ["type"]
    if a.mode != b.mode:
        what.append("mode")
    if (a.uid, a.gid) != (b.uid, b.gid):
        what.append("owner")
    if (a.devmajor, a.devminor) != (b.devmajor, b.devminor):
        what.append("device")
    if not a.is_dir:
        if a.size != b.size:
            what.append("size")
        if a.mtime_ns != b.mtime_ns:
            what.append("mtime")
    if a.linkname != b.linkname:
        what.append("target")
    return what


def diff(a: ImageView, b: ImageView, progress: Progress = None) -> List[Change]:
    """What changed from the filesystem of ``a`` to that of ``b``, sorted by
    path: ``A`` for a path only ``b`` has, ``D`` for one only ``a`` has
    (every path under a deleted directory listed), ``C`` for one whose
    attributes or content differ (see :class:`Change`). Files of different
    sizes differ in content; files of equal size are compared by SHA-256
    unless both come from the same entry of the same layer; only the
    layers holding those files are read."""
    a_nodes = {n.path: n for n in a.walk()}
    b_nodes = {n.path: n for n in b.walk()}
    out: Dict[str, Change] = {}
    pending: List[Tuple[str, Node, Node, List[str]]] = []
    for path, na in a_nodes.items():
        nb = b_nodes.get(path)
        if nb is None:
            out[path] = Change("D", path)
            continue
        what = _metadata_changes(na, nb)
        ca, cb = na.content, nb.content
        if "type" not in what and ca is not None and cb is not None:
            if "size" in what:
                what.append("content")
            elif not (a.layers[ca.layer].diff_id == b.layers[cb.layer].diff_id
                      and ca.entry.header_offset == cb.entry.header_offset):
                pending.append((path, na, nb, what))
                continue
        if what:
            out[path] = Change("C", path, tuple(what))
    for path, nb in b_nodes.items():
        if path not in a_nodes:
            out[path] = Change("A", path)
    if pending:
        da = a.content_digest([na for _p, na, _nb, _w in pending], progress)
        db = b.content_digest([nb for _p, _na, nb, _w in pending], progress)
        for path, na, nb, what in pending:
            if da[id(na)] != db[id(nb)]:
                what = what + ["content"]
            if what:
                out[path] = Change("C", path, tuple(what))
    return [out[p] for p in sorted(out)]


# --- images in a store ----------------------------------------------------------------------------

def image_layers(store, reference, platform: Union[str, Platform, None] = None) -> List[LayerSource]:
    """The layer stack of the image ``reference`` names in ``store`` (see
    :meth:`ImageView.of_image`): one :class:`LayerSource` per
    ``rootfs.diff_ids`` entry, read with ``store.open_blob(diff_id)``."""
    desc = store.resolve(reference, platform)
    manifest = parse_manifest(store.read_blob(desc.digest), desc.media_type)
    if not mt.is_config(manifest.config.media_type):
        raise InvalidDocumentError("config.mediaType", f"{manifest.config.media_type!r}: not an image (an "
                                                       "artifact); it has no filesystem", manifest.media_type)
    config = parse_config(store.read_blob(manifest.config.digest), manifest.config.media_type)
    out = []
    for diff_id in config.diff_ids:
        info = store.stat(diff_id)
        out.append(LayerSource(str(diff_id), info.size, lambda d=str(diff_id): store.open_blob(d)))
    return out


# --- import ------------------------------------------------------------------------------------------

IMPORT_CREATED_BY = "layerstore import"


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _raise(exc: OSError):
    raise exc


def _dir_tar(root: Path, out: BinaryIO):
    """Write the tree under ``root`` to ``out`` as a pax tar, reproducibly:
    paths sorted, names relative to ``root`` (no entry for ``root``
    itself), numeric owners (no user or group names), whole-second mtimes,
    hard links kept (tarfile's inode table); sockets left out, symbolic
    links not followed."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(root, onerror=_raise, followlinks=False):
            dirnames.sort()
            names = sorted(dirnames + filenames)
            for name in names:
                full = os.path.join(dirpath, name)
                arc = os.path.relpath(full, root).replace(os.sep, "/")
                info = tf.gettarinfo(full, arcname=arc)
                if info is None:  # a socket or door: tar cannot hold it
                    continue
                info.mtime = int(info.mtime)
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as f:
                        tf.addfile(info, f)
                else:
                    tf.addfile(info)


class _DirStream:
    """A directory tarred by :func:`_dir_tar` on a thread, read from a pipe."""

    def __init__(self, root: Path):
        r, w = os.pipe()
        self.reader = os.fdopen(r, "rb")
        self._writer = os.fdopen(w, "wb")
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(root,), name="layerstore-import-tar",
                                        daemon=True)
        self._thread.start()

    def _run(self, root: Path):
        try:
            _dir_tar(root, self._writer)
        except BaseException as exc:  # reported by close()
            self.error = exc
        finally:
            try:
                self._writer.close()
            except OSError:
                pass

    def close(self):
        """Stop reading and wait for the writer; raises what the writer
        raised (other than the broken pipe that closing causes)."""
        self.reader.close()
        self._thread.join()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise self.error


def _sniff_layer_type(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x1f\x8b"):
        return mt.OCI_LAYER_TAR_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return mt.OCI_LAYER_TAR_ZSTD
    return mt.OCI_LAYER_TAR


def _compact(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def import_rootfs(store, source: Union[str, os.PathLike], reference: str, *,
                  platform: Union[str, Platform, None] = None, created: float = 0.0,
                  message: str = "") -> LoadedImage:
    """Store a root filesystem as a one-layer image and tag it, as
    ``docker import`` does: ``source`` is a directory (tarred reproducibly,
    see :func:`_dir_tar`, streamed into the store) or a flat tar file
    (plain, gzip or zstd; stored byte-exact as the layer).

    The config and the OCI manifest are built deterministically (JSON with
    sorted keys, no whitespace): the same input, ``platform``, ``created``
    and ``message`` give the same image ID and manifest digest. Config:
    ``architecture``/``os``/``variant`` of ``platform`` (default this
    machine's), ``created`` (RFC 3339, from ``created`` in seconds since the
    epoch), ``rootfs.diff_ids`` the layer's, one ``history`` step
    (``created_by`` "layerstore import", ``comment`` ``message`` when given).

    Layer, config, manifest, the image record and the tag become visible in
    one transaction, or nothing does.

    Args:
        reference: the tag (``name[:tag]``, tag ``latest`` by default).

    Returns the :class:`LoadedImage` (one layer, status "stored" or
    "already exists").

    Raises ReferenceError (``reference`` invalid or a digest),
    PlatformError, FileNotFoundError, TarFormatError (a file that is not a
    tar), CompressedLayerError, OSError (a file of the directory cannot be
    read)."""
    ref = parse_normalized(reference)
    if ref.digest is not None:
        raise ReferenceError(reference, TAG_INVALID, "a tag reference (name[:tag]) is needed, not a digest")
    if ref.tag is None:
        ref = ref.with_tag("latest")
    plat = (Platform.parse(platform) if isinstance(platform, str) else platform) or host_platform()
    plat = plat.normalized()
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(2, "No such file or directory", str(src))
    store._images_db()
    with store.batch() as b:
        if src.is_dir():
            stream = _DirStream(src)
            media_type = mt.OCI_LAYER_TAR
            try:
                layer = b.ingest(stream.reader, media_type=media_type)
            except BaseException:
                stream.close()  # the writer's error, if any, says more
                raise
            stream.close()
            origin = f"import dir:{src}"
        else:
            media_type = _sniff_layer_type(src)
            layer = b.ingest(src, media_type=media_type)
            origin = f"import tar:{src}"
        if layer.diff_id is None:
            raise ImageFormatError(str(src), None, "not a layer tar")
        existed = store.has(layer.digest)
        created_text = _rfc3339(created)
        history = {"created": created_text, "created_by": IMPORT_CREATED_BY}
        if message:
            history["comment"] = message
        cfg = {"architecture": plat.architecture, "os": plat.os, "created": created_text,
               "config": {}, "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id)]},
               "history": [history]}
        if plat.variant:
            cfg["variant"] = plat.variant
        config_raw = _compact(cfg)
        config = parse_config(config_raw, mt.OCI_IMAGE_CONFIG)
        cfg_info = b.ingest(config_raw, media_type=mt.OCI_IMAGE_CONFIG)
        manifest_raw = _compact({
            "schemaVersion": 2, "mediaType": mt.OCI_IMAGE_MANIFEST,
            "config": {"mediaType": mt.OCI_IMAGE_CONFIG, "digest": str(cfg_info.digest), "size": cfg_info.size},
            "layers": [{"mediaType": media_type, "digest": str(layer.digest), "size": layer.size}],
        })
        manifest = parse_manifest(manifest_raw, mt.OCI_IMAGE_MANIFEST)
        b.ingest(manifest_raw, media_type=mt.OCI_IMAGE_MANIFEST)
        status = LayerStatus(Digest(layer.digest), Digest(layer.diff_id), layer.size, media_type,
                             ALREADY_EXISTS if existed else STORED)
        loaded = LoadedImage(digest=manifest.digest, media_type=mt.OCI_IMAGE_MANIFEST, references=(str(ref),),
                             config_digest=config.digest, platform=str(config.platform), layers=(status,))
        platform_text = json.dumps(config.platform.to_json(), sort_keys=True, separators=(",", ":"))
        result = LoadResult("import", [loaded],
                            {manifest.digest: ImageRecord(manifest.digest, mt.OCI_IMAGE_MANIFEST, "manifest",
                                                          config.digest, platform_text, toplevel=True)},
                            {ref: manifest.digest})
        b.commit(extra=lambda cur: store._record_import(cur, result, origin))
    return loaded
