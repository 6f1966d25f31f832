"""Content-defined chunking (FastCDC) of layer file contents.

The cut points come from the C implementation in ``csrc/fastcdc.c``: a gear
rolling hash with cut-point skipping and normalized chunking, after
W. Xia et al., "FastCDC: a Fast and Efficient Content-Defined Chunking
Approach for Data Deduplication", USENIX ATC 2016 (section 3.2 gear hash,
3.4 cut-point skipping, 3.5 normalized chunking, level 2), with the
multi-byte rolling of the 2020 journal version (IEEE TPDS 32(9)). The exact
definition of a cut point is in ``csrc/fastcdc.h``; in short, a chunk of
length L ends where the gear hash of its last 64 bytes has zero bits under a
mask of ``round(log2(avg_size)) + 2`` bits while ``L <= avg_size`` and of
``round(log2(avg_size)) - 2`` bits after that, with ``min_size <= L <=
max_size`` (the last chunk of the input may be shorter).

Cut points are part of the store's deduplication behaviour: the same bytes
give the same cuts on every machine and however the input is split into
reads, and :data:`ALGORITHM_VERSION` changes whenever that definition does.

All sizes and offsets are in bytes. Offsets returned are *end* offsets of
chunks: for input of length n the chunks are ``data[0:c0]``,
``data[c0:c1]``, ... and the last offset is n.
"""
from __future__ import annotations

import operator

from ._native import ffi, lib
from .errors import ChunkingError

__all__ = [
    "ALGORITHM_VERSION",
    "check_parameters",
    "DEFAULT_AVG_SIZE",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MIN_SIZE",
    "MAX_SIZE_LIMIT",
    "MIN_SIZE_LIMIT",
    "Chunker",
    "chunk_boundaries",
]

#: Default minimum chunk size: 16 KiB.
DEFAULT_MIN_SIZE = int(lib.LS_CDC_DEFAULT_MIN_SIZE)
#: Default normal ("average") chunk size: 64 KiB. The mean chunk size on
#: incompressible data is about 1.14 times this (74.8 KiB), because of
#: cut-point skipping below ``min_size``.
DEFAULT_AVG_SIZE = int(lib.LS_CDC_DEFAULT_AVG_SIZE)
#: Default maximum chunk size: 256 KiB.
DEFAULT_MAX_SIZE = int(lib.LS_CDC_DEFAULT_MAX_SIZE)
#: Smallest allowed ``min_size``: the 64-byte hash window.
MIN_SIZE_LIMIT = int(lib.LS_CDC_MIN_SIZE_LOWER)
#: Largest allowed ``max_size``: 64 MiB.
MAX_SIZE_LIMIT = int(lib.LS_CDC_MAX_SIZE_UPPER)
#: Version of the cut-point definition (csrc/fastcdc.h).
ALGORITHM_VERSION = int(lib.LS_CDC_ALGORITHM_VERSION)

# Cut offsets collected per C call; bounds the scratch array to 64 KiB.
_CUTS_PER_CALL = 8192


def check_parameters(min_size, avg_size, max_size):
    """Validate chunk-size parameters; return them as plain ints (any
    integer-like value accepted by ``operator.index`` works, bool does not).

    Raises:
        ChunkingError: a parameter is not an integer, ``min_size < 64``,
            ``avg_size <= min_size``, ``max_size <= avg_size`` or
            ``max_size > 64 MiB``. The message names the offending value.
    """
    checked = []
    for name, value in (("min_size", min_size), ("avg_size", avg_size), ("max_size", max_size)):
        try:
            if isinstance(value, bool):
                raise TypeError
            checked.append(operator.index(value))
        except TypeError:
            raise ChunkingError(f"{name} must be an integer number of bytes, got {value!r}") from None
    min_size, avg_size, max_size = checked
    if min_size < MIN_SIZE_LIMIT:
        raise ChunkingError(
            f"min_size={min_size} is below the minimum of {MIN_SIZE_LIMIT} bytes (the hash window)"
        )
    if avg_size <= min_size:
        raise ChunkingError(f"avg_size={avg_size} must be greater than min_size={min_size}")
    if max_size <= avg_size:
        raise ChunkingError(f"max_size={max_size} must be greater than avg_size={avg_size}")
    if max_size > MAX_SIZE_LIMIT:
        raise ChunkingError(f"max_size={max_size} exceeds the limit of {MAX_SIZE_LIMIT} bytes (64 MiB)")
    return min_size, avg_size, max_size


def _new_state(min_size, avg_size, max_size):
    state = ffi.new("ls_cdc *")
    if lib.ls_cdc_init(state, min_size, avg_size, max_size) != 0:  # pragma: no cover - mirrors check_parameters
        raise ChunkingError(
            f"invalid chunk sizes min_size={min_size}, avg_size={avg_size}, max_size={max_size}"
        )
    return state


def _scan(state, buf, length, base, cuts, consumed, out):
    """Run ``ls_cdc_scan`` over ``buf[0:length]`` until all of it is consumed,
    appending the absolute cut offsets (``base`` + offset in buf) to ``out``."""
    cap = len(cuts)
    off = 0
    while off < length:
        n = lib.ls_cdc_scan(state, buf + off, length - off, base + off, cuts, cap, consumed)
        if n:
            out.extend(ffi.unpack(cuts, n))
        off += consumed[0]


def chunk_boundaries(data, min_size=DEFAULT_MIN_SIZE, avg_size=DEFAULT_AVG_SIZE, max_size=DEFAULT_MAX_SIZE):
    """Return the content-defined chunk boundaries of ``data``.

    Args:
        data: any contiguous bytes-like object (bytes, bytearray, memoryview,
            mmap, array...); it is read in place, without copying. Its length
            is its size in bytes.
        min_size, avg_size, max_size: chunk-size parameters in bytes, with
            ``64 <= min_size < avg_size < max_size <= 64 MiB``.

    Returns:
        list[int]: strictly increasing end offsets of the chunks; the last one
        is ``len(data)`` in bytes, and ``[]`` for empty input. Every chunk
        except the last is ``min_size`` to ``max_size`` bytes long; the last
        is 1 to ``max_size`` bytes.

    Raises:
        ChunkingError: invalid parameters (the message names the value).
        TypeError / ValueError / BufferError: ``data`` does not expose a
            contiguous buffer (e.g. ``str`` or a non-contiguous memoryview).

    The C scan runs without the GIL.
    """
    min_size, avg_size, max_size = check_parameters(min_size, avg_size, max_size)
    out = []
    with ffi.from_buffer("uint8_t[]", data) as buf:
        length = len(buf)
        if length == 0:
            return out
        state = _new_state(min_size, avg_size, max_size)
        cuts = ffi.new("uint64_t[]", min(_CUTS_PER_CALL, length // min_size + 1))
        consumed = ffi.new("size_t *")
        _scan(state, buf, length, 0, cuts, consumed, out)
        if state.pos:
            out.append(length)
    return out


class Chunker:
    """Streaming content-defined chunker.

    Feed the input in pieces of any size; the cuts are the same as
    :func:`chunk_boundaries` on the concatenation of all pieces, whatever the
    split. Offsets are absolute byte offsets from the start of the stream.

    Args:
        min_size, avg_size, max_size: chunk-size parameters in bytes, with
            ``64 <= min_size < avg_size < max_size <= 64 MiB``.

    Raises:
        ChunkingError: invalid parameters (the message names the value).

    Example::

        c = Chunker()
        cuts = []
        for piece in pieces:
            cuts += c.feed(piece)
        cuts += c.finish()          # == chunk_boundaries(b"".join(pieces))

    A Chunker keeps mutable state: do not share one between threads without
    a lock (``feed`` runs its C scan without the GIL).
    """

    __slots__ = ("min_size", "avg_size", "max_size", "_state", "_offset", "_cuts", "_consumed")

    def __init__(self, min_size=DEFAULT_MIN_SIZE, avg_size=DEFAULT_AVG_SIZE, max_size=DEFAULT_MAX_SIZE):
        self.min_size, self.avg_size, self.max_size = check_parameters(min_size, avg_size, max_size)
        self._state = _new_state(self.min_size, self.avg_size, self.max_size)
        self._offset = 0
        self._cuts = None
        self._consumed = ffi.new("size_t *")

    @property
    def offset(self):
        """Total bytes fed since construction or the last reset/finish."""
        return self._offset

    @property
    def pending(self):
        """Bytes fed that belong to the current, not yet cut, chunk."""
        return int(self._state.pos)

    def feed(self, data):
        """Consume the next piece of the stream.

        Args:
            data: any contiguous bytes-like object, read in place; may be empty.

        Returns:
            list[int]: absolute end offsets (bytes from the start of the
            stream) of the chunks that end inside this piece, in increasing
            order; ``[]`` if none does.
        """
        out = []
        with ffi.from_buffer("uint8_t[]", data) as buf:
            length = len(buf)
            if length:
                if self._cuts is None:
                    self._cuts = ffi.new("uint64_t[]", _CUTS_PER_CALL)
                _scan(self._state, buf, length, self._offset, self._cuts, self._consumed, out)
                self._offset += length
        return out

    def finish(self):
        """End the stream.

        Returns:
            list[int]: ``[offset]`` (the end of the stream) when bytes are
            pending in an unfinished chunk, else ``[]``.

        The chunker is then reset, ready for a new stream starting at offset 0.
        """
        out = [self._offset] if self._state.pos else []
        self.reset()
        return out

    def reset(self):
        """Drop any pending chunk and start a new stream at offset 0,
        keeping the parameters."""
        lib.ls_cdc_reset(self._state)
        self._offset = 0

    def __repr__(self):
        return (
            f"Chunker(min_size={self.min_size}, avg_size={self.avg_size}, "
            f"max_size={self.max_size}, offset={self._offset})"
        )
