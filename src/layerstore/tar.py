"""Streaming tar reader built on the incremental C parser (``csrc/tar.c``).

Two levels:

* :func:`iter_entries` yields one :class:`TarEntry` per real entry of a binary
  file object, reading it in fixed-size buffers (the whole archive is never
  held in memory and entry contents are skipped, not copied).
* :class:`TarParser` / :func:`iter_events` expose the parser's byte-exact
  event stream: every byte of the input is carried by exactly one
  ``header``/``extdata``/``data``/``padding``/``end``/``trailing`` event, in
  order, so concatenating the events' ``data`` reproduces the input; an
  ``entry`` event (no bytes) announces each entry before its content.

Formats: v7, ustar, star, old GNU and GNU (``L``/``K`` long names, type ``S``
sparse files with extension blocks, base-256 numbers), POSIX pax (``x`` and
``g`` headers, GNU sparse 0.0, 0.1 and 1.0).

PAX global headers (``g``) are applied, as POSIX specifies, to every entry that
follows them; they are not returned as entries. Their records appear in each
following entry's :attr:`TarEntry.pax` (the entry's own ``x`` records override
them), and their bytes appear as ``header``/``extdata``/``padding`` events.
A record with an empty value leaves the corresponding header field in force.

Limits: one extended header payload (a pax ``x``/``g`` header, a GNU long name,
a GNU sparse 1.0 map, the old GNU sparse extension blocks of one entry, and the
accumulated global records) may not exceed ``max_ext`` bytes (default 1 MiB);
an entry may not have more than ``max_sparse`` sparse regions (default 65536).
Larger claims are rejected before anything is allocated.

Malformed input raises :class:`layerstore.errors.TarFormatError` with the
stream offset and, when known, the name of the entry being parsed.
"""
from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import BinaryIO, Dict, Iterator, List, Mapping, Optional, Tuple

from ._native import ffi, lib
from .errors import TarFormatError

__all__ = [
    "TarEntry",
    "TarEvent",
    "TarParser",
    "iter_entries",
    "iter_events",
    "DEFAULT_BUFSIZE",
    "MAX_EXTENDED_HEADER",
    "MAX_SPARSE_REGIONS",
]

DEFAULT_BUFSIZE = 1 << 20
MAX_EXTENDED_HEADER = lib.LS_TAR_DEFAULT_MAX_EXT
MAX_SPARSE_REGIONS = lib.LS_TAR_DEFAULT_MAX_SPARSE

_KINDS = {
    lib.LS_TAR_EV_HEADER: "header",
    lib.LS_TAR_EV_EXTDATA: "extdata",
    lib.LS_TAR_EV_ENTRY: "entry",
    lib.LS_TAR_EV_DATA: "data",
    lib.LS_TAR_EV_PADDING: "padding",
    lib.LS_TAR_EV_END: "end",
    lib.LS_TAR_EV_TRAILING: "trailing",
}

_TYPES = {
    "0": "file",
    "7": "file",
    "S": "file",
    "1": "hardlink",
    "2": "symlink",
    "3": "char",
    "4": "block",
    "5": "dir",
    "6": "fifo",
}

_FORMATS = {
    lib.LS_TAR_FORMAT_V7: "v7",
    lib.LS_TAR_FORMAT_USTAR: "ustar",
    lib.LS_TAR_FORMAT_GNU: "gnu",
    lib.LS_TAR_FORMAT_STAR: "star",
}

_SPARSE_KINDS = {
    lib.LS_TAR_SPARSE_OLDGNU: "oldgnu",
    lib.LS_TAR_SPARSE_PAX_00: "0.0",
    lib.LS_TAR_SPARSE_PAX_01: "0.1",
    lib.LS_TAR_SPARSE_PAX_10: "1.0",
}


@dataclass(frozen=True)
class TarEntry:
    """Metadata of one archive entry.

    Text fields are decoded as UTF-8 with ``surrogateescape``, so names that
    are not valid UTF-8 still round-trip; the exact bytes are in ``raw_name``
    and ``raw_linkname``.

    ``pax`` maps every PAX record in force for the entry (global ``g``
    records overridden by its own ``x`` records) and ``pax_global`` the
    global ones alone; both are read-only mappings of str to str (the
    global records are parsed once and shared by the entries they apply to,
    so a large global header costs its size once, not once per entry).
    """

    name: str
    raw_name: bytes
    type: str  # file, dir, symlink, hardlink, char, block, fifo, other
    typeflag: str  # one character; '\0' is reported as '0' (or '5' for a name ending in '/')
    size: int  # logical size (for sparse files the real file size)
    linkname: str
    raw_linkname: bytes
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: float
    mtime_ns: int
    devmajor: int
    devminor: int
    pax: Mapping[str, str]
    sparse: Optional[List[Tuple[int, int]]]
    offset: int  # offset of the entry's first header block (first extended header if any)
    header_offset: int = 0  # offset of the entry's own header block
    data_offset: int = 0  # offset of the first content byte in the stream
    data_size: int = 0  # content bytes stored in the stream (sparse: the stored regions)
    stored_size: int = 0  # payload bytes after the header (incl. a GNU sparse 1.0 map)
    format: str = "ustar"  # v7, ustar, gnu, star (of the entry's own header)
    sparse_format: Optional[str] = None  # oldgnu, 0.0, 0.1, 1.0
    raw_mode: int = 0  # the header mode field as stored
    pax_global: Mapping[str, str] = field(default_factory=dict)  # the global records in force

    @property
    def isfile(self) -> bool:
        return self.type == "file"

    @property
    def isdir(self) -> bool:
        return self.type == "dir"


@dataclass(frozen=True)
class TarEvent:
    """One parser event. ``data`` holds the event's bytes (``b""`` for
    ``entry`` events, which carry ``entry`` instead); ``file_offset`` is the
    logical offset in the entry for ``data`` events and the offset inside the
    extended payload for ``extdata`` events."""

    kind: str
    offset: int
    length: int
    data: bytes
    file_offset: int = 0
    entry: Optional[TarEntry] = None


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _parse_pax(raw: bytes, into: Dict[str, str]) -> None:
    pos = 0
    n = len(raw)
    while pos < n:
        sp = raw.index(b" ", pos)
        length = int(raw[pos:sp])
        rec = raw[sp + 1 : pos + length - 1]
        key, _, value = rec.partition(b"=")
        into[_text(key)] = _text(value)
        pos += length


_new_entry = object.__new__
_NO_RECORDS = MappingProxyType({})
class _Globals:
    """The global records in force for one parser, parsed once per distinct
    record set (the C parser bumps a generation number whenever they
    change) and shared read-only by the entries they apply to."""

    __slots__ = ("generation", "records")

    def __init__(self):
        self.generation = None
        self.records = _NO_RECORDS

    def of(self, e) -> Mapping[str, str]:
        if not e.pax_global_len:
            return _NO_RECORDS
        if self.generation != e.pax_global_generation:
            parsed = {}
            _parse_pax(bytes(ffi.buffer(e.pax_global, e.pax_global_len)), parsed)
            self.generation = e.pax_global_generation
            self.records = MappingProxyType(parsed)
        return self.records


def _entry_from_c(e, globals_: "_Globals") -> TarEntry:
    raw_name = bytes(ffi.buffer(e.name, e.name_len))
    raw_link = bytes(ffi.buffer(e.linkname, e.linkname_len))
    pax_global = globals_.of(e)
    if e.pax_len:
        own = {}
        _parse_pax(bytes(ffi.buffer(e.pax, e.pax_len)), own)
        pax = ChainMap(own, pax_global) if pax_global else own
    else:
        pax = pax_global
    typeflag = chr(e.typeflag)
    if e.sparse_kind:
        sparse = [(e.sparse[i].offset, e.sparse[i].length) for i in range(e.sparse_count)]
    else:
        sparse = None
    mtime_ns = e.mtime_sec * 1_000_000_000 + e.mtime_nsec
    # Filling __dict__ directly skips the frozen dataclass __init__ (one
    # object.__setattr__ per field), the main per-entry cost on small files.
    entry = _new_entry(TarEntry)
    entry.__dict__.update(
        name=_text(raw_name),
        raw_name=raw_name,
        type=_TYPES.get(typeflag, "other"),
        typeflag=typeflag,
        size=e.size,
        linkname=_text(raw_link),
        raw_linkname=raw_link,
        mode=e.mode & 0o7777,
        uid=e.uid,
        gid=e.gid,
        uname=_text(bytes(ffi.buffer(e.uname, e.uname_len))),
        gname=_text(bytes(ffi.buffer(e.gname, e.gname_len))),
        mtime=e.mtime_sec + e.mtime_nsec / 1e9,
        mtime_ns=mtime_ns,
        devmajor=e.devmajor,
        devminor=e.devminor,
        pax=pax,
        sparse=sparse,
        offset=e.offset,
        header_offset=e.header_offset,
        data_offset=e.data_offset,
        data_size=e.data_size,
        stored_size=e.stored_size,
        format=_FORMATS.get(e.format, "ustar"),
        sparse_format=_SPARSE_KINDS.get(e.sparse_kind),
        raw_mode=e.mode,
        pax_global=pax_global,
    )
    return entry


class TarParser:
    """Incremental parser: :meth:`feed` any slices of the stream, then
    :meth:`close`. Both return the list of events completed so far."""

    def __init__(self, max_ext: Optional[int] = None, max_sparse: Optional[int] = None):
        p = lib.ls_tar_new()
        if p == ffi.NULL:
            raise MemoryError("ls_tar_new")
        self._p = ffi.gc(p, lib.ls_tar_free)
        if max_ext is not None or max_sparse is not None:
            lib.ls_tar_set_limits(self._p, max_ext or 0, max_sparse or 0)
        self._ev = ffi.new("ls_tar_event *")
        self._consumed = ffi.new("size_t *")
        self._closed = False
        self._globals = _Globals()

    @property
    def end_seen(self) -> bool:
        """True once the end-of-archive marker (a zero block) was seen."""
        return bool(lib.ls_tar_end_seen(self._p))

    def _error(self) -> TarFormatError:
        msg = ffi.string(lib.ls_tar_error_message(self._p)).decode("utf-8", "replace")
        entry = ffi.string(lib.ls_tar_error_entry(self._p))
        return TarFormatError(msg, offset=lib.ls_tar_error_offset(self._p), entry=_text(entry) if entry else None)

    def _event(self, with_bytes: bool = True) -> TarEvent:
        ev = self._ev
        kind = _KINDS[ev.kind]
        if kind == "entry":
            return TarEvent(kind, ev.offset, 0, b"", 0, _entry_from_c(lib.ls_tar_current(self._p), self._globals))
        data = bytes(ffi.buffer(ev.bytes, ev.length)) if (with_bytes and ev.length) else b""
        return TarEvent(kind, ev.offset, ev.length, data, ev.file_offset)

    def feed(self, data, with_bytes: bool = True) -> List[TarEvent]:
        """Consume ``data`` (bytes-like); return the events it completed."""
        return list(self.events(data, with_bytes))

    def events(self, data, with_bytes: bool = True) -> Iterator[TarEvent]:
        """Like :meth:`feed`, but yields the events one by one, so the events
        before a :class:`TarFormatError` are seen before it is raised."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        return self._events(data, len(data), with_bytes)

    def _events(self, data, n: int, with_bytes: bool) -> Iterator[TarEvent]:
        if self._closed:
            raise ValueError("parser is closed")
        if n == 0:
            return
        p, ev, consumed = self._p, self._ev, self._consumed
        with ffi.from_buffer("uint8_t[]", data) as cbuf:
            pos = 0
            while True:
                rc = lib.ls_tar_next(p, cbuf + pos, n - pos, consumed, ev)
                pos += consumed[0]
                if rc == 0:
                    break
                if rc < 0:
                    raise self._error()
                yield self._event(with_bytes)

    def close(self, with_bytes: bool = True) -> List[TarEvent]:
        """Signal end of input; raises TarFormatError if the stream is truncated."""
        out: List[TarEvent] = []
        if self._closed:
            return out
        while True:
            rc = lib.ls_tar_finish(self._p, self._ev)
            if rc == 0:
                break
            if rc < 0:
                raise self._error()
            out.append(self._event(with_bytes))
        self._closed = True
        return out


def _read_chunks(fileobj: BinaryIO, bufsize: int) -> Iterator[Tuple[bytearray, int]]:
    """Yield (buffer, length) pairs; the buffer is reused between pairs."""
    readinto = getattr(fileobj, "readinto", None)
    if readinto is not None:
        buf = bytearray(bufsize)
        while True:
            n = readinto(buf)
            if not n:
                return
            yield buf, n
    else:
        while True:
            b = fileobj.read(bufsize)
            if not b:
                return
            yield b, len(b)


def iter_events(fileobj: BinaryIO, bufsize: int = DEFAULT_BUFSIZE, with_bytes: bool = True,
                max_ext: Optional[int] = None, max_sparse: Optional[int] = None) -> Iterator[TarEvent]:
    """Yield the parser events of a binary file object (see :class:`TarEvent`)."""
    parser = TarParser(max_ext=max_ext, max_sparse=max_sparse)
    for chunk, n in _read_chunks(fileobj, bufsize):
        yield from parser._events(chunk, n, with_bytes)
    yield from parser.close(with_bytes)


def iter_entries(fileobj: BinaryIO, bufsize: int = DEFAULT_BUFSIZE, max_ext: Optional[int] = None,
                 max_sparse: Optional[int] = None) -> Iterator[TarEntry]:
    """Yield a :class:`TarEntry` for every entry of the tar stream in
    ``fileobj`` (read with ``readinto`` in ``bufsize`` pieces). Raises
    :class:`TarFormatError` on malformed or truncated input."""
    p = lib.ls_tar_new()
    if p == ffi.NULL:
        raise MemoryError("ls_tar_new")
    p = ffi.gc(p, lib.ls_tar_free)
    if max_ext is not None or max_sparse is not None:
        lib.ls_tar_set_limits(p, max_ext or 0, max_sparse or 0)
    ev = ffi.new("ls_tar_event *")
    consumed = ffi.new("size_t *")
    ENTRY = lib.LS_TAR_EV_ENTRY
    nxt = lib.ls_tar_next
    helper = TarParser.__new__(TarParser)
    helper._p = p
    globals_ = _Globals()
    for chunk, n in _read_chunks(fileobj, bufsize):
        with ffi.from_buffer("uint8_t[]", chunk) as cbuf:
            pos = 0
            while True:
                rc = nxt(p, cbuf + pos, n - pos, consumed, ev)
                pos += consumed[0]
                if rc == 0:
                    break
                if rc < 0:
                    raise helper._error()
                if ev.kind == ENTRY:
                    yield _entry_from_c(lib.ls_tar_current(p), globals_)
    while True:
        rc = lib.ls_tar_finish(p, ev)
        if rc == 0:
            return
        if rc < 0:
            raise helper._error()
        if ev.kind == ENTRY:
            yield _entry_from_c(lib.ls_tar_current(p), globals_)
