"""One-pass layer scanner: digest, tar structure and content chunks of a layer.

A layer is a tar stream (OCI image spec, layer.md, "Distributable Format").
:class:`LayerScanner` feeds it through the C scanner (``csrc/scanner.c``),
which in one pass computes the SHA-256 of the stream (its diff ID), parses the
tar headers, and splits every entry's content into FastCDC chunks, hashing
each chunk. Python sees one record per chunk and per entry, never per byte.

What the scanner returns is enough to rebuild the stream byte for byte, as
tar-split does: every byte that is not file content (header blocks, PAX and
GNU extended headers, padding, end-of-archive blocks, trailing bytes) is kept
verbatim in *segment bytes*, and the content is the concatenation of the
chunks. :func:`assemble` is the inverse.

Threads: with ``threads=2`` the stream digest is computed on a second thread
while the C scanner parses, chunks and hashes chunks on the calling thread;
both run without the GIL.
"""
import os
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, NamedTuple, Optional

from . import chunking, workers
from ._native import ffi, lib
from .errors import LayerStoreError, TarFormatError
from .hashing import Sha256

__all__ = [
    "Chunk",
    "ScanEntry",
    "ScanBatch",
    "LayerScanner",
    "LayerScan",
    "scan_layer",
    "assemble",
    "DEFAULT_BUFFER_SIZE",
    "TRAILING",
]

#: ``Chunk.entry`` of chunks made of bytes after the end-of-archive marker.
TRAILING = int(lib.LS_SCAN_TRAILING_ENTRY)

#: Bytes read from the input per feed by :func:`scan_layer` (1 MiB).
DEFAULT_BUFFER_SIZE = 1 << 20

_CHUNK = struct.Struct("<QII32s")
_ENTRY = struct.Struct("<QQQQQIiIIQII")
assert _CHUNK.size == ffi.sizeof("ls_scan_chunk")
assert _ENTRY.size == ffi.sizeof("ls_scan_entry")

# Typeflag -> entry type (POSIX.1-2017 pax, "ustar Interchange Format"; GNU
# 'S' is a sparse regular file; '7' is a contiguous file, read as regular).
_TYPES = {
    "0": "file", "\0": "file", "7": "file", "S": "file",
    "1": "hardlink", "2": "symlink", "3": "char", "4": "block",
    "5": "dir", "6": "fifo",
}


class Chunk(NamedTuple):
    """One content-defined chunk of an entry's content.

    Attributes:
        offset: stream offset of the chunk's first byte.
        length: chunk length in bytes (1 .. max chunk size).
        digest: SHA-256 of the chunk's bytes, 32 raw bytes.
        entry: index of the entry it belongs to (0-based, in stream order),
            or :data:`TRAILING` for chunks of the bytes after the end of the
            archive (kept as chunks, not segments, since they can be of any
            size).
    """

    offset: int
    length: int
    digest: bytes
    entry: int


class ScanEntry(NamedTuple):
    """A tar entry as the scanner saw it (metadata needed to index a layer;
    :func:`layerstore.tar.iter_entries` gives every header field).

    Attributes:
        index: 0-based position among the stream's entries.
        name, raw_name: path (str, undecodable bytes surrogate-escaped) and
            its raw bytes.
        linkname: link target for symlinks and hard links, else "".
        type: ``file``, ``dir``, ``symlink``, ``hardlink``, ``char``,
            ``block``, ``fifo`` or ``other``; typeflag: the header byte.
        mode: permission and set-id/sticky bits.
        size: logical size in bytes (a sparse file's real size).
        offset: stream offset of the entry's first header block.
        data_offset, data_size: where its content bytes lie in the stream.
        sparse: True when the content is stored sparse.
        first_chunk: stream-wide index of its first chunk; its chunks are the
            following ones whose ``entry`` is ``index``.
    """

    index: int
    name: str
    raw_name: bytes
    linkname: str
    type: str
    typeflag: str
    mode: int
    size: int
    offset: int
    data_offset: int
    data_size: int
    sparse: bool
    first_chunk: int


class ScanEntries(Sequence):
    """The entries of one batch, decoded into :class:`ScanEntry` objects only
    when accessed (the store needs their number, not their fields)."""

    __slots__ = ("_first", "_raw", "_names", "_count")

    def __init__(self, first_index: int, raw_entries: bytes, names: bytes):
        self._first = first_index
        self._raw = raw_entries
        self._names = names
        self._count = len(raw_entries) // _ENTRY.size

    def __len__(self):
        return self._count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(i)
        (offset, data_offset, size, data_size, first_chunk, mode, typeflag,
         sparse, _reserved, name_pos, name_len, link_len) = _ENTRY.unpack_from(self._raw, i * _ENTRY.size)
        names = self._names
        raw_name = names[name_pos:name_pos + name_len]
        flag = chr(typeflag) if typeflag else "\0"
        return ScanEntry(
            self._first + i,
            raw_name.decode("utf-8", "surrogateescape"),
            raw_name,
            names[name_pos + name_len:name_pos + name_len + link_len].decode("utf-8", "surrogateescape"),
            _TYPES.get(flag, "other"),
            flag,
            mode,
            size,
            offset,
            data_offset,
            data_size,
            bool(sparse),
            first_chunk,
        )


_NO_ENTRIES = ScanEntries(0, b"", b"")


@dataclass
class ScanBatch:
    """Output of the scanner for a stretch of the stream.

    Attributes:
        chunks: completed chunks, in stream order.
        segments: non-content bytes of this stretch, verbatim, in stream order.
        entries: entries whose headers completed in this stretch (a
            sequence of :class:`ScanEntry`, decoded on access).
    """

    chunks: List[Chunk]
    segments: bytes
    entries: "ScanEntries"
    _source: "LayerScanner" = field(repr=False, default=None)

    def chunk_data(self, chunk: Chunk) -> memoryview:
        """The bytes of ``chunk``, zero copy when they lie in one input buffer.
        Valid until the next :meth:`LayerScanner.feed` call."""
        return self._source._slice(chunk.offset, chunk.length)

    def chunks_data(self, chunks: List[Chunk]) -> List[memoryview]:
        """:meth:`chunk_data` of each of ``chunks`` (of this batch, in stream
        order), finding them in one walk over the input buffers."""
        out = []
        bufs = self._source._buffers
        k = 0
        start, view = bufs[0] if bufs else (0, b"")
        for c in chunks:
            offset, length = c.offset, c.length
            while offset >= start + len(view) and k + 1 < len(bufs):
                k += 1
                start, view = bufs[k]
            rel = offset - start
            if 0 <= rel and rel + length <= len(view):
                out.append(view[rel:rel + length])
            else:  # spans buffers (or out of order): the general path
                out.append(self._source._slice(offset, length))
        return out


class LayerScanner:
    """Incremental scanner of one layer tar stream (or, with ``raw=True``, of
    any blob: no tar parsing, the whole stream chunked as one file).

    ``feed(data)`` takes bytes-like buffers of any size and split, in stream
    order, and yields :class:`ScanBatch` objects; ``finish()`` checks the
    stream ended cleanly and returns the last batch. The digest is then in
    :attr:`digest` (``"sha256:<hex>"``) and the total length in
    :attr:`size`.

    Fed buffers are referenced (not copied) until the chunks they hold are
    complete, so a caller must not modify a buffer after feeding it.

    Args:
        min_size, avg_size, max_size: FastCDC parameters in bytes
            (defaults: :mod:`layerstore.chunking`).
        threads: 2 computes the stream digest on a second thread while the
            C scanner works on the caller's (both without the GIL); 1 does
            everything on the caller's thread. Default: 2 when the machine
            has two or more CPUs.
        raw: chunk the stream as one file instead of parsing it as a tar.
        parse_only: parse and check the tar, count its entries and digest
            it, but skip its content: batches carry no chunks (a layer kept
            as its compressed blob until compaction). Not with ``raw``.

    Raises:
        ChunkingError: invalid chunking parameters.
        TarFormatError: malformed or truncated tar (from ``feed``/``finish``),
            naming the offset and the entry.
    """

    def __init__(
        self,
        min_size: int = chunking.DEFAULT_MIN_SIZE,
        avg_size: int = chunking.DEFAULT_AVG_SIZE,
        max_size: int = chunking.DEFAULT_MAX_SIZE,
        threads: Optional[int] = None,
        raw: bool = False,
        parse_only: bool = False,
    ):
        chunking.check_parameters(min_size, avg_size, max_size)
        if raw and parse_only:
            raise ValueError("a raw scan has nothing to parse")
        if threads is None:
            threads = 2 if (os.cpu_count() or 1) >= 2 else 1
        self._hasher = Sha256() if threads >= 2 else None
        flags = (0 if self._hasher else lib.LS_SCAN_HASH_STREAM) | (lib.LS_SCAN_RAW if raw else 0)
        flags |= lib.LS_SCAN_PARSE_ONLY if parse_only else 0
        ptr = lib.ls_scan_new(min_size, avg_size, max_size, flags)
        if ptr == ffi.NULL:
            raise MemoryError("cannot allocate a layer scanner")
        self._s = ffi.gc(ptr, lib.ls_scan_free)
        self._pending_hash = None
        self._buffers = deque()  # (stream offset, memoryview) still needed
        self._position = 0  # stream offset of the end of the last fed buffer
        self._out = ffi.new("ls_scan_out *")
        self._entries_seen = 0
        self.digest: Optional[str] = None
        self.size: Optional[int] = None

    # -- input ----------------------------------------------------------
    def feed(self, data) -> Iterator[ScanBatch]:
        """Scan the next piece of the stream, yielding its batches. The
        generator must be consumed before the next ``feed``."""
        if self.size is not None:
            raise LayerStoreError("feed() after finish(): a LayerScanner scans one stream")
        view = memoryview(data).cast("B")
        if not len(view):
            return
        if self._hasher is not None:
            self._wait_hash()
            self._pending_hash = workers.pool("hash").submit(self._hasher.update, view)
        self._buffers.append((self._position, view))
        self._position += len(view)
        done = 0
        out = self._out
        while done < len(view):
            # The C buffer view is released before yielding: none is held by
            # a suspended (or exception-held) generator frame. One C call per
            # batch: each call gives up the GIL and may wait to get it back.
            with ffi.from_buffer(view) as cbuf:
                rc = lib.ls_scan_feed(self._s, cbuf + done, len(view) - done, out)
            if rc < 0:
                self._wait_hash()
                self._raise()
            done += out.consumed
            yield self._batch(out)
        self._release(out.retain_from)

    def _wait_hash(self):
        if self._pending_hash is not None:
            self._pending_hash.result()
            self._pending_hash = None

    def finish(self) -> ScanBatch:
        """End of input: returns the last batch and sets :attr:`digest` and
        :attr:`size`. Raises TarFormatError if the stream is truncated."""
        if self.size is not None:
            raise LayerStoreError("finish() called twice: a LayerScanner scans one stream")
        self._wait_hash()
        digest = ffi.new("uint8_t[32]")
        if lib.ls_scan_finish(self._s, digest, self._out) < 0:
            self._raise()
        self.size = self._position
        if self._hasher is not None:
            self.digest = "sha256:" + self._hasher.hexdigest()
        else:
            self.digest = "sha256:" + bytes(ffi.buffer(digest, 32)).hex()
        return self._batch(self._out)

    # -- output ---------------------------------------------------------
    def _batch(self, out) -> ScanBatch:
        """Copy what the last C call produced (``out``: ls_scan_out) into a
        ScanBatch; the next call reuses the C buffers."""
        n = out.chunk_count
        new_chunk = tuple.__new__
        chunks = [
            new_chunk(Chunk, (offset, length, digest, entry))
            for offset, length, entry, digest in _CHUNK.iter_unpack(ffi.buffer(out.chunks, n * _CHUNK.size))
        ] if n else []
        n = out.segments_length
        segments = bytes(ffi.buffer(out.segments, n)) if n else b""
        count = out.entry_count
        if count:
            raw_entries = bytes(ffi.buffer(out.entries, count * _ENTRY.size))
            names = bytes(ffi.buffer(out.names, out.names_length)) if out.names_length else b""
            entries = ScanEntries(self._entries_seen, raw_entries, names)
            self._entries_seen += count
        else:
            entries = _NO_ENTRIES
        return ScanBatch(chunks, segments, entries, self)

    def _raise(self):
        s = self._s
        raise TarFormatError(
            ffi.string(lib.ls_scan_error_message(s)).decode("utf-8", "replace"),
            offset=lib.ls_scan_error_offset(s),
            entry=ffi.string(lib.ls_scan_error_entry(s)).decode("utf-8", "replace") or None,
        )

    def _release(self, keep_from: int):
        bufs = self._buffers
        while bufs and bufs[0][0] + len(bufs[0][1]) <= keep_from:
            bufs.popleft()

    def _slice(self, offset: int, length: int) -> memoryview:
        parts = []
        end = offset + length
        for start, view in self._buffers:
            stop = start + len(view)
            if stop <= offset or start >= end:
                continue
            parts.append(view[max(offset, start) - start:min(end, stop) - start])
        if len(parts) == 1:
            return parts[0]
        data = b"".join(parts)
        if len(data) != length:
            raise LayerStoreError(f"chunk at offset {offset} is no longer buffered")
        return memoryview(data)


@dataclass
class LayerScan:
    """Result of :func:`scan_layer`.

    Attributes:
        diff_id: ``"sha256:<hex>"`` of the whole stream.
        size: stream length in bytes.
        entries: every entry, in stream order.
        chunks: every chunk, in stream order.
        segments: the non-content bytes, when ``keep_segments`` was set, else
            None; ``segments_size`` is their length either way.
    """

    diff_id: str
    size: int
    entries: List[ScanEntry]
    chunks: List[Chunk]
    segments: Optional[bytes]
    segments_size: int


def scan_layer(
    fileobj,
    *,
    min_size: int = chunking.DEFAULT_MIN_SIZE,
    avg_size: int = chunking.DEFAULT_AVG_SIZE,
    max_size: int = chunking.DEFAULT_MAX_SIZE,
    threads: Optional[int] = None,
    keep_segments: bool = False,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    on_batch: Optional[Callable[[ScanBatch], None]] = None,
) -> LayerScan:
    """Scan a layer tar read from the binary file object ``fileobj``.

    Reads ``buffer_size`` bytes at a time; memory stays bounded by a few
    buffers plus the per-chunk and per-entry records (and the segment bytes
    when ``keep_segments``). ``threads=2`` (the default when the machine has
    two or more CPUs) hashes the stream on a second thread. ``on_batch`` is
    called with every batch while its chunk data is still readable.

    Raises:
        TarFormatError: malformed or truncated tar, with offset and entry.
        ChunkingError: invalid chunking parameters.
    """
    scanner = LayerScanner(min_size, avg_size, max_size, threads=threads)
    entries: List[ScanEntry] = []
    chunks: List[Chunk] = []
    segments = [] if keep_segments else None
    segments_size = 0

    def take(batch):
        nonlocal segments_size
        if len(batch.entries):
            entries.append(batch.entries)
        chunks.extend(batch.chunks)
        segments_size += len(batch.segments)
        if segments is not None:
            segments.append(batch.segments)
        if on_batch is not None:
            on_batch(batch)

    while True:
        data = fileobj.read(buffer_size)
        if not data:
            break
        for batch in scanner.feed(data):
            take(batch)
    take(scanner.finish())
    diff_id = scanner.digest
    return LayerScan(
        diff_id=diff_id,
        size=scanner.size,
        entries=[e for part in entries for e in part],
        chunks=chunks,
        segments=b"".join(segments) if segments is not None else None,
        segments_size=segments_size,
    )


def assemble(segments: bytes, chunks: List[Chunk], read_chunk: Callable[[Chunk], bytes]) -> Iterator[bytes]:
    """Rebuild a layer stream from its segment bytes and chunk list (the
    inverse of scanning): yields the stream in pieces. ``read_chunk(chunk)``
    returns a chunk's bytes. Raises LayerStoreError if the pieces do not fit
    (a chunk before the current position or past the segments)."""
    pos = 0
    seg_pos = 0
    for chunk in chunks:
        gap = chunk.offset - pos
        if gap < 0 or seg_pos + gap > len(segments):
            raise LayerStoreError(f"recipe inconsistent at chunk offset {chunk.offset}")
        if gap:
            yield segments[seg_pos:seg_pos + gap]
            seg_pos += gap
        data = read_chunk(chunk)
        if len(data) != chunk.length:
            raise LayerStoreError(f"chunk at offset {chunk.offset} has {len(data)} bytes, expected {chunk.length}")
        yield data
        pos = chunk.offset + chunk.length
    if seg_pos < len(segments):
        yield segments[seg_pos:]
