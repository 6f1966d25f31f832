"""Lifecycle of stored content: remove, prune, repack, df and verify, safe
while other processes ingest and read the same store.

What ``docker rmi``, ``docker image prune [-a]`` and ``docker system df``
do, at chunk granularity, as methods of :class:`layerstore.store.Store`
(which inherits :class:`LifecycleMixin`):

``remove(reference, force=False)``
    untag, and delete the image's catalog rows when nothing else needs it.
``prune(all=False, dry_run=False)``
    delete images no tag reaches, blobs no image references and chunks no
    blob references (catalog rows; their pack bytes become dead).
``repack(threshold=0.2)``
    rewrite packs whose dead fraction reaches ``threshold``, moving only
    live chunks, then delete the old packs: the disk space comes back here.
``df()``
    what ``docker system df`` shows plus dedup and compression figures.
``verify(repair=False)``
    re-hash everything, report every fault and the images it breaks;
    ``repair`` recovers what the store still holds and drops the rest.

Object graph, roots first::

    tag ─► image index ─► manifest ─► config, layers ─► diff-ID layer (of a compressed layer)
    every blob ─► recipe ─► chunks ─► pack entries

Blobs and images are collected by marking what the roots reach (the graph
is small: a manifest names one config and a few layers); chunks carry
reference counts (``chunks.refs``: the number of stored blobs whose recipe
uses the chunk), kept exact in the transaction that adds a blob (ingest)
and the one that deletes it (prune, repair).

Concurrency (``docs/design.md``, "Garbage collection and concurrency"):
every ingest, batch and blob reader holds a *lease* (a locked file in
``locks/``) from before its first catalog lookup until it commits or
closes. Dedup lookups ignore chunks at zero references and blobs or images
a collection has *condemned*. A collection deletes in two steps: it marks
(condemns blobs and images, or finds chunks at zero references, or moves
chunks out of a pack), waits until every lease that was live after the mark
has ended, then deletes only what is still unreferenced. One collection
(prune, repack, repair) runs at a time (``locks/gc.lock``).
"""
from __future__ import annotations

import fcntl
import os
import secrets
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import xxhash

from . import mediatypes as mt
from . import recipe as recipe_codec
from .digest import Digest
from .errors import (CorruptBlobError, ImageNotFoundError, LayerStoreError, PackFormatError,
                     StoreError)
from .manifest import ImageIndex, Manifest, parse_document
from .packs import (CODEC_LZ4_LINKED, CODEC_NONE, ENTRY_HEADER_SIZE, PACK_HEADER_SIZE, PackIndex, PackLocation,
                    PackReader, PackWriter, _encode_run, _fsync_dir, _parse_entry_header, _pread_exact, _same_file,
                    _try_lock)
from .reference import parse

__all__ = [
    "LifecycleMixin", "RemoveReport", "PruneReport", "RepackReport", "DiskUsage", "ImageUsage",
    "Fault", "VerifyReport", "Lease", "StoreBusyError", "ImageInUseError",
    "DEFAULT_WAIT", "DEFAULT_REPACK_THRESHOLD", "GC_SCHEMA_VERSION",
]

GC_SCHEMA_VERSION = 1

#: Seconds a collection waits for the collection lock, and for in-flight
#: operations to end, before it stops (see :meth:`LifecycleMixin.prune`).
DEFAULT_WAIT = 60.0
#: Dead fraction of a pack from which :meth:`LifecycleMixin.repack` rewrites it.
DEFAULT_REPACK_THRESHOLD = 0.2

_LOCKS_DIR = "locks"
_GC_LOCK = "gc.lock"
_LEASE_SUFFIX = ".lease"
_BATCH = 500
# Plaintext of the deferred entries a repack compresses in one run (bytes).
_COMPRESS_RUN_BYTES = 4 << 20
_COMPRESSED_KINDS = ("gzip", "zstd")
_BLOB_KINDS = ("raw", "layer", *_COMPRESSED_KINDS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gc_condemned (
    digest TEXT PRIMARY KEY,
    since  REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gc_edges (
    parent TEXT NOT NULL,
    child  TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks(digest) WHERE refs <= 0;
INSERT OR IGNORE INTO meta VALUES ('gc_schema_version', '1');
"""


# --- errors ------------------------------------------------------------------------------

class StoreBusyError(StoreError):
    """Another prune, repack or repair held the store's collection lock for
    longer than the time allowed (``wait`` seconds)."""


class ImageInUseError(LayerStoreError):
    """:meth:`LifecycleMixin.remove` refused to remove an image by digest
    because tags or image indexes still need it (``force=True`` removes it
    anyway).

    Attributes:
        reference: the reference given (str).
        needed_by: what needs it: ``repository:tag`` of tags, ``index
            <digest>`` of image indexes listing it (tuple of str).
    """

    def __init__(self, reference, needed_by):
        super().__init__(f"image {reference!r} is still needed by {', '.join(needed_by)}; "
                         "remove those first or use force=True")
        self.reference = reference
        self.needed_by = tuple(needed_by)


# --- reports -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoveReport:
    """What :meth:`LifecycleMixin.remove` did, as ``docker rmi`` prints it:
    ``untagged``: tags removed (familiar ``name:tag``); ``deleted``: digests
    of the manifests and indexes whose image rows were removed. Their blobs
    are reclaimed by :meth:`~LifecycleMixin.prune` and
    :meth:`~LifecycleMixin.repack`."""

    untagged: Tuple[str, ...]
    deleted: Tuple[Digest, ...]


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`LifecycleMixin.prune` removed (or, with ``dry_run``, would remove).

    ``images``: manifest and index digests whose image rows went;
    ``blobs``: blob digests deleted; ``chunks``: chunk rows deleted;
    ``reclaimed_bytes``: pack bytes those chunks occupied (entry headers
    included), which :meth:`~LifecycleMixin.repack` returns to the file
    system; ``deferred``: True when in-flight operations outlived the wait,
    so part of the work was left for the next prune (what was counted here
    is done); ``problems``: blobs left in place because their recipe could
    not be decoded (``verify(repair=True)`` handles them)."""

    images: Tuple[Digest, ...] = ()
    blobs: Tuple[Digest, ...] = ()
    chunks: int = 0
    reclaimed_bytes: int = 0
    dry_run: bool = False
    deferred: bool = False
    problems: Tuple[str, ...] = ()


@dataclass(frozen=True)
class RepackReport:
    """What :meth:`LifecycleMixin.repack` did.

    ``packs_considered``: sealed packs examined; ``packs_rewritten``: ids of
    the packs whose live chunks were moved; ``packs_written``: ids of the
    new packs; ``packs_deleted``: ids of the packs deleted (a pack left over
    by an interrupted repack is deleted without being rewritten);
    ``chunks_moved`` and ``bytes_moved`` (entry bytes before the move,
    headers included); ``chunks_compressed``: moved chunks that compact had
    left uncompressed and that are now compressed; ``bytes_before``/``bytes_after``: bytes on disk of every pack
    file and index, measured before and after; ``reclaimed_bytes``:
    their difference; ``seconds``: wall time; ``deferred``: True when
    readers outlived the wait, so emptied packs were kept for the next
    repack; ``problems``: damaged entries left where they are."""

    packs_considered: int = 0
    packs_rewritten: Tuple[str, ...] = ()
    packs_written: Tuple[str, ...] = ()
    packs_deleted: Tuple[str, ...] = ()
    chunks_moved: int = 0
    chunks_compressed: int = 0
    bytes_moved: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    reclaimed_bytes: int = 0
    seconds: float = 0.0
    deferred: bool = False
    problems: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageUsage:
    """Disk use of one top-level image (one line of ``docker system df -v``).

    ``digest``: its manifest or index; ``tags``: familiar ``name:tag`` of
    the tags pointing at it; ``size``: logical bytes of every blob it holds
    (manifests, configs, layers as stored and, for compressed layers, the
    uncompressed layer too); ``unique_bytes``: stored bytes (pack entries
    and recipes) no other top-level image uses; ``shared_bytes``: stored
    bytes it shares with at least one other."""

    digest: Digest
    tags: Tuple[str, ...]
    size: int
    unique_bytes: int
    shared_bytes: int

    @property
    def dangling(self) -> bool:
        return not self.tags


@dataclass(frozen=True)
class DiskUsage:
    """What :meth:`LifecycleMixin.df` measures. Bytes unless named otherwise.

    ``docker system df`` figures: ``images`` (top-level images), ``active``
    (those a tag reaches), ``size`` (bytes on disk: pack files, their
    indexes and the catalog), ``reclaimable`` (pack bytes that
    ``prune(all=True)`` followed by ``repack(threshold=0)`` would free) and
    ``reclaimable_percent`` (of ``size``).

    Deduplication figures: ``logical_bytes`` (sum of the sizes of every
    stored blob: what reading them all returns), ``unique_bytes`` (distinct
    content: plaintext of every referenced chunk plus the recipes' segment
    bytes), ``stored_bytes`` (referenced chunks' pack entries, headers
    included, plus encoded recipes), ``dedup_ratio`` = logical / unique,
    ``compression_ratio`` = chunk plaintext / chunk stored bytes.

    Packs: ``pack_files``, ``pack_bytes`` (packs and indexes on disk),
    ``dead_pack_bytes`` (pack bytes no catalog row points at: repack
    reclaims them), ``to_compress_bytes`` (chunks that compact, deduplicating
    gzip and zstd layers, stored uncompressed, which the next repack
    compresses),
    ``catalog_bytes`` (``catalog.db`` and its WAL).
    ``per_image``: one :class:`ImageUsage` per top-level image.

    Layers held as they came: ``layers_not_deduplicated`` (gzip and zstd
    layers ingested but not yet deduplicated by ``compact``; their chunks
    are their compressed blob's, which also counts them in ``logical_bytes``)
    and ``not_deduplicated_bytes`` (their tar bytes)."""

    images: int
    active: int
    size: int
    reclaimable: int
    reclaimable_percent: float
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    dedup_ratio: float
    compression_ratio: float
    pack_files: int
    pack_bytes: int
    dead_pack_bytes: int
    catalog_bytes: int
    blobs: int
    chunks: int
    per_image: Tuple[ImageUsage, ...] = ()
    to_compress_bytes: int = 0
    layers_not_deduplicated: int = 0
    not_deduplicated_bytes: int = 0


@dataclass(frozen=True)
class Fault:
    """One fault :meth:`LifecycleMixin.verify` found.

    ``kind``: ``pack``, ``chunk``, ``blob``, ``tag`` or ``refcount``;
    ``subject``: the pack id, chunk digest (hex), blob digest, or
    ``repository:tag``; ``what``: what is wrong; ``breaks``: the
    images it makes unreadable, each as the familiar ``name:tag`` of a tag
    pointing at it or, untagged, its digest."""

    kind: str
    subject: str
    what: str
    breaks: Tuple[str, ...] = ()

    def __str__(self):
        text = f"{self.kind} {self.subject}: {self.what}"
        if self.breaks:
            text += f" (breaks {', '.join(self.breaks)})"
        return text


@dataclass
class VerifyReport:
    """Result of :meth:`LifecycleMixin.verify`.

    ``faults``: every fault found (:class:`Fault`), before any repair;
    ``repairs``: one line per action ``repair=True`` took; counts of what
    was read: ``packs_checked``, ``chunks_checked``, ``blobs_checked``,
    ``bytes_checked`` (blob bytes re-hashed), ``images_checked``."""

    packs_checked: int = 0
    chunks_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    images_checked: int = 0
    faults: List[Fault] = field(default_factory=list)
    repairs: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no fault was found."""
        return not self.faults

    @property
    def problems(self) -> List[str]:
        """The faults as text, one line each."""
        return [str(f) for f in self.faults]

    @property
    def broken_images(self) -> List[str]:
        """Every image some fault breaks (sorted)."""
        return sorted({b for f in self.faults for b in f.breaks})


# --- leases ------------------------------------------------------------------------------

class Lease:
    """An in-flight operation (an ingest, a batch, a blob reader) made
    visible to collections in other processes: the file
    ``locks/<32 hex>.lease``, held with an exclusive ``flock`` until
    :meth:`release` (or process death, when the kernel drops the lock).

    Created before the operation's first catalog lookup; a collection waits
    for every lease it saw after its mark to end before it deletes."""

    __slots__ = ("path", "_fd")

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self):
        """End the lease (idempotent): unlink the file, then drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the kernel drops the lock anyway
            pass


def take_lease(directory: str) -> Lease:
    """Create and lock a new lease file in ``directory``.

    The file is created under a temporary name, locked, then renamed, so a
    ``*.lease`` name is never seen unlocked while its owner lives. Raises
    OSError."""
    while True:
        lid = secrets.token_hex(16)
        tmp = os.path.join(directory, f".{lid}{_LEASE_SUFFIX}.tmp")
        final = os.path.join(directory, lid + _LEASE_SUFFIX)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(tmp, final)
        except FileNotFoundError:
            # a collection removed the temporary file before we renamed it
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return Lease(final, fd)


def live_leases(directory: str) -> Dict[str, int]:
    """Leases live now: file name -> inode. Lease files whose lock can be
    taken belong to dead processes and are removed, as are their temporary
    files."""
    out = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        tmp = name.startswith(".") and name.endswith(_LEASE_SUFFIX + ".tmp")
        if not (tmp or name.endswith(_LEASE_SUFFIX)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if _try_lock(fd, exclusive=tmp):
                if _same_file(fd, path):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            elif not tmp:
                out[name] = os.fstat(fd).st_ino
        finally:
            os.close(fd)
    return out


def _lease_alive(directory: str, name: str, inode: int) -> bool:
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return os.fstat(fd).st_ino == inode and not _try_lock(fd, exclusive=False)
    finally:
        os.close(fd)


def wait_for_leases(directory: str, witnesses: Dict[str, int], deadline: float) -> bool:
    """Wait until every lease in ``witnesses`` (from :func:`live_leases`)
    has ended, polling; False if ``deadline`` (``time.monotonic()``) passes
    first."""
    remaining = dict(witnesses)
    delay = 0.001
    while True:
        for name, inode in list(remaining.items()):
            if not _lease_alive(directory, name, inode):
                del remaining[name]
        if not remaining:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# --- the object graph --------------------------------------------------------------------

@dataclass
class _Graph:
    """Catalog rows that decide reachability, read in one transaction.

    ``tags``: (repository, tag) -> digest; ``images``: digest -> (kind,
    toplevel); ``children``: index digest -> digests of its present
    children; ``edges``: manifest or index blob -> digests its document
    names; ``blobs``: digest -> (kind, diff_id, media_type, size);
    ``unparsed``: manifest or index blobs whose document could not be read;
    ``condemned``: digests marked by a collection in progress."""

    tags: Dict[Tuple[str, str], str]
    images: Dict[str, Tuple[str, int]]
    children: Dict[str, List[str]]
    edges: Dict[str, List[str]]
    blobs: Dict[str, tuple]
    unparsed: Set[str]
    condemned: Set[str]

    def referenced(self, d: str) -> List[str]:
        """Digests ``d`` references: an index row's present children; a
        manifest's config and layers (an index blob without row: every
        manifest it lists); a compressed layer's uncompressed layer."""
        img = self.images.get(d)
        if img is not None and img[0] == "index":
            out = list(self.children.get(d, ()))
        else:
            out = [c for c in self.edges.get(d, ()) if c != d]
        b = self.blobs.get(d)
        if b is not None and b[0] in _COMPRESSED_KINDS and b[1]:
            out.append(b[1])
        return out

    def reach(self, roots: Iterable[str], strict: bool = True) -> Set[str]:
        """Every digest reachable from ``roots`` (roots included). With
        ``strict``, reaching a manifest whose document could not be read
        raises StoreError: what it references is unknown."""
        seen: Set[str] = set()
        stack = list(roots)
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            if strict and d in self.unparsed:
                raise StoreError(f"manifest {d} cannot be read, so what it references is unknown; "
                                 "run verify(repair=True) before collecting")
            stack.extend(self.referenced(d))
        return seen


def _document_refs(raw: bytes, media_type: Optional[str]) -> List[str]:
    doc = parse_document(raw, media_type)
    if isinstance(doc, Manifest):
        return [str(doc.config.digest)] + [str(layer.digest) for layer in doc.layers]
    if isinstance(doc, ImageIndex):
        return [str(m.digest) for m in doc.manifests]
    return []


def _rebuilt_from_layer(raw) -> bool:
    """True when an encoded recipe is a rebuilt one (compact.py): that blob
    is made from its layer, so it cannot stand in for it."""
    try:
        return bool(recipe_codec.decode(raw).source)
    except LayerStoreError:
        return True


def _familiar(repository: str, tag: str) -> str:
    try:
        return parse(f"{repository}:{tag}").familiar()
    except LayerStoreError:
        return f"{repository}:{tag}"


def _in_batches(seq: Sequence, n: int = _BATCH):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _file_size(path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


# --- the mixin ---------------------------------------------------------------------------

class LifecycleMixin:
    """Lifecycle methods of :class:`layerstore.store.Store` (see the module
    docstring). Expects ``self.root``, ``self._catalog``, ``self._packs`` and
    the blob and image methods of Store and ImagesMixin."""

    _gc_ready = False
    _locks_path: Optional[str] = None

    # -- plumbing used by the ingest and read paths -----------------------------------------
    def _gc_db(self):
        """The catalog, with the collection tables created (idempotent; run
        outside any transaction of this thread)."""
        if not self._gc_ready:
            con = self._catalog._con()
            row = con.execute("SELECT value FROM meta WHERE key = 'gc_schema_version'").fetchone()
            if row is None:
                con.executescript(_SCHEMA)
                row = con.execute("SELECT value FROM meta WHERE key = 'gc_schema_version'").fetchone()
            if int(row[0]) > GC_SCHEMA_VERSION:
                raise StoreError(f"catalog {self._catalog.path}: collection tables have schema version "
                                 f"{row[0]}, newer than supported ({GC_SCHEMA_VERSION})")
            self._gc_ready = True
        return self._catalog

    def _locks_dir(self) -> str:
        d = self._locks_path
        if d is None:
            d = os.path.join(str(self.root), _LOCKS_DIR)
            os.makedirs(d, exist_ok=True)
            self._locks_path = d
        return d

    def _lease(self) -> Lease:
        """A new :class:`Lease` for an operation about to look at the catalog."""
        self._gc_db()
        return take_lease(self._locks_dir())

    def _has_live(self, digest: str) -> bool:
        """True when the blob is stored and no collection has condemned it:
        the test an ingest uses before relying on a stored blob."""
        self._gc_db()
        return self._catalog._con().execute(
            "SELECT 1 FROM blobs b WHERE b.digest = ? "
            "AND NOT EXISTS (SELECT 1 FROM gc_condemned c WHERE c.digest = b.digest)",
            (str(digest),)).fetchone() is not None

    def _is_live_image(self, digest: str) -> bool:
        """True when the manifest or index is stored as an image and no
        collection has condemned it."""
        self._gc_db()
        return self._images_db()._con().execute(
            "SELECT 1 FROM images i WHERE i.digest = ? "
            "AND NOT EXISTS (SELECT 1 FROM gc_condemned c WHERE c.digest = i.digest)",
            (str(digest),)).fetchone() is not None

    def _live_chunks(self, digests: Sequence[bytes]) -> set:
        """The subset of ``digests`` (32 bytes each) stored with at least one
        reference: the chunks an ingest may deduplicate against. A chunk at
        zero references may be deleted by a prune at any time, so an ingest
        writes its own copy instead."""
        found = set()
        con = self._catalog._con()
        for part in _in_batches(list(digests)):
            q = "SELECT digest FROM chunks WHERE refs > 0 AND digest IN (%s)" % ",".join("?" * len(part))
            found.update(row[0] for row in con.execute(q, part))
        return found

    def _revive(self, cur, digests: Iterable[str]):
        """Inside a commit: blobs (and images) stored again are no longer
        condemned."""
        if not self._gc_ready and cur.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gc_condemned'").fetchone() is None:
            return
        cur.executemany("DELETE FROM gc_condemned WHERE digest = ?", [(str(d),) for d in digests])

    @contextmanager
    def _gc_lock(self, wait: float):
        """Hold ``locks/gc.lock`` exclusively: one collection at a time.
        Raises StoreBusyError after ``wait`` seconds."""
        path = os.path.join(self._locks_dir(), _GC_LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + wait
            delay = 0.001
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise StoreBusyError(f"store {self.root}: another prune, repack or repair is running "
                                         f"(waited {wait:g} s)")
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)

    def _wait_quiescent(self, deadline: float) -> bool:
        """Wait until every operation in flight now has ended (see module
        docstring); False when ``deadline`` passes first."""
        d = self._locks_dir()
        return wait_for_leases(d, live_leases(d), deadline)

    # -- the graph ------------------------------------------------------------------------------
    def _edges_missing(self, con) -> List[Tuple[str, Optional[str]]]:
        """Manifest and index blobs (by media type, or by being an image)
        whose references are not recorded in ``gc_edges`` yet."""
        rows = con.execute(
            "SELECT b.digest, coalesce(i.media_type, b.media_type) FROM blobs b "
            "LEFT JOIN images i ON i.digest = b.digest "
            "WHERE NOT EXISTS (SELECT 1 FROM gc_edges e WHERE e.parent = b.digest) "
            "AND (i.digest IS NOT NULL OR b.media_type IS NOT NULL)").fetchall()
        return [(d, m) for d, m in rows if mt.is_manifest(m) or mt.is_index(m)]

    def _compute_edges(self, todo) -> Tuple[List[Tuple[str, str]], Set[str]]:
        """(parent, child) rows for manifest and index blobs, a (d, d) row
        marking each as read; and the digests whose document is unreadable."""
        rows, bad = [], set()
        for d, media_type in todo:
            try:
                refs = _document_refs(self.read_blob(d), media_type)
            except (LayerStoreError, OSError):
                bad.add(d)
                continue
            rows.append((d, d))
            rows.extend((d, c) for c in dict.fromkeys(refs))
        return rows, bad

    def _ensure_edges(self):
        """Record the references of manifests not yet read (outside any
        transaction; a collection repeats it inside its transaction for
        manifests committed meanwhile)."""
        con = self._catalog._con()
        rows, _bad = self._compute_edges(self._edges_missing(con))
        if rows:
            with self._catalog.write() as cur:
                cur.executemany("INSERT OR IGNORE INTO gc_edges(parent, child) VALUES (?, ?)", rows)

    def _load_graph(self, cur, persist_edges: bool) -> _Graph:
        """The graph as ``cur``'s transaction sees it. Manifests committed
        since the last :meth:`_ensure_edges` are read now (and their edges
        written when ``persist_edges``: ``cur`` is then a write transaction)."""
        rows, bad = self._compute_edges(self._edges_missing(cur))
        if rows and persist_edges:
            cur.executemany("INSERT OR IGNORE INTO gc_edges(parent, child) VALUES (?, ?)", rows)
        edges: Dict[str, List[str]] = defaultdict(list)
        for p, c in cur.execute("SELECT parent, child FROM gc_edges"):
            edges[p].append(c)
        for p, c in rows:
            if c not in edges[p]:
                edges[p].append(c)
        children: Dict[str, List[str]] = defaultdict(list)
        for p, c in cur.execute("SELECT parent, child FROM image_children WHERE present = 1"):
            children[p].append(c)
        return _Graph(
            tags={(r, t): d for r, t, d in cur.execute("SELECT repository, tag, digest FROM tags")},
            images={d: (k, top) for d, k, top in cur.execute("SELECT digest, kind, toplevel FROM images")},
            children=dict(children),
            edges=dict(edges),
            blobs={d: (k, dif, m, s) for d, k, dif, m, s in
                   cur.execute("SELECT digest, kind, diff_id, media_type, size FROM blobs")},
            unparsed=bad,
            condemned={d for (d,) in cur.execute("SELECT digest FROM gc_condemned")},
        )

    def _names_of(self, g: _Graph) -> Dict[str, List[str]]:
        """image digest -> familiar names of the tags pointing at it."""
        names: Dict[str, List[str]] = defaultdict(list)
        for (repo, tag), d in sorted(g.tags.items()):
            names[d].append(_familiar(repo, tag))
        return names

    # -- remove ---------------------------------------------------------------------------------
    def remove(self, reference, force: bool = False) -> RemoveReport:
        """Remove an image, as ``docker rmi`` does.

        ``reference`` is a tag (``name[:tag]``): the tag is removed (the move
        is kept in its history); the image goes too when no other tag points
        at it and no stored image index lists it. ``reference`` is a digest,
        ``name@digest``, an image ID (meaning every manifest with that
        config) or a unique prefix of one: the image is removed, unless a tag points at it or an index lists it —
        then ImageInUseError, or with ``force`` its tags are removed and the
        indexes record it as not present (``image_children.present = 0``).

        Removing an index also removes the manifests it lists that are not
        top-level images, no tag points at and no other index lists.
        Catalog rows go in one transaction; the blobs become unreferenced and
        are reclaimed by :meth:`prune` then :meth:`repack`.

        Raises ImageNotFoundError, ImageInUseError, ReferenceError."""
        self._gc_db()
        digest, ref = self._lookup(reference)
        text = str(reference).strip()
        untagged: List[str] = []
        deleted: List[str] = []
        now = time.time()
        with self._images_db().write() as cur:
            if ref is not None:
                row = cur.execute("SELECT digest FROM tags WHERE repository = ? AND tag = ?",
                                  (ref.name, ref.tag)).fetchone()
                if row is None:
                    raise ImageNotFoundError(text, "no such tag (removed meanwhile)")
                digest = row[0]
                self._move_tag(cur, ref, None, "untag", now)
                untagged.append(ref.familiar())
                if not self._needed_by(cur, digest):
                    self._delete_image(cur, digest, deleted)
            else:
                targets = self._targets(cur, digest, text)
                needers = sorted({n for t in targets for n in self._needed_by(cur, t)})
                if needers and not force:
                    raise ImageInUseError(text, needers)
                for t in targets:
                    for repo, tag in cur.execute("SELECT repository, tag FROM tags WHERE digest = ?",
                                                 (t,)).fetchall():
                        self._move_tag(cur, parse(f"{repo}:{tag}"), None, f"remove {t} (forced)", now)
                        untagged.append(_familiar(repo, tag))
                    cur.execute("UPDATE image_children SET present = 0 WHERE child = ? AND present = 1", (t,))
                    if cur.execute("SELECT 1 FROM images WHERE digest = ?", (t,)).fetchone() is not None:
                        self._delete_image(cur, t, deleted)
        return RemoveReport(tuple(untagged), tuple(Digest(d) for d in deleted))

    def _targets(self, cur, digest: str, text: str) -> List[str]:
        """The manifests a digest reference names: every manifest whose
        config is the image ID given, else the digest itself."""
        hexpart = text.split("@", 1)[-1]
        hexpart = hexpart[7:] if hexpart.startswith("sha256:") else hexpart
        row = cur.execute("SELECT config FROM images WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            raise ImageNotFoundError(text, "removed meanwhile")
        config = row[0]
        if config and config.startswith("sha256:" + hexpart) and not digest.startswith("sha256:" + hexpart):
            return [d for (d,) in cur.execute("SELECT digest FROM images WHERE config = ? ORDER BY digest",
                                              (config,))]
        return [digest]

    @staticmethod
    def _needed_by(cur, digest: str) -> List[str]:
        """Tags pointing at ``digest`` and image indexes listing it as present."""
        out = [f"{_familiar(r, t)}" for r, t in
               cur.execute("SELECT repository, tag FROM tags WHERE digest = ?", (digest,))]
        out += [f"index {p}" for (p,) in cur.execute(
            "SELECT DISTINCT c.parent FROM image_children c JOIN images i ON i.digest = c.parent "
            "WHERE c.child = ? AND c.present = 1 AND c.parent != ?", (digest, digest))]
        return out

    def _delete_image(self, cur, digest: str, deleted: List[str]):
        """Delete an image row; for an index, also its children that are not
        top-level, untagged and listed by no other index."""
        children = [c for (c,) in cur.execute(
            "SELECT child FROM image_children WHERE parent = ? AND present = 1", (digest,))]
        cur.execute("DELETE FROM image_children WHERE parent = ?", (digest,))
        cur.execute("DELETE FROM images WHERE digest = ?", (digest,))
        deleted.append(digest)
        for c in dict.fromkeys(children):
            row = cur.execute("SELECT toplevel FROM images WHERE digest = ?", (c,)).fetchone()
            if row is None or row[0]:
                continue
            if not self._needed_by(cur, c):
                self._delete_image(cur, c, deleted)

    # -- prune ----------------------------------------------------------------------------------
    def prune(self, all: bool = False, dry_run: bool = False, *, wait: float = DEFAULT_WAIT) -> PruneReport:
        """Delete what nothing needs, as ``docker image prune [-a]`` does.

        Roots are the tags; with ``all=False`` also the images that are not
        top-level (an index's platform manifests), as ``docker image prune``
        keeps untagged intermediate images. Removed: images no root reaches
        (``all=False``: the dangling ones :meth:`images` lists), blobs no
        remaining image references (an image's manifest, config and layers,
        a compressed layer's uncompressed layer), and chunks no remaining
        blob uses. ``dry_run`` reports what would go and changes nothing.

        Safe while other processes ingest and read: nothing is deleted
        before every operation in flight at the time it was marked has
        ended, waiting at most ``wait`` seconds per step; if they take
        longer the report says ``deferred`` and the next prune continues.

        Returns a :class:`PruneReport`. Raises StoreBusyError (another
        collection ran longer than ``wait``), StoreError (a reachable
        manifest cannot be read)."""
        self._gc_db()
        self._images_db()
        if dry_run:
            return self._prune_plan(all)
        with self._gc_lock(wait):
            deadline = time.monotonic() + wait
            self._ensure_edges()
            self._condemn(all)
            if not self._wait_quiescent(deadline):
                return PruneReport(deferred=True)
            images, blobs, problems = self._sweep()
            chunks, nbytes, deferred = self._sweep_chunks(time.monotonic() + wait)
        return PruneReport(tuple(Digest(d) for d in images), tuple(Digest(d) for d in blobs), chunks, nbytes,
                           False, deferred, tuple(problems))

    @staticmethod
    def _roots(g: _Graph, all_: bool) -> Set[str]:
        roots = set(g.tags.values())
        if not all_:
            roots |= {d for d, (_kind, top) in g.images.items() if not top}
        return roots

    def _prune_plan(self, all_: bool) -> PruneReport:
        with self._lease(), self._catalog.read() as cur:
            g = self._load_graph(cur, persist_edges=False)
            kept = g.reach(self._roots(g, all_))
            images = sorted(d for d in g.images if d not in kept)
            blobs = sorted(d for d in g.blobs if d not in kept)
            losing: Dict[bytes, int] = defaultdict(int)
            for part in _in_batches(blobs):
                q = "SELECT digest, recipe FROM blobs WHERE digest IN (%s)" % ",".join("?" * len(part))
                for d, raw in cur.execute(q, part):
                    try:
                        rec = recipe_codec.decode(raw, what=f"recipe of {d}")
                    except LayerStoreError:
                        continue
                    for c in {r.digest for r in rec.chunks}:
                        losing[c] += 1
            chunks, nbytes = 0, 0
            for part in _in_batches(list(losing)):
                q = "SELECT digest, refs, stored_length FROM chunks WHERE digest IN (%s)" % ",".join("?" * len(part))
                for c, refs, slen in cur.execute(q, part):
                    if refs - losing[c] <= 0:
                        chunks += 1
                        nbytes += ENTRY_HEADER_SIZE + slen
            for c, slen in cur.execute("SELECT digest, stored_length FROM chunks WHERE refs <= 0"):
                if c not in losing:
                    chunks += 1
                    nbytes += ENTRY_HEADER_SIZE + slen
        return PruneReport(tuple(Digest(d) for d in images), tuple(Digest(d) for d in blobs), chunks, nbytes,
                           dry_run=True)

    def _condemn(self, all_: bool):
        """Mark: in one transaction, condemn every image and blob the roots
        do not reach (replacing any earlier marks)."""
        with self._catalog.write() as cur:
            g = self._load_graph(cur, persist_edges=True)
            kept = g.reach(self._roots(g, all_))
            doomed = {d for d in g.images if d not in kept} | {d for d in g.blobs if d not in kept}
            cur.execute("DELETE FROM gc_condemned")
            now = time.time()
            cur.executemany("INSERT INTO gc_condemned(digest, since) VALUES (?, ?)", [(d, now) for d in sorted(doomed)])

    def _sweep(self) -> Tuple[List[str], List[str], List[str]]:
        """Delete condemned images and blobs that nothing outside the
        condemned set reaches now (tags, images and blobs stored or revived
        since the mark keep what they reference); decrement the chunk
        references of deleted blobs. One transaction."""
        problems: List[str] = []
        with self._catalog.write() as cur:
            g = self._load_graph(cur, persist_edges=True)
            roots = set(g.tags.values())
            roots |= {d for d in g.images if d not in g.condemned}
            roots |= {d for d in g.blobs if d not in g.condemned}
            kept = g.reach(roots)
            images = sorted(d for d in g.images if d in g.condemned and d not in kept)
            blobs = sorted(d for d in g.blobs if d in g.condemned and d not in kept)
            for d in images:
                cur.execute("DELETE FROM image_children WHERE parent = ?", (d,))
                cur.execute("DELETE FROM images WHERE digest = ?", (d,))
            gone = []
            for d in blobs:
                raw = cur.execute("SELECT recipe FROM blobs WHERE digest = ?", (d,)).fetchone()[0]
                try:
                    rec = recipe_codec.decode(raw, what=f"recipe of {d}")
                except LayerStoreError as exc:
                    problems.append(f"blob {d} kept: {exc}")
                    continue
                self._catalog.add_refs(cur, list({r.digest for r in rec.chunks}), -1)
                cur.execute("DELETE FROM blobs WHERE digest = ?", (d,))
                cur.execute("DELETE FROM gc_edges WHERE parent = ?", (d,))
                gone.append(d)
            cur.execute("DELETE FROM gc_condemned")
        return images, gone, problems

    def _sweep_chunks(self, deadline: float) -> Tuple[int, int, bool]:
        """Delete chunk rows at zero references once every operation in
        flight after they were found at zero has ended. Returns (chunks,
        pack bytes they occupied, deferred)."""
        con = self._catalog._con()
        candidates = [d for (d,) in con.execute("SELECT digest FROM chunks WHERE refs <= 0")]
        if not candidates:
            return 0, 0, False
        if not self._wait_quiescent(deadline):
            return 0, 0, True
        count, nbytes = 0, 0
        with self._catalog.write() as cur:
            for part in _in_batches(candidates):
                marks = ",".join("?" * len(part))
                rows = cur.execute(f"SELECT stored_length FROM chunks WHERE refs <= 0 AND digest IN ({marks})",
                                   part).fetchall()
                cur.execute(f"DELETE FROM chunks WHERE refs <= 0 AND digest IN ({marks})", part)
                count += len(rows)
                nbytes += sum(ENTRY_HEADER_SIZE + s for (s,) in rows)
        return count, nbytes, False

    # -- repack ---------------------------------------------------------------------------------
    def repack(self, threshold: float = DEFAULT_REPACK_THRESHOLD, *, wait: float = DEFAULT_WAIT) -> RepackReport:
        """Rewrite packs whose dead fraction (bytes no catalog chunk row
        points at, over the bytes after the pack header) is at least
        ``threshold`` (0 to 1; 0 rewrites every pack holding a dead byte),
        and packs into which compact wrote chunks uncompressed (the new files
        of gzip and zstd layers: the catalog's ``to_compress`` table), copying
        only live entries into new packs, byte for byte but for those
        uncompressed chunks, now compressed with the store's codec; then
        delete the old packs. This process's open pack is sealed first and
        dead writers' packs are recovered, so their dead bytes count too.

        Crash-safe at every point: new packs are sealed (durable) before one
        transaction moves the chunk rows to them, and a pack is deleted only
        when no row points at it. Safe while other processes read: old packs
        stay until every reader that might still use them has closed
        (waiting at most ``wait`` seconds; then ``deferred`` and the next
        repack deletes them).

        Returns a :class:`RepackReport`. Raises ValueError (threshold out of
        range), StoreBusyError."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {threshold!r}")
        self._gc_db()
        with self._gc_lock(wait):
            return self._repack(threshold, None, wait)

    def _pack_bytes_on_disk(self) -> Tuple[int, int]:
        """(number of packs, bytes of every pack and index file)."""
        d = self._packs.directory
        n, total = 0, 0
        for name in os.listdir(d):
            if name.endswith(".pack") or name.endswith(".idx"):
                total += _file_size(os.path.join(d, name))
                n += name.endswith(".pack")
        return n, total

    def _live_by_pack(self) -> Dict[str, Tuple[int, int]]:
        """pack id -> (chunk rows pointing at it, their entry bytes)."""
        con = self._catalog._con()
        return {name: (n, b) for name, n, b in con.execute(
            "SELECT p.name, count(*), sum(? + c.stored_length) FROM chunks c JOIN packs p ON p.id = c.pack "
            "GROUP BY c.pack", (ENTRY_HEADER_SIZE,))}

    def _repack(self, threshold: Optional[float], forced: Optional[Set[str]], wait: float) -> RepackReport:
        """Repack with the collection lock held. ``forced``: packs to rewrite
        whatever their dead fraction (repair), read leniently."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + wait
        self._packs.rotate()
        self._packs.recover()  # also removes the index of a pack whose deletion was interrupted
        _n, before = self._pack_bytes_on_disk()
        live = self._live_by_pack()
        uncompressed = self._catalog.packs_to_compress()  # packs whose new chunks compact left uncompressed
        chosen, considered = [], 0
        active = self._packs.active_pack_id
        for info in self._packs.packs():
            force = forced is not None and info.pack_id in forced
            if info.pack_id == active or (not info.sealed and not (force and not self._packs._live(info.path))):
                continue
            try:
                PackIndex.open(self._packs.index_path(info.pack_id), info.pack_id).close()
            except (OSError, PackFormatError):
                if not force:
                    continue
            considered += 1
            count, live_bytes = live.get(info.pack_id, (0, 0))
            body = max(0, info.size - PACK_HEADER_SIZE)
            dead = max(0, body - live_bytes)
            if forced is not None:
                if force:
                    chosen.append(info)
            elif count == 0 or (dead > 0 and dead >= threshold * body) or info.pack_id in uncompressed:
                chosen.append(info)
        moves, written, problems, compressed = self._copy_live(chosen, lenient=forced is not None,
                                                               compress=uncompressed)
        retire = self._switch(moves, chosen, uncompressed)
        deleted: List[str] = []
        deferred = False
        if retire:
            if self._wait_quiescent(deadline):
                deleted = self._delete_packs(retire)
            else:
                deferred = True
        for info in chosen:
            if info.pack_id not in retire:
                problems.append(f"pack {info.pack_id} kept: chunk rows still point at it")
        _n, after = self._pack_bytes_on_disk()
        return RepackReport(
            packs_considered=considered,
            packs_rewritten=tuple(i.pack_id for i in chosen),
            packs_written=tuple(written),
            packs_deleted=tuple(deleted),
            chunks_moved=len(moves),
            chunks_compressed=compressed,
            bytes_moved=sum(ENTRY_HEADER_SIZE + m[4] for m in moves),
            bytes_before=before,
            bytes_after=after,
            reclaimed_bytes=before - after,
            seconds=time.perf_counter() - t0,
            deferred=deferred,
            problems=tuple(problems),
        )

    @staticmethod
    def _open_pack(path: str, pack_id: str, lenient: bool) -> PackReader:
        """A reader of the pack; ``lenient``: even when its pack header is
        damaged (entries check themselves)."""
        try:
            return PackReader.open(path)
        except PackFormatError:
            if not lenient:
                raise
            return PackReader(path, os.open(path, os.O_RDONLY | os.O_CLOEXEC), pack_id)

    def _copy_live(self, chosen, lenient: bool, compress=frozenset()):
        """Copy the live entries of ``chosen`` packs into new packs, byte for
        byte, checking each (header valid and matching the row, xxh3 of the
        stored bytes); seal the new packs. The uncompressed entries of packs
        in ``compress`` (ids; chunks whose compression ingest deferred) are
        compressed with the store's codec instead, when that saves space.
        Returns (moves, new pack ids, problems, number of entries
        compressed); a move is (digest, old pack id, old offset, new
        location, stored length)."""
        con = self._catalog._con()
        moves, written, problems = [], [], []
        writer: Optional[PackWriter] = None
        run: list = []  # deferred entries to compress together: (digest, old pack, old offset, slen, plaintext)
        run_bytes = 0
        compressed = 0

        def target() -> PackWriter:
            nonlocal writer
            if writer is None or writer.size >= self._packs.max_pack_size:
                if writer is not None:
                    writer.seal()
                writer = PackWriter.create(self._packs.directory, self._packs.codec, self._packs.buffer_size)
                written.append(writer.pack_id)
            return writer

        def flush_run():
            # consecutive entries, so that small chunks compress in linked
            # groups as at ingest (packs._encode_run); one writer holds a group
            nonlocal run_bytes, compressed
            if not run:
                return
            w = target()
            encoded = _encode_run([(r[0], r[4]) for r in run], w._cid)
            compressed += sum(1 for e in encoded if e[2] != CODEC_NONE)
            for (digest, pack_id, offset, slen, _plain), (d, n, c, stored, _joins) in zip(run, encoded):
                moves.append((digest, pack_id, offset, w._append(d, n, c, stored), slen))
            run.clear()
            run_bytes = 0

        try:
            for info in chosen:
                rows = con.execute(
                    "SELECT c.digest, c.offset, c.stored_length, c.length, c.codec FROM chunks c "
                    "JOIN packs p ON p.id = c.pack WHERE p.name = ? ORDER BY c.offset", (info.pack_id,)).fetchall()
                if not rows:
                    continue
                try:
                    reader = self._open_pack(info.path, info.pack_id, lenient)
                except (OSError, PackFormatError) as exc:
                    problems.append(f"pack {info.pack_id}: cannot open: {exc}")
                    continue
                with reader:
                    for digest, offset, slen, length, codec in rows:
                        if not all(type(v) is int and v >= 0 for v in (offset, slen, length, codec)):
                            problems.append(f"pack {info.pack_id}: chunk {bytes(digest).hex()}: catalog row is invalid "
                                            f"({offset!r}, {slen!r}, {length!r}, {codec!r})")
                            continue
                        entry = _pread_exact(reader._fd, ENTRY_HEADER_SIZE + slen, offset)
                        why = _entry_fault(entry, digest, slen, length, codec)
                        if why:
                            problems.append(f"pack {info.pack_id} offset {offset}: chunk {digest.hex()}: {why}")
                            continue
                        if codec == CODEC_NONE and info.pack_id in compress:
                            run.append((digest, info.pack_id, offset, slen, entry[ENTRY_HEADER_SIZE:]))
                            run_bytes += slen
                            if run_bytes >= _COMPRESS_RUN_BYTES:
                                flush_run()
                            continue
                        flush_run()
                        if codec == CODEC_LZ4_LINKED:
                            # compressed against its group: re-encoded alone,
                            # since the group's other entries may not move
                            try:
                                plain = reader.read(PackLocation(info.pack_id, offset, slen, length, codec),
                                                    expected_digest=bytes(digest), verify_sha256=True)
                            except LayerStoreError as exc:
                                problems.append(f"pack {info.pack_id} offset {offset}: chunk {digest.hex()}: {exc}")
                                continue
                            loc = target().add(bytes(digest), plain)
                        else:
                            loc = target()._append(bytes(digest), length, codec, entry[ENTRY_HEADER_SIZE:])
                        moves.append((digest, info.pack_id, offset, loc, slen))
                    flush_run()
            if writer is not None:
                writer.seal()
                writer = None
        finally:
            if writer is not None:
                writer.abort()
        return moves, written, problems, compressed

    def _switch(self, moves, chosen, compressed=frozenset()) -> List[str]:
        """One transaction: point the moved chunk rows at their copies (only
        rows still at the old place), then list the chosen packs no row
        points at any more. Keeps the ``to_compress`` list right: a retired
        pack leaves it; a chosen pack still listed keeps its place (an
        ingest committed rows into it after they were copied); and copies
        made byte for byte of uncompressed chunks from a pack listed after
        ``compressed`` (the packs whose chunks the copy compressed) was read
        list their new pack."""
        with self._catalog.write() as cur:
            listed = self._catalog.packs_to_compress()
            ids: Dict[str, int] = {}
            params = []
            late = set()
            for digest, old_pack, old_offset, loc, _slen in moves:
                for name in (old_pack, loc.pack_id):
                    if name not in ids:
                        ids[name] = self._catalog.pack_id(cur, name)
                # stored length and codec change for a linked chunk re-encoded alone
                params.append((ids[loc.pack_id], loc.offset, loc.stored_length, loc.codec, digest, ids[old_pack],
                               old_offset))
                if old_pack in listed and old_pack not in compressed and loc.codec == CODEC_NONE:
                    late.add(loc.pack_id)
            cur.executemany("UPDATE chunks SET pack = ?, offset = ?, stored_length = ?, codec = ? "
                            "WHERE digest = ? AND pack = ? AND offset = ?", params)
            self._catalog.mark_to_compress(cur, late)
            retire = [info.pack_id for info in chosen if not self._pack_referenced(cur, info.pack_id)]
            self._catalog.clear_to_compress(cur, [p for p in retire if p in listed])
            return retire

    @staticmethod
    def _pack_referenced(cur, pack_id: str) -> bool:
        return cur.execute("SELECT 1 FROM chunks c JOIN packs p ON p.id = c.pack WHERE p.name = ? LIMIT 1",
                           (pack_id,)).fetchone() is not None

    def _delete_packs(self, pack_ids: Sequence[str]) -> List[str]:
        """Delete packs no chunk row points at (re-checked now: an ingest
        that wrote into a pack before it was sealed may have committed
        since), ``.pack`` first, then ``.idx`` (docs/format.md)."""
        with self._catalog.read() as cur:
            doomed = [p for p in pack_ids if not self._pack_referenced(cur, p)]
        d = self._packs.directory
        for pid in doomed:
            self._forget_pack(pid)
            for suffix in (".pack", ".idx"):
                try:
                    os.unlink(os.path.join(d, pid + suffix))
                except FileNotFoundError:
                    pass
        if doomed:
            _fsync_dir(d)
        return doomed

    def _forget_pack(self, pack_id: str):
        """Drop this process's cached reader of a pack about to be deleted,
        so its disk space is freed once the file is unlinked."""
        ps = self._packs
        with ps._lock:
            r = ps._readers.pop(pack_id, None)
            if r is not None:
                if ps._pins.get(r):
                    ps._retired.add(r)
                else:
                    ps._pins.pop(r, None)
                    r.close()

    # -- df -------------------------------------------------------------------------------------
    def df(self) -> DiskUsage:
        """Disk use, as ``docker system df [-v]`` shows it, plus what a
        deduplicating store can say (see :class:`DiskUsage`). Reads every
        recipe; changes nothing but the cache of manifest references."""
        self._gc_db()
        self._images_db()
        with self._lease():
            self._ensure_edges()
            with self._catalog.read() as cur:
                g = self._load_graph(cur, persist_edges=False)
                chunk_rows = {d: (slen, length, refs) for d, slen, length, refs in
                              cur.execute("SELECT digest, stored_length, length, refs FROM chunks")}
                recipes: Dict[str, Tuple[Set[bytes], int, int]] = {}
                inflated: Dict[str, int] = {}  # layers held as they came -> tar bytes
                for d, size, raw in cur.execute("SELECT digest, size, recipe FROM blobs"):
                    try:
                        rec = recipe_codec.decode(raw, what=f"recipe of {d}")
                    except LayerStoreError:
                        recipes[d] = (set(), 0, len(raw))
                        continue
                    # segment bytes: a rebuilt recipe (compact.py) has none
                    recipes[d] = ({r.digest for r in rec.chunks}, len(rec.segments), len(raw))
                    if rec.inflated:
                        inflated[d] = rec.size
                live_by_pack = {name: b for name, b in cur.execute(
                    "SELECT p.name, sum(? + c.stored_length) FROM chunks c JOIN packs p ON p.id = c.pack "
                    "GROUP BY c.pack", (ENTRY_HEADER_SIZE,))}
                uncompressed = cur.execute(
                    "SELECT c.digest, c.stored_length FROM chunks c JOIN to_compress t ON t.pack = c.pack "
                    "WHERE c.codec = ?", (CODEC_NONE,)).fetchall()
                streams = {d for (d,) in cur.execute("SELECT digest FROM blobs WHERE kind IN (?, ?)",
                                                     _COMPRESSED_KINDS)}
        pack_files, pack_bytes = self._pack_bytes_on_disk()
        dead_pack = 0
        for info in self._packs.packs():
            dead_pack += max(0, info.size - PACK_HEADER_SIZE - live_by_pack.get(info.pack_id, 0))
        catalog_bytes = sum(_file_size(str(self.root / n)) for n in ("catalog.db", "catalog.db-wal"))

        entry = {d: ENTRY_HEADER_SIZE + slen for d, (slen, _l, _r) in chunk_rows.items()}
        # the chunks of kept gzip/zstd streams share those packs: they do not compress
        stream_chunks = set().union(*(recipes[d][0] for d in streams if d in recipes))
        to_compress = sum(slen for d, slen in uncompressed if d not in stream_chunks)
        referenced = {d for d, (_s, _l, refs) in chunk_rows.items() if refs > 0}
        logical = sum(b[3] for b in g.blobs.values())
        segments = sum(seg for _c, seg, _r in recipes.values())
        content = sum(chunk_rows[d][1] for d in referenced)
        chunk_stored = sum(chunk_rows[d][0] for d in referenced)
        stored = sum(entry[d] for d in referenced) + sum(r for _c, _s, r in recipes.values())
        unique = content + segments

        # reclaimable: what prune(all=True) would delete, then a full repack
        kept = g.reach(set(g.tags.values()), strict=False)
        kept_chunks: Set[bytes] = set()
        for d in g.blobs:
            if d in kept and d in recipes:
                kept_chunks |= recipes[d][0]
        reclaimable = dead_pack + sum(entry[d] for d in chunk_rows if d not in kept_chunks)

        names = self._names_of(g)
        tops = sorted(d for d, (_k, top) in g.images.items() if top)
        closures = {d: {b for b in g.reach([d], strict=False) if b in g.blobs} for d in tops}
        blob_users: Dict[str, int] = defaultdict(int)
        chunk_users: Dict[bytes, int] = defaultdict(int)
        chunk_sets = {}
        for d, blobs in closures.items():
            cs: Set[bytes] = set()
            for b in blobs:
                blob_users[b] += 1
                cs |= recipes.get(b, (set(), 0, 0))[0]
            chunk_sets[d] = cs
            for c in cs:
                chunk_users[c] += 1
        per_image = []
        for d in tops:
            unique_b = shared_b = 0
            for c in chunk_sets[d]:
                n = entry.get(c, 0)
                if chunk_users[c] > 1:
                    shared_b += n
                else:
                    unique_b += n
            for b in closures[d]:
                n = recipes.get(b, (set(), 0, 0))[2]
                if blob_users[b] > 1:
                    shared_b += n
                else:
                    unique_b += n
            per_image.append(ImageUsage(Digest(d), tuple(names.get(d, ())),
                                        sum(g.blobs[b][3] for b in closures[d]), unique_b, shared_b))
        active = len(set(tops) & g.reach(set(g.tags.values()), strict=False))
        size = pack_bytes + catalog_bytes
        return DiskUsage(
            images=len(tops),
            active=active,
            size=size,
            reclaimable=reclaimable,
            reclaimable_percent=round(100.0 * reclaimable / size, 1) if size else 0.0,
            logical_bytes=logical,
            unique_bytes=unique,
            stored_bytes=stored,
            dedup_ratio=round(logical / unique, 3) if unique else 1.0,
            compression_ratio=round(content / chunk_stored, 3) if chunk_stored else 1.0,
            pack_files=pack_files,
            pack_bytes=pack_bytes,
            dead_pack_bytes=dead_pack,
            catalog_bytes=catalog_bytes,
            blobs=len(g.blobs),
            chunks=len(chunk_rows),
            per_image=tuple(per_image),
            to_compress_bytes=to_compress,
            layers_not_deduplicated=len(inflated),
            not_deduplicated_bytes=sum(inflated.values()),
        )

    # -- verify ---------------------------------------------------------------------------------
    def verify(self, repair: bool = False, *, wait: float = DEFAULT_WAIT) -> VerifyReport:
        """Re-hash everything and check the catalog against itself.

        Checked: every pack (entries' checksums and SHA-256, the index
        against the pack), every chunk row's location (read and hashed),
        every blob (recipe decodes, its chunks exist and are sound, the whole
        blob hashes to its digest), chunk reference counts (recomputed from
        the recipes), every image (its blob, config, layers, the diff-ID
        layer of compressed layers, an index's present children) and every
        tag (points at a stored image). Each fault is reported with the
        images it breaks (:class:`VerifyReport`).

        ``repair`` then fixes what can be fixed, touching no sound data:
        indexes are rebuilt from their packs (torn tails cut); a bad chunk
        is re-pointed at an intact copy in any pack, else its row is
        dropped; a layer that lost chunks is rebuilt from its stored gzip or
        zstd blob when that is intact, else dropped with the other unsound
        blobs; images needing a dropped blob are removed (an index keeps its
        other platforms, the lost one recorded as not present) with their
        tags; a tag row naming no image is restored from its history, else
        removed; reference counts are set to what the recipes say; damaged
        packs are rewritten without their damaged entries. ``repair`` holds
        the collection lock (StoreBusyError after ``wait`` seconds); without
        it, verify holds a lease while it reads, so collections started
        meanwhile delete nothing before it ends (or their ``wait`` runs out).

        Raises nothing for bad data: faults are reported."""
        self._gc_db()
        self._images_db()
        report = VerifyReport()
        if not repair:
            with self._lease():
                self._check(report)
            return report
        with self._gc_lock(wait):
            self._packs.recover()
            state = self._check(report)
            self._repair(report, state, wait)
        return report

    def _check(self, report: VerifyReport) -> dict:
        """Fill ``report`` with faults; return what repair needs."""
        faults: List[Fault] = []
        # packs
        pack_problems = self._packs.verify()
        report.packs_checked = len(self._packs.packs())
        damaged: Set[str] = set()
        for p in pack_problems:
            where = f"offset {p.offset}: " if p.offset is not None else ""
            faults.append(Fault("pack", p.pack_id, where + p.what))
            damaged.add(p.pack_id)
        # chunks
        bad_chunks: Dict[bytes, str] = {}
        for d, pack, off, slen, length, codec in self._catalog._con().execute(
                "SELECT c.digest, p.name, c.offset, c.stored_length, c.length, c.codec "
                "FROM chunks c LEFT JOIN packs p ON p.id = c.pack"):
            report.chunks_checked += 1
            if pack is None:
                bad_chunks[d] = "names a pack id the catalog does not know"
                continue
            if not all(type(v) is int for v in (off, slen, length, codec)):
                bad_chunks[d] = f"catalog row is invalid ({off!r}, {slen!r}, {length!r}, {codec!r})"
                continue
            try:
                self._packs.read(PackLocation(pack, off, slen, length, codec), expected_digest=d,
                                 verify_sha256=True)
            except (LayerStoreError, OSError, ValueError) as exc:
                bad_chunks[d] = f"in pack {pack} at offset {off}: {_reason(exc)}"
        # recipes and reference counts, in one snapshot
        bad_blobs: Dict[str, str] = {}
        users: Dict[bytes, List[str]] = defaultdict(list)
        with self._catalog.read() as cur:
            refs = {d: r for d, r in cur.execute("SELECT digest, refs FROM chunks")}
            counted: Dict[bytes, int] = defaultdict(int)
            for d, size, raw in cur.execute("SELECT digest, size, recipe FROM blobs"):
                try:
                    rec = recipe_codec.decode(raw, what="recipe")
                    if rec.size != size:
                        raise CorruptBlobError(f"recipe size {rec.size} != catalog size {size}")
                except LayerStoreError as exc:
                    bad_blobs[d] = _reason(exc)
                    continue
                for c in {r.digest for r in rec.chunks}:
                    counted[c] += 1
                    users[c].append(d)
                    if c not in refs:
                        bad_blobs.setdefault(d, f"chunk {c.hex()} is missing")
                    elif c in bad_chunks:
                        bad_blobs.setdefault(d, f"chunk {c.hex()} {bad_chunks[c]}")
            for c, n in refs.items():
                if n != counted.get(c, 0):
                    faults.append(Fault("refcount", c.hex(), f"refs is {n}, {counted.get(c, 0)} blobs use it"))
            g = self._load_graph(cur, persist_edges=False)
        # whole blobs
        for d in sorted(g.blobs):
            report.blobs_checked += 1
            if d in bad_blobs:
                continue
            try:
                with self.open_blob(d) as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        report.bytes_checked += len(b)
            except (LayerStoreError, OSError) as exc:
                bad_blobs[d] = _reason(exc)
        # images and tags
        report.images_checked = len(g.images)
        unsound = set(bad_blobs)
        missing: Dict[str, str] = {}  # digest an image needs but not stored -> who needs it
        odd_kinds: List[Tuple[str, str]] = []
        for img in sorted(g.images):
            for b in sorted(g.reach([img], strict=False)):
                if b not in g.blobs:
                    missing.setdefault(b, f"image {img}")
        for b, (kind, diff_id, _m, _s) in sorted(g.blobs.items()):
            if kind in _COMPRESSED_KINDS and diff_id and diff_id not in g.blobs:
                missing.setdefault(diff_id, f"compressed layer {b}")
            # reported, not repaired: nothing is wrong with the bytes
            if kind not in _BLOB_KINDS:
                odd_kinds.append((b, f"unknown blob kind {kind!r}"))
            elif kind in _COMPRESSED_KINDS and diff_id in g.blobs and g.blobs[diff_id][0] != "layer":
                odd_kinds.append((b, f"its diff ID {diff_id} is stored as a {g.blobs[diff_id][0]} blob, not as a "
                                     "layer (ingesting the layer again upgrades it)"))
        for d in g.unparsed:
            bad_blobs.setdefault(d, "manifest or index document cannot be parsed")
            unsound.add(d)
        names = self._names_of(g)
        holders: Dict[str, Set[str]] = defaultdict(set)  # blob -> images holding it
        for img in g.images:
            for b in g.reach([img], strict=False):
                holders[b].add(img)

        def breaks(digests: Iterable[str]) -> Tuple[str, ...]:
            out = set()
            for b in digests:
                for img in holders.get(b, ()):
                    out.update(names.get(img) or [img])
            return tuple(sorted(out))

        for c, why in sorted(bad_chunks.items()):
            faults.append(Fault("chunk", c.hex(), why, breaks(users.get(c, ()))))
        for d, why in sorted(bad_blobs.items()):
            faults.append(Fault("blob", d, why, breaks([d])))
        for d, why in odd_kinds:
            faults.append(Fault("blob", d, why, breaks([d])))
        for d, who in sorted(missing.items()):
            faults.append(Fault("blob", d, f"missing (referenced by {who})", breaks([d])))
        for (repo, tag), d in sorted(g.tags.items()):
            if d not in g.images:
                faults.append(Fault("tag", f"{repo}:{tag}", f"points at {d!r}, which is not a stored image",
                                    (_familiar(repo, tag),)))
        report.faults.extend(faults)
        return {"damaged": damaged, "bad_chunks": bad_chunks, "bad_blobs": bad_blobs,
                "unreadable": {p.pack_id for p in pack_problems if p.what.startswith("cannot open pack")}}

    def _repair(self, report: VerifyReport, state: dict, wait: float):
        log = report.repairs.append
        d = self._packs.directory
        # 1. indexes: damaged packs re-indexed from the pack (torn tail cut;
        # recover() removed the indexes of deleted packs)
        for pid in sorted(state["damaged"] - state["unreadable"]):
            path = os.path.join(d, pid + ".pack")
            if os.path.exists(path) and not self._packs._live(path):
                try:
                    os.unlink(os.path.join(d, pid + ".idx"))
                except FileNotFoundError:
                    pass
        for act in self._packs.recover():
            log(f"pack {act.pack_id}: {act.action} ({act.old_size} -> {act.new_size} bytes, "
                f"{act.entries} entries){': ' + act.detail if act.detail else ''}")
        # 2. chunks: re-point at an intact copy, else drop the row
        lost: Set[bytes] = set()
        for c in sorted(state["bad_chunks"]):
            loc = self._find_copy(c)
            with self._catalog.write() as cur:
                if loc is not None:
                    cur.execute("UPDATE chunks SET pack = ?, offset = ?, stored_length = ?, length = ?, codec = ? "
                                "WHERE digest = ?", (self._catalog.pack_id(cur, loc.pack_id), loc.offset,
                                                     loc.stored_length, loc.raw_length, loc.codec, c))
                    log(f"chunk {c.hex()}: re-pointed at the intact copy in pack {loc.pack_id} offset {loc.offset}")
                else:
                    cur.execute("DELETE FROM chunks WHERE digest = ?", (c,))
                    lost.add(c)
                    log(f"chunk {c.hex()}: no intact copy anywhere, row dropped")
        # 3. blobs: drop the unsound ones; rebuild layers from their compressed blob
        doomed = set()
        for b, why in state["bad_blobs"].items():
            if not why.startswith("chunk ") or self._blob_unsound(b):
                doomed.add(b)
        rebuild, waiting = {}, set()
        with self._catalog.read() as cur:
            for b in sorted(doomed):
                row = cur.execute("SELECT kind, recipe FROM blobs WHERE digest = ?", (b,)).fetchone()
                if row is None:
                    continue
                if row[0] != "layer":
                    # A compacted blob (compact.py) whose own chunks are intact
                    # fails through its layer: it waits for the layer's repair.
                    try:
                        rec = recipe_codec.decode(row[1])
                    except LayerStoreError:
                        continue
                    if rec.source and rec.source in doomed and not any(r.digest in lost for r in rec.chunks):
                        waiting.add(b)
                    continue
                for src, raw in cur.execute("SELECT digest, recipe FROM blobs WHERE diff_id = ? "
                                            "AND kind IN ('gzip', 'zstd')", (b,)):
                    if src not in doomed and not _rebuilt_from_layer(raw):
                        rebuild[b] = src
                        break
        for b in sorted(doomed - waiting):
            self._drop_blob(b, lost, log)
        for b, src in sorted(rebuild.items()):
            try:
                with self.open_blob(src) as f:
                    self.ingest(f)
                if self.has(b):
                    log(f"blob {b}: rebuilt from its compressed blob {src}")
            except LayerStoreError as exc:
                log(f"blob {b}: cannot rebuild from {src}: {_reason(exc)}")
        for b in sorted(waiting):
            if self._blob_unsound(b):
                self._drop_blob(b, lost, log)
            else:
                log(f"blob {b}: intact again (its layer was rebuilt)")
        # 4. images needing a dropped or missing blob; tags
        now = time.time()
        with self._catalog.write() as cur:
            g = self._load_graph(cur, persist_edges=True)

            def lost_blob(b):
                return b not in g.blobs or b in g.unparsed

            # a manifest breaks with any blob it needs; an index only with its own
            # blob (a lost platform is recorded as not present)
            broken = {img for img, (kind, _top) in g.images.items()
                      if lost_blob(img) or (kind != "index" and any(lost_blob(b) for b in g.reach([img], strict=False)))}
            for parent, kids in sorted(g.children.items()):
                for c in kids:
                    if c in broken or (c not in g.images and lost_blob(c)):
                        cur.execute("UPDATE image_children SET present = 0 WHERE parent = ? AND child = ?",
                                    (parent, c))
                        log(f"index {parent}: platform manifest {c} recorded as not present (lost)")
            for img in sorted(broken):
                cur.execute("DELETE FROM image_children WHERE parent = ?", (img,))
                cur.execute("DELETE FROM images WHERE digest = ?", (img,))
                log(f"image {img}: removed (content lost)")
            for (repo, tag), digest in sorted(g.tags.items()):
                ok = digest in g.images and digest not in broken
                if ok:
                    continue
                ref = parse(f"{repo}:{tag}")
                hist = cur.execute("SELECT digest FROM tag_history WHERE repository = ? AND tag = ? "
                                   "AND digest IS NOT NULL ORDER BY id DESC LIMIT 1", (repo, tag)).fetchone()
                if (digest not in g.images and hist is not None and hist[0] in g.images
                        and hist[0] not in broken and hist[0] != digest):
                    cur.execute("UPDATE tags SET digest = ? WHERE repository = ? AND tag = ?", (hist[0], repo, tag))
                    log(f"tag {_familiar(repo, tag)}: restored to {hist[0]} from its history")
                else:
                    self._move_tag(cur, ref, None, "repair", now)
                    log(f"tag {_familiar(repo, tag)}: removed (its image is lost)")
        # 5. reference counts, recomputed in the transaction that sets them
        with self._catalog.write() as cur:
            counted: Dict[bytes, int] = defaultdict(int)
            for _d, raw in cur.execute("SELECT digest, recipe FROM blobs"):
                try:
                    rec = recipe_codec.decode(raw)
                except LayerStoreError:
                    continue
                for c in {r.digest for r in rec.chunks}:
                    counted[c] += 1
            fixes = [(counted.get(c, 0), c) for c, n in cur.execute("SELECT digest, refs FROM chunks").fetchall()
                     if n != counted.get(c, 0)]
            cur.executemany("UPDATE chunks SET refs = ? WHERE digest = ?", fixes)
        if fixes:
            log(f"reference counts: {len(fixes)} chunk rows corrected")
        # 6. damaged packs rewritten without their damaged entries
        damaged = {p for p in state["damaged"] if os.path.exists(os.path.join(d, p + ".pack"))}
        if damaged:
            rep = self._repack(None, damaged, wait)
            for pid in rep.packs_deleted:
                log(f"pack {pid}: rewritten without its damaged entries and deleted")
            for line in rep.problems:
                log(line)

    def _drop_blob(self, b: str, lost: set, log):
        """Repair: delete blob ``b``'s row, dropping its chunk references
        (except to ``lost`` chunks, whose rows are gone)."""
        with self._catalog.write() as cur:
            row = cur.execute("SELECT recipe FROM blobs WHERE digest = ?", (b,)).fetchone()
            if row is None:
                return
            try:
                rec = recipe_codec.decode(row[0])
                self._catalog.add_refs(cur, [c for c in {r.digest for r in rec.chunks} if c not in lost], -1)
            except LayerStoreError:
                pass  # the repair recomputes every count afterwards
            cur.execute("DELETE FROM blobs WHERE digest = ?", (b,))
            cur.execute("DELETE FROM gc_edges WHERE parent = ?", (b,))
        log(f"blob {b}: dropped")

    def _blob_unsound(self, digest: str) -> bool:
        """After chunks were re-pointed: does the blob still fail to read?"""
        try:
            with self.open_blob(digest) as f:
                while f.read(1 << 20):
                    pass
            return False
        except (LayerStoreError, OSError):
            return True

    def _find_copy(self, digest: bytes) -> Optional[PackLocation]:
        """An intact entry of ``digest`` in any sealed pack (index lookup,
        then a full read with SHA-256), or None."""
        for info in self._packs.packs():
            if not info.sealed:
                continue
            try:
                index = PackIndex.open(self._packs.index_path(info.pack_id), info.pack_id)
            except (OSError, PackFormatError):
                continue
            with index:
                loc = index.lookup(digest)
            if loc is None:
                continue
            try:
                with self._open_pack(info.path, info.pack_id, lenient=True) as reader:
                    reader.read(loc, expected_digest=digest, verify_sha256=True)
                return loc
            except (LayerStoreError, OSError):
                continue
        return None


def _entry_fault(entry: bytes, digest: bytes, slen: int, length: int, codec: int) -> Optional[str]:
    """Why the raw entry bytes read for a chunk row are not an intact entry
    of it, or None."""
    if len(entry) != ENTRY_HEADER_SIZE + slen:
        return "entry cut short by end of pack"
    h = _parse_entry_header(entry)
    if isinstance(h, str):
        return h
    e_codec, raw, stored, e_digest, xx = h
    if (e_codec, raw, stored, e_digest) != (codec, length, slen, bytes(digest)):
        return "entry header does not match its catalog row"
    if xxhash.xxh3_64_intdigest(memoryview(entry)[ENTRY_HEADER_SIZE:]) != xx:
        return "stored bytes checksum mismatch"
    return None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
