"""Tests of layerstore.chunking and the FastCDC C core (csrc/fastcdc.c).

The cut points are checked against an independent pure-Python implementation
of the definition in csrc/fastcdc.h (gear hash over a 64-byte window,
cut-point skipping, normalized chunking level 2; Xia et al., USENIX ATC 2016,
sections 3.2-3.5), written byte by byte from that definition and sharing no
code with the C module (not even the gear table, which is regenerated here).

Test data comes from SHAKE-256 in XOF mode, so it is the same on every
Python version and machine.
"""
import array
import ctypes
import ctypes.util
import hashlib
import math
import mmap
import random
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerstore._native import ffi, lib
from layerstore.chunking import (
    ALGORITHM_VERSION,
    DEFAULT_AVG_SIZE,
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_SIZE,
    Chunker,
    chunk_boundaries,
)
from layerstore.errors import ChunkingError, LayerStoreError

KiB = 1024
MiB = 1024 * KiB


def seeded_bytes(seed, n):
    """n pseudo-random bytes determined by the string seed."""
    return hashlib.shake_256(seed.encode()).digest(n)


# --------------------------------------------------------------------------
# Reference implementation (pure Python, straight from the definition)
# --------------------------------------------------------------------------

M64 = (1 << 64) - 1
GEAR_SEED = int.from_bytes(b"lscdc-v1", "big")
# SHA-256 of the gear table as 256 little-endian uint64: pins the table, since
# changing it changes every cut point of every stored layer.
GEAR_SHA256 = "bbbf0f03001b147d2af13ee03389a0ff80c8fcf6962079b6f5d240535a727aac"
MASK_TOP_BIT = 56


def ref_gear_table():
    """splitmix64 outputs 1..256 from GEAR_SEED (Steele et al., OOPSLA 2014)."""
    table = []
    state = GEAR_SEED
    for _ in range(256):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        table.append(z ^ (z >> 31))
    return table


REF_GEAR = ref_gear_table()


def ref_mask_bits(avg_size):
    """(bits of the hard mask, bits of the easy mask): round(log2(avg)) +- 2."""
    n = round(math.log2(avg_size))
    return n + 2, n - 2


def ref_mask(bits):
    """`bits` one-bits whose highest is bit 56."""
    return ((1 << bits) - 1) << (MASK_TOP_BIT + 1 - bits)


def ref_boundaries(data, min_size, avg_size, max_size):
    """Cut offsets per the definition in csrc/fastcdc.h, one byte at a time."""
    bits_s, bits_l = ref_mask_bits(avg_size)
    mask_s, mask_l = ref_mask(bits_s), ref_mask(bits_l)
    gear = REF_GEAR
    n = len(data)
    cuts = []
    start = 0
    while start < n:
        limit = min(max_size, n - start)  # longest this chunk can be
        length = limit  # end of input or forced cut unless the hash says otherwise
        h = 0
        # Roll the 64 bytes ending at length L = min_size - 1 + 1 ... : after
        # rolling byte index L-1 of the chunk, h covers bytes [L-64, L).
        for L in range(min_size - 63, limit + 1):
            h = ((h << 1) + gear[data[start + L - 1]]) & M64
            if L < min_size:
                continue
            if L == max_size:
                break
            mask = mask_s if L <= avg_size else mask_l
            if h & mask == 0:
                length = L
                break
        cuts.append(start + length)
        start += length
    return cuts


def window_hash(data, end):
    """H(end) = sum_{j<64} G[data[end-1-j]] << j mod 2^64 (closed form)."""
    return sum(REF_GEAR[data[end - 1 - j]] << j for j in range(64)) & M64


def lengths(cuts):
    return [b - a for a, b in zip([0] + cuts, cuts)]


def native_boundaries(data, min_size, avg_size, max_size):
    """ls_cdc_boundaries (the C one-shot API), sized with its own count."""
    buf = ffi.from_buffer("uint8_t[]", data)
    need = lib.ls_cdc_boundaries(min_size, avg_size, max_size, buf, len(data), ffi.NULL, 0)
    out = ffi.new("uint64_t[]", max(need, 1))
    got = lib.ls_cdc_boundaries(min_size, avg_size, max_size, buf, len(data), out, need)
    assert got == need
    return ffi.unpack(out, got)


# --------------------------------------------------------------------------
# Fixed definition: gear table, masks, constants
# --------------------------------------------------------------------------


def test_gear_table_is_the_documented_splitmix64_table():
    native = ffi.unpack(lib.ls_cdc_gear_table(), 256)
    assert native == REF_GEAR
    packed = struct.pack("<256Q", *native)
    assert hashlib.sha256(packed).hexdigest() == GEAR_SHA256


@pytest.mark.parametrize(
    "avg, bits_s, bits_l",
    [
        (65, 8, 4),
        (181, 9, 5),  # 181^2 < 2^15: rounds down to 2^7
        (182, 10, 6),  # 182^2 > 2^15: rounds up to 2^8
        (3000, 14, 10),
        (65536, 18, 14),
        (92681, 18, 14),  # just below 2^16.5: rounds down
        (92682, 19, 15),  # just above: rounds up
        (64 * MiB - 1, 28, 24),
    ],
)
def test_mask_derivation(avg, bits_s, bits_l):
    assert ref_mask_bits(avg) == (bits_s, bits_l)
    state = ffi.new("ls_cdc *")
    assert lib.ls_cdc_init(state, 64, avg, 64 * MiB) == 0
    assert state.mask_s == ref_mask(bits_s)
    assert state.mask_l == ref_mask(bits_l)
    assert state.mask_l & state.mask_s == state.mask_l  # easy mask is a subset


def test_defaults_and_version():
    assert (DEFAULT_MIN_SIZE, DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE) == (16 * KiB, 64 * KiB, 256 * KiB)
    assert ALGORITHM_VERSION == 1


def test_pinned_cut_points():
    """Known-answer test: any change to the table, masks, window or normal
    point moves these cuts (and must come with a new ALGORITHM_VERSION)."""
    data = seeded_bytes("pinned", 1 * MiB)
    assert chunk_boundaries(data)[:6] == [96196, 172669, 244772, 310464, 394372, 473125]
    small = chunk_boundaries(data, 64, 256, 1024)
    digest = hashlib.sha256(struct.pack(f"<{len(small)}Q", *small)).hexdigest()
    assert (len(small), digest[:16]) == (3617, "1699a98f42ea6887")


# --------------------------------------------------------------------------
# C implementation == reference implementation
# --------------------------------------------------------------------------

PARAMS = [
    (DEFAULT_MIN_SIZE, DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE),
    (64, 256, 1024),
    (64, 181, 182),  # avg = max - 1: no easy-mask region at all
    (100, 182, 400),
    (1000, 3000, 10000),  # nothing a power of two
    (4096, 8192, 65536),
    (2 * KiB, 8 * KiB, 9 * KiB),  # many forced cuts
]


def _text(n):
    rnd = random.Random(1234)
    words = (
        "layer image container registry digest manifest blob tar gzip zstd "
        "the of and to in is for on that with as by this be are from"
    ).split()
    out = []
    size = 0
    while size < n:
        line = " ".join(rnd.choice(words) for _ in range(rnd.randint(3, 14))) + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def _mixed(n):
    """Random blocks separated by zero runs and a repeated block."""
    rnd = random.Random(99)
    parts = []
    size = 0
    block = seeded_bytes("mixed-block", 5000)
    while size < n:
        kind = rnd.randrange(3)
        if kind == 0:
            part = seeded_bytes(f"mixed{size}", rnd.randint(1, 40000))
        elif kind == 1:
            part = bytes(rnd.randint(1, 70000))
        else:
            part = block
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:n]


INPUTS = {
    "random": lambda n: seeded_bytes("random-ref", n),
    "zeros": lambda n: bytes(n),
    "ones": lambda n: b"\xff" * n,
    "period3": lambda n: (b"abc" * (n // 3 + 1))[:n],
    "period4096": lambda n: (seeded_bytes("p4096", 4096) * (n // 4096 + 1))[:n],
    "text": _text,
    "mixed": _mixed,
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: "-".join(map(str, p)))
def test_matches_reference(kind, params):
    min_size, avg_size, max_size = params
    # The reference rolls ~every byte in Python: 4 MiB at the default sizes
    # for random data (hundreds of KiB per chunk skipped), less elsewhere.
    n = 4 * MiB if (params[0] >= 16 * KiB and kind == "random") else 768 * KiB
    data = INPUTS[kind](n)
    expected = ref_boundaries(data, *params)
    assert chunk_boundaries(data, *params) == expected
    assert native_boundaries(data, *params) == expected
    assert expected[-1] == len(data)
    sizes = lengths(expected)
    assert all(min_size <= s <= max_size for s in sizes[:-1])
    assert 1 <= sizes[-1] <= max_size


def test_cut_is_a_function_of_the_64_byte_window():
    """At each non-forced cut the closed-form window hash meets the mask, and
    no earlier eligible position of the chunk does (spot check of H(e))."""
    min_size, avg_size, max_size = 256, 1024, 4096
    data = seeded_bytes("window", 64 * KiB)
    bits_s, bits_l = ref_mask_bits(avg_size)
    cuts = chunk_boundaries(data, min_size, avg_size, max_size)
    start = 0
    for end in cuts[:-1]:
        length = end - start
        for L in range(min_size, length + 1):
            mask = ref_mask(bits_s if L <= avg_size else bits_l)
            hit = window_hash(data, start + L) & mask == 0
            if L < length:
                assert not hit, (start, L)
            elif L < max_size:
                assert hit, (start, L)
        start = end


# --------------------------------------------------------------------------
# Streaming == one-shot, chunk-size bounds (property based)
# --------------------------------------------------------------------------


@st.composite
def params_strategy(draw):
    min_size = draw(st.integers(64, 600))
    avg_size = draw(st.integers(min_size + 1, min_size + 1500))
    max_size = draw(st.integers(avg_size + 1, avg_size + 4000))
    return min_size, avg_size, max_size


@st.composite
def data_strategy(draw):
    kind = draw(st.sampled_from(["random", "hypothesis", "runs"]))
    if kind == "random":
        n = draw(st.integers(0, 60000))
        return seeded_bytes(f"hyp{draw(st.integers(0, 2**32))}", n)
    if kind == "hypothesis":
        return draw(st.binary(max_size=20000))
    runs = draw(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 5000)), max_size=12))
    return b"".join(bytes([b]) * k for b, k in runs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_strategy(), params=params_strategy(), splits=st.lists(st.integers(0, 60000), max_size=25))
def test_streaming_matches_one_shot(data, params, splits):
    min_size, avg_size, max_size = params
    expected = chunk_boundaries(data, *params)
    assert expected == ref_boundaries(data, *params)

    points = sorted({s for s in splits if s <= len(data)})
    chunker = Chunker(*params)
    got = []
    prev = 0
    for p in points + [len(data)]:
        got += chunker.feed(data[prev:p])
        prev = p
    assert chunker.offset == len(data)
    got += chunker.finish()
    assert got == expected

    if data:
        assert expected[-1] == len(data)
        sizes = lengths(expected)
        assert all(min_size <= s <= max_size for s in sizes[:-1])
        assert 1 <= sizes[-1] <= max_size
    else:
        assert expected == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 50000), params=params_strategy(), rnd=st.randoms())
def test_ls_cdc_next_contract(seed, n, params, rnd):
    """Drive the C streaming call directly with random split sizes."""
    data = seeded_bytes(f"next{seed}", n)
    buf = ffi.from_buffer("uint8_t[]", data)
    state = ffi.new("ls_cdc *")
    assert lib.ls_cdc_init(state, *params) == 0
    cut = ffi.new("int *")
    cuts = []
    pos = 0
    while pos < n:
        piece = min(n - pos, rnd.choice([1, 2, 7, 8, 9, 63, 64, 65, 1000, 50000]))
        while piece:
            used = lib.ls_cdc_next(state, buf + pos, piece, cut)
            assert 0 <= used <= piece
            pos += used
            piece -= used
            if cut[0]:
                assert used >= 1
                assert state.pos == 0
                cuts.append(pos)
            else:
                assert piece == 0
    if state.pos:
        cuts.append(n)
    assert cuts == chunk_boundaries(data, *params)
    # an empty call never cuts and accepts NULL
    assert lib.ls_cdc_next(state, ffi.NULL, 0, cut) == 0 and cut[0] == 0


# --------------------------------------------------------------------------
# Edit locality and size distribution on 64 MiB of random data
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_random():
    return seeded_bytes("big-random", 64 * MiB)


def _chunk_digests(data):
    mv = memoryview(data)
    out = []
    start = 0
    for end in chunk_boundaries(data):
        out.append(hashlib.sha256(mv[start:end]).digest())
        start = end
    return out


def _diff(old, new):
    """(chunks only in new, chunks only in old) between the common prefix and
    the common suffix of the two chunk lists."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return len(new) - prefix - suffix, len(old) - prefix - suffix


@pytest.mark.slow
def test_edit_locality(big_random):
    """An edit changes only the chunk it falls in, plus at most one more.

    Every cut is a function of the 64 bytes before it and of the position in
    the chunk, so chunks before the edit keep their cuts, and the chunk that
    contains the edit necessarily changes (>= 1 new chunk). After the edit the
    old cut points are found again unless one of these happens in the edited
    chunk: a new match among the <= 64 + k windows that overlap the k edited
    bytes, or a match in the k positions moved across min_size/avg_size by
    the shift; each has probability below (64 + 2k) * 2^-14 ~ 0.5%, and
    causing a third changed chunk needs a second such event. So 1 is
    expected and 2 is the bound asserted; all other chunks must be
    byte-identical, in the same order.
    """
    data = big_random
    old = _chunk_digests(data)
    mid = len(data) // 2 + 12345
    edits = {
        "insert 5 bytes at 1000": data[:1000] + b"XYZZY" + data[1000:],
        "delete 7 bytes at 3000": data[:3000] + data[3007:],
        "overwrite 4 bytes in the middle": data[:mid] + b"\xde\xad\xbe\xef" + data[mid + 4 :],
    }
    for name, edited in edits.items():
        new = _chunk_digests(edited)
        added, removed = _diff(old, new)
        assert 1 <= added <= 2, name
        assert 1 <= removed <= 2, name
        assert len(new) - len(old) == added - removed


def _expected_size_stats(min_size, avg_size, max_size):
    """Mean and standard deviation of the chunk length when every position's
    hash is an independent uniform 64-bit value (P(match) = 2^-bits)."""
    bits_s, bits_l = ref_mask_bits(avg_size)
    p_s, p_l = 2.0**-bits_s, 2.0**-bits_l
    survive = 1.0
    mean = second = 0.0
    for L in range(min_size, max_size + 1):
        if L == max_size:
            p = survive
        else:
            p = survive * (p_s if L <= avg_size else p_l)
        mean += L * p
        second += L * L * p
        survive -= p
    return mean, math.sqrt(second - mean * mean)


@pytest.mark.slow
@pytest.mark.parametrize("params", [(16 * KiB, 64 * KiB, 256 * KiB), (1000, 3000, 10000)])
def test_chunk_size_distribution(big_random, params):
    """Mean chunk size on random data matches the model within 5 standard
    errors (the model's sigma / sqrt(chunks): ~1% of the mean for the 900 or
    so default-size chunks), and that model mean is within [1.0, 1.3] x avg
    (cut-point skipping adds up to min_size; normalization keeps it close)."""
    min_size, avg_size, max_size = params
    sizes = lengths(chunk_boundaries(big_random, *params))[:-1]
    mean_model, sd_model = _expected_size_stats(*params)
    assert avg_size <= mean_model <= 1.3 * avg_size
    mean = sum(sizes) / len(sizes)
    tolerance = 5 * sd_model / math.sqrt(len(sizes))
    assert abs(mean - mean_model) <= tolerance, (mean, mean_model, tolerance)
    assert max(sizes) <= max_size
    assert min(sizes) >= min_size


# --------------------------------------------------------------------------
# API behaviour
# --------------------------------------------------------------------------


def test_empty_and_short_inputs():
    assert chunk_boundaries(b"") == []
    assert chunk_boundaries(b"x") == [1]
    assert chunk_boundaries(bytes(DEFAULT_MIN_SIZE)) == [DEFAULT_MIN_SIZE]
    c = Chunker()
    assert c.feed(b"") == []
    assert c.finish() == []


def test_buffer_types_are_read_in_place():
    data = seeded_bytes("types", 300 * KiB)
    expected = chunk_boundaries(data, 64, 256, 1024)
    assert chunk_boundaries(bytearray(data), 64, 256, 1024) == expected
    assert chunk_boundaries(memoryview(data), 64, 256, 1024) == expected
    assert chunk_boundaries(memoryview(data)[100:], 64, 256, 1024) == chunk_boundaries(data[100:], 64, 256, 1024)
    words = array.array("Q", data[: len(data) // 8 * 8])
    assert chunk_boundaries(words, 64, 256, 1024) == chunk_boundaries(words.tobytes(), 64, 256, 1024)
    with mmap.mmap(-1, len(data)) as m:
        m[:] = data
        assert chunk_boundaries(m, 64, 256, 1024) == expected
    # the buffer export is released: a bytearray can be resized afterwards
    ba = bytearray(data)
    chunk_boundaries(ba)
    Chunker().feed(ba)
    ba.extend(b"more")


def test_rejects_non_buffers():
    with pytest.raises(TypeError):
        chunk_boundaries("text is not bytes")
    with pytest.raises((ValueError, BufferError, TypeError)):
        chunk_boundaries(memoryview(bytes(1000))[::2])
    with pytest.raises(TypeError):
        Chunker().feed(12345)


@pytest.fixture
def guarded_pages():
    """Yield (address, size) of a read/write region framed by PROT_NONE pages:
    any read before or after it faults, in a normal (non-sanitizer) build."""
    if not sys.platform.startswith("linux"):
        pytest.skip("uses mprotect on an anonymous mapping")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    inner = 16 * page
    region = mmap.mmap(-1, inner + 2 * page)
    anchor = ctypes.c_char.from_buffer(region)
    base = ctypes.addressof(anchor)
    PROT_NONE, PROT_RW = 0, 3
    assert libc.mprotect(base, page, PROT_NONE) == 0
    assert libc.mprotect(base + page + inner, page, PROT_NONE) == 0
    try:
        yield region, base + page, inner
    finally:
        libc.mprotect(base, page, PROT_RW)
        libc.mprotect(base + page + inner, page, PROT_RW)
        del anchor
        region.close()


def test_never_reads_outside_the_buffer(guarded_pages):
    """Inputs that end right before, or start right after, an unreadable
    page, fed whole and in odd-sized pieces: an over- or under-read faults."""
    region, addr, inner = guarded_pages
    page = mmap.PAGESIZE
    rnd = random.Random(5)
    params = (64, 128, 256)
    cut = ffi.new("int *")
    for n in [1, 7, 8, 9, 63, 64, 65, 100, 255, 256, 257, 4095, inner - 1, inner]:
        data = seeded_bytes(f"guard{n}", n)
        expected = ref_boundaries(data, *params)
        for start in (page + inner - n, page):  # flush with the end, then the start
            region[start : start + n] = data
            ptr = ffi.cast("const uint8_t *", addr - page + start)
            out = ffi.new("uint64_t[]", n)
            assert ffi.unpack(out, lib.ls_cdc_boundaries(*params, ptr, n, out, n)) == expected
            state = ffi.new("ls_cdc *")
            lib.ls_cdc_init(state, *params)
            cuts, pos = [], 0
            while pos < n:
                piece = min(n - pos, rnd.choice([1, 3, 8, 13, 64, 200]))
                pos += lib.ls_cdc_next(state, ptr + pos, piece, cut)
                if cut[0]:
                    cuts.append(pos)
            if state.pos:
                cuts.append(n)
            assert cuts == expected, (n, start)


def test_boundaries_reports_needed_count():
    data = bytes(10 * KiB)  # constant hash: every chunk is forced at max=1024
    buf = ffi.from_buffer("uint8_t[]", data)
    out = ffi.new("uint64_t[]", [0xAA] * 5)
    count = lib.ls_cdc_boundaries(64, 256, 1024, buf, len(data), out, 3)
    assert count == len(chunk_boundaries(data, 64, 256, 1024)) == 10
    assert list(out) == [1024, 2048, 3072, 0xAA, 0xAA]
    assert lib.ls_cdc_boundaries(64, 256, 1024, buf, 0, out, 5) == 0


def test_scan_stops_when_cut_buffer_is_full():
    data = seeded_bytes("scan", 64 * KiB)
    expected = chunk_boundaries(data, 64, 256, 1024)
    buf = ffi.from_buffer("uint8_t[]", data)
    state = ffi.new("ls_cdc *")
    assert lib.ls_cdc_init(state, 64, 256, 1024) == 0
    cuts = ffi.new("uint64_t[]", 4)
    consumed = ffi.new("size_t *")
    got = []
    off = 0
    while off < len(data):
        n = lib.ls_cdc_scan(state, buf + off, len(data) - off, 10**12 + off, cuts, 4, consumed)
        got += [c - 10**12 for c in ffi.unpack(cuts, n)]
        if n == 4:
            assert consumed[0] == got[-1] - off  # stopped right at the last cut
        off += consumed[0]
    if state.pos:
        got.append(len(data))
    assert got == expected


def test_chunker_finish_and_reset():
    data = seeded_bytes("reset", 200 * KiB)
    params = (64, 512, 2048)
    expected = chunk_boundaries(data, *params)
    c = Chunker(*params)
    c.feed(seeded_bytes("junk", 777))
    c.reset()
    assert c.offset == 0 and c.pending == 0
    assert c.feed(data) + c.finish() == expected
    # finish() starts a new stream at offset 0
    assert c.offset == 0
    assert c.feed(data[:1000]) + c.finish() == chunk_boundaries(data[:1000], *params)
    assert c.finish() == []
    assert (c.min_size, c.avg_size, c.max_size) == params
    assert "Chunker(min_size=64" in repr(c)


def test_many_cuts_in_one_feed():
    """More cuts than one C call collects (8192) in a single feed."""
    data = bytes(9000 * 1024)  # zeros: forced cut every 1024 bytes
    params = (64, 256, 1024)
    expected = list(range(1024, len(data) + 1, 1024))
    assert chunk_boundaries(data, *params) == expected
    c = Chunker(*params)
    assert c.feed(data) == expected
    assert c.finish() == []


# --------------------------------------------------------------------------
# Parameter validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"min_size": 63, "avg_size": 256, "max_size": 1024}, "min_size=63"),
        ({"min_size": 0, "avg_size": 256, "max_size": 1024}, "min_size=0"),
        ({"min_size": -5, "avg_size": 256, "max_size": 1024}, "min_size=-5"),
        ({"min_size": 256, "avg_size": 256, "max_size": 1024}, "avg_size=256"),
        ({"min_size": 512, "avg_size": 256, "max_size": 1024}, "avg_size=256"),
        ({"min_size": 64, "avg_size": 1024, "max_size": 1024}, "max_size=1024"),
        ({"min_size": 64, "avg_size": 2048, "max_size": 1024}, "max_size=1024"),
        ({"min_size": 64, "avg_size": 256, "max_size": 64 * MiB + 1}, f"max_size={64 * MiB + 1}"),
        ({"min_size": 64, "avg_size": 256, "max_size": 2**40}, f"max_size={2**40}"),
        ({"min_size": 64.0, "avg_size": 256, "max_size": 1024}, "64.0"),
        ({"min_size": 64, "avg_size": "256", "max_size": 1024}, "'256'"),
        ({"min_size": 64, "avg_size": 256, "max_size": True}, "True"),
    ],
)
def test_invalid_parameters(kwargs, needle):
    for call in (lambda: chunk_boundaries(b"data", **kwargs), lambda: Chunker(**kwargs)):
        with pytest.raises(ChunkingError) as info:
            call()
        assert needle in str(info.value)
        assert isinstance(info.value, LayerStoreError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "params",
    [(63, 256, 1024), (256, 256, 1024), (64, 1024, 1024), (64, 256, 64 * MiB + 1), (0, 0, 0)],
)
def test_c_init_rejects_invalid_parameters(params):
    state = ffi.new("ls_cdc *")
    assert lib.ls_cdc_init(state, *params) == -1
    assert state.max_size == 0  # zeroed
    cut = ffi.new("int *")
    assert lib.ls_cdc_next(state, b"abc", 3, cut) == 0 and cut[0] == 0
    out = ffi.new("uint64_t[]", 4)
    assert lib.ls_cdc_boundaries(*params, b"abc", 3, out, 4) == 0


def test_limits_accepted():
    assert lib.ls_cdc_init(ffi.new("ls_cdc *"), 64, 65, 66) == 0
    assert lib.ls_cdc_init(ffi.new("ls_cdc *"), 64, 65, 64 * MiB) == 0
    assert chunk_boundaries(bytes(1000), 64, 65, 66) == ref_boundaries(bytes(1000), 64, 65, 66)


def test_integer_like_parameters_accepted():
    class Size:
        def __init__(self, v):
            self.v = v

        def __index__(self):
            return self.v

    data = seeded_bytes("index", 20 * KiB)
    assert chunk_boundaries(data, Size(64), Size(256), Size(1024)) == chunk_boundaries(data, 64, 256, 1024)
    assert Chunker(Size(64), Size(256), Size(1024)).max_size == 1024
