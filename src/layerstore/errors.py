"""Exception hierarchy. Every error layerstore raises on bad input or a bad
store derives from :class:`LayerStoreError`, so callers can catch one type;
the subclasses say what kind of thing went wrong."""


class LayerStoreError(Exception):
    """Base class of every error layerstore raises deliberately."""


class TarFormatError(LayerStoreError, ValueError):
    """A tar stream is malformed or truncated.

    Attributes:
        offset: byte offset in the stream where the fault was found (int or None).
        entry: name of the entry being parsed when it was found (str or None).
    """

    def __init__(self, message, offset=None, entry=None):
        where = []
        if offset is not None:
            where.append(f"at offset {offset}")
        if entry:
            where.append(f"in entry {entry!r}")
        super().__init__(message + (" (" + ", ".join(where) + ")" if where else ""))
        self.reason = message
        self.offset = offset
        self.entry = entry


class DigestError(LayerStoreError, ValueError):
    """A digest string is not of the form ``algorithm:hex`` the OCI image spec
    (descriptor.md, "Digests") allows, or names an unsupported algorithm."""


class DigestMismatchError(LayerStoreError):
    """Bytes received do not hash to the digest they were expected to have."""

    def __init__(self, expected, actual, what="blob"):
        super().__init__(f"{what} digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ChunkingError(LayerStoreError, ValueError):
    """Invalid content-defined chunking parameters."""
