"""The store: what layerstore promises to the programs that embed it.

Lifecycle of a blob (the model is containerd's content store: until ingestion
is complete, its content is not visible)::

    ingest(stream)   bytes are scanned and chunked; chunks not yet stored are
                     appended to this process's pack; nothing is visible
    commit           the pack is flushed and fsynced, then one catalog
                     transaction records the new chunks, the chunk reference
                     counts and the blob with its recipe: now visible
    open_blob(d)     the recipe is replayed: verbatim segments and chunks
                     read from packs, each chunk checked (xxh3 of the stored
                     bytes, SHA-256 of the plaintext), the whole blob's digest
                     checked at the end

A digest mismatch (``expected_digest``), a malformed layer or a crash before
the commit leaves nothing visible; chunks already appended to a pack are
unreferenced and reclaimed by repack.

On disk (``docs/format.md``)::

    <root>/catalog.db      SQLite catalog (catalog.py)
    <root>/packs/          pack files and indexes (packs.py)
    <root>/store.json      marker: format version

Concurrency: a Store object may be shared by threads; several processes may
open the same directory. Each Store object appends to packs of its own
(exclusive lock per pack); the catalog serialises commits.
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union


from . import chunking, mediatypes, recipe, workers
from .catalog import Catalog
from .errors import (
    BlobNotFoundError,
    CodecMismatchError,
    CompressedLayerError,
    CorruptBlobError,
    DigestMismatchError,
    LayerStoreError,
    StoreError,
    TarFormatError,
)
from .digest import Digest, parse_digest
from .hashing import Sha256
from .compact import CompactMixin, CompactReport
from .gc import LifecycleMixin, VerifyReport
from .reconstruct import rebuild as reconstruct
from .images import ImagesMixin
from .manifest import Descriptor
from .packs import CODEC_NAMES, ENTRY_HEADER_SIZE, MAX_RAW_LENGTH, PackLocation, PackSet
from .recipe import ChunkRef, Recipe
from .decompress import Decompressor
from .scan import LayerScanner

__all__ = ["Store", "BlobInfo", "LayerInfo", "VerifyReport", "CompactReport", "default_store_path"]

FORMAT_VERSION = 1
_READ_SIZE = 1 << 20

KIND_RAW = "raw"          # any blob: chunks tile it
KIND_LAYER = "layer"      # uncompressed layer tar: segments + content chunks
KIND_GZIP = "gzip"        # gzip layer blob: its bytes kept as a raw recipe, or rebuilt from its layer (compact.py); diff_id -> layer
KIND_ZSTD = "zstd"        # zstd layer blob: as gzip (compact.py rebuilds either)

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def default_store_path() -> Path:
    """``$LAYERSTORE_PATH``, else ``$XDG_DATA_HOME/layerstore``, else
    ``~/.local/share/layerstore`` (XDG Base Directory Specification)."""
    env = os.environ.get("LAYERSTORE_PATH")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "layerstore"


_DEFAULT_MEDIA_TYPES = {
    KIND_RAW: "application/octet-stream",
    KIND_LAYER: mediatypes.OCI_LAYER_TAR,
    KIND_GZIP: mediatypes.OCI_LAYER_TAR_GZIP,
    KIND_ZSTD: mediatypes.OCI_LAYER_TAR_ZSTD,
}


@dataclass(frozen=True, eq=False)
class BlobInfo(Descriptor):
    """A stored blob: its descriptor (``media_type``, ``digest``, ``size`` in
    bytes; OCI image spec, descriptor.md) plus what the store knows of it.

    ``kind``: ``raw`` (any blob), ``layer`` (uncompressed layer tar),
    ``gzip`` or ``zstd`` (compressed layer blob); ``diff_id``: for layers,
    the digest of the uncompressed tar; ``entries``: for layers, the number
    of tar entries. ``media_type`` is the one given at ingest, else the OCI
    layer media type matching the detected kind, else
    ``application/octet-stream``."""

    kind: str = KIND_RAW
    diff_id: Optional[Digest] = None
    entries: Optional[int] = None

    def descriptor(self) -> Descriptor:
        """The plain OCI descriptor (media type, digest, size)."""
        return Descriptor(self.media_type, self.digest, self.size)


@dataclass(frozen=True)
class LayerInfo:
    """Figures for one layer (by diff ID).

    ``entries``: tar entries; ``size``: logical bytes of the tar stream;
    ``content_bytes``: bytes of file content (in chunks); ``chunks``: chunk
    references; ``unique_chunks``: distinct chunks; ``stored_bytes``: bytes
    in packs of its distinct chunks (after compression) plus the encoded
    recipe; ``shared_chunks``: distinct chunks also referenced by other
    blobs; ``shared_bytes``: their raw size. ``deduplicated`` is False for a
    layer still held as the compressed blob it was ingested from (until
    :meth:`Store.compact`): its chunks are then that blob's, and
    ``content_bytes`` counts compressed bytes."""

    diff_id: str
    entries: int
    size: int
    content_bytes: int
    chunks: int
    unique_chunks: int
    stored_bytes: int
    recipe_bytes: int
    shared_chunks: int
    shared_bytes: int
    deduplicated: bool = True


class _Source:
    """A binary input read in buffers, with a peek at its first bytes.
    ``start`` is the input's position when ingest began (None when it
    cannot seek), where :meth:`rewind` returns."""

    def __init__(self, src):
        self._close = None
        if isinstance(src, (str, os.PathLike)):
            self.f = open(src, "rb")
            self._close = self.f
        elif isinstance(src, (bytes, bytearray, memoryview)):
            self.f = io.BytesIO(bytes(src))
        else:
            self.f = src
        try:
            self.start = self.f.tell() if self.f.seekable() else None
        except (AttributeError, OSError, ValueError):
            self.start = None
        self.head = self._read_exact(512)

    def rewind(self) -> bool:
        """Go back to where the blob started; False when the input cannot."""
        if self.start is None:
            return False
        try:
            self.f.seek(self.start)
        except (OSError, ValueError):
            return False
        self.head = self._read_exact(512)
        return True

    def _read_exact(self, n):
        parts, got = [], 0
        while got < n:
            b = self.f.read(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        return b"".join(parts)

    def buffers(self) -> Iterator[bytes]:
        if self.head:
            yield self.head
        while True:
            b = self.f.read(_READ_SIZE)
            if not b:
                return
            yield b

    def close(self):
        if self._close is not None:
            self._close.close()


def _looks_like_tar(head: bytes) -> bool:
    """True when ``head`` starts with a tar header block whose checksum is
    right (POSIX.1-2017 pax, ustar header: chksum at 148, 8 bytes, computed
    with the field as spaces)."""
    if len(head) < 512 or head[:512] == bytes(512):
        return False
    field_ = head[148:156].split(b"\0", 1)[0].strip()
    try:
        want = int(field_, 8)
    except ValueError:
        return False
    block = bytearray(head[:512])
    block[148:156] = b" " * 8
    return want == sum(block) or want == sum((b - 256 if b > 127 else b) for b in block)


def _skippable_frame(head: bytes) -> bool:
    """A zstd skippable frame's magic, 0x184D2A50..5F (RFC 8878, 3.1.2):
    a zstd stream may start with one."""
    return len(head) >= 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50


def _kind_from(media_type: Optional[str], head: bytes) -> str:
    """How to store a blob. A layer media type (OCI image spec, layer.md;
    Docker rootfs diff types) makes it a layer, its compression taken from
    the content's magic number as containerd does, since tools label
    compression inconsistently; without a media type the content decides;
    any other media type is an ordinary blob."""
    if media_type and mediatypes.layer_compression(media_type) is None:
        return KIND_RAW
    if head.startswith(_GZIP_MAGIC):
        return KIND_GZIP
    if head.startswith(_ZSTD_MAGIC) or _skippable_frame(head):
        return KIND_ZSTD
    if media_type or _looks_like_tar(head):
        return KIND_LAYER
    return KIND_RAW


@dataclass
class _Record:
    """A blob ready to commit."""

    digest: str
    media_type: Optional[str]
    kind: str
    diff_id: Optional[str]
    entries: Optional[int]
    recipe: Recipe
    encoded: bytes
    new_chunks: list
    to_compress: tuple = ()  # packs holding chunks written uncompressed, for repack to compress


class _Chunks:
    """Chunks of one blob being ingested: dedup against the catalog and
    against chunks this ingest (or its batch) already wrote. The new chunks
    of each scanner batch are compressed and appended to this process's pack
    by one job on a worker thread, so the scan of the next buffer overlaps
    them; at most ``_IN_FLIGHT`` jobs are pending at once.

    ``compress=False`` writes the chunks as they are: for bytes that do not
    compress (gzip or zstd streams). ``defer=True`` writes them as they are
    too, and lists their packs for the next repack to compress (the file
    content of compressed layers: see docs/design.md, "Compression of new
    chunks is deferred for compressed layers")."""

    _IN_FLIGHT = 8

    def __init__(self, store: "Store", shared: Optional[Dict[bytes, object]] = None, compress: bool = True,
                 defer: bool = False):
        self.store = store
        self.compress = compress and not defer
        self.defer = defer
        # digest -> PackLocation, or the Future of the job writing it (its
        # result maps digest -> PackLocation): chunks written by this ingest
        # or by earlier blobs of the same batch
        self.new: Dict[bytes, object] = shared if shared is not None else {}
        self.own: Dict[bytes, object] = {}
        self.refs: List[ChunkRef] = []
        self._pending: deque = deque()

    def add(self, chunks, data_of):
        """chunks: objects with offset, length, digest (32 bytes);
        data_of(chunks) -> the bytes of each of ``chunks``, in order (they
        must stay unchanged until :meth:`record`)."""
        if not chunks:
            return
        new = self.new
        fresh = [c.digest for c in chunks if c.digest not in new]
        known = self.store._live_chunks(fresh) if fresh else set()
        make_ref = tuple.__new__
        self.refs += [make_ref(ChunkRef, (c.offset, c.length, c.digest)) for c in chunks]
        needed = {}
        for c in chunks:
            d = c.digest
            if d not in known and d not in new and d not in needed:
                needed[d] = c
        if not needed:
            return
        todo = dict(zip(needed, data_of(list(needed.values()))))
        fut = workers.pool("io").submit(self._write, todo, self.compress)
        own = self.own
        for d in todo:
            new[d] = own[d] = fut
        pending = self._pending
        pending.append(fut)
        if len(pending) > self._IN_FLIGHT:
            pending.popleft().result()

    def _write(self, todo, compress) -> Dict[bytes, PackLocation]:
        locs = self.store._packs.add_many(todo.items(), compress)
        return dict(zip(todo, locs))

    def locations(self) -> Dict[bytes, PackLocation]:
        """Wait for the pending writes; digest -> PackLocation of the chunks
        this blob wrote. Raises what a write raised."""
        out = {}
        written = {}  # id of a write job -> its result, each waited for once
        for d, loc in self.own.items():
            if not isinstance(loc, PackLocation):
                done = written.get(id(loc))
                if done is None:
                    done = written[id(loc)] = loc.result()
                loc = done[d]
            out[d] = loc
        self._pending.clear()
        return out

    def record(self, digest, media_type, kind, diff_id, entries, size, segments=()) -> _Record:
        """The blob's record; ``segments``: its segment bytes, in pieces.
        The record's Recipe carries size and chunks only: the segments go
        straight into the encoded recipe (no joined copy of them is made)."""
        rec = Recipe(size, self.refs, b"")
        rows = [(d, loc.pack_id, loc.offset, loc.stored_length, loc.raw_length, loc.codec)
                for d, loc in self.locations().items()]
        to_compress = tuple({row[1]: None for row in rows}) if self.defer else ()
        return _Record(digest, media_type, kind, diff_id, entries, rec,
                       recipe.encode(size, self.refs, segments), rows, to_compress)

    def abandon(self):
        """After an error: wait for pending writes (no worker may still read
        the input buffers) and forget this blob's chunks, so later blobs of a
        batch do not reference them. They stay unreferenced in the pack."""
        for fut in self._pending:
            fut.exception()
        self._pending.clear()
        for d in self.own:
            self.new.pop(d, None)
        self.own.clear()


@contextmanager
def _abandon_on_error(blob):
    try:
        yield
    except BaseException:
        blob.chunks.abandon()
        raise


class _RawBlob:
    """Any blob: hashed and cut into content-defined chunks in one pass by
    the C scanner in raw mode; new chunks stored."""

    def __init__(self, store: "Store", shared=None, compress=True, threads=None):
        self.chunks = _Chunks(store, shared, compress)
        self.scanner = LayerScanner(*store.chunk_params, threads=threads, raw=True)
        self.size = 0

    def feed(self, buf):
        for batch in self.scanner.feed(buf):
            self.chunks.add(batch.chunks, batch.chunks_data)

    def finish(self, expected_digest) -> str:
        batch = self.scanner.finish()
        self.chunks.add(batch.chunks, batch.chunks_data)
        self.size = self.scanner.size
        digest = self.scanner.digest
        if expected_digest is not None and digest != expected_digest:
            raise DigestMismatchError(expected_digest, digest)
        return digest

    def record(self, digest, media_type, kind, diff_id, entries) -> _Record:
        return self.chunks.record(digest, media_type, kind, diff_id, entries, self.size)


class _LayerBlob:
    """An uncompressed layer tar: scanned in one pass (scan.py), its
    content chunks stored, its other bytes kept as recipe segments."""

    def __init__(self, store: "Store", shared=None, defer=False):
        self.chunks = _Chunks(store, shared, defer=defer)
        self.scanner = LayerScanner(*store.chunk_params)
        self.segments = []
        self.entries = 0

    def _take(self, batch):
        self.chunks.add(batch.chunks, batch.chunks_data)
        self.segments.append(batch.segments)
        self.entries += len(batch.entries)

    def feed(self, buf):
        for batch in self.scanner.feed(buf):
            self._take(batch)

    def finish(self, expected_digest) -> str:
        self._take(self.scanner.finish())
        digest = self.scanner.digest
        if expected_digest is not None and digest != expected_digest:
            raise DigestMismatchError(expected_digest, digest)
        return digest

    def record(self, digest, media_type) -> _Record:
        return self.chunks.record(digest, media_type, KIND_LAYER, digest, self.entries,
                                  self.scanner.size, self.segments)


class Store(LifecycleMixin, ImagesMixin, CompactMixin):
    """A layerstore store rooted at a directory (``root``, a Path). Use
    :meth:`open`, not the constructor.

    Thread-safe; usable as a context manager (closing seals this process's
    open pack).
    """

    def __init__(self, root: Path, codec: Optional[str]):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store directory {self.root}: {exc.strerror}") from None
        marker = self.root / "store.json"
        if not marker.exists() and any(self.root.iterdir()):
            raise StoreError(
                f"{self.root} is not a layerstore store (no store.json) and is not empty; "
                "refusing to create a store there"
            )
        if marker.exists():
            try:
                meta = json.loads(marker.read_text())
                version = int(meta.get("version", 0))
                fmt = meta.get("format")
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                raise StoreError(f"{marker}: unreadable store marker: {exc}") from None
            if fmt != "layerstore" or version > FORMAT_VERSION:
                raise StoreError(f"{self.root} is not a layerstore store of a supported version ({meta})")
            if not (self.root / "catalog.db").exists() and any((self.root / "packs").glob("*.pack")):
                # Never start over silently next to packs whose catalog is gone.
                raise StoreError(
                    f"{self.root}: catalog.db is missing but packs exist; restore the catalog "
                    "(nothing has been changed)"
                )
        else:
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"format": "layerstore", "version": FORMAT_VERSION}) + "\n")
            os.replace(tmp, marker)
        try:
            self._catalog = Catalog(str(self.root / "catalog.db"))
            stored_codec = self._catalog.set_meta_default("codec", codec or "lz4")
            params = self._catalog.set_meta_default(
                "chunking",
                json.dumps([chunking.DEFAULT_MIN_SIZE, chunking.DEFAULT_AVG_SIZE, chunking.DEFAULT_MAX_SIZE]),
            )
            self.chunk_params = tuple(chunking.check_parameters(*json.loads(params)))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.root / 'catalog.db'}: cannot use the catalog: {exc}") from None
        except (ValueError, TypeError, LayerStoreError) as exc:
            raise StoreError(f"{self.root / 'catalog.db'}: bad chunking parameters in the catalog: {exc}") from None
        if codec is not None and codec != stored_codec:
            raise CodecMismatchError(f"store {self.root} uses codec {stored_codec!r}, not {codec!r}")
        if stored_codec not in CODEC_NAMES.values():
            raise StoreError(f"store {self.root}: unknown codec {stored_codec!r}")
        self.codec = stored_codec
        self._packs = PackSet(str(self.root / "packs"), codec=self.codec)
        self._packs.recover(protect=self._catalog.referenced_length)
        self._commit_lock = threading.Lock()

    @classmethod
    def open(cls, path: Union[str, os.PathLike, None] = None, *, codec: Optional[str] = None) -> "Store":
        """Open the store at ``path`` (default: :func:`default_store_path`),
        creating it if needed. ``codec`` ("lz4", "zstd" or "none") is fixed
        when the store is created; opening with another raises
        CodecMismatchError (a StoreError). Raises StoreError when the
        directory is not a usable store."""
        return cls(Path(path) if path is not None else default_store_path(), codec)

    def __repr__(self):
        return f"<layerstore.Store at {str(self.root)!r}>"

    def close(self):
        """Seal this process's open pack and close files."""
        self._packs.close()
        self._catalog.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- ingest ---------------------------------------------------------------
    def ingest(self, source, *, expected_digest: Optional[str] = None, media_type: Optional[str] = None) -> BlobInfo:
        """Store a blob read from ``source`` (a path, a bytes-like object or a
        binary file object, read in 1 MiB buffers) and make it visible.

        Layer tars are recognised by media type or content (plain tar,
        gzip, zstd) and stored as recipes over deduplicated file-content
        chunks; a compressed layer also makes its uncompressed layer
        readable by diff ID. Any other blob is stored as content-defined
        chunks. A blob already stored (same digest) is not stored again.

        Returns the blob's :class:`BlobInfo` (a Descriptor).

        Raises:
            DigestMismatchError: the bytes do not hash to ``expected_digest``
                (nothing becomes visible).
            TarFormatError: a blob declared a layer by ``media_type`` is not a
                valid tar stream; CompressedLayerError: a gzip/zstd layer
                cannot be decompressed.
            DigestError: ``expected_digest`` is malformed or not sha256.
        """
        if expected_digest is not None:
            parse_digest(expected_digest, algorithms=("sha256",))
        with self._lease():  # gc.py: collections wait for it before deleting
            stored = self._live_kind(expected_digest) if expected_digest is not None else None
            if stored is not None and not _upgradable(stored, media_type):
                return self.stat(expected_digest)
            records = self._prepare(source, expected_digest, media_type, None, stored_raw=stored is not None)
            if not records:
                return self.stat(expected_digest)
            return self._commit(records)[-1]

    def _live_kind(self, digest: str) -> Optional[str]:
        """Kind of the stored blob, or None when it is absent or condemned."""
        if not self._has_live(digest):
            return None
        row = self._catalog.get_blob(digest)
        return row[3] if row is not None else None

    def batch(self) -> "Batch":
        """A :class:`Batch`: blobs staged together and made visible in one
        catalog transaction (or not at all)."""
        return Batch(self)

    def _prepare(self, source, expected_digest, media_type, shared, stored_raw=False) -> List[_Record]:
        """Scan, chunk and store the chunks of a blob; return the records to
        commit (the blob last). Nothing is visible yet.

        ``stored_raw``: ``expected_digest`` is stored already, as raw chunks;
        only a layer (which upgrades it) is worth preparing, so this returns
        [] (nothing to change) when the content is not one, having read no
        more than its first 512 bytes if they tell."""
        src = _Source(source)
        try:
            kind = _kind_from(media_type, src.head)
            if kind in (KIND_LAYER, KIND_GZIP, KIND_ZSTD):
                try:
                    if kind == KIND_LAYER:
                        return [self._prepare_layer(src.buffers(), expected_digest, media_type, shared)]
                    return self._prepare_compressed(src, kind, expected_digest, media_type, shared)
                except (TarFormatError, CompressedLayerError):
                    if media_type:
                        raise
                    if stored_raw:
                        return []
                    if not src.rewind():
                        raise
                    # Only the content made it look like a (compressed) tar:
                    # store it as it is.
            elif stored_raw:
                return []
            return [self._prepare_raw(src.buffers(), expected_digest, media_type, shared)]
        finally:
            src.close()

    def _prepare_raw(self, buffers, expected_digest, media_type, shared) -> _Record:
        raw = _RawBlob(self, shared)
        with _abandon_on_error(raw):
            for buf in buffers:
                raw.feed(buf)
            digest = raw.finish(expected_digest)
            return raw.record(digest, media_type, KIND_RAW, None, None)

    def _prepare_layer(self, buffers, expected_digest, media_type, shared) -> _Record:
        layer = _LayerBlob(self, shared)
        with _abandon_on_error(layer):
            for buf in buffers:
                layer.feed(buf)
            digest = layer.finish(expected_digest)
            return layer.record(digest, media_type)

    def _prepare_compressed(self, src, kind, expected_digest, media_type, shared) -> List[_Record]:
        """A gzip or zstd layer. Two records are committed together: the
        compressed blob, whose bytes are kept as content-defined chunks so
        it comes back byte-exact (deflate and zstd encoders differ between
        tools and versions, so recompressing cannot be trusted to give the
        same bytes; see docs/design.md), and the uncompressed layer under
        its diff ID, held as an inflated recipe over those same chunks: its
        bytes are the blob's, decompressed. :meth:`compact` later
        deduplicates its file contents (and, where it proves recompression
        exact, drops the compressed bytes); until then the store holds the
        compressed bytes once, as it received them.

        Decompression (isal for gzip, zstandard for zstd; both release the
        GIL) runs on a second thread and the hashing and chunking of the
        compressed bytes on a worker, overlapped with the tar parse (which
        checks the layer, counts its entries and digests it) on this one.
        """
        shared = shared if shared is not None else {}
        # gzip/zstd bytes do not compress further; they are hashed and chunked
        # on a worker, off the decompressing thread, which is the longest one
        raw = _RawBlob(self, shared, compress=False, threads=1)
        scanner = LayerScanner(*self.chunk_params, parse_only=True)
        entries = 0
        with _abandon_on_error(raw):
            tee = workers.InOrder(raw.feed)
            pipe = Decompressor(src.buffers(), kind, tee.submit)
            try:
                for buf in pipe:
                    for batch in scanner.feed(buf):
                        entries += len(batch.entries)
                entries += len(scanner.finish().entries)
            finally:
                pipe.close()
                error = tee.close()
            if error is not None:
                raise error
            digest = raw.finish(expected_digest)
            blob = raw.record(digest, media_type, kind, scanner.digest, entries)
            method = recipe.METHOD_GZIP if kind == KIND_GZIP else recipe.METHOD_ZSTD
            layer = _Record(scanner.digest, None, KIND_LAYER, scanner.digest, entries,
                            Recipe(scanner.size, blob.recipe.chunks, b"", method=method, data_size=raw.size),
                            recipe.encode_inflated(scanner.size, method, blob.recipe.chunks, raw.size), [])
            return [layer, blob]

    def _commit(self, records, extra=None) -> List[BlobInfo]:
        """Make blobs visible: flush and fsync this process's pack, then one
        catalog transaction adds the blobs, the new chunks and the blobs'
        chunk reference counts, then runs ``extra(cursor)`` (more rows of the
        same change). A blob already present (stored meanwhile by another
        writer) is left as it is."""
        self._packs.flush(sync=True)
        with self._catalog.write() as cur:
            moves = []  # (record, its old recipe or None) for blobs whose references count
            for rec in records:
                old = None
                if not self._catalog.add_blob(cur, rec.digest, rec.recipe.size, rec.media_type, rec.kind,
                                              rec.diff_id, rec.entries, rec.encoded):
                    # Present already: kept as it is, unless it was stored as
                    # raw chunks and is now known to be a layer.
                    if rec.kind == KIND_RAW:
                        continue
                    old = self._catalog.upgrade_raw_blob(cur, rec.digest, rec.media_type, rec.kind, rec.diff_id,
                                                         rec.entries, rec.encoded)
                    if old is None:
                        continue
                moves.append((rec, old))
            # a chunk row written for a blob whose references count starts
            # with that blob's reference (a batch's record may also carry rows
            # of chunks it does not use: those of a raw record it replaced)
            counted = {id(rec): {row[0] for row in rec.new_chunks} & {r.digest for r in rec.recipe.chunks}
                       for rec, _old in moves}
            for rec in records:
                self._catalog.add_chunks(cur, rec.new_chunks, counted.get(id(rec), ()))
                self._catalog.mark_to_compress(cur, rec.to_compress)
            for rec, old in moves:
                # an upgraded raw blob's chunks lose its references; a prune
                # deletes those that no other blob uses
                self._move_refs(cur, rec.digest, rec.recipe.chunks, old, "ingest", counted[id(rec)])
            self._revive(cur, [rec.digest for rec in records])
            if extra is not None:
                extra(cur)
        return [self.stat(rec.digest) for rec in records]

    def _move_refs(self, cur, digest: str, refs, old_recipe: Optional[bytes], during: str, counted=frozenset()):
        """In transaction ``cur``: one reference to each distinct chunk of
        ``refs`` (the blob's new recipe) but those of ``counted`` (digests
        whose reference the caller has counted), and, when the blob had the
        encoded recipe ``old_recipe``, one less to each of its chunks. Raises
        StoreError when a chunk of ``refs`` has no row (collected
        meanwhile)."""
        distinct = [d for d in {r.digest: None for r in refs} if d not in counted]
        missing = self._catalog.missing_chunks(cur, distinct)
        if missing:
            raise StoreError(f"blob {digest}: chunk {missing[0].hex()} and {len(missing) - 1} more "
                             f"vanished during {during}")
        self._catalog.add_refs(cur, distinct)
        if old_recipe is not None:
            dropped = recipe.decode(old_recipe, what=f"recipe of {digest}")
            self._catalog.add_refs(cur, list({r.digest: None for r in dropped.chunks}), -1)

    # -- queries ----------------------------------------------------------------
    def has(self, digest: str) -> bool:
        """True when a blob with this digest is stored."""
        return self._catalog.has_blob(digest)

    def stat(self, digest: str) -> BlobInfo:
        """BlobInfo of a stored blob; raises BlobNotFoundError, or DigestError
        when ``digest`` is not a digest."""
        parse_digest(digest)
        row = self._catalog.get_blob(digest)
        if row is None:
            raise BlobNotFoundError(digest)
        d, size, media_type, kind, diff_id, entries, _recipe, _created = row
        if kind not in _DEFAULT_MEDIA_TYPES or not isinstance(size, int):
            raise CorruptBlobError(f"blob {digest}: catalog row is invalid (kind {kind!r}, size {size!r})")
        return _blob_info(d, size, media_type, kind, diff_id, entries)

    def _recipe(self, digest: str) -> Tuple[tuple, Recipe]:
        parse_digest(digest)
        row = self._catalog.get_blob(digest)
        if row is None:
            raise BlobNotFoundError(digest)
        rec = recipe.decode(row[6], what=f"recipe of {digest}")
        if rec.size != row[1]:
            raise CorruptBlobError(f"recipe of {digest}: size {rec.size} != catalog size {row[1]}")
        return row, rec

    def open_blob(self, digest: str) -> "BlobReader":
        """A binary file object streaming the blob. Every chunk is checked
        before its bytes are returned, and the blob's digest at the end;
        a mismatch raises CorruptBlobError from ``read``."""
        lease = self._lease()  # gc.py: packs and chunks stay until it is released
        try:
            _row, rec = self._recipe(digest)
        except BaseException:
            lease.release()
            raise
        if rec.source:
            return _RebuiltReader(self, digest, rec, lease)
        if rec.inflated:
            return _InflatedReader(self, digest, rec, lease)
        return BlobReader(self, digest, rec, lease)

    def read_blob(self, digest: str) -> bytes:
        """The whole blob as bytes (for small blobs: configs, manifests)."""
        with self.open_blob(digest) as f:
            return f.read()

    def layer_info(self, diff_id: str) -> LayerInfo:
        """Figures of the layer with this diff ID (see LayerInfo)."""
        row, rec = self._recipe(diff_id)
        if row[3] != KIND_LAYER:
            raise StoreError(f"{diff_id} is a {row[3]} blob, not an uncompressed layer")
        distinct = list({r.digest: r.length for r in rec.chunks}.items())
        locs = self._catalog.chunk_locations([d for d, _ in distinct])
        refs = self._chunk_refs([d for d, _ in distinct])
        stored = sum(locs[d][2] for d, _ in distinct if d in locs)
        shared = [(d, n) for d, n in distinct if refs.get(d, 0) > 1]
        return LayerInfo(
            diff_id=diff_id,
            entries=row[5] or 0,
            size=rec.size,
            content_bytes=sum(r.length for r in rec.chunks),
            chunks=len(rec.chunks),
            unique_chunks=len(distinct),
            stored_bytes=stored + len(row[6]),
            recipe_bytes=len(row[6]),
            shared_chunks=len(shared),
            shared_bytes=sum(n for _, n in shared),
            deduplicated=not rec.inflated,
        )

    def _chunk_refs(self, digests):
        con = self._catalog._con()
        out = {}
        for i in range(0, len(digests), 500):
            part = digests[i:i + 500]
            q = "SELECT digest, refs FROM chunks WHERE digest IN (%s)" % ",".join("?" * len(part))
            out.update(con.execute(q, part))
        return out

    def _read_chunk(self, ref: ChunkRef, loc: tuple) -> bytes:
        """A chunk's plaintext, checked; every fault of the catalog row or of
        the pack is a CorruptBlobError naming the chunk."""
        return self._read_run([ref], [loc])[0]

    def _read_run(self, refs: List[ChunkRef], locs: List[tuple]) -> List[bytes]:
        """Plaintexts of chunks whose catalog rows ``locs`` place them one
        after the other in one pack, read with one ``pread`` and each
        checked (``_read_chunk``)."""
        where = []
        for ref, (pack, offset, stored_length, length, codec) in zip(refs, locs):
            what = f"chunk {ref.digest.hex()} in pack {pack}"
            if length != ref.length:
                raise CorruptBlobError(f"{what}: catalog length {length} != recipe length {ref.length}")
            if not all(isinstance(v, int) for v in (offset, stored_length, length, codec)) or not (
                0 <= offset and 0 <= stored_length <= MAX_RAW_LENGTH + (MAX_RAW_LENGTH >> 4) and 0 <= length <= MAX_RAW_LENGTH
            ):
                raise CorruptBlobError(f"{what}: catalog row is invalid ({offset!r}, {stored_length!r}, {length!r}, {codec!r})")
            where.append(PackLocation(pack, offset, stored_length, length, codec))
        if self._packs.closed:
            raise StoreError(f"store {self.root} is closed")
        try:
            if len(where) == 1:
                return [self._packs.read(where[0], expected_digest=refs[0].digest, verify_sha256=True)]
            return self._packs.read_run(where, [r.digest for r in refs], verify_sha256=True)
        except LayerStoreError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            what = f"chunk {refs[0].digest.hex()} in pack {where[0].pack_id}"
            if len(refs) > 1:
                what += f" (and the {len(refs) - 1} chunks after it)"
            raise CorruptBlobError(f"{what}: cannot read it: {exc}") from None


def _upgradable(kind: str, media_type: Optional[str]) -> bool:
    """True when ingesting a blob stored (or staged) as ``kind`` again,
    with ``media_type``, may change it: only a raw blob, and only when the
    media type is a layer type or absent (the content decides)."""
    return kind == KIND_RAW and not (media_type and mediatypes.layer_compression(media_type) is None)


def _upgrades(old: _Record, new: _Record) -> bool:
    """True when ``new`` replaces ``old`` (same digest, staged in one batch):
    a raw blob found to be a layer, or a layer held as its compressed bytes
    given as a deduplicated one (catalog.upgrade_raw_blob does the same
    for stored blobs)."""
    if old.kind == KIND_RAW:
        return new.kind != KIND_RAW
    return old.kind == new.kind == KIND_LAYER and old.recipe.inflated and not new.recipe.inflated


class Batch:
    """Blobs staged together and made visible in one catalog transaction:
    ``with store.batch() as b: b.ingest(...); ...; b.commit()``. Chunks
    written by one staged blob deduplicate the next ones. Leaving the block
    without ``commit()`` (or by an exception) discards everything staged;
    the chunks already appended to a pack stay unreferenced until repack.
    """

    def __init__(self, store: Store):
        self.store = store
        self._lease = store._lease()  # gc.py: held until commit or exit
        self._shared: Dict[bytes, PackLocation] = {}
        self._records: Dict[str, _Record] = {}
        self.committed: Optional[List[BlobInfo]] = None

    def has(self, digest: str) -> bool:
        """True when the blob is stored or staged in this batch."""
        return digest in self._records or self.store._has_live(digest)

    def stat(self, digest: str) -> BlobInfo:
        """BlobInfo of a blob staged in this batch or stored; raises
        BlobNotFoundError."""
        rec = self._records.get(digest)
        return _info(rec) if rec is not None else self.store.stat(digest)

    def ingest(self, source, *, expected_digest: Optional[str] = None,
               media_type: Optional[str] = None) -> BlobInfo:
        """Stage a blob (as :meth:`Store.ingest`, same errors); returns its
        BlobInfo, which becomes visible at :meth:`commit`."""
        stored = None
        if expected_digest is not None:
            parse_digest(expected_digest, algorithms=("sha256",))
            staged = self._records.get(expected_digest)
            stored = staged.kind if staged is not None else self.store._live_kind(expected_digest)
            if stored is not None and not _upgradable(stored, media_type):
                return self.stat(expected_digest)
        records = self.store._prepare(source, expected_digest, media_type, self._shared,
                                      stored_raw=stored is not None)
        if not records:
            return self.stat(expected_digest)
        for rec in records:
            old = self._records.get(rec.digest)
            if old is None:
                self._records[rec.digest] = rec
            elif _upgrades(old, rec):
                # Staged as raw (or as a layer held as its compressed bytes),
                # now known as a (deduplicated) layer: the new record replaces
                # it, keeping the rows of the chunks the old one wrote.
                rec.new_chunks = old.new_chunks + rec.new_chunks
                self._records[rec.digest] = rec
            else:
                # The record staged first stays; the rows of the chunks this
                # one wrote go with it: later staged blobs found those chunks
                # in the batch and reference them.
                old.new_chunks = old.new_chunks + rec.new_chunks
        return _info(self._records[records[-1].digest])

    def commit(self, extra=None) -> List[BlobInfo]:
        """Make every staged blob visible in one transaction; ``extra(cursor)``
        runs inside it (for rows that refer to the blobs, such as tags)."""
        if self.committed is not None:
            raise StoreError("batch already committed")
        self.committed = self.store._commit(list(self._records.values()), extra)
        self._lease.release()
        return self.committed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._lease.release()
        self._records.clear()
        self._shared.clear()


def _blob_info(digest, size, media_type, kind, diff_id, entries) -> BlobInfo:
    return BlobInfo(
        media_type=media_type or _DEFAULT_MEDIA_TYPES[kind],
        digest=Digest(digest),
        size=size,
        kind=kind,
        diff_id=Digest(diff_id) if diff_id else None,
        entries=entries,
    )


def _info(rec: _Record) -> BlobInfo:
    return _blob_info(rec.digest, rec.recipe.size, rec.media_type, rec.kind, rec.diff_id, rec.entries)


class BlobReader(io.RawIOBase):
    """Streaming, verified reader of one stored blob (see Store.open_blob).

    Each chunk's plaintext is checked against its SHA-256 before its bytes
    are returned; the digest of the whole blob, computed on a second thread
    as the pieces go out, is checked when the end is reached.
    """

    def __init__(self, store: Store, digest: str, rec: Recipe, lease=None):
        super().__init__()
        self._lease = lease
        self._store = store
        self._digest = digest
        self._rec = rec
        self._pieces = self._blocks()
        self._buf = memoryview(b"")
        self._hasher = Sha256()
        self._hashing = None
        self._done = False

    def readable(self):
        return True

    def close(self):
        """Close the reader (stopping the reads and decompression it runs
        ahead) and end its lease (gc.py)."""
        try:
            self._pieces.close()
            super().close()
        finally:
            if self._lease is not None:
                self._lease.release()

    # Chunks are read on worker threads in *runs*: chunks that follow each
    # other in one pack (as the files of one layer usually do), up to
    # _RUN_CHUNKS of them or _RUN_BYTES of plaintext, one job and one pread
    # per run. Reading stays at most _AHEAD_BYTES of plaintext ahead.
    _RUN_CHUNKS = 64
    _RUN_BYTES = 1 << 20
    _AHEAD_BYTES = 4 << 20

    def _generate(self):
        """The blob's pieces in order: segment bytes, and chunk plaintexts read
        and verified on worker threads, in runs, ahead of the consumer."""
        chunks = self._rec.chunks
        store = self._store
        pool = workers.pool("io")
        locs: Dict[bytes, tuple] = {}
        window = 256
        next_fetch = 0
        i = 0
        # In blob order: bytes, or a slot [future of the run's plaintexts or
        # None while the run is open, index in the run, length].
        ahead: deque = deque()
        pending = 0  # plaintext bytes of the slots in ``ahead``
        run: list = []  # (ref, loc, slot) of the open run
        run_bytes = 0

        def submit():
            nonlocal run, run_bytes
            fut = pool.submit(store._read_run, [r for r, _l, _s in run], [l for _r, l, _s in run])
            for k, (_r, _l, slot) in enumerate(run):
                slot[0], slot[1] = fut, k
            run, run_bytes = [], 0

        def take():
            nonlocal pending
            item = ahead.popleft()
            if isinstance(item, bytes):
                return item
            if item[0] is None:
                submit()
            pending -= item[2]
            return item[0].result()[item[1]]

        try:
            for seg, ref in self._rec.pieces():
                if ref is None:
                    ahead.append(seg)
                else:
                    if i >= next_fetch:
                        want = list({c.digest for c in chunks[i:i + window]} - locs.keys())
                        locs.update(store._catalog.chunk_locations(want))
                        next_fetch = i + window
                    i += 1
                    loc = locs.get(ref.digest)
                    if loc is None:
                        raise CorruptBlobError(
                            f"blob {self._digest}: chunk {ref.digest.hex()} at offset {ref.offset} is missing"
                        )
                    if run:
                        last = run[-1][1]
                        # (rows are checked in _read_run; a damaged one only ends the run)
                        follows = (loc[0] == last[0] and type(last[1]) is int and type(last[2]) is int
                                   and loc[1] == last[1] + ENTRY_HEADER_SIZE + last[2])
                        if not follows or len(run) >= self._RUN_CHUNKS or run_bytes >= self._RUN_BYTES:
                            submit()
                    slot = [None, 0, ref.length]
                    run.append((ref, loc, slot))
                    run_bytes += ref.length
                    ahead.append(slot)
                    pending += ref.length
                while ahead and (isinstance(ahead[0], bytes) or pending > self._AHEAD_BYTES):
                    yield take()
            while ahead:
                yield take()
        finally:
            for item in ahead:
                if not isinstance(item, bytes) and item[0] is not None:
                    item[0].cancel()

    def _blocks(self, size=_READ_SIZE):
        """The blob in blocks of about ``size`` bytes (small pieces such as
        tar headers are joined, so per-block costs stay per MiB)."""
        pending, n = [], 0
        for piece in self._generate():
            pending.append(piece)
            n += len(piece)
            if n >= size:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, n = [], 0
        if pending:
            yield b"".join(pending)

    def _hash(self, piece):
        if self._hashing is not None:
            self._hashing.result()
        self._hashing = workers.pool("hash").submit(self._hasher.update, piece)

    def readinto(self, b) -> int:
        while not self._buf:
            if self._done:
                return 0
            try:
                piece = next(self._pieces)
            except StopIteration:
                self._done = True
                if self._hashing is not None:
                    self._hashing.result()
                actual = "sha256:" + self._hasher.hexdigest()
                if actual != self._digest:
                    raise CorruptBlobError(f"blob {self._digest}: content hashes to {actual}") from None
                return 0
            self._hash(piece)
            self._buf = memoryview(piece)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _InflatedReader(BlobReader):
    """Reader of a layer held as the compressed blob it was ingested from
    (an inflated recipe): the compressed bytes (from the recipe's chunks,
    each verified) are decompressed on a worker thread, and the layer's
    digest (its diff ID) is checked at the end like any blob's."""

    def _blocks(self, size=_READ_SIZE):
        kind = recipe.METHOD_KINDS[self._rec.method]
        pipe = Decompressor(BlobReader._blocks(self, size), kind, lambda _buf: None)
        try:
            yield from pipe
        except CompressedLayerError as exc:
            raise CorruptBlobError(f"blob {self._digest}: its stored {kind} stream does not decompress: {exc}") from None
        finally:
            # not waiting: a reader dropped unclosed is closed by the garbage
            # collector, maybe on a worker thread that the inflating thread's
            # chunk reads wait for
            pipe.close(wait=False)


class _RebuiltReader(BlobReader):
    """Reader of a gzip or zstd blob held as reconstruction data (compact.py): the
    data (from the recipe's chunks, each verified) and the plaintext of the
    layer it was made against (read through its own verified reader) are
    rebuilt into the original bytes, whose digest is checked at the end
    like any blob's."""

    def _blocks(self, size=_READ_SIZE):
        data = BlobReader._blocks(self, size)
        layer = self._store.open_blob(self._rec.source)
        try:
            kind = recipe.METHOD_KINDS[self._rec.method]
            yield from reconstruct(data, iter(lambda: layer.read(size), b""), kind)
        finally:
            layer.close()
