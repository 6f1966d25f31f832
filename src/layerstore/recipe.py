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
"""
from __future__ import annotations

import struct
from typing import Iterator, List, NamedTuple, Sequence, Tuple

import xxhash
import zstandard

from .errors import CorruptBlobError

MAGIC = b"LSRC"
VERSION = 1
_CODEC_ZSTD = 1
_HEADER = struct.Struct("<4sBB2xQQ")
_HEAD = struct.Struct("<QIQ")
_REF = struct.Struct("<QI32s")


class ChunkRef(NamedTuple):
    """A chunk inside a blob: ``offset`` and ``length`` in bytes, ``digest``
    the SHA-256 of its bytes (32 raw bytes)."""

    offset: int
    length: int
    digest: bytes


class Recipe(NamedTuple):
    """Decoded recipe: ``size`` of the blob in bytes, its ``chunks`` in
    order, and the ``segments`` (every byte not in a chunk, in order)."""

    size: int
    chunks: List[ChunkRef]
    segments: bytes

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
        """Raise CorruptBlobError unless chunks and segments tile [0, size)."""
        pos = 0
        seg_total = 0
        for ref in self.chunks:
            if ref.offset < pos or ref.length <= 0:
                raise CorruptBlobError(f"{what}: chunk at offset {ref.offset} overlaps or is empty")
            seg_total += ref.offset - pos
            pos = ref.offset + ref.length
        seg_total += self.size - pos
        if pos > self.size or seg_total != len(self.segments):
            raise CorruptBlobError(
                f"{what}: chunks and {len(self.segments)} segment bytes do not tile {self.size} bytes"
            )


def encode(size: int, chunks: Sequence[ChunkRef], segments) -> bytes:
    """Encode a recipe (see the module docstring for the layout).
    ``segments``: the segment bytes, as one bytes-like object or a sequence
    of pieces; they are compressed as they are read, so no joined copy of
    them (or of the payload) is made."""
    if isinstance(segments, (bytes, bytearray, memoryview)):
        segments = (segments,)
    seg_len = sum(len(s) for s in segments)
    z = zstandard.ZstdCompressor(level=3).compressobj()
    out = [z.compress(_HEAD.pack(size, len(chunks), seg_len))]
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
    payload_len = _HEAD.size + len(chunks) * _REF.size + seg_len
    return _HEADER.pack(MAGIC, VERSION, _CODEC_ZSTD, xxhash.xxh3_64_intdigest(stored), payload_len) + stored


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
    if magic != MAGIC or version != VERSION or codec != _CODEC_ZSTD:
        raise CorruptBlobError(f"{what}: not a version {VERSION} recipe")
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
    refs_end = _HEAD.size + count * _REF.size
    if refs_end + seg_len != raw_len:
        raise CorruptBlobError(f"{what}: payload layout mismatch")
    chunks = [ChunkRef(*r) for r in _REF.iter_unpack(payload[_HEAD.size:refs_end])]
    recipe = Recipe(size, chunks, payload[refs_end:])
    recipe.check(what)
    return recipe
