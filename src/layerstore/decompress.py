"""Decompression of gzip (RFC 1952) and zstd (RFC 8878) layer blobs for
ingest: the compressed stream is inflated on a worker thread, in bounded
pieces, while the caller scans the tar; every compressed buffer is also
handed to a sink (the store keeps the compressed bytes too).

gzip uses ISA-L (``isal``), about twice as fast as zlib at inflating;
zstd uses ``zstandard``. Both release the GIL while they work.
"""
import contextlib
import io
import queue
import threading

import zstandard
from isal import igzip, isal_zlib

from .errors import CompressedLayerError, LayerStoreError

__all__ = ["Decompressor"]

# Decompressed bytes per buffer handed to the scanner: fewer, larger
# buffers mean fewer hand-offs between the threads (2 MiB: 5-10% less CPU
# than 1 MiB on a 128 MiB gzip layer; larger gave nothing more).
_READ_SIZE = 2 << 20


class _TeeReader(io.RawIOBase):
    """Reads the source's buffers and hands each to ``sink`` as it goes."""

    def __init__(self, buffers, sink):
        super().__init__()
        self._it = iter(buffers)
        self._sink = sink
        self._buf = memoryview(b"")

    def readable(self):
        return True

    def readinto(self, b):
        if not self._buf:
            try:
                chunk = next(self._it, None)
                if chunk is None:
                    return 0
                self._sink(chunk)
            except BaseException as exc:  # the source's or the sink's failure, not the codec's
                raise _SourceError(exc) from exc
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class ZstdFrameChecker:
    """Walks the frame structure of a zstd stream (RFC 8878, section 3.1:
    frame header, block headers, optional content checksum; skippable
    frames, section 3.1.2) as its bytes go by, without decoding them, so
    that a stream cut inside a frame is detected: zstandard's stream reader
    returns end-of-stream silently on a truncated frame.

    ``feed(data)`` any number of times, then ``finish()`` raises
    CompressedLayerError unless the stream ended at a frame boundary after
    at least one frame."""

    _MAGIC = 0xFD2FB528
    _SKIPPABLE = 0x184D2A50  # .. 0x184D2A5F

    def __init__(self):
        self._buf = bytearray()   # bytes of a header being assembled
        self._need = 4            # header bytes wanted, or 0 while skipping content
        self._skip = 0            # content bytes still to skip
        self._state = "magic"
        self._checksum = False
        self._frames = 0
        self._offset = 0          # stream offset of the next unread byte

    def feed(self, data):
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                if not self._skip:
                    self._after_skip()
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += view[pos:pos + take]
            pos += take
            if len(self._buf) == self._need:
                self._header()
        self._offset += n

    def _fail(self, what):
        raise CompressedLayerError(f"zstd stream: {what}")

    def _header(self):
        b = bytes(self._buf)
        self._buf.clear()
        state = self._state
        if state == "magic":
            magic = int.from_bytes(b, "little")
            if magic == self._MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == self._SKIPPABLE:
                self._state, self._need = "skippable-size", 4
            else:
                self._fail(f"bad frame magic 0x{magic:08x}")
        elif state == "skippable-size":
            self._skip = int.from_bytes(b, "little")
            self._state = "skippable-data"
            if not self._skip:
                self._after_skip()
        elif state == "descriptor":
            fhd = b[0]
            if fhd & 0x08:
                self._fail("reserved bit set in a frame header")
            single = (fhd >> 5) & 1
            self._checksum = bool(fhd & 0x04)
            fcs = (fhd >> 6) & 3
            fcs_size = (1 if single else 0) if fcs == 0 else (2, 4, 8)[fcs - 1]
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_size
            self._state, self._need = "frame-header-rest", rest
            if not rest:
                self._state, self._need = "block", 3
        elif state == "frame-header-rest":
            self._state, self._need = "block", 3
        elif state == "block":
            header = int.from_bytes(b, "little")
            last, btype, size = header & 1, (header >> 1) & 3, header >> 3
            if btype == 3:
                self._fail("reserved block type")
            self._last = last
            self._skip = 1 if btype == 1 else size
            self._state = "block-data"
            if not self._skip:
                self._after_skip()
        elif state == "checksum":
            self._end_frame()

    def _after_skip(self):
        if self._state == "skippable-data":
            self._state, self._need = "magic", 4
        elif self._state == "block-data":
            if self._last:
                if self._checksum:
                    self._state, self._need = "checksum", 4
                else:
                    self._end_frame()
            else:
                self._state, self._need = "block", 3

    def _end_frame(self):
        self._frames += 1
        self._state, self._need = "magic", 4

    def finish(self):
        if self._state != "magic" or self._buf or self._skip:
            self._fail(f"truncated inside a frame at offset {self._offset}")
        if not self._frames:
            self._fail("no frame")


class _SourceError(OSError):
    """Carries an exception raised while reading the compressed input (an
    I/O error is not a sign of a bad stream and must not be reported as one)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _cause(exc, kind):
    """``exc`` or the first exception of type ``kind`` in its cause/context chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class Decompressor:
    """Iterates the decompressed stream of a gzip or zstd blob in buffers of
    at most 2 MiB, produced on a worker thread (bounded queue) that also
    passes every compressed buffer to ``sink``."""

    _DONE = object()

    def __init__(self, buffers, kind: str, sink):
        self._q = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._kind = kind
        self._frames = ZstdFrameChecker() if kind == "zstd" else None
        if self._frames is not None:
            outer = sink

            def sink(data, _check=self._frames.feed):
                _check(data)
                outer(data)
        self._tee = _TeeReader(buffers, sink)
        self._thread = threading.Thread(target=self._run, name="layerstore-inflate", daemon=True)
        self._thread.start()

    def _open(self):
        if self._kind == "gzip":
            reader = getattr(isal_zlib, "_GzipReader", None)
            if reader is not None:
                # IGzipFile's own C reader, with a larger input buffer than
                # IGzipFile gives it: fewer calls back into Python for input,
                # each of which may wait for the GIL
                return contextlib.closing(reader(self._tee, _READ_SIZE))
            return igzip.IGzipFile(fileobj=self._tee, mode="rb")
        return zstandard.ZstdDecompressor().stream_reader(self._tee, read_across_frames=True)

    def _put(self, item) -> bool:
        """Queue ``item`` for the consumer; False (dropped) once stopped."""
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _run(self):
        try:
            with self._open() as f:
                while not self._stop.is_set():
                    buf = f.read(_READ_SIZE)
                    if not buf or not self._put(buf):
                        break
            if self._frames is not None and not self._stop.is_set():
                while self._tee.readinto(bytearray(_READ_SIZE)):
                    pass  # bytes after the last frame the reader stopped at
                self._frames.finish()
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer
            self._put(exc)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                source_error = _cause(item, _SourceError)
                if source_error is not None:
                    raise source_error.error
                if isinstance(item, LayerStoreError):
                    raise item
                raise CompressedLayerError(f"{self._kind} layer stream is invalid: {item}") from item
            yield item

    def close(self, wait: bool = True):
        """Stop the worker thread; with ``wait``, return once it has ended.
        Without, it ends by itself after the read it is in (for a reader
        closed by the garbage collector, which may run on a thread that
        read needs)."""
        self._stop.set()
        if wait:
            self._thread.join()
