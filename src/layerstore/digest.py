"""Content digests: the ``algorithm:encoded`` strings that name blobs.

Format (OCI image spec, descriptor.md, section "Digests")::

    digest                ::= algorithm ":" encoded
    algorithm             ::= algorithm-component (algorithm-separator algorithm-component)*
    algorithm-component   ::= [a-z0-9]+
    algorithm-separator   ::= [+._-]
    encoded               ::= [a-zA-Z0-9=_-]+

Registered algorithms (same section, "Registered algorithms"):

========  ===================  ================================
name      hash                 encoded part
========  ===================  ================================
sha256    SHA-256 (FIPS 180-4)  exactly 64 lowercase hex digits
sha512    SHA-512 (FIPS 180-4)  exactly 128 lowercase hex digits
========  ===================  ================================

Policy for algorithms that are well formed but not registered (for example
``sha256+b64u:LCa0...`` or ``multihash+base58:Qm...``): the spec says
implementations SHOULD let such digests pass *validation*, but the store can
only *verify* content against sha256 and sha512. So:

* :func:`parse_digest` rejects them by default (``DigestError`` with
  ``kind == "unsupported"``), because a content-addressed store must not accept
  a name it cannot check;
* ``parse_digest(text, allow_unregistered=True)`` accepts them and returns a
  :class:`Digest` whose :attr:`Digest.registered` is ``False``. Document
  validation (:mod:`layerstore.manifest`) uses this mode, as the spec's JSON
  Schema does; such digests can be carried in descriptors but never verified
  (:class:`Verifier`, :func:`digest_of` and :attr:`Digest.raw` refuse them).

Errors are :class:`layerstore.errors.DigestError`; each carries a ``kind``
attribute: ``"format"`` (does not follow the grammar, or the encoded part of
a registered algorithm is not lowercase hex), ``"length"`` (registered
algorithm with the wrong number of hex digits) or ``"unsupported"`` (well
formed, but the algorithm is not accepted). The order of the checks, and so
the kind reported for inputs that break several rules, is that of
``github.com/opencontainers/go-digest`` ``Digest.Validate``.

Hashing uses :mod:`hashlib` by default. :func:`set_hash_factory` swaps in
another implementation for a registered algorithm (the store's own SHA-256,
for instance); every :class:`Digester`, :class:`Verifier` and
:func:`digest_of` created afterwards uses it.
"""
from __future__ import annotations

import hashlib
import re
from typing import Callable, Dict, Iterable, Optional

from .errors import DigestError, DigestMismatchError, SizeMismatchError

__all__ = [
    "Digest",
    "Digester",
    "Verifier",
    "parse_digest",
    "digest_of",
    "is_digest",
    "set_hash_factory",
    "hash_factory",
    "REGISTERED_ALGORITHMS",
    "SHA256",
    "SHA512",
    "CANONICAL_ALGORITHM",
]

SHA256 = "sha256"
SHA512 = "sha512"
#: The algorithm used when none is named (descriptor.md: "sha256 ... is the
#: canonical algorithm").
CANONICAL_ALGORITHM = SHA256

#: Registered algorithm -> number of hex digits in the encoded part
#: (descriptor.md, "Registered algorithms").
REGISTERED_ALGORITHMS: Dict[str, int] = {SHA256: 64, SHA512: 128}

_DEFAULT_FACTORIES: Dict[str, Callable] = {SHA256: hashlib.sha256, SHA512: hashlib.sha512}
_hash_factories: Dict[str, Callable] = dict(_DEFAULT_FACTORIES)

# descriptor.md "Digests" grammar, whole string.
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX = re.compile(r"[a-f0-9]+")

FORMAT = "format"
LENGTH = "length"
UNSUPPORTED = "unsupported"


def _error(text, kind, reason):
    err = DigestError(f"invalid digest {text!r}: {reason}")
    err.kind = kind
    err.input = text
    err.reason = reason
    return err


def _check(text, allow_unregistered, algorithms):
    """Validate ``text``; returns the algorithm name or raises DigestError."""
    if not isinstance(text, str):
        raise _error(text, FORMAT, f"expected a string, got {type(text).__name__}")
    i = text.find(":")
    if i <= 0 or i + 1 == len(text):
        raise _error(text, FORMAT, "expected the form algorithm:encoded "
                     "(descriptor.md, Digests)")
    algorithm, encoded = text[:i], text[i + 1:]
    accepted = REGISTERED_ALGORITHMS if algorithms is None else algorithms
    if algorithm not in accepted or algorithm not in REGISTERED_ALGORITHMS:
        if not _GRAMMAR.fullmatch(text):
            raise _error(text, FORMAT, "does not match the digest grammar "
                         "algorithm-component([+._-]algorithm-component)*:[a-zA-Z0-9=_-]+ "
                         "(descriptor.md, Digests)")
        if allow_unregistered and algorithm not in REGISTERED_ALGORITHMS:
            return algorithm
        raise _error(text, UNSUPPORTED, f"unsupported digest algorithm {algorithm!r} "
                     f"(accepted: {', '.join(sorted(accepted))})")
    want = REGISTERED_ALGORITHMS[algorithm]
    if len(encoded) != want:
        raise _error(text, LENGTH, f"{algorithm} needs exactly {want} hex digits, "
                     f"got {len(encoded)} characters (descriptor.md, Registered algorithms)")
    if not _LOWER_HEX.fullmatch(encoded):
        raise _error(text, FORMAT, f"{algorithm} encoded part must be lowercase hex "
                     "[a-f0-9] (descriptor.md, Registered algorithms)")
    return algorithm


def _restore(text):
    return str.__new__(Digest, text)


class Digest(str):
    """A validated digest string, e.g. ``sha256:e3b0c442...b855``.

    A ``str`` subclass: it compares, hashes, sorts and serialises to JSON as
    its text, so it can be used directly as a dict key or a JSON value and
    compared with plain strings.

    Construction:
        ``Digest("sha256:<64 hex>")`` or ``Digest("sha256", "<64 hex>")``;
        ``allow_unregistered=True`` also accepts well-formed unregistered
        algorithms (see the module docstring). Raises :class:`DigestError`.

    Attributes (read-only properties):
        algorithm: the algorithm name, e.g. ``"sha256"`` (str).
        hex / encoded: the part after the colon (str); lowercase hex for
            registered algorithms.
        registered: ``True`` for sha256 and sha512 (bool).
        raw: the hash value as bytes (32 for sha256, 64 for sha512).
        short: the first 12 characters of the encoded part (str), as ``docker
            images`` shows IDs.
    """

    __slots__ = ()

    def __new__(cls, value, encoded=None, *, allow_unregistered=False):
        if encoded is not None:
            if not isinstance(value, str) or not isinstance(encoded, str):
                raise _error((value, encoded), FORMAT, "algorithm and encoded part must be strings")
            text = value + ":" + encoded
        else:
            text = value
        if type(text) is cls and (allow_unregistered or text.registered):
            return text
        _check(text, allow_unregistered, None)
        return str.__new__(cls, text)

    def __reduce__(self):
        return (_restore, (str(self),))

    def __repr__(self):
        return f"Digest({str.__repr__(self)})"

    @classmethod
    def parse(cls, text, *, allow_unregistered=False):
        """Same as :func:`parse_digest`."""
        return parse_digest(text, allow_unregistered=allow_unregistered)

    @classmethod
    def from_bytes(cls, algorithm, raw):
        """Digest from a raw hash value: ``Digest.from_bytes("sha256", h.digest())``.

        ``raw`` must be exactly the algorithm's size (32 bytes for sha256, 64
        for sha512); raises :class:`DigestError` otherwise or for an
        unregistered algorithm."""
        if algorithm not in REGISTERED_ALGORITHMS:
            raise _error(f"{algorithm}:", UNSUPPORTED,
                         f"unsupported digest algorithm {algorithm!r}")
        raw = bytes(raw)
        want = REGISTERED_ALGORITHMS[algorithm] // 2
        if len(raw) != want:
            raise _error(f"{algorithm}:{raw.hex()}", LENGTH,
                         f"{algorithm} hash value is {want} bytes, got {len(raw)}")
        return str.__new__(cls, f"{algorithm}:{raw.hex()}")

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def encoded(self) -> str:
        return self.partition(":")[2]

    hex = encoded

    @property
    def registered(self) -> bool:
        return self.algorithm in REGISTERED_ALGORITHMS

    @property
    def raw(self) -> bytes:
        if not self.registered:
            raise _error(str(self), UNSUPPORTED,
                         f"the encoding of algorithm {self.algorithm!r} is unknown")
        return bytes.fromhex(self.encoded)

    @property
    def short(self) -> str:
        return self.encoded[:12]


def parse_digest(text, *, allow_unregistered=False, algorithms: Optional[Iterable[str]] = None) -> Digest:
    """Parse and validate a digest string; returns a :class:`Digest`.

    Args:
        text: e.g. ``"sha256:" + 64 lowercase hex digits``.
        allow_unregistered: accept well-formed digests of algorithms other
            than sha256/sha512 (they cannot be verified).
        algorithms: restrict the registered algorithms accepted (default:
            sha256 and sha512); others are reported as unsupported.

    Raises:
        DigestError: with ``kind`` ``"format"``, ``"length"`` or
            ``"unsupported"``; the message quotes ``text``.
    """
    accepted = None if algorithms is None else frozenset(algorithms)
    _check(text, allow_unregistered, accepted)
    return str.__new__(Digest, text)


def is_digest(text, *, allow_unregistered=False) -> bool:
    """``True`` if :func:`parse_digest` would accept ``text``."""
    try:
        _check(text, allow_unregistered, None)
    except DigestError:
        return False
    return True


def set_hash_factory(algorithm: str, factory: Optional[Callable] = None) -> None:
    """Use ``factory`` to hash ``algorithm`` from now on (``None`` restores hashlib).

    ``factory()`` must return a new object with ``update(bytes_like)`` and
    ``digest() -> bytes`` (the :mod:`hashlib` protocol; ``digest()`` must not
    end the computation, or :meth:`Digester.digest` may only be called once).
    Only registered algorithms can be replaced."""
    if algorithm not in REGISTERED_ALGORITHMS:
        raise _error(f"{algorithm}:", UNSUPPORTED, f"unsupported digest algorithm {algorithm!r}")
    _hash_factories[algorithm] = factory if factory is not None else _DEFAULT_FACTORIES[algorithm]


def hash_factory(algorithm: str) -> Callable:
    """The factory currently used for ``algorithm`` (raises DigestError if unsupported)."""
    try:
        return _hash_factories[algorithm]
    except (KeyError, TypeError):
        raise _error(f"{algorithm}:", UNSUPPORTED, f"unsupported digest algorithm {algorithm!r}") from None


def digest_of(data, algorithm: str = CANONICAL_ALGORITHM) -> Digest:
    """Digest of a bytes-like object: ``digest_of(b"") == "sha256:e3b0c442..."``.

    Raises DigestError for an unsupported algorithm and TypeError for ``str``."""
    if isinstance(data, str):
        raise TypeError("strings must be encoded before hashing")
    h = hash_factory(algorithm)()
    h.update(data)
    return Digest.from_bytes(algorithm, h.digest())


class Digester:
    """Incremental hasher for streamed content.

    ``d = Digester("sha256"); d.update(chunk) ...; d.digest()``. ``write`` is
    an alias of ``update`` so a Digester can be given where a writable file
    is expected.

    Attributes:
        algorithm: the algorithm name (str).
        size: number of bytes absorbed so far (int).
    """

    def __init__(self, algorithm: str = CANONICAL_ALGORITHM):
        self.algorithm = algorithm
        self._hash = hash_factory(algorithm)()
        self.size = 0

    def update(self, data) -> int:
        """Absorb a bytes-like chunk; returns its length in bytes."""
        if isinstance(data, str):
            raise TypeError("strings must be encoded before hashing")
        n = memoryview(data).nbytes
        self._hash.update(data)
        self.size += n
        return n

    write = update

    def digest(self) -> Digest:
        """The digest of everything absorbed so far."""
        return Digest.from_bytes(self.algorithm, self._hash.digest())


class Verifier:
    """Checks streamed content against an expected digest (and optionally size).

    ``v = Verifier(expected, size=None)``, then ``v.update(chunk)`` for each
    chunk and finally ``v.verify()``. ``expected`` is a digest string or
    :class:`Digest` of a registered algorithm (the hash is chosen from it).
    When ``size`` is given, :meth:`update` raises as soon as more bytes than
    that arrive, and :meth:`verify` checks the total.

    Raises:
        DigestError: ``expected`` is malformed or of an algorithm that cannot
            be verified.
        SizeMismatchError: from :meth:`update` (too many bytes) or
            :meth:`verify` (wrong total).
        DigestMismatchError: from :meth:`verify`, when the content does not
            hash to ``expected``.
    """

    def __init__(self, expected, size: Optional[int] = None):
        self.expected = parse_digest(expected)
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ValueError(f"size must be a non-negative int, got {size!r}")
        self.expected_size = size
        self._digester = Digester(self.expected.algorithm)

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return self._digester.size

    def update(self, data) -> int:
        n = self._digester.update(data)
        if self.expected_size is not None and self._digester.size > self.expected_size:
            raise SizeMismatchError(self.expected_size, self._digester.size)
        return n

    write = update

    def digest(self) -> Digest:
        """The digest of the bytes received so far."""
        return self._digester.digest()

    def verified(self) -> bool:
        """``True`` if the bytes received so far match the expectations."""
        if self.expected_size is not None and self.size != self.expected_size:
            return False
        return self.digest() == self.expected

    def verify(self) -> Digest:
        """Raise unless the content received matches; returns the digest."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise SizeMismatchError(self.expected_size, self.size)
        actual = self.digest()
        if actual != self.expected:
            raise DigestMismatchError(self.expected, actual)
        return actual
