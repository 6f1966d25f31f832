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

__all__ = ["GzipAnalyzer", "rebuild", "FORMAT_VERSION"]

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


def rebuild(side: Iterable[bytes], plain: Iterable[bytes]) -> Iterator[bytes]:
    """The original gzip bytes, in pieces, from the reconstruction data
    (``side``, the bytes :class:`GzipAnalyzer` produced, in any split) and
    the plaintext (``plain``, in any split). Raises CorruptBlobError when
    the two do not fit together (the caller still verifies the digest)."""
    r = ffi.gc(lib.ls_gzre_new(), lib.ls_gzre_free)
    if r == ffi.NULL:
        raise MemoryError("gzip rebuilder")
    pp = ffi.new("const uint8_t **")
    side_it, plain_it = iter(side), iter(plain)
    side_buf = memoryview(b"")
    plain_buf = memoryview(b"")
    while True:
        st = lib.ls_gzre_run(r)
        n = lib.ls_gzre_output(r, pp)
        if n:
            yield bytes(ffi.buffer(pp[0], n))
            lib.ls_gzre_output_taken(r, n)
        if st == lib.LS_GZ_DONE:
            return
        if st == lib.LS_GZ_NEED_SIDE:
            if not side_buf:
                nxt = next(side_it, None)
                if nxt is None:
                    raise CorruptBlobError("gzip reconstruction data ends early")
                side_buf = memoryview(nxt).cast("B")
            with ffi.from_buffer(side_buf) as buf:
                took = lib.ls_gzre_side(r, buf, len(side_buf))
            side_buf = side_buf[took:]
        elif st == lib.LS_GZ_NEED_PLAIN:
            if not plain_buf:
                nxt = next(plain_it, None)
                if nxt is None:
                    lib.ls_gzre_plain_end(r)
                    continue
                plain_buf = memoryview(nxt).cast("B")
            with ffi.from_buffer(plain_buf) as buf:
                took = lib.ls_gzre_plain(r, buf, len(plain_buf))
            plain_buf = plain_buf[took:]
        elif st < 0:
            msg = ffi.string(lib.ls_gzre_message(r)).decode("utf-8", "replace")
            raise CorruptBlobError(f"gzip rebuild failed: {msg}")
