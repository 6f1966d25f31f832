"""Process-wide worker threads for the work that runs beside the caller's
thread: ``"hash"`` for stream digests (each stream keeps at most one job in
flight), ``"io"`` for chunk compression with pack writes, and chunk reads,
``"sync"`` (one thread) for the background fdatasync of pack writers. They
are separate so that a stream digest never waits behind a queue of pack
writes. The C core and the codecs release the GIL, so the threads run in
parallel with the caller."""
import concurrent.futures
import os
import threading

_POOLS = {}
_LOCK = threading.Lock()


_THREADS = {"sync": 1}


def pool(kind: str) -> concurrent.futures.ThreadPoolExecutor:
    """The executor for ``kind`` (``"hash"``, ``"io"`` or ``"sync"``),
    created on first use: one thread per CPU and at least two, or one for
    ``"sync"``."""
    executor = _POOLS.get(kind)
    if executor is None:
        with _LOCK:
            executor = _POOLS.get(kind)
            if executor is None:
                executor = _POOLS[kind] = concurrent.futures.ThreadPoolExecutor(
                    _THREADS.get(kind) or max(2, os.cpu_count() or 1), thread_name_prefix=f"layerstore-{kind}"
                )
    return executor


class InOrder:
    """Calls ``fn(item)`` for each item given to :meth:`submit`, in order, on
    a ``"hash"`` pool thread, one call at a time: ``submit`` first waits for
    the call before it, and raises what that call raised."""

    def __init__(self, fn):
        self._fn = fn
        self._pending = None

    def submit(self, item):
        self._wait()
        self._pending = pool("hash").submit(self._fn, item)

    def _wait(self):
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.result()

    def close(self):
        """Wait for the last call; returns the exception it raised, or None."""
        try:
            self._wait()
        except BaseException as exc:  # handed to the caller, who decides
            return exc
        return None
