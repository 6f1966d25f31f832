"""SHA-256 for layer digests, backed by the C core (``csrc/sha256.c``).

The algorithm, padding and initial values are those of FIPS 180-4 ("Secure
Hash Standard", NIST, August 2015), sections 4.2.2, 5.1.1, 5.3.3 and 6.2. The
``sha256:<hex>`` digest string is the OCI image spec's form (descriptor.md,
"Digests"): the algorithm name, a colon, and the 64 lowercase hex digits of
the 32-byte digest.

The C core picks, once per process, the fastest compression function the CPU
supports (x86 SHA extensions, ARMv8 SHA2 extension, or portable C); see
:func:`backend`. All backends produce identical digests.

Concurrency: the GIL is released for the duration of every hashing call into
the C core (cffi API mode wraps each call in ``Py_BEGIN_ALLOW_THREADS`` /
``Py_END_ALLOW_THREADS``; ``tests/test_hashing.py::test_update_releases_gil``
checks it), so threads hashing different objects run in parallel. A
:class:`Sha256` object serialises its own method calls with a lock, so sharing
one between threads is safe (the order of interleaved updates is then up to
the threads).
"""
import errno
import threading

from ._native import ffi, lib

__all__ = ["Sha256", "sha256_digest", "sha256_file", "backend"]


def _as_cbuffer(data):
    """``ffi.from_buffer`` view of a bytes-like object (zero copy), with the
    errors :class:`Sha256` documents."""
    if isinstance(data, str):
        raise TypeError("Strings must be encoded before hashing")
    try:
        return ffi.from_buffer(data)
    except BufferError as exc:
        # Only C-contiguous buffers can be hashed in place (hashlib refuses
        # them too); the caller decides whether copying is acceptable.
        raise TypeError(
            "SHA-256 input must be a C-contiguous buffer; "
            "pass bytes(view) or view.tobytes() to hash a copy"
        ) from exc


class Sha256:
    """Streaming SHA-256 (FIPS 180-4), interchangeable with ``hashlib.sha256``.

    ``Sha256(data=b"")`` starts a new message and absorbs ``data``.

    Attributes:
        name: ``"sha256"``.
        digest_size: 32 (bytes).
        block_size: 64 (bytes).

    Inputs are bytes-like objects: ``bytes``, ``bytearray``, ``memoryview``
    (any format and shape, as long as it is C-contiguous; the raw bytes are
    hashed), ``mmap.mmap``, ``array.array`` and anything else exporting a
    contiguous buffer. They are hashed in place, without a copy, and released
    as soon as the call returns (so an ``mmap`` can be closed afterwards).

    Raises:
        TypeError: ``str`` input, an object without the buffer protocol, or a
            non-contiguous buffer (e.g. ``memoryview(b)[::2]``; hash
            ``view.tobytes()`` instead).

    Messages are limited to < 2**61 bytes (FIPS 180-4 allows < 2**64 bits).
    """

    name = "sha256"
    digest_size = 32
    block_size = 64

    __slots__ = ("_ctx", "_lock")

    def __init__(self, data=b""):
        self._ctx = ffi.new("ls_sha256_ctx *")
        self._lock = threading.Lock()
        lib.ls_sha256_init(self._ctx)
        self.update(data)

    def update(self, data):
        """Absorb ``data`` (bytes-like, see the class docstring) into the
        message. Returns None. Raises TypeError for unsupported input. The GIL
        is released while the bytes are hashed."""
        if type(data) is bytes:
            # cffi passes a pointer to the bytes object's own storage.
            with self._lock:
                lib.ls_sha256_update(self._ctx, data, len(data))
            return
        with _as_cbuffer(data) as buf:
            n = len(buf)
            if n:
                with self._lock:
                    lib.ls_sha256_update(self._ctx, buf, n)

    def _snapshot(self):
        with self._lock:
            return ffi.new("ls_sha256_ctx *", self._ctx[0])

    def digest(self):
        """The 32-byte digest of the data absorbed so far, as ``bytes``.
        Does not finalise the object: more data may be added afterwards and
        ``digest()`` called again."""
        ctx = self._snapshot()
        out = ffi.new("uint8_t[32]")
        lib.ls_sha256_final(ctx, out)
        return ffi.buffer(out)[:]

    def hexdigest(self):
        """:meth:`digest` as 64 lowercase hexadecimal characters (``str``)."""
        return self.digest().hex()

    def copy(self):
        """An independent :class:`Sha256` with the same state; updating either
        does not affect the other."""
        other = type(self).__new__(type(self))
        other._ctx = self._snapshot()
        other._lock = threading.Lock()
        return other

    def __repr__(self):
        return f"<layerstore.hashing.Sha256 object @ {id(self):#x}>"


def sha256_digest(data):
    """Digest string ``"sha256:<64 lowercase hex>"`` (OCI descriptor form) of
    the SHA-256 (FIPS 180-4) of ``data``, a bytes-like object as accepted by
    :meth:`Sha256.update`. Raises TypeError for anything else."""
    out = ffi.new("uint8_t[32]")
    if type(data) is bytes:
        lib.ls_sha256_oneshot(data, len(data), out)
    else:
        with _as_cbuffer(data) as buf:
            lib.ls_sha256_oneshot(buf, len(buf), out)
    return "sha256:" + ffi.buffer(out)[:].hex()


def sha256_file(fileobj, bufsize=1 << 20):
    """Digest string ``"sha256:<64 lowercase hex>"`` of the SHA-256
    (FIPS 180-4) of the rest of a binary file object, read from its current
    position to EOF.

    The file is streamed through one reusable buffer of ``bufsize`` bytes
    (default 1 MiB) with ``fileobj.readinto``; objects without ``readinto``
    are read with ``fileobj.read(bufsize)`` instead. Memory use is O(bufsize)
    whatever the file size. The file is not closed or rewound.

    Raises:
        ValueError: ``bufsize`` is not a positive integer.
        TypeError: the file is opened in text mode (reads return ``str``).
        BlockingIOError: a non-blocking file has no data available
            (``readinto``/``read`` returned None).
        OSError: errors from the file object, or ``readinto`` reporting a
            length outside ``0..bufsize``.
    """
    if isinstance(bufsize, bool) or not isinstance(bufsize, int) or bufsize <= 0:
        raise ValueError(f"bufsize must be a positive integer, got {bufsize!r}")
    h = Sha256()
    ctx = h._ctx
    readinto = getattr(fileobj, "readinto", None)
    if readinto is None:
        while True:
            chunk = fileobj.read(bufsize)
            if chunk is None:
                raise BlockingIOError(errno.EAGAIN, "non-blocking file has no data available")
            if isinstance(chunk, str):
                raise TypeError("sha256_file needs a file opened in binary mode")
            if not chunk:
                break
            h.update(chunk)
        return "sha256:" + h.hexdigest()

    buf = bytearray(bufsize)
    view = memoryview(buf)
    with ffi.from_buffer(buf) as cbuf:
        while True:
            n = readinto(view)
            if n is None:
                raise BlockingIOError(errno.EAGAIN, "non-blocking file has no data available")
            if not 0 <= n <= bufsize:
                raise OSError(f"readinto() returned {n!r}, outside 0..{bufsize}")
            if n == 0:
                break
            # h is private to this call: no lock needed.
            lib.ls_sha256_update(ctx, cbuf, n)
    return "sha256:" + h.hexdigest()


def backend():
    """Name of the SHA-256 compression backend in use in this process:
    ``"x86-sha-ni"``, ``"armv8-sha2"`` or ``"portable"`` (``str``)."""
    return ffi.string(lib.ls_sha256_backend()).decode("ascii")
