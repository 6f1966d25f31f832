"""Recipes: encode/decode round trip, pieces or one bytes object, and the
checks decode makes. Oracle: the recipe's own definition (chunks and
segments tile the blob), built independently here."""
import hashlib
import random

import pytest

from layerstore import recipe
from layerstore.errors import CorruptBlobError


def _random_recipe(seed, count):
    rnd = random.Random(seed)
    refs, segs, pos = [], [], 0
    for i in range(count):
        gap = rnd.randrange(0, 2000)
        segs.append(rnd.randbytes(gap))
        pos += gap
        n = rnd.randrange(1, 100_000)
        refs.append(recipe.ChunkRef(pos, n, hashlib.sha256(str(i).encode()).digest()))
        pos += n
    tail = rnd.randbytes(rnd.randrange(0, 1500))
    segs.append(tail)
    return pos + len(tail), refs, segs


@pytest.mark.parametrize("count", [0, 1, 30, 40_000])  # 40,000 refs: more than 1 MiB of records
def test_round_trip_from_pieces_or_bytes(count):
    size, refs, segs = _random_recipe(count, count)
    a = recipe.encode(size, refs, segs)
    b = recipe.encode(size, refs, b"".join(segs))
    for enc in (a, b):
        rec = recipe.decode(enc)
        assert rec.size == size and rec.chunks == refs and rec.segments == b"".join(segs)
        # the pieces walk rebuilds the layout: segments in order between chunks
        rebuilt = [seg if ref is None else ("chunk", ref.offset) for seg, ref in rec.pieces()]
        assert b"".join(x for x in rebuilt if isinstance(x, bytes)) == b"".join(segs)


def test_damage_is_reported():
    size, refs, segs = _random_recipe(5, 10)
    enc = bytearray(recipe.encode(size, refs, segs))
    enc[-1] ^= 1
    with pytest.raises(CorruptBlobError, match="checksum"):
        recipe.decode(bytes(enc))
    with pytest.raises(CorruptBlobError, match="truncated"):
        recipe.decode(b"LSRC")


@pytest.mark.parametrize("method", [recipe.METHOD_GZIP, recipe.METHOD_ZSTD])
def test_inflated_recipe_round_trip(method):
    """A layer held as its compressed bytes: chunks tile data_size bytes of
    compressed stream, no segments, no source."""
    refs, pos = [], 0
    for i in range(50):
        refs.append(recipe.ChunkRef(pos, 1000 + i, hashlib.sha256(bytes([i])).digest()))
        pos += 1000 + i
    enc = recipe.encode_inflated(123_456_789, method, refs, pos)
    assert recipe.version(enc) == enc[4] == recipe.VERSION_INFLATED  # the byte compact and the catalog look at
    rec = recipe.decode(enc)
    assert rec.inflated and not rec.source and rec.method == method
    assert (rec.size, rec.data_size, rec.chunks, rec.segments) == (123_456_789, pos, refs, b"")
    with pytest.raises(CorruptBlobError, match="tile"):
        recipe.decode(recipe.encode_inflated(10, method, refs, pos + 1))
    with pytest.raises(ValueError):
        recipe.encode_inflated(10, 9, refs, pos)
