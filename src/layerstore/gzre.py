"""Exact reconstruction of gzip blobs from their plaintext (C core in
``csrc/gzre.c``; design and coded form in ``docs/format.md``,
"Reconstruction data for gzip blobs").

:class:`GzipAnalyzer` inflates a gzip stream (RFC 1952 members holding
RFC 1951 deflate data) and writes, beside the plaintext, the reconstruction
data: what the plaintext does not determine about the compressed bytes.
:func:`rebuild` turns plaintext plus reconstruction data back into the
original bytes. Both stream in bounded memory (a few MiB per object) and
release the GIL inside every C call.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from ._native import ffi, lib
from .errors import CompressedLayerError, CorruptBlobError

__all__ = ["GzipAnalyzer", "GzipRebuilder", "rebuild", "FORMAT_VERSION"]

FORMAT_VERSION = lib.LS_GZRE_VERSION
_PIECE = 1 << 20


class GzipAnalyzer:
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
        self._a = ffi.gc(lib.ls_gzan_new(), lib.ls_gzan_free)
        if self._a == ffi.NULL:
            raise MemoryError("gzip analyzer")
        self._side = side
        self._pp = ffi.new("const uint8_t **")
        self.done = False

    def _drain(self, out) -> int:
        a, pp = self._a, self._pp
        st = lib.ls_gzan_run(a)
        n = lib.ls_gzan_plain(a, pp)
        if n:
            out.append(bytes(ffi.buffer(pp[0], n)))
            lib.ls_gzan_plain_taken(a, n)
        n = lib.ls_gzan_side(a, pp)
        if n:
            self._side(bytes(ffi.buffer(pp[0], n)))
            lib.ls_gzan_side_taken(a, n)
        if st < 0:
            msg = ffi.string(lib.ls_gzan_message(a)).decode("utf-8", "replace")
            if st == lib.LS_GZ_ERR_NOMEM:
                raise MemoryError(f"gzip analyzer: {msg or 'out of memory'}")
            raise CompressedLayerError(f"gzip stream invalid at compressed offset {lib.ls_gzan_offset(a)}: {msg}")
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
        self.done = True
        return out

    @property
    def exact(self) -> bool:
        return bool(lib.ls_gzan_exact(self._a))

    @property
    def reason(self) -> str:
        return "" if self.exact else ffi.string(lib.ls_gzan_message(self._a)).decode("utf-8", "replace")

    @property
    def members(self) -> int:
        return int(lib.ls_gzan_members(self._a))


class GzipRebuilder:
    """Push form of :func:`rebuild`: hand it reconstruction data with
    :meth:`side` and plaintext with :meth:`plain` (then :meth:`plain_end`)
    in any split, and call :meth:`run` after each; it returns the rebuilt
    bytes that became available and sets :attr:`wants` to ``"side"``,
    ``"plain"`` or ``None`` (done). Raises CorruptBlobError when the two
    do not fit together."""

    def __init__(self):
        self._r = ffi.gc(lib.ls_gzre_new(), lib.ls_gzre_free)
        if self._r == ffi.NULL:
            raise MemoryError("gzip rebuilder")
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
        r, pp, out = self._r, self._pp, []
        while True:
            st = lib.ls_gzre_run(r)
            n = lib.ls_gzre_output(r, pp)
            if n:
                out.append(bytes(ffi.buffer(pp[0], n)))
                lib.ls_gzre_output_taken(r, n)
            if st == lib.LS_GZ_DONE:
                self.wants = None
                return out
            if st == lib.LS_GZ_OUTPUT:
                continue
            if st == lib.LS_GZ_NEED_SIDE:
                if not self._side:
                    self.wants = "side"
                    return out
                took = lib.ls_gzre_side(r, ffi.from_buffer(self._side), min(len(self._side), _PIECE))
                del self._side[:took]
                if not took:
                    raise CorruptBlobError("gzip reconstruction data: frame too long")
            elif st == lib.LS_GZ_NEED_PLAIN:
                if not self._plain:
                    if not self._plain_ended:
                        self.wants = "plain"
                        return out
                    lib.ls_gzre_plain_end(r)
                    continue
                took = lib.ls_gzre_plain(r, ffi.from_buffer(self._plain), min(len(self._plain), _PIECE))
                del self._plain[:took]
            else:
                msg = ffi.string(lib.ls_gzre_message(r)).decode("utf-8", "replace")
                if st == lib.LS_GZ_ERR_NOMEM:
                    raise MemoryError("gzip rebuilder")
                raise CorruptBlobError(f"gzip rebuild failed: {msg}")


def rebuild(side: Iterable[bytes], plain: Iterable[bytes]) -> Iterator[bytes]:
    """The original gzip bytes, in pieces, from the reconstruction data
    (``side``, the bytes :class:`GzipAnalyzer` produced, in any split) and
    the plaintext (``plain``, in any split). Raises CorruptBlobError when
    the two do not fit together (the caller still verifies the digest)."""
    rb = GzipRebuilder()
    side_it, plain_it = iter(side), iter(plain)
    while True:
        yield from rb.run()
        if rb.wants is None:
            return
        if rb.wants == "side":
            nxt = next(side_it, None)
            if nxt is None:
                raise CorruptBlobError("gzip reconstruction data ends early")
            rb.side(nxt)
        else:
            nxt = next(plain_it, None)
            if nxt is None:
                rb.plain_end()
            else:
                rb.plain(nxt)
