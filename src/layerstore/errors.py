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


class CorruptBlobError(LayerStoreError):
    """Stored bytes fail a check on read: an entry header checksum, the
    checksum of the stored bytes, decompression, the raw length, or the digest
    the bytes should hash to.

    Attributes:
        pack_id: id of the pack the bytes were read from (str or None).
        offset: byte offset of the entry in that pack (int or None).
        digest: hex digest the entry was expected to have, or claims (str or None).
        reason: what failed, without the location (str).
    """

    def __init__(self, reason, pack_id=None, offset=None, digest=None):
        where = []
        if pack_id is not None:
            where.append(f"pack {pack_id}")
        if offset is not None:
            where.append(f"offset {offset}")
        if digest is not None:
            where.append(f"digest {digest}")
        super().__init__(reason + (" (" + ", ".join(where) + ")" if where else ""))
        self.reason = reason
        self.pack_id = pack_id
        self.offset = offset
        self.digest = digest


class PackFormatError(LayerStoreError):
    """A pack file header or a pack index file is malformed, truncated, of an
    unknown version, or fails its checksum.

    Attributes:
        path: the file concerned (str or None).
    """

    def __init__(self, message, path=None):
        super().__init__(message + (f" ({path})" if path else ""))
        self.reason = message
        self.path = path


class PackLockedError(LayerStoreError):
    """A pack file is locked by a live writer, so it may not be rewritten or
    indexed yet."""


class SizeMismatchError(LayerStoreError):
    """Bytes received are not the size they were expected to have.

    Attributes:
        expected: the size announced, in bytes (int).
        actual: the number of bytes received so far, or in total (int).
    """

    def __init__(self, expected, actual, what="blob"):
        super().__init__(f"{what} size mismatch: expected {expected} bytes, got {actual}")
        self.expected = expected
        self.actual = actual


class ReferenceError(LayerStoreError, ValueError):
    """An image reference (``[registry/][namespace/]repository[:tag][@digest]``)
    does not follow the Docker/OCI reference grammar, or a rule applied to it
    (length, case, canonical form, digest) fails. This name shadows the builtin
    ``ReferenceError`` inside this module and for code that imports it.

    Attributes:
        input: the text that was being parsed (str).
        kind: a short machine-readable name of the rule that failed, one of
            the ``*`` constants of :mod:`layerstore.reference` (str).
        reason: what failed, without the input (str).
    """

    def __init__(self, input, kind, reason):
        super().__init__(f"invalid reference {input!r}: {reason}")
        self.input = input
        self.kind = kind
        self.reason = reason


class InvalidDocumentError(LayerStoreError, ValueError):
    """A JSON document (OCI image manifest, image index, image config,
    descriptor, image layout header, or their Docker counterparts) is not
    valid JSON or breaks a rule of its format.

    Attributes:
        field: path of the offending field, e.g. ``layers[2].digest``;
            ``"(document)"`` for the whole document (str).
        problem: what is wrong with it (str).
        media_type: media type the document was validated as, if known (str or None).
    """

    def __init__(self, field, problem, media_type=None):
        super().__init__(f"{field}: {problem}" + (f" ({media_type})" if media_type else ""))
        self.field = field
        self.problem = problem
        self.media_type = media_type


class PlatformError(LayerStoreError, ValueError):
    """A platform specifier (``os/arch[/variant]``) is malformed."""


class StoreError(LayerStoreError):
    """The store on disk is unusable as asked: not a layerstore store, a newer
    format, or an inconsistency found while working."""


class CodecMismatchError(StoreError, ValueError):
    """A store was opened asking for a codec other than the one it was
    created with (the codec of a store is fixed at creation)."""


class BlobNotFoundError(LayerStoreError, KeyError):
    """No blob with the given digest is in the store."""

    def __init__(self, digest):
        super().__init__(f"blob {digest} not found in the store")
        self.digest = digest

    def __str__(self):
        return self.args[0]


class CompressedLayerError(LayerStoreError):
    """A gzip (RFC 1952) or zstd (RFC 8878) layer blob cannot be decompressed:
    corrupt, truncated, or followed by data that is not another member."""


class ImageFormatError(LayerStoreError, ValueError):
    """An image archive or layout (docker-archive, oci-archive, OCI image
    layout directory, containers/image ``dir:``) is malformed: a file it
    must hold is absent or unreadable, a member is truncated, an index
    file breaks its format, or two documents disagree.

    Attributes:
        source: the archive or directory being read (str).
        member: the member or file inside it concerned, or None (str or None).
        problem: what is wrong, without the location (str).
    """

    def __init__(self, source, member, problem):
        where = f"{source}" + (f": {member}" if member else "")
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.member = member
        self.problem = problem


class UnsafePathError(ImageFormatError):
    """An archive member name is absolute or has a ``..`` component, or a
    link member points outside the archive (path traversal)."""


class MissingContentError(ImageFormatError):
    """A blob or file that the archive's documents reference is not in it."""


class ImageNotFoundError(LayerStoreError, KeyError):
    """No image, tag or digest in the store matches the reference given.

    Attributes:
        reference: the text that was looked up (str).
    """

    def __init__(self, reference, detail=""):
        super().__init__(f"image {reference!r} not found in the store" + (f": {detail}" if detail else ""))
        self.reference = reference

    def __str__(self):
        return self.args[0]


class PlatformNotFoundError(LayerStoreError, LookupError):
    """An image index holds no imported manifest for the platform asked for,
    or a single-platform image is for another platform.

    Attributes:
        reference: the reference resolved (str).
        platform: the platform asked for, ``os/arch[/variant]`` (str).
        available: platforms that are present, as ``os/arch[/variant]`` (list of str).
    """

    def __init__(self, reference, platform, available):
        have = ", ".join(available) if available else "none"
        super().__init__(f"{reference}: no manifest for platform {platform} (present: {have})")
        self.reference = reference
        self.platform = platform
        self.available = list(available)
