"""Kill points for crash tests: child processes wrap internal functions so
that the process SIGKILLs itself on the n-th call (the library has no crash
hooks of its own)."""
import functools
import os
import signal

_calls = {"n": 0}


def die_on_nth(fn, nth, when=None, partial=None):
    """``fn`` wrapped: on the ``nth`` call for which ``when(*args)`` holds
    (every call when None), run ``partial(*args)`` if given, then SIGKILL
    this process."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if when is None or when(*args, **kwargs):
            _calls["n"] += 1
            if _calls["n"] == nth:
                if partial is not None:
                    partial(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)

    return wrapper


def half_index(directory, pack_id, data):
    """Stand-in for packs._write_index_file that leaves half a temporary index."""
    with open(os.path.join(directory, pack_id + ".idx.tmp"), "wb") as f:
        f.write(data[: len(data) // 2])


def half_pwrite(fd, parts, offset):
    """Stand-in for packs._pwrite_all that writes only half of the data."""
    data = b"".join(bytes(p) for p in parts)
    os.pwrite(fd, data[: len(data) // 2], offset)
