"""Exact reconstruction of compressed layer blobs from their plaintext (C
cores ``csrc/gzre.c`` and ``csrc/zstre.c``; coded forms in
``docs/format.md``, "Reconstruction data for gzip blobs" and "... for zstd
blobs").

:class:`GzipAnalyzer` inflates a gzip stream (RFC 1952 members holding
RFC 1951 deflate data) and writes, beside the plaintext, the reconstruction
data: what the plaintext does not determine about the compressed bytes.
:class:`ZstdAnalyzer` parses a zstd stream (RFC 8878) and writes its
reconstruction data (it does not decompress: the plaintext comes from the
stored layer). :func:`rebuild` turns plaintext plus reconstruction data back
into the original bytes. All stream in bounded memory (a few MiB per object)
and release the GIL inside every C call.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from ._native import ffi, lib
from .errors import CompressedLayerError, CorruptBlobError

__all__ = ["GzipAnalyzer", "ZstdAnalyzer", "Rebuilder", "rebuild", "GZIP_VERSION", "ZSTD_VERSION"]

GZIP_VERSION = lib.LS_GZRE_VERSION
ZSTD_VERSION = lib.LS_ZSTRE_VERSION
_PIECE = 1 << 20


def _take(obj, pp, get, taken, sink):
    """Hand the bytes a C object has ready (``get``) to ``sink`` and
    release them (``taken``)."""
    n = get(obj, pp)
    if n:
        sink(bytes(ffi.buffer(pp[0], n)))
        taken(obj, n)


class _Analyzer:
    """What the gzip and zstd analyzers share: their C object (``PREFIX_new``
    and ``PREFIX_free``) and its verdict (``PREFIX_exact`` and
    ``PREFIX_message``), and how it fails (``PREFIX_offset``)."""

    def __init__(self, prefix: str, kind: str):
        self._kind = kind
        self._exact_of = getattr(lib, f"{prefix}_exact")
        self._message_of = getattr(lib, f"{prefix}_message")
        self._offset_of = getattr(lib, f"{prefix}_offset")
        self._a = ffi.gc(getattr(lib, f"{prefix}_new")(), getattr(lib, f"{prefix}_free"))
        if self._a == ffi.NULL:
            raise MemoryError(f"{kind} analyzer")

    @property
    def exact(self) -> bool:
        """True when the reconstruction data rebuilds the stream exactly."""
        return bool(self._exact_of(self._a))

    @property
    def reason(self) -> str:
        """Why the data cannot rebuild the stream ("" when :attr:`exact`)."""
        return "" if self.exact else ffi.string(self._message_of(self._a)).decode("utf-8", "replace")

    def _failed(self, st: int):
        """Raise for the error status ``st`` of a run."""
        msg = ffi.string(self._message_of(self._a)).decode("utf-8", "replace")
        if st == lib.LS_GZ_ERR_NOMEM:
            raise MemoryError(f"{self._kind} analyzer: {msg or 'out of memory'}")
        offset = self._offset_of(self._a)
        raise CompressedLayerError(f"{self._kind} stream invalid at compressed offset {offset}: {msg}")


class GzipAnalyzer(_Analyzer):
    """Inflate a gzip stream and record how to rebuild it.

    ``feed(data)`` returns the plaintext that became available (a list of
    bytes objects); ``finish()`` returns the rest and checks the stream
    ended at a member boundary. ``side`` receives the reconstruction data
    in pieces as it is produced. After :meth:`finish`, :attr:`exact` tells
    whether that data rebuilds the stream (False for streams it cannot
    express, such as zero padding after the last member; then
    :attr:`reason` says why and the data must not be used).

    Raises CompressedLayerError naming the compressed offset when the
    stream is not valid gzip (bad header, invalid deflate data, CRC-32 or
    size mismatch, truncation, bytes after the last member)."""

    def __init__(self, side: Callable[[bytes], None]):
        super().__init__("ls_gzan", "gzip")
        self._side = side
        self._pp = ffi.new("const uint8_t **")

    def _drain(self, out) -> int:
        a, pp = self._a, self._pp
        st = lib.ls_gzan_run(a)
        _take(a, pp, lib.ls_gzan_plain, lib.ls_gzan_plain_taken, out.append)
        _take(a, pp, lib.ls_gzan_side, lib.ls_gzan_side_taken, self._side)
        if st < 0:
            self._failed(st)
        return st

    def feed(self, data) -> list:
        out: list = []
        view = memoryview(data).cast("B")
        a = self._a
        while view:
            with ffi.from_buffer(view) as buf:
                took = lib.ls_gzan_input(a, buf, len(view))
            view = view[took:]
            while True:
                st = self._drain(out)
                if st == lib.LS_GZ_NEED_INPUT or st == lib.LS_GZ_DONE:
                    break
            if st == lib.LS_GZ_DONE and view:
                raise CompressedLayerError("gzip stream: bytes after the last member")
        return out

    def finish(self) -> list:
        out: list = []
        lib.ls_gzan_input_end(self._a)
        while True:
            st = self._drain(out)
            if st == lib.LS_GZ_DONE:
                break
            if st == lib.LS_GZ_NEED_INPUT:
                raise CompressedLayerError("gzip stream: truncated")
        return out

    @property
    def members(self) -> int:
        return int(lib.ls_gzan_members(self._a))


class ZstdAnalyzer(_Analyzer):
    """Parse a zstd stream and record how to rebuild it from its plaintext.

    :meth:`run` pulls the compressed stream and its plaintext (the layer
    the blob decompresses to, which the analyzer needs to model match
    offsets and lengths) from two iterables of bytes, and hands the
    reconstruction data to ``side`` in pieces; ``on_plain`` (optional) sees
    every plaintext piece as it is taken. :attr:`exact` and :attr:`reason`
    as for :class:`GzipAnalyzer` (False for streams that need a dictionary,
    hold skippable frames over 64 KiB, or whose matches contradict the
    plaintext). Entropy-coded literals are not decoded here: a plaintext
    that differs only in literals makes the rebuild's digest check fail.
    Raises CompressedLayerError naming the compressed offset for a
    malformed or truncated stream, or a plaintext of the wrong length."""

    def __init__(self, side: Callable[[bytes], None], on_plain: Optional[Callable[[bytes], None]] = None):
        super().__init__("ls_zsan", "zstd")
        self._side = side
        self._on_plain = on_plain
        self._pp = ffi.new("const uint8_t **")

    def _step(self) -> int:
        a = self._a
        st = lib.ls_zsan_run(a)
        _take(a, self._pp, lib.ls_zsan_side, lib.ls_zsan_side_taken, self._side)
        if st < 0:
            self._failed(st)
        return st

    def run(self, compressed: Iterable[bytes], plain: Iterable[bytes]):
        a = self._a
        feeds = {lib.LS_GZ_NEED_INPUT: (iter(compressed), lib.ls_zsan_input, lib.ls_zsan_input_end, None),
                 lib.LS_GZ_NEED_PLAIN: (iter(plain), lib.ls_zsan_plain, lib.ls_zsan_plain_end, self._on_plain)}
        pending = {k: memoryview(b"") for k in feeds}
        while True:
            st = self._step()
            if st == lib.LS_GZ_DONE:
                return
            if st == lib.LS_GZ_OUTPUT:
                continue
            it, put, end, seen = feeds[st]
            buf = pending[st]
            if not buf:
                nxt = next(it, None)
                if nxt is None:
                    end(a)
                    continue
                if seen is not None:
                    seen(nxt)
                buf = memoryview(nxt).cast("B")
                if not buf:
                    continue
            with ffi.from_buffer(buf) as cbuf:
                took = put(a, cbuf, len(buf))
            if not took:
                raise CompressedLayerError("zstd analyzer: the plaintext is longer than the stream decodes to")
            pending[st] = buf[took:]

    @property
    def plain_size(self) -> int:
        return int(lib.ls_zsan_plain_size(self._a))


class _Api:
    """The C entry points of one rebuilder kind."""

    def __init__(self, prefix: str):
        for name in ("new", "free", "side", "plain", "plain_end", "run", "output", "output_taken", "message"):
            setattr(self, name, getattr(lib, f"{prefix}_{name}"))


_APIS = {"gzip": _Api("ls_gzre"), "zstd": _Api("ls_zsre")}


class Rebuilder:
    """Push form of :func:`rebuild` for ``kind`` "gzip" or "zstd": hand it
    reconstruction data with :meth:`side` and plaintext with :meth:`plain`
    (then :meth:`plain_end`) in any split, and call :meth:`run` after each;
    it returns the rebuilt bytes that became available and sets
    :attr:`wants` to ``"side"``, ``"plain"`` or ``None`` (done). Raises
    CorruptBlobError when the two do not fit together."""

    def __init__(self, kind: str = "gzip"):
        api = self._api = _APIS[kind]
        self._kind = kind
        self._r = ffi.gc(api.new(), api.free)
        if self._r == ffi.NULL:
            raise MemoryError(f"{kind} rebuilder")
        self._pp = ffi.new("const uint8_t **")
        self._side = bytearray()
        self._plain = bytearray()
        self._plain_ended = False
        self.wants: Optional[str] = "side"

    def side(self, data):
        self._side += data

    def plain(self, data):
        self._plain += data

    def plain_end(self):
        self._plain_ended = True

    def run(self) -> list:
        api, r, pp, out = self._api, self._r, self._pp, []
        while True:
            st = api.run(r)
            _take(r, pp, api.output, api.output_taken, out.append)
            if st == lib.LS_GZ_DONE:
                self.wants = None
                return out
            if st == lib.LS_GZ_OUTPUT:
                continue
            if st == lib.LS_GZ_NEED_SIDE:
                if not self._side:
                    self.wants = "side"
                    return out
                took = api.side(r, ffi.from_buffer(self._side), min(len(self._side), _PIECE))
                del self._side[:took]
                if not took:
                    raise CorruptBlobError(f"{self._kind} reconstruction data: frame too long")
            elif st == lib.LS_GZ_NEED_PLAIN:
                if not self._plain:
                    if not self._plain_ended:
                        self.wants = "plain"
                        return out
                    api.plain_end(r)
                    continue
                took = api.plain(r, ffi.from_buffer(self._plain), min(len(self._plain), _PIECE))
                del self._plain[:took]
                if not took:
                    raise CorruptBlobError(f"{self._kind} rebuild: plaintext not taken")
            else:
                msg = ffi.string(api.message(r)).decode("utf-8", "replace")
                if st == lib.LS_GZ_ERR_NOMEM:
                    raise MemoryError(f"{self._kind} rebuilder")
                raise CorruptBlobError(f"{self._kind} rebuild failed: {msg}")


def rebuild(side: Iterable[bytes], plain: Iterable[bytes], kind: str = "gzip") -> Iterator[bytes]:
    """The original gzip or zstd bytes (``kind``), in pieces, from the
    reconstruction data (``side``, the bytes the analyzer produced, in any
    split) and the plaintext (``plain``, in any split). Raises
    CorruptBlobError when the two do not fit together (the caller still
    verifies the digest)."""
    rb = Rebuilder(kind)
    side_it, plain_it = iter(side), iter(plain)
    while True:
        yield from rb.run()
        if rb.wants is None:
            return
        if rb.wants == "side":
            nxt = next(side_it, None)
            if nxt is None:
                raise CorruptBlobError(f"{kind} reconstruction data ends early")
            rb.side(nxt)
        else:
            nxt = next(plain_it, None)
            if nxt is None:
                rb.plain_end()
            else:
                rb.plain(nxt)
