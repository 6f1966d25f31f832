"""Pack files: append-only containers of chunks, and their sorted indexes.

A chunk is a byte string of at most :data:`MAX_RAW_LENGTH` bytes named by the
SHA-256 of its plaintext (32 raw bytes, called *digest* here). New chunks are
appended to a pack file owned by one writer process; when the pack is full it
is *sealed*: a sorted index file is written next to it and the pack never
changes again. The byte layouts are specified in ``docs/format.md`` ("Pack
files", "Pack index files"); this module follows that document.

Lifecycle of a pack::

    PackWriter.create()   new <id>.pack, exclusive flock held by the writer
      add() ...           entries appended (buffered)
      flush(sync=True)    entries so far are durable; returns the durable length
      seal()              <id>.idx written atomically; lock released
    -- or the writer dies: the lock goes with it, and PackSet.recover()
       cuts the torn tail and seals the pack.

What the store may rely on:

* A location returned by :meth:`PackWriter.add` is durable once a later
  ``flush(sync=True)`` returned a length ``>= location.end``, or once the
  pack is sealed. Only then may the catalog record it.
* Every read checks the entry header checksum and the xxh3 checksum of the
  stored bytes, decompresses, and checks the raw length; the SHA-256 of the
  plaintext is checked on request. Any failure raises
  :class:`~layerstore.errors.CorruptBlobError`.
* A pack whose exclusive lock can be taken and that has no valid index
  belongs to a dead writer; :meth:`PackSet.recover` seals it. A pack whose
  lock is held is never modified by anyone but its writer.
* Packs and indexes are self-describing: :func:`rebuild_index` recreates an
  index from the pack alone, byte for byte.

Main types: :class:`PackLocation` (where an entry is), :class:`PackWriter`,
:class:`PackReader`, :class:`PackIndex`, :class:`PackSet` (a ``packs/``
directory), :class:`PackProblem` and :class:`RecoveryAction` (reports).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import operator
import os
import re
import secrets
import struct
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, List, NamedTuple, Optional

import lz4.block
import xxhash
import zstandard

from . import workers
from .errors import CorruptBlobError, PackFormatError, PackLockedError

__all__ = [
    "CODEC_LZ4", "CODEC_LZ4_LINKED", "CODEC_NAMES", "CODEC_NONE", "CODEC_ZSTD", "ENTRY_CODEC_NAMES",
    "DEFAULT_MAX_PACK_SIZE", "MAX_RAW_LENGTH",
    "PackEntry", "PackIndex", "PackInfo", "PackLocation", "PackProblem",
    "PackReader", "PackSet", "PackWriter", "RecoveryAction",
    "encode_chunk", "rebuild_index",
]

# --------------------------------------------------------------------------
# Format constants (docs/format.md)

FORMAT_VERSION = 1

PACK_MAGIC = b"LSPACK\r\n"
ENTRY_MAGIC = b"LSEN"
INDEX_MAGIC = b"LSINDX\r\n"

CODEC_NONE = 0
CODEC_LZ4 = 1
CODEC_ZSTD = 2
CODEC_NAMES = {CODEC_NONE: "none", CODEC_LZ4: "lz4", CODEC_ZSTD: "zstd"}
_CODEC_IDS = {name: cid for cid, name in CODEC_NAMES.items()}
#: Entry codec of a small chunk that an lz4 pack set compressed against the
#: chunks written just before it (its *group*; docs/format.md, "Linked
#: entries"). Not a codec a store or writer is configured with.
CODEC_LZ4_LINKED = 3
ENTRY_CODEC_NAMES = {**CODEC_NAMES, CODEC_LZ4_LINKED: "lz4-linked"}
#: Chunks below this many bytes are grouped; a group takes members while
#: its plaintext is under LINK_GROUP_SIZE bytes.
LINK_MAX_CHUNK = 64 << 10
LINK_GROUP_SIZE = 128 << 10
# Dictionary of a linked entry: the last 32 KiB of its group's plaintext.
# (LZ4 could use 64 KiB; 32 KiB keeps 93% of the gain on real layers at
# half the cost of loading the dictionary for every chunk.)
_LINK_WINDOW = 32 << 10
_MAX_LINK_DISTANCE = 4 << 20
# A group's plaintext before its last member: under LINK_GROUP_SIZE, plus
# that member (under LINK_MAX_CHUNK). A reader refuses more.
_MAX_GROUP_PLAINTEXT = LINK_GROUP_SIZE + LINK_MAX_CHUNK

#: Largest plaintext one entry may hold (bytes).
MAX_RAW_LENGTH = 64 << 20
ZSTD_LEVEL = 3

# Pack header: magic, version, flags, pack id, xxh3_64 of bytes 0..31.
_PACK_HEADER = struct.Struct("<8sII16sQ")
PACK_HEADER_SIZE = _PACK_HEADER.size  # 40
# Entry header: magic, codec, flags, reserved, raw length, stored length,
# digest, xxh3_64 of the stored bytes, then xxh3_64 of bytes 0..55.
_ENTRY_BODY = struct.Struct("<4sBBHII32sQ")
_ENTRY_HEADER = struct.Struct("<4sBBHII32sQQ")
ENTRY_HEADER_SIZE = _ENTRY_HEADER.size  # 64
_ENTRY_BODY_SIZE = _ENTRY_BODY.size  # 56
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

# Index: header, 256 fan-out counts, records, trailer.
_INDEX_HEADER = struct.Struct("<8sII")
INDEX_HEADER_SIZE = _INDEX_HEADER.size  # 16
_FANOUT = struct.Struct("<256I")
_FANOUT_OFFSET = INDEX_HEADER_SIZE
_RECORDS_OFFSET = INDEX_HEADER_SIZE + _FANOUT.size  # 1040
_INDEX_RECORD = struct.Struct("<32sQIIB7x")
INDEX_RECORD_SIZE = _INDEX_RECORD.size  # 56
_INDEX_TRAILER = struct.Struct("<QQ16sQQ")
INDEX_TRAILER_SIZE = _INDEX_TRAILER.size  # 48
_TRAILER_CHECKED = INDEX_TRAILER_SIZE - 8
_INDEX_MIN_SIZE = _RECORDS_OFFSET + INDEX_TRAILER_SIZE

#: Default rotation threshold of :class:`PackSet` (bytes); see docs/format.md.
DEFAULT_MAX_PACK_SIZE = 256 << 20
#: Default rotation threshold in entries (bounds the writer's record table and
#: the index file for packs of tiny chunks).
DEFAULT_MAX_PACK_ENTRIES = 1 << 20
#: Default write buffer of a :class:`PackWriter` (bytes).
DEFAULT_BUFFER_SIZE = 1 << 20

_PACK_NAME = re.compile(r"^([0-9a-f]{32})\.pack$")
_TMP_PACK_NAME = re.compile(r"^\.([0-9a-f]{32})\.pack\.tmp$")
_INDEX_NAME = re.compile(r"^([0-9a-f]{32})\.idx$")
_TMP_INDEX_NAME = re.compile(r"^([0-9a-f]{32})\.idx\.tmp$")
_PACK_ID = re.compile(r"^[0-9a-f]{32}$")

_EARLY_SYNC_BYTES = 16 << 20
_xxh3 = xxhash.xxh3_64_intdigest
_lz4_compress = lz4.block.compress
_lz4_decompress = lz4.block.decompress
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_datasync = getattr(os, "fdatasync", os.fsync)


# --------------------------------------------------------------------------
# Records returned to callers


class PackLocation(NamedTuple):
    """Where one entry lives.

    Fields: ``pack_id`` (32 lowercase hex chars), ``offset`` (byte offset of
    the entry header in the pack), ``stored_length`` (bytes stored after the
    64-byte header), ``raw_length`` (plaintext bytes), ``codec`` (one of
    ``CODEC_NONE``, ``CODEC_LZ4``, ``CODEC_ZSTD``).
    """

    pack_id: str
    offset: int
    stored_length: int
    raw_length: int
    codec: int

    @property
    def end(self) -> int:
        """Offset one past the entry's last byte; the location is durable once
        a flush returned a durable length ``>= end``."""
        return self.offset + ENTRY_HEADER_SIZE + self.stored_length


class PackEntry(NamedTuple):
    """An entry header found by scanning a pack (:meth:`PackReader.iter_entries`).

    ``digest`` is 32 raw bytes; ``checksum`` the xxh3_64 of the stored bytes.
    """

    offset: int
    digest: bytes
    codec: int
    raw_length: int
    stored_length: int
    checksum: int

    @property
    def end(self) -> int:
        return self.offset + ENTRY_HEADER_SIZE + self.stored_length


class PackProblem(NamedTuple):
    """One fault found by a scan or :meth:`PackSet.verify`.

    ``offset`` is the entry (or damaged region) offset in the pack, or None
    for faults of a whole file; ``digest`` is a hex digest when one is known;
    ``what`` says what is wrong.
    """

    pack_id: str
    offset: Optional[int]
    digest: Optional[str]
    what: str


class PackInfo(NamedTuple):
    """A pack file in a directory: ``sealed`` is True when ``<id>.idx``
    exists (its validity is checked by recover/verify, not here)."""

    pack_id: str
    path: str
    size: int
    sealed: bool


class RecoveryAction(NamedTuple):
    """What :meth:`PackSet.recover` did to one file.

    ``action`` is one of ``"sealed"`` (index written, nothing cut),
    ``"truncated"`` (torn tail cut, then sealed), ``"reindexed"`` (an
    unreadable index replaced), ``"removed"`` (an abandoned pack holding no
    valid entry, or a temporary file, deleted), ``"in-use"`` (skipped: a live
    writer holds the lock), ``"damaged"`` (left alone: pack header
    unreadable). Sizes are in bytes.
    """

    pack_id: str
    action: str
    old_size: int
    new_size: int
    entries: int
    detail: str = ""


# --------------------------------------------------------------------------
# Small helpers


_tls = threading.local()


def _zstd_compressor():
    c = getattr(_tls, "zc", None)
    if c is None:
        c = _tls.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False)
    return c


def _zstd_decompressor():
    d = getattr(_tls, "zd", None)
    if d is None:
        d = _tls.zd = zstandard.ZstdDecompressor()
    return d


def _codec_id(codec) -> int:
    if isinstance(codec, str):
        try:
            return _CODEC_IDS[codec]
        except KeyError:
            raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(_CODEC_IDS)}") from None
    if codec in CODEC_NAMES:
        return codec
    raise ValueError(f"unknown codec {codec!r}")


def _as_bytes_like(data):
    """Return ``data`` as a 1-D byte buffer whose len() is its byte count."""
    t = type(data)
    if t is bytes or t is bytearray:
        return data
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def encode_chunk(data, codec="lz4"):
    """Compress one chunk the way a pack stores it.

    ``data``: bytes-like plaintext; ``codec``: ``"lz4"``, ``"zstd"``,
    ``"none"`` or a codec id. Returns ``(codec_id, stored)`` where ``stored``
    is the compressed form when it is at least ``max(1, len(data) // 16)``
    bytes smaller than ``data``, else ``data`` itself with ``CODEC_NONE``.
    Thread-safe (zstd compressors are per thread).
    """
    data = _as_bytes_like(data)
    return _encode(data, _codec_id(codec))


def _encode(data, cid):
    n = len(data)
    if cid == CODEC_LZ4 and n:
        stored = _lz4_compress(data, store_size=False)
    elif cid == CODEC_ZSTD and n:
        stored = _zstd_compressor().compress(data)
    else:
        return CODEC_NONE, data
    if len(stored) <= n - max(1, n >> 4):
        return cid, stored
    return CODEC_NONE, data


def _encode_run(items, cid):
    """Encode chunks that will be appended one after the other, in order:
    ``items`` is ``[(digest, data)]``; returns ``[(digest, raw length,
    codec id, stored, joins)]``, ``joins`` True for an entry that belongs to
    the group of the entry before it (nothing may come between them).

    With lz4, consecutive chunks smaller than LINK_MAX_CHUNK form groups: the
    first is encoded alone (the group's head); each next one, while the
    group holds less than LINK_GROUP_SIZE bytes of plaintext, is compressed
    with the plaintext of the members before it as LZ4 dictionary (its last
    32 KiB) and stored as CODEC_LZ4_LINKED: a u32 distance back to the
    head's entry, then the LZ4 block. A member that does not shrink by 1/16
    is stored as CODEC_NONE and still belongs to the group's history."""
    if cid == CODEC_NONE:
        out = []
        for digest, data in items:
            if type(data) is not memoryview or data.ndim != 1 or data.format != "B":
                data = _as_bytes_like(data)
            n = len(data)
            if n > MAX_RAW_LENGTH:
                raise ValueError(f"chunk of {n} bytes exceeds the {MAX_RAW_LENGTH}-byte maximum")
            out.append((digest if type(digest) is bytes else bytes(digest), n, CODEC_NONE, data, False))
        return out
    out = []
    history = None  # plaintext of the open group, or None
    distance = 0    # from the open group's head entry to the next entry
    for digest, data in items:
        data = _as_bytes_like(data)
        n = len(data)
        if n > MAX_RAW_LENGTH:
            raise ValueError(f"chunk of {n} bytes exceeds the {MAX_RAW_LENGTH}-byte maximum")
        small = cid == CODEC_LZ4 and 0 < n < LINK_MAX_CHUNK
        joins = small and history is not None and len(history) < LINK_GROUP_SIZE
        if joins:
            body = _lz4_compress(data, store_size=False, dict=bytes(history[-_LINK_WINDOW:]))
            if 4 + len(body) <= n - max(1, n >> 4):
                codec, stored = CODEC_LZ4_LINKED, _U32.pack(distance) + body
            else:
                codec, stored = CODEC_NONE, data
            history += data
        else:
            codec, stored = _encode(data, cid)
            history = bytearray(data) if small else None
            distance = 0
        distance += ENTRY_HEADER_SIZE + len(stored)
        out.append((bytes(digest), n, codec, stored, joins))
    return out


def _decode(stored, codec, raw_length):
    """Plaintext of ``stored`` (not for CODEC_LZ4_LINKED, which needs its
    group); raises ValueError-like codec errors."""
    if codec == CODEC_NONE:
        return bytes(stored)
    if codec == CODEC_LZ4:
        return _lz4_decompress(stored, uncompressed_size=raw_length)
    return _zstd_decompressor().decompress(stored, max_output_size=raw_length)


def _parse_entry_header(buf, pos=0):
    """Fields ``(codec, raw, stored, digest, checksum)`` of the entry header
    at ``buf[pos:pos+64]``, or a str saying why it is not a valid header."""
    magic, codec, flags, reserved, raw, stored, digest, xx, hc = _ENTRY_HEADER.unpack_from(buf, pos)
    if magic != ENTRY_MAGIC:
        return "bad entry magic"
    if hc != _xxh3(buf[pos:pos + _ENTRY_BODY_SIZE]):
        return "entry header checksum mismatch"
    if flags or reserved:
        return "nonzero reserved entry header field"
    if raw > MAX_RAW_LENGTH:
        return "raw length above maximum"
    if codec == CODEC_NONE:
        if stored != raw:
            return "stored length differs from raw length for codec none"
    elif codec == CODEC_LZ4 or codec == CODEC_ZSTD:
        if not 0 < stored < raw:
            return "compressed entry not smaller than its raw length"
    elif codec == CODEC_LZ4_LINKED:
        if not 4 < stored < raw:
            return "linked entry not between 5 bytes and its raw length"
        if raw >= LINK_MAX_CHUNK:
            return "linked entry of 64 KiB or more"
    else:
        return f"unknown codec {codec}"
    return codec, raw, stored, digest, xx


def _pread_exact(fd, n, offset):
    """Read ``n`` bytes at ``offset``; fewer only at end of file."""
    data = os.pread(fd, n, offset)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _pwrite_all(fd, parts, offset):
    """Write the buffers in ``parts`` contiguously at ``offset``."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd, exclusive=True) -> bool:
    """Try to take a flock on ``fd`` without waiting; True when taken."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _same_file(fd, path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _check_pack_id(pack_id):
    if not isinstance(pack_id, str) or not _PACK_ID.match(pack_id):
        raise ValueError(f"invalid pack id {pack_id!r}: expected 32 lowercase hex characters")
    return pack_id


def _pack_header(pack_id: str) -> bytes:
    body = _PACK_HEADER.pack(PACK_MAGIC, FORMAT_VERSION, 0, bytes.fromhex(pack_id), 0)[:32]
    return body + _U64.pack(_xxh3(body))


def _parse_pack_header(buf, path=None) -> str:
    """Pack id (hex) of a pack file header; raises PackFormatError."""
    if len(buf) < PACK_HEADER_SIZE:
        raise PackFormatError("pack file shorter than its header", path)
    magic, version, flags, raw_id, checksum = _PACK_HEADER.unpack_from(buf)
    if magic != PACK_MAGIC:
        raise PackFormatError("not a pack file (bad magic)", path)
    if checksum != _xxh3(buf[:32]):
        raise PackFormatError("pack header checksum mismatch", path)
    if version != FORMAT_VERSION:
        raise PackFormatError(f"unsupported pack format version {version}", path)
    if flags:
        raise PackFormatError(f"unknown pack header flags {flags:#x}", path)
    return raw_id.hex()


def _digest_key(record):
    return record[:32]


def _index_bytes(pack_id: str, pack_length: int, records) -> bytes:
    """Index file content for ``records``: packed 56-byte index records in
    pack (offset) order, duplicates allowed. Keeps the first record (lowest
    offset) of each digest."""
    records = sorted(records, key=_digest_key)  # stable: offset order within a digest
    counts = [0] * 256
    body = bytearray(_INDEX_HEADER.pack(INDEX_MAGIC, FORMAT_VERSION, INDEX_RECORD_SIZE))
    body += bytes(_FANOUT.size)
    prev = None
    n = 0
    for rec in records:
        d = rec[:32]
        if d == prev:
            continue
        prev = d
        counts[rec[0]] += 1
        body += rec
        n += 1
    total = 0
    for i in range(256):
        total += counts[i]
        counts[i] = total
    _FANOUT.pack_into(body, _FANOUT_OFFSET, *counts)
    head = _INDEX_TRAILER.pack(n, pack_length, bytes.fromhex(pack_id), _xxh3(body), 0)[:_TRAILER_CHECKED]
    body += head
    body += _U64.pack(_xxh3(head))
    return bytes(body)


def _write_index_file(directory, pack_id, data):
    """Atomically publish ``<pack_id>.idx``: tmp file, fsync, rename, fsync dir."""
    final = os.path.join(directory, pack_id + ".idx")
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o644)
    try:
        _pwrite_all(fd, [data], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(directory)
    return final


# --------------------------------------------------------------------------
# Writer


class PackWriter:
    """Appends entries to one new pack file, holding an exclusive ``flock`` on
    it until :meth:`seal`, :meth:`abort` or process death.

    Not meant to be shared across processes (do not fork while it is open).
    Methods are thread-safe; compression in :meth:`add` runs outside the lock.
    After an ``OSError`` while writing, the writer closes itself (lock
    released, file left for :meth:`PackSet.recover`) and re-raises; later calls
    raise ``ValueError``.
    """

    def __init__(self, directory, pack_id, fd, codec, buffer_size):
        self.directory = directory
        self.pack_id = pack_id
        self.path = os.path.join(directory, pack_id + ".pack")
        self.codec = CODEC_NAMES[codec]
        self._cid = codec
        self._fd = fd
        self._buf = bytearray(buffer_size)  # reused: fresh pages are costly
        self._view = memoryview(self._buf)
        self._fill = 0  # bytes of _buf in use
        self._direct = max(1, buffer_size // 4)
        self._written = PACK_HEADER_SIZE  # bytes handed to the OS
        # A background fdatasync started every _EARLY_SYNC_BYTES written, so
        # that the one a commit waits for finds little left to write.
        self._early = None
        self._early_at = PACK_HEADER_SIZE
        self._size = PACK_HEADER_SIZE  # written + buffered
        self._durable = PACK_HEADER_SIZE
        self._records = bytearray()
        self._count = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def create(cls, directory, codec="lz4", buffer_size=DEFAULT_BUFFER_SIZE) -> "PackWriter":
        """Create ``<directory>/<new id>.pack`` holding just the pack header,
        durable (file and directory fsynced), and locked by the new writer.

        The file is created as ``.<id>.pack.tmp``, locked, written, then renamed,
        so a ``*.pack`` file is never seen unlocked before its writer owns it.
        ``codec``: ``"lz4"`` (default), ``"zstd"`` or ``"none"``;
        ``buffer_size``: bytes buffered before a write (entries of at least a
        quarter of it are written directly). Raises OSError.
        """
        cid = _codec_id(codec)
        if buffer_size < 1:
            raise ValueError("buffer_size must be positive")
        os.makedirs(directory, exist_ok=True)
        while True:
            pack_id = secrets.token_hex(16)
            tmp = os.path.join(directory, f".{pack_id}.pack.tmp")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
            # recover() may delete an unlocked temporary file: retry then.
            if not _try_lock(fd) or not _same_file(fd, tmp):
                os.close(fd)
                continue
            try:
                _pwrite_all(fd, [_pack_header(pack_id)], 0)
                _datasync(fd)
                os.rename(tmp, os.path.join(directory, pack_id + ".pack"))
                _fsync_dir(directory)
            except BaseException:
                os.close(fd)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return cls(directory, pack_id, fd, cid, buffer_size)

    # -- state

    @property
    def size(self) -> int:
        """Current pack length in bytes, buffered bytes included (for rotation)."""
        return self._size

    @property
    def durable_length(self) -> int:
        """Pack length made durable by the last ``flush(sync=True)``."""
        return self._durable

    @property
    def entry_count(self) -> int:
        """Number of entries added (duplicates included)."""
        return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self):
        if self._closed:
            raise ValueError(f"pack writer {self.pack_id} is closed")

    # -- writing

    def add(self, digest: bytes, data, check_digest: bool = False) -> PackLocation:
        """Append one chunk; returns its :class:`PackLocation`.

        ``digest``: the 32-byte SHA-256 of ``data`` (trusted unless
        ``check_digest``; a mismatch then raises ValueError); ``data``:
        bytes-like of at most :data:`MAX_RAW_LENGTH` bytes, not retained after
        return. Adding a digest twice writes a second entry; the index keeps
        the first. The entry is durable only after ``flush(sync=True)``.
        """
        data = _as_bytes_like(data)
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        n = len(data)
        if n > MAX_RAW_LENGTH:
            raise ValueError(f"chunk of {n} bytes exceeds the {MAX_RAW_LENGTH}-byte maximum")
        if check_digest and hashlib.sha256(data).digest() != bytes(digest):
            raise ValueError("digest does not match the SHA-256 of data")
        cid, stored = _encode(data, self._cid)
        return self._append(bytes(digest), n, cid, stored)

    def _append(self, digest, raw_length, cid, stored) -> PackLocation:
        """Append an already encoded entry (``stored`` as :func:`encode_chunk`
        returns it for this plaintext)."""
        return self._append_many([(digest, raw_length, cid, stored)])[0]

    def _append_many(self, encoded) -> List[PackLocation]:
        """Append already encoded entries one after the other, as
        :meth:`_append` would one by one: ``encoded`` is ``[(digest, raw
        length, codec id, stored, ...)]`` (what :func:`_encode_run` returns).
        The headers are built outside the lock, taken once."""
        body_of, u64, xxh3 = _ENTRY_BODY.pack, _U64.pack, _xxh3
        heads = []
        for e in encoded:
            stored = e[3]
            body = body_of(ENTRY_MAGIC, e[2], 0, 0, e[1], len(stored), e[0], xxh3(stored))
            heads.append(body + u64(xxh3(body)))
        locs = []
        record_of, new_location = _INDEX_RECORD.pack, tuple.__new__
        with self._lock:
            self._check_open()
            pack_id, records, direct = self.pack_id, self._records, self._direct
            view, fill, size = self._view, self._fill, self._size
            room = len(view)
            try:
                for e, head in zip(encoded, heads):
                    d, n, c, stored = e[0], e[1], e[2], e[3]
                    slen = len(stored)
                    need = ENTRY_HEADER_SIZE + slen
                    if slen >= direct or need > room:
                        _pwrite_all(self._fd, [view[:fill], head, stored], self._written)
                        self._written = size + need
                        fill = 0
                    else:
                        if fill + need > room:
                            _pwrite_all(self._fd, [view[:fill]], self._written)
                            self._written += fill
                            fill = 0
                        view[fill:fill + ENTRY_HEADER_SIZE] = head
                        view[fill + ENTRY_HEADER_SIZE:fill + need] = stored
                        fill += need
                    records += record_of(d, size, slen, n, c)
                    locs.append(new_location(PackLocation, (pack_id, size, slen, n, c)))
                    size += need
            except OSError:
                self._fail()  # closes the writer: its counters no longer matter
                raise
            self._fill, self._size = fill, size
            self._count += len(encoded)
            if self._written - self._early_at >= _EARLY_SYNC_BYTES and (self._early is None or self._early.done()):
                self._early_at = self._written
                self._early = workers.pool("sync").submit(_datasync, self._fd)
        return locs

    def _write_out(self):
        fill = self._fill
        if fill:
            try:
                _pwrite_all(self._fd, [self._view[:fill]], self._written)
            except OSError:
                self._fail()
                raise
            self._written += fill
            self._fill = 0

    def written_length(self) -> int:
        """Bytes handed to the OS so far (readable by other file handles)."""
        return self._written

    def flush(self, sync: bool = True) -> int:
        """Write out buffered entries; with ``sync`` also fdatasync the file.

        Returns the durable length: every location with ``end <=`` it survives
        a crash. Without ``sync`` the durable length does not advance.
        """
        with self._lock:
            self._check_open()
            self._write_out()
            if sync and self._durable < self._written:
                try:
                    _datasync(self._fd)
                except OSError:
                    self._fail()
                    raise
                self._durable = self._written
            return self._durable

    def seal(self) -> str:
        """Flush and fsync, write the sorted index ``<id>.idx`` atomically,
        then release the lock and close. Returns the index path."""
        with self._lock:
            self._check_open()
            self._write_out()
            try:
                _datasync(self._fd)
                self._durable = self._written
                mv = memoryview(self._records)
                recs = [bytes(mv[i:i + INDEX_RECORD_SIZE]) for i in range(0, len(mv), INDEX_RECORD_SIZE)]
                mv.release()
                path = _write_index_file(self.directory, self.pack_id,
                                         _index_bytes(self.pack_id, self._size, recs))
            except OSError:
                self._fail()
                raise
            self._close()
            return path

    def abort(self, delete: bool = False):
        """Stop writing: buffered (unflushed) entries are dropped, the lock is
        released and the file is closed. The pack stays in place unsealed, so
        :meth:`PackSet.recover` later seals whatever complete entries it holds.
        With ``delete`` the pack file is unlinked first (only valid when no
        location from it was recorded anywhere). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._fill = 0
            if delete:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self._close()

    def _fail(self):
        self._close()

    def _close(self):
        if self._early is not None:
            self._early.exception()  # the descriptor stays open until it is done
            self._early = None
        self._closed = True
        self._fill = 0
        self._records = bytearray()
        self._buf = self._view = None
        os.close(self._fd)  # releases the flock

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._closed:
            return
        if exc_type is None:
            self.seal()
        else:
            self.abort()

    def __repr__(self):
        state = "closed" if self._closed else f"size={self._size}"
        return f"<PackWriter {self.pack_id} {self.codec} {state}>"


# --------------------------------------------------------------------------
# Reader


class PackReader:
    """Reads entries of one pack file with ``os.pread`` (thread-safe).

    The file may still be growing (an open pack of a live writer): reads
    below the writer's durable length are always complete.
    """

    def __init__(self, path, fd, pack_id, owns_fd=True):
        self.path = path
        self.pack_id = pack_id
        self._fd = fd
        self._owns_fd = owns_fd
        # per thread (threads read different runs at once): .g = (head
        # offset, end offset, last 32 KiB of plaintext, plaintext bytes so
        # far) of the linked group that thread decoded last
        self._groups = threading.local()

    @classmethod
    def open(cls, path) -> "PackReader":
        """Open and check the pack header; raises PackFormatError (bad header,
        or header id differing from an ``<id>.pack`` file name) or OSError."""
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            return cls._from_fd(path, fd, owns_fd=True)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _from_fd(cls, path, fd, owns_fd):
        pack_id = _parse_pack_header(os.pread(fd, PACK_HEADER_SIZE, 0), path)
        m = _PACK_NAME.match(os.path.basename(path))
        if m and m.group(1) != pack_id:
            raise PackFormatError(f"pack header names pack {pack_id}", path)
        return cls(path, fd, pack_id, owns_fd)

    def size(self) -> int:
        """Current file length in bytes."""
        return os.fstat(self._fd).st_size

    def close(self):
        if self._fd is not None:
            if self._owns_fd:
                os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _corrupt(self, reason, offset, digest):
        if isinstance(digest, (bytes, bytearray)):
            digest = bytes(digest).hex()
        return CorruptBlobError(reason, self.pack_id, offset, digest)

    def read(self, where, expected_digest: Optional[bytes] = None, verify_sha256: bool = False) -> bytes:
        """Plaintext of the entry at ``where`` (a :class:`PackLocation` of
        this pack, or an entry offset).

        Always checks the entry header checksum, that the header agrees with
        the location, that it holds ``expected_digest`` (32 bytes) when given,
        the xxh3 of the stored bytes, decompression and the raw length; with
        ``verify_sha256`` also that SHA-256(plaintext) is the entry's digest.
        Raises CorruptBlobError naming pack, offset and digest on any failure,
        ValueError for a location of another pack.
        """
        fd = self._fd
        if fd is None:
            raise ValueError("pack reader is closed")
        if isinstance(where, PackLocation):
            if where.pack_id != self.pack_id:
                raise ValueError(f"location of pack {where.pack_id} given to reader of pack {self.pack_id}")
            offset = where.offset
            want = where.stored_length
            if not (isinstance(offset, int) and isinstance(want, int)) or not 0 <= want <= MAX_RAW_LENGTH + (MAX_RAW_LENGTH >> 4):
                # a stored entry is never larger than this; do not allocate a claimed size
                raise self._corrupt(f"invalid location (offset {offset!r}, {want!r} stored bytes)", None, expected_digest)
            buf = _pread_exact(fd, ENTRY_HEADER_SIZE + want, offset) if offset >= PACK_HEADER_SIZE else b""
        else:
            offset = operator.index(where)
            where = None
            buf = _pread_exact(fd, ENTRY_HEADER_SIZE, offset) if offset >= PACK_HEADER_SIZE else b""
        if where is not None:
            return self._plaintext(buf, offset, where, expected_digest, verify_sha256)
        codec, raw, stored, digest, xx = self._header(buf, offset, expected_digest)
        data = _pread_exact(fd, stored, offset + ENTRY_HEADER_SIZE)
        return self._checked(offset, codec, raw, stored, digest, xx, data, expected_digest, verify_sha256)

    def read_run(self, locations, expected_digests, verify_sha256: bool = False) -> List[bytes]:
        """Plaintexts of entries that follow each other in this pack
        (``locations``, in offset order, each starting where the one before
        it ends), read with one ``pread``; each is checked as :meth:`read`
        checks it, against its ``expected_digests`` item (32 bytes or None).
        Raises CorruptBlobError for the first entry that fails, ValueError
        for locations that are not one contiguous run of this pack."""
        fd = self._fd
        if fd is None:
            raise ValueError("pack reader is closed")
        first = locations[0]
        end = first.offset
        for loc in locations:
            if loc.pack_id != self.pack_id or loc.offset != end or not (
                    isinstance(loc.stored_length, int) and 0 <= loc.stored_length <= MAX_RAW_LENGTH + (MAX_RAW_LENGTH >> 4)):
                raise ValueError(f"locations are not one contiguous run of pack {self.pack_id}")
            end = loc.offset + ENTRY_HEADER_SIZE + loc.stored_length
        buf = memoryview(_pread_exact(fd, end - first.offset, first.offset) if first.offset >= PACK_HEADER_SIZE else b"")
        out = []
        for loc, d in zip(locations, expected_digests):
            rel = loc.offset - first.offset
            out.append(self._plaintext(buf[rel:rel + ENTRY_HEADER_SIZE + loc.stored_length], loc.offset, loc, d,
                                       verify_sha256))
        return out

    def _header(self, buf, offset, expected_digest) -> tuple:
        """Fields of the valid entry header at the start of ``buf`` (read at
        ``offset``); CorruptBlobError when there is none."""
        if len(buf) < ENTRY_HEADER_SIZE:
            raise self._corrupt("entry header beyond end of pack or before first entry", offset, expected_digest)
        h = _parse_entry_header(buf)
        if type(h) is str:
            raise self._corrupt(h, offset, expected_digest)
        return h

    def _plaintext(self, buf, offset, where, expected_digest, verify_sha256) -> bytes:
        """Check and decode the entry whose header and stored bytes, as read
        for location ``where``, are ``buf``."""
        codec, raw, stored, digest, xx = self._header(buf, offset, expected_digest)
        if stored != where.stored_length or raw != where.raw_length or codec != where.codec:
            raise self._corrupt("entry header does not match its location", offset, digest)
        data = memoryview(buf)[ENTRY_HEADER_SIZE:]
        return self._checked(offset, codec, raw, stored, digest, xx, data, expected_digest, verify_sha256)

    def _checked(self, offset, codec, raw, stored, digest, xx, data, expected_digest, verify_sha256) -> bytes:
        if expected_digest is not None and digest != expected_digest:
            raise self._corrupt(f"entry holds digest {digest.hex()}", offset, expected_digest)
        if len(data) != stored:
            raise self._corrupt("stored bytes cut short by end of pack", offset, digest)
        if _xxh3(data) != xx:
            raise self._corrupt("stored bytes checksum mismatch", offset, digest)
        if codec == CODEC_LZ4_LINKED:
            plain = self._read_linked(offset, data, raw, digest)
        else:
            try:
                plain = _decode(data, codec, raw)
            except Exception as exc:  # lz4/zstd raise their own error types
                raise self._corrupt(f"cannot decompress ({CODEC_NAMES[codec]}): {exc}", offset, digest) from None
        if len(plain) != raw:
            raise self._corrupt(f"decompressed to {len(plain)} bytes, header says {raw}", offset, digest)
        if verify_sha256 and hashlib.sha256(plain).digest() != digest:
            raise self._corrupt("plaintext does not hash to the entry's digest", offset, digest)
        if codec != CODEC_LZ4_LINKED and raw < LINK_MAX_CHUNK:
            self._remember(offset, offset + ENTRY_HEADER_SIZE + stored, plain)
        return plain

    def _remember(self, offset, end, plain):
        """After decoding a small entry alone: it may head a linked group, or
        continue the group remembered last (a member stored uncompressed)."""
        g = getattr(self._groups, "g", None)
        if g is not None and g[1] == offset and g[3] + len(plain) <= _MAX_GROUP_PLAINTEXT:
            self._groups.g = (g[0], end, (g[2] + plain)[-_LINK_WINDOW:], g[3] + len(plain))
        else:
            self._groups.g = (offset, end, bytes(plain[-_LINK_WINDOW:]), len(plain))

    def _read_linked(self, offset, data, raw, digest) -> bytes:
        """Plaintext of the CODEC_LZ4_LINKED entry at ``offset`` whose stored
        bytes (already checked against their xxh3) are ``data``: the entries
        of its group from the head up to it are read in one ``pread`` and
        decoded in order (each header and xxh3 checked) to rebuild the LZ4
        dictionary. The last group decoded is remembered, so reading a
        group's members in order decodes each once."""
        distance = _U32.unpack_from(data)[0]
        head = offset - distance
        if distance < ENTRY_HEADER_SIZE or distance > _MAX_LINK_DISTANCE or head < PACK_HEADER_SIZE:
            raise self._corrupt(f"linked entry: group head {distance} bytes back is impossible", offset, digest)
        cached = getattr(self._groups, "g", None)
        if cached is not None and cached[0] == head and cached[1] == offset:
            # the entry just before this one was decoded last: nothing to walk
            if cached[3] + raw > _MAX_GROUP_PLAINTEXT:
                raise self._corrupt("linked entry: its group is too large", offset, digest)
            plain = self._decode_member(offset, head, data, CODEC_LZ4_LINKED, raw, cached[2], offset, digest)
            self._groups.g = (head, offset + ENTRY_HEADER_SIZE + len(data), (cached[2] + plain)[-_LINK_WINDOW:],
                              cached[3] + raw)
            return plain
        if cached is not None and cached[0] == head and cached[1] < offset:
            pos, history, total = cached[1], bytearray(cached[2]), cached[3]
        else:
            pos, history, total = head, bytearray(), 0
        buf = _pread_exact(self._fd, offset - pos, pos)
        mv = memoryview(buf)
        i = 0
        while pos + i < offset:
            at = pos + i
            if i + ENTRY_HEADER_SIZE > len(buf):
                raise self._corrupt(f"linked entry: its group is cut at offset {at}", offset, digest)
            h = _parse_entry_header(buf, i)
            if type(h) is str:
                raise self._corrupt(f"linked entry: group entry at offset {at}: {h}", offset, digest)
            codec, n, s, _d, xx = h
            total += n
            if n >= LINK_MAX_CHUNK or total > _MAX_GROUP_PLAINTEXT:
                raise self._corrupt(f"linked entry: group entry at offset {at} is too large for a group", offset,
                                    digest)
            stored = mv[i + ENTRY_HEADER_SIZE:i + ENTRY_HEADER_SIZE + s]
            if len(stored) != s or pos + i + ENTRY_HEADER_SIZE + s > offset:
                raise self._corrupt(f"linked entry: group entry at offset {at} overlaps it", offset, digest)
            if _xxh3(stored) != xx:
                raise self._corrupt(f"linked entry: group entry at offset {at}: stored bytes checksum mismatch",
                                    offset, digest)
            history += self._decode_member(at, head, stored, codec, n, history, offset, digest)
            if len(history) > 2 * _LINK_WINDOW:
                del history[:-_LINK_WINDOW]
            i += ENTRY_HEADER_SIZE + s
        if total + raw > _MAX_GROUP_PLAINTEXT:
            raise self._corrupt("linked entry: its group is too large", offset, digest)
        plain = self._decode_member(offset, head, data, CODEC_LZ4_LINKED, raw, history, offset, digest)
        history += plain
        self._groups.g = (head, offset + ENTRY_HEADER_SIZE + len(data), bytes(history[-_LINK_WINDOW:]), total + raw)
        return plain

    def _decode_member(self, at, head, stored, codec, n, history, offset, digest) -> bytes:
        try:
            if codec == CODEC_LZ4_LINKED:
                if _U32.unpack_from(stored)[0] != at - head or at == head:
                    raise ValueError(f"entry at offset {at} belongs to another group")
                window = history if len(history) <= _LINK_WINDOW and type(history) is bytes else bytes(history[-_LINK_WINDOW:])
                plain = _lz4_decompress(stored[4:], uncompressed_size=n, dict=window)
            else:
                plain = _decode(stored, codec, n)
        except Exception as exc:  # lz4/zstd raise their own error types
            raise self._corrupt(f"cannot decompress linked group entry at offset {at}: {exc}", offset, digest) from None
        if len(plain) != n:
            raise self._corrupt(f"linked group entry at offset {at} decompressed to {len(plain)} bytes, header "
                                f"says {n}", offset, digest)
        return plain

    def iter_entries(self, verify_data: bool = False, problems: Optional[list] = None,
                     end: Optional[int] = None) -> Iterator[PackEntry]:
        """Walk the pack from its first entry, yielding each valid entry in
        offset order.

        An entry is valid when its header checks out and it ends within the
        file (and, with ``verify_data``, its stored bytes match their xxh3).
        At an invalid header (bad magic or checksum, impossible fields, or
        length past end of file) the walk searches forward for the next valid
        entry and resumes there; a damaged region with no valid entry after
        it is a torn tail. Each fault is appended to ``problems`` (a list of
        :class:`PackProblem`) when given. The end of the last yielded entry is
        the last good end offset. ``end`` limits the walk (default: file size).
        Memory: one entry at a time.
        """
        fd = self._fd
        size = self.size() if end is None else end
        pos = PACK_HEADER_SIZE
        pid = self.pack_id
        while pos < size:
            digest_hex = None
            if size - pos < ENTRY_HEADER_SIZE:
                bad = "truncated entry header"
            else:
                h = _parse_entry_header(_pread_exact(fd, ENTRY_HEADER_SIZE, pos))
                if type(h) is str:
                    bad = h
                else:
                    codec, raw, stored, digest, xx = h
                    nxt = pos + ENTRY_HEADER_SIZE + stored
                    if nxt > size:
                        bad = "entry extends past end of pack"
                        digest_hex = digest.hex()
                    else:
                        if verify_data and _xxh3(_pread_exact(fd, stored, pos + ENTRY_HEADER_SIZE)) != xx:
                            if problems is not None:
                                problems.append(PackProblem(pid, pos, digest.hex(), "stored bytes checksum mismatch"))
                        else:
                            yield PackEntry(pos, digest, codec, raw, stored, xx)
                        pos = nxt
                        continue
            resume = self._resync(pos + 1, size, verify_data)
            if problems is not None:
                stop = size if resume is None else resume
                tail = " up to end of pack (torn tail)" if resume is None else ""
                problems.append(PackProblem(pid, pos, digest_hex, f"{bad}; {stop - pos} bytes unreadable{tail}"))
            if resume is None:
                return
            pos = resume

    def _resync(self, start, size, verify_data, window=1 << 20):
        """Offset of the first valid entry at or after ``start``, or None."""
        fd = self._fd
        pos = start
        last = size - ENTRY_HEADER_SIZE
        while pos <= last:
            buf = _pread_exact(fd, min(window + ENTRY_HEADER_SIZE - 1, size - pos), pos)
            limit = min(window, len(buf) - ENTRY_HEADER_SIZE + 1)
            i = buf.find(ENTRY_MAGIC, 0, limit + len(ENTRY_MAGIC) - 1)
            while 0 <= i < limit:
                h = _parse_entry_header(buf, i)
                if type(h) is not str:
                    stored, xx = h[2], h[4]
                    at = pos + i
                    if at + ENTRY_HEADER_SIZE + stored <= size and (
                            not verify_data
                            or _xxh3(_pread_exact(fd, stored, at + ENTRY_HEADER_SIZE)) == xx):
                        return at
                i = buf.find(ENTRY_MAGIC, i + 1, limit + len(ENTRY_MAGIC) - 1)
            pos += window
        return None


# --------------------------------------------------------------------------
# Index


class PackIndex:
    """A sealed pack's index file, memory-mapped.

    :meth:`open` is O(1) in the number of entries: it checks the header, the
    trailer checksum, and that file size, entry count and fan-out total agree.
    The checksum over the whole index, record order and fan-out consistency
    are checked by :meth:`verify` (O(n)). A record damaged in a way only
    ``verify`` sees is still caught on read: readers check that the entry
    header holds the looked-up digest and matches the location.
    """

    def __init__(self, path, mm, count, pack_length, pack_id):
        self.path = path
        self.pack_id = pack_id
        self.pack_length = pack_length
        self._mm = mm
        self._count = count

    @classmethod
    def open(cls, path, pack_id: Optional[str] = None) -> "PackIndex":
        """Map and check an index file; raises PackFormatError (malformed,
        wrong version, trailer checksum, or pack id differing from
        ``pack_id`` or from an ``<id>.idx`` file name) or OSError."""
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < _INDEX_MIN_SIZE:
                raise PackFormatError("index file too short", path)
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            magic, version, rec_size = _INDEX_HEADER.unpack_from(mm, 0)
            if magic != INDEX_MAGIC:
                raise PackFormatError("not a pack index (bad magic)", path)
            if version != FORMAT_VERSION:
                raise PackFormatError(f"unsupported index format version {version}", path)
            if rec_size != INDEX_RECORD_SIZE:
                raise PackFormatError(f"unexpected index record size {rec_size}", path)
            t = size - INDEX_TRAILER_SIZE
            count, pack_length, raw_id, _body_sum, tsum = _INDEX_TRAILER.unpack_from(mm, t)
            if tsum != _xxh3(mm[t:t + _TRAILER_CHECKED]):
                raise PackFormatError("index trailer checksum mismatch", path)
            if _INDEX_MIN_SIZE + count * INDEX_RECORD_SIZE != size:
                raise PackFormatError(f"index size {size} does not fit {count} records", path)
            if _U32.unpack_from(mm, _FANOUT_OFFSET + 4 * 255)[0] != count:
                raise PackFormatError("index fan-out total differs from entry count", path)
            ident = raw_id.hex()
            m = _INDEX_NAME.match(os.path.basename(path))
            if (pack_id is not None and ident != pack_id) or (m and m.group(1) != ident):
                raise PackFormatError(f"index belongs to pack {ident}", path)
        except BaseException:
            mm.close()
            raise
        return cls(path, mm, count, pack_length, ident)

    def close(self):
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self._count

    def _location(self, pos):
        _d, offset, stored, raw, codec = _INDEX_RECORD.unpack_from(self._mm, pos)
        return PackLocation(self.pack_id, offset, stored, raw, codec)

    def lookup(self, digest: bytes) -> Optional[PackLocation]:
        """Location of ``digest`` (32 bytes) in the pack, or None.

        Binary search inside the digest's fan-out bucket: O(log n), reading
        only the probed digests from the mapping."""
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        mm = self._mm
        b = digest[0]
        lo = _U32.unpack_from(mm, _FANOUT_OFFSET + 4 * (b - 1))[0] if b else 0
        hi = min(_U32.unpack_from(mm, _FANOUT_OFFSET + 4 * b)[0], self._count)
        digest = bytes(digest)
        while lo < hi:
            mid = (lo + hi) >> 1
            p = _RECORDS_OFFSET + mid * INDEX_RECORD_SIZE
            d = mm[p:p + 32]
            if d < digest:
                lo = mid + 1
            elif d > digest:
                hi = mid
            else:
                return self._location(p)
        return None

    def __contains__(self, digest) -> bool:
        return self.lookup(digest) is not None

    def __iter__(self) -> Iterator[tuple]:
        """``(digest, PackLocation)`` pairs in digest order."""
        mm = self._mm
        pid = self.pack_id
        unpack = _INDEX_RECORD.unpack_from
        for i in range(self._count):
            d, offset, stored, raw, codec = unpack(mm, _RECORDS_OFFSET + i * INDEX_RECORD_SIZE)
            yield d, PackLocation(pid, offset, stored, raw, codec)

    def verify(self):
        """Full check: whole-index checksum, strictly increasing digests,
        fan-out counts, and record fields within ``pack_length``. Raises
        PackFormatError at the first fault."""
        mm = self._mm
        body_end = len(mm) - INDEX_TRAILER_SIZE
        body_sum = _INDEX_TRAILER.unpack_from(mm, body_end)[3]
        with memoryview(mm) as mv:
            if _xxh3(mv[:body_end]) != body_sum:
                raise PackFormatError("index checksum mismatch", self.path)
        counts = [0] * 256
        prev = b""
        for d, loc in self:
            if d <= prev:
                raise PackFormatError("index records not in strictly increasing digest order", self.path)
            prev = d
            counts[d[0]] += 1
            if (loc.codec not in ENTRY_CODEC_NAMES or loc.offset < PACK_HEADER_SIZE
                    or loc.end > self.pack_length or loc.raw_length > MAX_RAW_LENGTH):
                raise PackFormatError(f"impossible index record for digest {d.hex()}", self.path)
        total = 0
        fan = _FANOUT.unpack_from(mm, _FANOUT_OFFSET)
        for i in range(256):
            total += counts[i]
            if fan[i] != total:
                raise PackFormatError(f"index fan-out entry {i} is wrong", self.path)


def _scan_records(reader, problems=None, end=None):
    """Verified entries of a pack as index records (pack order), plus the last good end."""
    recs = []
    good_end = PACK_HEADER_SIZE
    for e in reader.iter_entries(verify_data=True, problems=problems, end=end):
        recs.append(_INDEX_RECORD.pack(e.digest, e.offset, e.stored_length, e.raw_length, e.codec))
        good_end = e.end
    return recs, good_end


def rebuild_index(pack_path) -> str:
    """Recreate ``<id>.idx`` beside ``pack_path`` from the pack alone and
    publish it atomically; returns the index path.

    The index lists, per digest, the first entry whose header and stored-bytes
    checksum are valid; its pack length is the file size (a torn tail is not
    cut here: see :meth:`PackSet.recover`). For a pack sealed by
    :meth:`PackWriter.seal` the result is byte-identical to the sealed index.
    Raises PackLockedError while a live writer holds the pack,
    PackFormatError for an unreadable pack header, OSError.
    """
    pack_path = os.fspath(pack_path)
    fd = os.open(pack_path, os.O_RDONLY | _O_CLOEXEC)
    try:
        if not _try_lock(fd):
            raise PackLockedError(f"pack {pack_path} is held by a live writer")
        reader = PackReader._from_fd(pack_path, fd, owns_fd=False)
        size = reader.size()
        recs, _ = _scan_records(reader, end=size)
        return _write_index_file(os.path.dirname(pack_path) or ".", reader.pack_id,
                                 _index_bytes(reader.pack_id, size, recs))
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Directory of packs


class PackSet:
    """The ``packs/`` directory of a store, as seen by one process.

    Owns at most one active :class:`PackWriter` (created on the first
    :meth:`add`, sealed and replaced once it reaches ``max_pack_size`` bytes or
    ``max_pack_entries`` entries), and a cache of at most ``max_open_readers``
    :class:`PackReader` handles; a handle in use by a read is never closed
    under it. All methods are thread-safe.

    ``codec``: ``"lz4"`` (default), ``"zstd"`` or ``"none"``.
    """

    def __init__(self, directory, codec="lz4", max_pack_size=DEFAULT_MAX_PACK_SIZE,
                 max_pack_entries=DEFAULT_MAX_PACK_ENTRIES, max_open_readers=256,
                 buffer_size=DEFAULT_BUFFER_SIZE):
        self.directory = os.fspath(directory)
        self.codec = CODEC_NAMES[_codec_id(codec)]
        self._cid = _codec_id(codec)
        self.max_pack_size = max_pack_size
        self.max_pack_entries = max_pack_entries
        self.max_open_readers = max(1, max_open_readers)
        self.buffer_size = buffer_size
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.Lock()
        self._writer: Optional[PackWriter] = None
        self._readers: "OrderedDict[str, PackReader]" = OrderedDict()
        self._pins: dict = {}
        self._retired: set = set()
        self._closed = False

    # -- listing

    def packs(self) -> list:
        """:class:`PackInfo` of every ``<id>.pack`` file, sorted by id."""
        out = []
        d = self.directory
        names = set(os.listdir(d))
        for name in sorted(names):
            m = _PACK_NAME.match(name)
            if not m:
                continue
            pid = m.group(1)
            path = os.path.join(d, name)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            out.append(PackInfo(pid, path, size, pid + ".idx" in names))
        return out

    def pack_path(self, pack_id: str) -> str:
        return os.path.join(self.directory, _check_pack_id(pack_id) + ".pack")

    def index_path(self, pack_id: str) -> str:
        return os.path.join(self.directory, _check_pack_id(pack_id) + ".idx")

    def open_index(self, pack_id: str) -> PackIndex:
        """Open ``<pack_id>.idx`` (caller closes it); raises PackFormatError,
        FileNotFoundError for an unsealed pack."""
        return PackIndex.open(self.index_path(pack_id), pack_id)

    # -- writing

    @property
    def active_pack_id(self) -> Optional[str]:
        w = self._writer
        return w.pack_id if w is not None else None

    def add(self, digest: bytes, data, compress: bool = True) -> PackLocation:
        """Append a chunk to the active pack (see :meth:`PackWriter.add`).
        ``compress=False`` stores it raw without trying the codec (for data
        known to be compressed already).

        Compression runs outside the set's lock. When the active pack
        reaches the rotation threshold it is sealed (so its entries are
        durable) and the next add starts a new pack."""
        data = _as_bytes_like(data)
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        n = len(data)
        if n > MAX_RAW_LENGTH:
            raise ValueError(f"chunk of {n} bytes exceeds the {MAX_RAW_LENGTH}-byte maximum")
        cid, stored = _encode(data, self._cid if compress else CODEC_NONE)
        digest = bytes(digest)
        with self._lock:
            if self._closed:
                raise ValueError("pack set is closed")
            w = self._writer
            if w is None or w.closed:
                w = self._writer = PackWriter.create(self.directory, self._cid, self.buffer_size)
            loc = w._append(digest, n, cid, stored)
            if w.size >= self.max_pack_size or w.entry_count >= self.max_pack_entries:
                self._writer = None
                w.seal()
            return loc

    def read_run(self, locations, expected_digests, verify_sha256: bool = False) -> List[bytes]:
        """Plaintexts of contiguous entries of one pack, read with one
        ``pread`` (see :meth:`PackReader.read_run`)."""
        self._write_out_up_to(locations[-1])
        with self.reader(locations[-1].pack_id) as r:
            return r.read_run(locations, expected_digests, verify_sha256)

    def add_many(self, items, compress: bool = True) -> List[PackLocation]:
        """Append chunks ``items`` = ``[(digest, data)]`` one after the other
        to the active pack; returns their locations in order. With an lz4
        pack set, small consecutive chunks are compressed in groups (see
        :func:`_encode_run`), so they shrink more than one by one; each
        still has its own entry. Compression runs outside the set's lock;
        the entries are appended under it, contiguously."""
        items = list(items)
        for digest, _data in items:
            if len(digest) != 32:
                raise ValueError("digest must be 32 bytes")
        encoded = _encode_run(items, self._cid if compress else CODEC_NONE)
        with self._lock:
            if self._closed:
                raise ValueError("pack set is closed")
            w = self._writer
            if w is None or w.closed:
                w = self._writer = PackWriter.create(self.directory, self._cid, self.buffer_size)
            if (w.size + ENTRY_HEADER_SIZE * len(encoded) + sum([len(e[3]) for e in encoded]) < self.max_pack_size
                    and w.entry_count + len(encoded) < self.max_pack_entries):
                return w._append_many(encoded)  # no rotation within them
            locs = []
            for k, (d, n, c, s, _joins) in enumerate(encoded):
                w = self._writer
                if w is None or w.closed:
                    w = self._writer = PackWriter.create(self.directory, self._cid, self.buffer_size)
                locs.append(w._append(d, n, c, s))
                # a full pack is sealed between groups, never inside one
                next_joins = k + 1 < len(encoded) and encoded[k + 1][4]
                if not next_joins and (w.size >= self.max_pack_size or w.entry_count >= self.max_pack_entries):
                    self._writer = None
                    w.seal()
            return locs

    def flush(self, sync: bool = True) -> Optional[int]:
        """Flush the active pack; with ``sync``, every location returned by
        :meth:`add` before this call is durable when it returns (those in
        sealed packs already are). Returns the active pack's durable length,
        or None without an active pack."""
        with self._lock:
            w = self._writer
            if w is None or w.closed:
                return None
            return w.flush(sync)

    def rotate(self) -> Optional[str]:
        """Seal the active pack now (if it holds entries); returns its id."""
        with self._lock:
            return self._retire_writer()

    def _retire_writer(self):
        w, self._writer = self._writer, None
        if w is None or w.closed:
            return None
        if w.entry_count == 0:
            w.abort(delete=True)
            return None
        w.seal()
        return w.pack_id

    # -- reading

    def _pin(self, pack_id) -> PackReader:
        with self._lock:
            if self._closed:
                raise ValueError("pack set is closed")
            r = self._readers.get(pack_id)
            if r is None:
                r = PackReader.open(self.pack_path(pack_id))
                self._readers[pack_id] = r
                self._pins[r] = 0
                while len(self._readers) > self.max_open_readers:
                    _pid, old = self._readers.popitem(last=False)
                    if self._pins[old]:
                        self._retired.add(old)
                    else:
                        del self._pins[old]
                        old.close()
            else:
                self._readers.move_to_end(pack_id)
            self._pins[r] += 1
            return r

    def _unpin(self, r):
        with self._lock:
            if r not in self._pins:
                return
            self._pins[r] -= 1
            if not self._pins[r] and r in self._retired:
                self._retired.discard(r)
                del self._pins[r]
                r.close()

    @contextmanager
    def reader(self, pack_id: str):
        """Context manager giving the cached :class:`PackReader` of a pack; the
        handle stays open until the block exits. Raises FileNotFoundError,
        PackFormatError."""
        r = self._pin(pack_id)
        try:
            yield r
        finally:
            self._unpin(r)

    def read(self, location: PackLocation, expected_digest: Optional[bytes] = None,
             verify_sha256: bool = False) -> bytes:
        """Plaintext at ``location`` (see :meth:`PackReader.read`). Entries
        still in this process's write buffer are written out first."""
        self._write_out_up_to(location)
        with self.reader(location.pack_id) as r:
            return r.read(location, expected_digest, verify_sha256)

    def _write_out_up_to(self, location: PackLocation):
        """Hand this process's buffered entries to the OS if ``location``
        lies among them, so that a reader of the file sees it."""
        w = self._writer
        if w is not None and w.pack_id == location.pack_id and location.end > w.written_length():
            self.flush(sync=False)

    # -- maintenance

    def _live(self, path) -> bool:
        """True when a writer holds the pack's lock (probe, not kept)."""
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            return not _try_lock(fd, exclusive=False)
        finally:
            os.close(fd)

    def _index_valid(self, pack_id) -> bool:
        try:
            PackIndex.open(self.index_path(pack_id), pack_id).close()
            return True
        except (OSError, PackFormatError):
            return False

    def recover(self, protect=None) -> list:
        """Seal the packs of dead writers; returns a list of :class:`RecoveryAction`.

        ``protect(pack_id) -> int``, when given, says how many leading bytes
        of a pack are referenced (durable, recorded in a catalog): a pack
        whose damage lies inside them is reported ``"damaged"`` and left
        untouched instead of being cut.

        For each pack without a valid index (skipping this set's active pack):
        take its exclusive lock without waiting (a held lock means a live
        writer: reported as ``"in-use"`` and left untouched), walk it checking
        every header and stored-bytes checksum, truncate a torn tail (bytes
        after the last valid entry that hold no valid entry), fsync, and write
        its index. A damaged region followed by valid entries is kept (no data
        after it is cut). A pack with no valid entry is deleted; so are
        temporary files of dead writers.
        """
        actions = []
        active = self.active_pack_id
        d = self.directory
        names = os.listdir(d)
        for name in sorted(names):
            m = _TMP_PACK_NAME.match(name)
            if m:
                act = self._remove_stale_tmp(os.path.join(d, name), m.group(1))
                if act:
                    actions.append(act)
            m = _TMP_INDEX_NAME.match(name) or _INDEX_NAME.match(name)
            if m and not os.path.exists(os.path.join(d, m.group(1) + ".pack")):
                # a temporary index of a dead writer, or the index of a pack
                # whose deletion stopped between its two unlinks
                try:
                    os.unlink(os.path.join(d, name))
                    actions.append(RecoveryAction(m.group(1), "removed", 0, 0, 0, "index without pack file"))
                except FileNotFoundError:
                    pass
        for info in self.packs():
            if info.pack_id == active:
                continue
            if info.sealed and self._index_valid(info.pack_id):
                continue
            act = self._recover_pack(info.pack_id, protect)
            if act is not None:
                actions.append(act)
        return actions

    def _remove_stale_tmp(self, path, pack_id):
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if not _try_lock(fd) or not _same_file(fd, path):
                return None
            size = os.fstat(fd).st_size
            os.unlink(path)
            return RecoveryAction(pack_id, "removed", size, 0, 0, "temporary file of a dead writer")
        finally:
            os.close(fd)

    def _recover_pack(self, pack_id, protect=None):
        path = self.pack_path(pack_id)
        try:
            fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if not _try_lock(fd):
                return RecoveryAction(pack_id, "in-use", size, size, 0, "held by a live writer")
            if not _same_file(fd, path):
                return None
            had_index = os.path.exists(self.index_path(pack_id))
            if had_index and self._index_valid(pack_id):
                return None  # sealed meanwhile by another process
            try:
                reader = PackReader._from_fd(path, fd, owns_fd=False)
            except PackFormatError as exc:
                return RecoveryAction(pack_id, "damaged", size, size, 0, str(exc))
            problems = []
            recs, good_end = _scan_records(reader, problems, end=size)
            detail = "; ".join(f"@{p.offset}: {p.what}" for p in problems)
            keep = protect(pack_id) if protect is not None else 0
            if good_end < keep:
                # Damage inside what the catalog says is durable: cutting it
                # would destroy referenced chunks. Leave the file as it is
                # for verify/repair to deal with.
                return RecoveryAction(pack_id, "damaged", size, size, len(recs),
                                      f"damaged before offset {keep}, which the catalog references; " + detail)
            if not recs:
                os.unlink(path)
                for suffix in (".idx", ".idx.tmp"):
                    try:
                        os.unlink(os.path.join(self.directory, pack_id + suffix))
                    except FileNotFoundError:
                        pass
                _fsync_dir(self.directory)
                return RecoveryAction(pack_id, "removed", size, 0, 0, detail or "no entries")
            action = "reindexed" if had_index else "sealed"
            if good_end < size:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
                action = "truncated"
            _write_index_file(self.directory, pack_id, _index_bytes(pack_id, good_end, recs))
            return RecoveryAction(pack_id, action, size, good_end, len(recs), detail)
        finally:
            os.close(fd)

    def verify(self) -> list:
        """Re-read every entry of every pack (header, xxh3, decompression,
        SHA-256) and check every index against its pack. Returns all
        :class:`PackProblem` found (empty when everything checks out).

        Packs held by a live writer are checked up to their current length,
        and their growing tail is not reported. An unsealed pack without a
        live writer is reported (``recover`` seals it).
        """
        problems = []
        # An index without its pack is what a deletion interrupted between
        # its two unlinks leaves (.pack first): nothing is lost, recover()
        # removes it.
        for info in self.packs():
            problems.extend(self._verify_pack(info))
        return problems

    def _verify_pack(self, info):
        pid = info.pack_id
        out = []
        live = info.pack_id == self.active_pack_id or self._live(info.path)
        try:
            reader = PackReader.open(info.path)
        except (OSError, PackFormatError) as exc:
            return [PackProblem(pid, 0, None, f"cannot open pack: {exc}")]
        with reader:
            size = reader.size()
            scan_problems = []
            found = {}
            good_end = PACK_HEADER_SIZE
            for e in reader.iter_entries(verify_data=False, problems=scan_problems, end=size):
                good_end = e.end
                try:
                    reader.read(e.offset, verify_sha256=True)
                except CorruptBlobError as exc:
                    out.append(PackProblem(pid, e.offset, e.digest.hex(), exc.reason))
                    continue
                found.setdefault(e.digest, e)
            for p in scan_problems:
                if live and p.offset >= good_end:
                    continue
                out.append(p)
            if not info.sealed:
                if not live:
                    out.append(PackProblem(pid, None, None, "unsealed pack without a live writer (recover seals it)"))
                return sorted(out, key=lambda p: (p.offset is not None, p.offset or 0))
            try:
                index = PackIndex.open(self.index_path(pid), pid)
            except (OSError, PackFormatError) as exc:
                out.append(PackProblem(pid, None, None, f"index unreadable: {exc}"))
                return out
            with index:
                try:
                    index.verify()
                except PackFormatError as exc:
                    out.append(PackProblem(pid, None, None, f"index invalid: {exc.reason}"))
                if index.pack_length != size:
                    out.append(PackProblem(pid, None, None,
                                           f"index covers {index.pack_length} bytes, pack has {size}"))
                seen = set()
                for d, loc in index:
                    seen.add(d)
                    e = found.get(d)
                    if e is None or (e.offset, e.stored_length, e.raw_length, e.codec) != loc[1:]:
                        out.append(PackProblem(pid, loc.offset, d.hex(), "index record does not match a valid entry"))
                for d, e in found.items():
                    if d not in seen:
                        out.append(PackProblem(pid, e.offset, d.hex(), "entry missing from index"))
        return sorted(out, key=lambda p: (p.offset is not None, p.offset or 0))

    # -- lifetime

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self):
        """Seal the active pack (or delete it if empty) and close all readers."""
        with self._lock:
            if self._closed:
                return
            try:
                self._retire_writer()
            finally:
                self._closed = True
                # a reader still in use (a read on another thread) closes
                # when that read unpins it
                for r in list(self._readers.values()) + list(self._retired):
                    if self._pins.get(r):
                        self._retired.add(r)
                    else:
                        self._pins.pop(r, None)
                        r.close()
                self._readers.clear()
                self._retired = {r for r in self._retired if self._pins.get(r)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
