"""Recipes: how a stored blob is rebuilt from chunks and verbatim segments.

A blob is stored as a *recipe*: an ordered list of chunk references (offset
in the blob, length, SHA-256 of the chunk) plus *segment bytes*, every byte
of the blob that is not inside a chunk, kept verbatim and in order. For a
layer tar the segments are the tar headers, extended headers, padding and
end-of-archive blocks, and the chunks are the file contents (the approach of
tar-split's disassemble/assemble); for any other blob there are no segments
and the chunks tile the blob.

Encoded form (``docs/format.md``, "Recipes"): a 24-byte header
``<4s B B 2x Q Q>`` = magic ``LSRC``, version 1, payload codec (1 = zstd),
xxh3_64 of the stored payload, payload length before compression; then the
zstd-compressed payload ``<Q I Q>`` (blob size, chunk count, segment length),
``count`` records ``<Q I 32s>`` (offset, length, digest), and the segment
bytes. The checksum is verified whenever a recipe is decoded.

A *rebuilt* recipe (version 2) describes a compressed blob held as
reconstruction data against the uncompressed layer it decompresses to (its
``source``, a diff ID): its chunks tile the reconstruction data
(``data_size`` bytes, no segments) and the blob is what ``reconstruct.rebuild``
makes of that data and the layer's bytes. Payload ``<Q I Q B 32s>`` = blob
size, chunk count, data size, method (1 = gzip, reconstruction data of
``csrc/gzre.c`` version 1; 2 = zstd, ``csrc/zstre.c`` version 1), the
source's SHA-256; then the chunk records.

An *inflated* recipe (version 3) describes a layer held as the compressed
blob it was ingested from, not yet deduplicated (``Store.compact`` turns it
into a version 1 recipe): its chunks tile the compressed bytes (``data_size``
bytes, no segments) and the layer is what decompressing them gives. Payload
``<Q I Q B>`` = layer size, chunk count, compressed size, method (1 = gzip,
RFC 1952; 2 = zstd, RFC 8878); then the chunk records.
"""
from __future__ import annotations

import struct
from typing import Iterator, List, NamedTuple, Sequence, Tuple

import xxhash
import zstandard

from .errors import CorruptBlobError

MAGIC = b"LSRC"
VERSION = 1
VERSION_REBUILT = 2
VERSION_INFLATED = 3
METHOD_GZIP = 1
METHOD_ZSTD = 2
METHOD_KINDS = {METHOD_GZIP: "gzip", METHOD_ZSTD: "zstd"}
_CODEC_ZSTD = 1
_HEADER = struct.Struct("<4sBB2xQQ")
#: Offset of the version byte in an encoded recipe (after the magic).
VERSION_OFFSET = 4
_HEAD = struct.Struct("<QIQ")
_REBUILT = struct.Struct("<B32s")
_INFLATED = struct.Struct("<B")
_REF = struct.Struct("<QI32s")


class ChunkRef(NamedTuple):
    """A chunk inside a blob: ``offset`` and ``length`` in bytes, ``digest``
    the SHA-256 of its bytes (32 raw bytes)."""

    offset: int
    length: int
    digest: bytes


class Recipe(NamedTuple):
    """Decoded recipe: ``size`` of the blob in bytes, its ``chunks`` in
    order, and the ``segments`` (every byte not in a chunk, in order).

    A rebuilt recipe also has ``source`` (the diff ID of the layer the blob
    is rebuilt from; "" otherwise), ``method`` (METHOD_GZIP) and
    ``data_size``: its chunks tile that many bytes of reconstruction data,
    not the blob. An inflated recipe has ``method`` and ``data_size`` but no
    ``source``: its chunks tile the compressed bytes the blob (a layer)
    decompresses from."""

    size: int
    chunks: List[ChunkRef]
    segments: bytes
    source: str = ""
    method: int = 0
    data_size: int = 0

    @property
    def extent(self) -> int:
        """Bytes the chunks and segments tile: the blob, or for a rebuilt
        recipe its reconstruction data."""
        return self.data_size if self.method else self.size

    @property
    def inflated(self) -> bool:
        """True for an inflated recipe: the blob is its chunks decompressed."""
        return bool(self.method) and not self.source

    def pieces(self) -> Iterator[Tuple[bytes, ChunkRef]]:
        """Walk the blob in order: yields ``(segment_bytes, None)`` for verbatim
        stretches and ``(b"", chunk)`` for chunks."""
        pos = seg = 0
        for ref in self.chunks:
            gap = ref.offset - pos
            if gap:
                yield self.segments[seg:seg + gap], None
                seg += gap
            yield b"", ref
            pos = ref.offset + ref.length
        if seg < len(self.segments):
            yield self.segments[seg:], None

    def check(self, what: str = "recipe"):
        """Raise CorruptBlobError unless chunks and segments tile [0, extent)."""
        pos = 0
        seg_total = 0
        for ref in self.chunks:
            if ref.offset < pos or ref.length <= 0:
                raise CorruptBlobError(f"{what}: chunk at offset {ref.offset} overlaps or is empty")
            seg_total += ref.offset - pos
            pos = ref.offset + ref.length
        seg_total += self.extent - pos
        if pos > self.extent or seg_total != len(self.segments):
            raise CorruptBlobError(
                f"{what}: chunks and {len(self.segments)} segment bytes do not tile {self.extent} bytes"
            )


def encode(size: int, chunks: Sequence[ChunkRef], segments) -> bytes:
    """Encode a recipe (see the module docstring for the layout).
    ``segments``: the segment bytes, as one bytes-like object or a sequence
    of pieces; they are compressed as they are read, so no joined copy of
    them (or of the payload) is made."""
    if isinstance(segments, (bytes, bytearray, memoryview)):
        segments = (segments,)
    seg_len = sum(len(s) for s in segments)
    return _seal(VERSION, _HEAD.pack(size, len(chunks), seg_len), chunks, segments, seg_len)


def encode_rebuilt(size: int, source: str, method: int, chunks: Sequence[ChunkRef], data_size: int) -> bytes:
    """Encode a rebuilt recipe (module docstring): blob ``size``, the
    ``source`` diff ID (sha256 only), the reconstruction ``method`` and the
    chunks tiling ``data_size`` bytes of reconstruction data."""
    algo, _, hexd = source.partition(":")
    if algo != "sha256" or len(hexd) != 64:
        raise ValueError(f"rebuilt recipes need a sha256 source, not {source!r}")
    head = _HEAD.pack(size, len(chunks), data_size) + _REBUILT.pack(method, bytes.fromhex(hexd))
    return _seal(VERSION_REBUILT, head, chunks, (), 0)


def encode_inflated(size: int, method: int, chunks: Sequence[ChunkRef], data_size: int) -> bytes:
    """Encode an inflated recipe (module docstring): layer ``size``, the
    compression ``method`` and the chunks tiling ``data_size`` bytes of
    compressed stream."""
    if method not in METHOD_KINDS:
        raise ValueError(f"unknown compression method {method}")
    head = _HEAD.pack(size, len(chunks), data_size) + _INFLATED.pack(method)
    return _seal(VERSION_INFLATED, head, chunks, (), 0)


def _seal(version, head: bytes, chunks, segments, seg_len) -> bytes:
    z = zstandard.ZstdCompressor(level=3).compressobj()
    out = [z.compress(head)]
    refs = bytearray()
    for ref in chunks:
        refs += _REF.pack(*ref)
        if len(refs) >= 1 << 20:
            out.append(z.compress(bytes(refs)))
            refs.clear()
    out.append(z.compress(bytes(refs)))
    for piece in segments:
        out.append(z.compress(piece))
    out.append(z.flush())
    stored = b"".join(out)
    payload_len = len(head) + len(chunks) * _REF.size + seg_len
    return _HEADER.pack(MAGIC, version, _CODEC_ZSTD, xxhash.xxh3_64_intdigest(stored), payload_len) + stored


def version(data) -> int:
    """The version byte of an encoded recipe, read without decoding or
    checking it (-1 when ``data`` is too short to have one): tells an
    inflated recipe from the others cheaply."""
    return data[VERSION_OFFSET] if len(data) > VERSION_OFFSET else -1


def decode(data: bytes, what: str = "recipe") -> Recipe:
    """Decode and verify an encoded recipe.

    Raises:
        CorruptBlobError: bad magic/version, checksum mismatch, or a payload
            that does not describe a consistent blob; ``what`` names it.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptBlobError(f"{what}: stored as {type(data).__name__}, not bytes")
    if len(data) < _HEADER.size:
        raise CorruptBlobError(f"{what}: truncated ({len(data)} bytes)")
    magic, version, codec, checksum, raw_len = _HEADER.unpack_from(data)
    if magic != MAGIC or version not in (VERSION, VERSION_REBUILT, VERSION_INFLATED) or codec != _CODEC_ZSTD:
        raise CorruptBlobError(f"{what}: not a version {VERSION}, {VERSION_REBUILT} or {VERSION_INFLATED} recipe")
    stored = memoryview(data)[_HEADER.size:]
    if xxhash.xxh3_64_intdigest(stored) != checksum:
        raise CorruptBlobError(f"{what}: checksum mismatch")
    try:
        payload = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise CorruptBlobError(f"{what}: {exc}") from None
    if len(payload) != raw_len or raw_len < _HEAD.size:
        raise CorruptBlobError(f"{what}: payload length mismatch")
    size, count, seg_len = _HEAD.unpack_from(payload)
    start, extra = _HEAD.size, {}
    if version == VERSION_REBUILT:
        if raw_len < start + _REBUILT.size:
            raise CorruptBlobError(f"{what}: payload length mismatch")
        method, source = _REBUILT.unpack_from(payload, start)
        if method not in METHOD_KINDS:
            raise CorruptBlobError(f"{what}: unknown reconstruction method {method}")
        start += _REBUILT.size
        extra = dict(source="sha256:" + source.hex(), method=method, data_size=seg_len)
        seg_len = 0
    elif version == VERSION_INFLATED:
        if raw_len < start + _INFLATED.size:
            raise CorruptBlobError(f"{what}: payload length mismatch")
        (method,) = _INFLATED.unpack_from(payload, start)
        if method not in METHOD_KINDS:
            raise CorruptBlobError(f"{what}: unknown compression method {method}")
        start += _INFLATED.size
        extra = dict(method=method, data_size=seg_len)
        seg_len = 0
    refs_end = start + count * _REF.size
    if refs_end + seg_len != raw_len:
        raise CorruptBlobError(f"{what}: payload layout mismatch")
    chunks = [ChunkRef(*r) for r in _REF.iter_unpack(payload[start:refs_end])]
    recipe = Recipe(size, chunks, payload[refs_end:], **extra)
    recipe.check(what)
    return recipe
