"""Decompression of gzip (RFC 1952) and zstd (RFC 8878) layer blobs for
ingest: the compressed stream is inflated on a worker thread, in bounded
pieces, while the caller scans the tar; every compressed buffer is also
handed to a sink (the store keeps the compressed bytes too).

gzip uses ISA-L (``isal``), about twice as fast as zlib at inflating;
zstd uses ``zstandard``. Both release the GIL while they work.
"""
import io
import queue
import threading

import zstandard
from isal import igzip

from .errors import CompressedLayerError, LayerStoreError

__all__ = ["Decompressor"]

_READ_SIZE = 1 << 20


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
            chunk = next(self._it, None)
            if chunk is None:
                return 0
            self._sink(chunk)
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class Decompressor:
    """Iterates the decompressed stream of a gzip or zstd blob in buffers of
    at most 1 MiB, produced on a worker thread (bounded queue) that also
    passes every compressed buffer to ``sink``."""

    _DONE = object()

    def __init__(self, buffers, kind: str, sink):
        self._q = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._kind = kind
        self._tee = _TeeReader(buffers, sink)
        self._thread = threading.Thread(target=self._run, name="layerstore-inflate", daemon=True)
        self._thread.start()

    def _open(self):
        if self._kind == "gzip":
            return igzip.IGzipFile(fileobj=self._tee, mode="rb")
        return zstandard.ZstdDecompressor().stream_reader(self._tee, read_across_frames=True)

    def _run(self):
        try:
            with self._open() as f:
                while not self._stop.is_set():
                    buf = f.read(_READ_SIZE)
                    if not buf:
                        break
                    self._q.put(buf)
            self._q.put(self._DONE)
        except BaseException as exc:  # handed to the consumer
            self._q.put(exc)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                if isinstance(item, LayerStoreError):
                    raise item
                raise CompressedLayerError(f"{self._kind} layer stream is invalid: {item}") from item
            yield item

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
