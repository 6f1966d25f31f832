"""SHA-256 core and ``layerstore.hashing``.

Oracles: the NIST CAVP SHAVS response files (SHA256ShortMsg, SHA256LongMsg,
SHA256Monte; procedure in the SHAVS document and ../shared/corpus/EXTERNAL.md)
and Python's ``hashlib.sha256``. Every digest test runs once per compression
backend the CPU supports (forced through ``ls_sha256_force_backend``)."""
import array
import contextlib
import hashlib
import io
import mmap
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PROJECT_ROOT, corpus_path
from layerstore import hashing
from layerstore._native import ffi, lib
from layerstore.hashing import Sha256, sha256_digest, sha256_file

ALL_BACKENDS = ("x86-sha-ni", "armv8-sha2", "portable")


def _probe(name):
    ok = lib.ls_sha256_force_backend(name.encode()) == 0
    lib.ls_sha256_force_backend(ffi.NULL)
    return ok


AVAILABLE = [name for name in ALL_BACKENDS if _probe(name)]

BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in AVAILABLE, reason=f"{name} not supported by this CPU"))
    for name in ALL_BACKENDS
]


@contextlib.contextmanager
def forced(name):
    """Run the block with backend ``name``; restore the automatic choice."""
    assert lib.ls_sha256_force_backend(name.encode()) == 0
    try:
        assert hashing.backend() == name
        yield
    finally:
        lib.ls_sha256_force_backend(ffi.NULL)


def hl(data):
    return hashlib.sha256(data).digest()


# --------------------------------------------------------------------------
# NIST CAVP response files


def parse_rsp(path):
    """Records of a CAVP .rsp file as dicts (keys as in the file). Lines
    starting with '#' and section headers such as ``[L = 32]`` are skipped."""
    records, cur = [], {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("["):
            if cur:
                records.append(cur)
                cur = {}
            continue
        key, _, value = line.partition("=")
        cur[key.strip()] = value.strip()
    if cur:
        records.append(cur)
    return records


def msg_records(filename):
    out = []
    for rec in parse_rsp(corpus_path("sha256", filename)):
        if "Msg" not in rec:
            continue
        nbits = int(rec["Len"])
        assert nbits % 8 == 0
        msg = bytes.fromhex(rec["Msg"])[: nbits // 8]  # Len = 0 has placeholder Msg = 00
        assert len(msg) * 8 == nbits
        out.append((msg, bytes.fromhex(rec["MD"])))
    return out


def check_message_vectors(records):
    for msg, md in records:
        assert Sha256(msg).digest() == md, len(msg)
        assert sha256_digest(msg) == "sha256:" + md.hex(), len(msg)
        h = Sha256()
        for i in range(0, len(msg), 37):  # odd chunking that straddles blocks
            h.update(msg[i : i + 37])
        assert h.digest() == md, len(msg)
        out = ffi.new("uint8_t[32]")
        lib.ls_sha256_oneshot(msg, len(msg), out)
        assert bytes(ffi.buffer(out)) == md, len(msg)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_nist_short_msg(name):
    records = msg_records("SHA256ShortMsg.rsp")
    assert len(records) == 65
    assert records[0][0] == b""
    with forced(name):
        check_message_vectors(records)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_nist_long_msg(name):
    records = msg_records("SHA256LongMsg.rsp")
    assert len(records) == 64
    with forced(name):
        check_message_vectors(records)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_nist_monte_carlo(name):
    records = parse_rsp(corpus_path("sha256", "SHA256Monte.rsp"))
    seed = bytes.fromhex(next(r["Seed"] for r in records if "Seed" in r))
    checkpoints = [(int(r["COUNT"]), bytes.fromhex(r["MD"])) for r in records if "COUNT" in r]
    assert [c for c, _ in checkpoints] == list(range(100))
    with forced(name):
        for count, expected in checkpoints:
            md0 = md1 = md2 = seed
            for _ in range(1000):
                md0, md1, md2 = md1, md2, Sha256(md0 + md1 + md2).digest()
            assert md2 == expected, f"checkpoint {count}"
            seed = md2


# --------------------------------------------------------------------------
# Property tests against hashlib


@st.composite
def split_messages(draw, max_len=200_000):
    """(data, cut points): random bytes, lengths biased to block edges."""
    n = draw(
        st.one_of(
            st.integers(0, max_len),
            st.integers(0, max_len // 64).flatmap(lambda k: st.sampled_from([64 * k - 1, 64 * k, 64 * k + 1, 64 * k + 55, 64 * k + 56])).filter(lambda v: v >= 0),
        )
    )
    seed = draw(st.integers(0, 2**32 - 1))
    data = random.Random(seed).randbytes(n)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=24)))
    return data, cuts


def pieces(data, cuts):
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=split_messages())
def test_split_updates_match_hashlib(name, msg):
    data, cuts = msg
    with forced(name):
        h = Sha256()
        for part in pieces(data, cuts):
            h.update(part)
        assert h.digest() == hl(data)
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
        assert sha256_digest(data) == "sha256:" + hl(data).hex()


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="only one backend on this CPU")
@settings(max_examples=60, deadline=None)
@given(msg=split_messages(max_len=20_000))
def test_backend_switch_mid_message(msg):
    """The chaining state has one layout for all backends: a message may be
    continued under another backend."""
    data, cuts = msg
    h = Sha256()
    try:
        for i, part in enumerate(pieces(data, cuts)):
            assert lib.ls_sha256_force_backend(AVAILABLE[i % len(AVAILABLE)].encode()) == 0
            h.update(part)
    finally:
        lib.ls_sha256_force_backend(ffi.NULL)
    assert h.digest() == hl(data)


@settings(max_examples=100, deadline=None)
@given(a=st.binary(max_size=300), b=st.binary(max_size=300), c=st.binary(max_size=300))
def test_copy_is_independent(a, b, c):
    h = Sha256(a)
    k = h.copy()
    assert isinstance(k, Sha256)
    k.update(b)
    h.update(c)
    assert h.digest() == hl(a + c)
    assert k.digest() == hl(a + b)
    k2 = k.copy()
    k.update(c)
    assert k2.digest() == hl(a + b)
    assert k.digest() == hl(a + b + c)


@settings(max_examples=100, deadline=None)
@given(a=st.binary(max_size=300), b=st.binary(max_size=300))
def test_digest_does_not_finalize(a, b):
    h = Sha256(a)
    d1 = h.digest()
    assert h.digest() == d1 == hl(a)
    assert h.hexdigest() == d1.hex()
    h.update(b)
    assert h.digest() == hl(a + b)
    assert h.digest() == hl(a + b)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000), start=st.integers(0, 16), step=st.integers(1, 200))
def test_bytearray_and_memoryview_inputs(data, start, step):
    ba = bytearray(data)
    h1, h2 = Sha256(), Sha256()
    view = memoryview(ba)
    for i in range(start, len(data), step):  # sub-views at arbitrary (unaligned) offsets
        h1.update(view[i : i + step])
        h2.update(ba[i : i + step])
    expected = hl(data[start:])
    assert h1.digest() == expected
    assert h2.digest() == expected


# --------------------------------------------------------------------------
# Buffer types and errors


def test_hashlib_attributes():
    h = Sha256()
    assert (h.name, h.digest_size, h.block_size) == ("sha256", 32, 64)
    assert (Sha256.name, Sha256.digest_size, Sha256.block_size) == ("sha256", 32, 64)
    assert h.digest() == hl(b"")
    assert Sha256(b"abc").hexdigest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_buffer_protocol_objects():
    data = bytes(range(256)) * 41 + b"tail"
    arr = array.array("I", range(1000))
    assert Sha256(arr).digest() == hl(arr.tobytes())
    shaped = memoryview(bytearray(data[:4096])).cast("B", (64, 64))
    assert Sha256(shaped).digest() == hl(data[:4096])
    assert Sha256(memoryview(arr)).digest() == hl(arr.tobytes())
    assert sha256_digest(bytearray(data)) == "sha256:" + hl(data).hex()
    assert sha256_digest(memoryview(data)[5:]) == "sha256:" + hl(data[5:]).hex()


def test_mmap_input_is_released(tmp_path):
    data = os.urandom(300_001)
    p = tmp_path / "blob"
    p.write_bytes(data)
    with open(p, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        h = Sha256()
        h.update(m)
        assert sha256_digest(m) == "sha256:" + hl(data).hex()
        m.close()  # BufferError here if the buffer export leaked
    assert h.digest() == hl(data)


def test_rejects_non_bytes():
    h = Sha256(b"x")
    with pytest.raises(TypeError):
        h.update("text")
    with pytest.raises(TypeError):
        h.update(None)
    with pytest.raises(TypeError):
        h.update(12)
    with pytest.raises(TypeError):
        h.update(memoryview(b"abcdef")[::2])  # not C-contiguous
    with pytest.raises(TypeError):
        sha256_digest("text")
    with pytest.raises(TypeError):
        Sha256("text")
    assert h.digest() == hl(b"x")  # failed calls left the state alone


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_large_buffer(name):
    big = random.Random(1234).randbytes((64 << 20) + 4099)
    expected = hl(big)
    with forced(name):
        assert Sha256(big).digest() == expected
        view = memoryview(big)
        h = Sha256(view[:3])
        h.update(view[3:])  # many blocks per call from an odd address
        assert h.digest() == expected
        assert sha256_digest(view[1:]) == "sha256:" + hl(view[1:]).hex()


# --------------------------------------------------------------------------
# sha256_file


@pytest.mark.parametrize("bufsize", [1, 63, 64, 65, 4096, 1 << 20])
def test_sha256_file(tmp_path, bufsize):
    data = random.Random(bufsize).randbytes(200_003)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    expected = "sha256:" + hl(data).hex()
    with open(p, "rb") as f:
        assert sha256_file(f, bufsize=bufsize) == expected
        assert f.read() == b""  # consumed to EOF
    with open(p, "rb", buffering=0) as f:  # raw FileIO: short reads possible
        f.seek(1000)
        assert sha256_file(f, bufsize) == "sha256:" + hl(data[1000:]).hex()
    assert sha256_file(io.BytesIO(data), bufsize) == expected


def test_sha256_file_default_and_empty():
    assert sha256_file(io.BytesIO(b"")) == "sha256:" + hl(b"").hex()
    data = os.urandom(3 << 20 | 17)
    assert sha256_file(io.BytesIO(data)) == "sha256:" + hl(data).hex()


class _ReadOnly:
    """File-like object with read() but no readinto()."""

    def __init__(self, data, chunk):
        self._f = io.BytesIO(data)
        self._chunk = chunk

    def read(self, n=-1):
        return self._f.read(min(n, self._chunk))


class _BadReadinto:
    def __init__(self, result):
        self.result = result

    def readinto(self, b):
        return self.result


def test_sha256_file_read_fallback():
    data = os.urandom(10_000)
    assert sha256_file(_ReadOnly(data, 777), bufsize=1000) == "sha256:" + hl(data).hex()


def test_sha256_file_errors(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("hello")
    with open(p, "r") as f, pytest.raises(TypeError):
        sha256_file(f)
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError):
            sha256_file(io.BytesIO(b"x"), bufsize=bad)
    with pytest.raises(BlockingIOError):
        sha256_file(_BadReadinto(None), bufsize=64)
    with pytest.raises(OSError):  # must never hash past the buffer
        sha256_file(_BadReadinto(65), bufsize=64)
    with pytest.raises(OSError):
        sha256_file(_BadReadinto(-1), bufsize=64)


# --------------------------------------------------------------------------
# Backend selection and the C API


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def test_auto_backend_matches_cpu():
    assert hashing.backend() in ALL_BACKENDS
    assert "portable" in AVAILABLE
    flags = _cpu_flags()
    if flags is None or sys.platform != "linux":
        pytest.skip("no /proc/cpuinfo")
    machine = platform.machine()
    if machine in ("x86_64", "AMD64", "i686") and {"sha_ni", "ssse3", "sse4_1"} <= flags:
        assert hashing.backend() == "x86-sha-ni"
    elif machine in ("aarch64", "arm64") and "sha2" in flags:
        assert hashing.backend() == "armv8-sha2"
    elif hashing.backend() != "portable":
        pytest.fail(f"{hashing.backend()} chosen but the CPU flags do not list it")


def test_force_backend_rejects_unknown():
    before = hashing.backend()
    assert lib.ls_sha256_force_backend(b"no-such-backend") == -1
    assert lib.ls_sha256_force_backend(b"") == -1
    assert hashing.backend() == before
    for name in ALL_BACKENDS:
        if name not in AVAILABLE:
            assert lib.ls_sha256_force_backend(name.encode()) == -1
            assert hashing.backend() == before
    assert lib.ls_sha256_force_backend(ffi.NULL) == 0
    assert hashing.backend() == before


def test_c_context_reuse_after_final():
    ctx = ffi.new("ls_sha256_ctx *")
    out = ffi.new("uint8_t[32]")
    for msg in (b"first message" * 9, b"", b"x" * 64):
        lib.ls_sha256_init(ctx)
        lib.ls_sha256_update(ctx, msg, len(msg))
        lib.ls_sha256_update(ctx, ffi.NULL, 0)
        lib.ls_sha256_final(ctx, out)
        assert bytes(ffi.buffer(out)) == hl(msg)


# --------------------------------------------------------------------------
# Threads


def test_update_releases_gil():
    """While one thread is inside ls_sha256_update the main thread keeps
    running Python code. With the GIL held during the call, no main-thread
    timestamp could fall in the middle half of the call."""
    data = bytes(128 << 20)
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        for _attempt in range(3):
            h = Sha256()
            started = threading.Event()
            window = []

            def worker():
                started.set()
                t0 = time.perf_counter()
                h.update(data)
                window.append((t0, time.perf_counter()))

            th = threading.Thread(target=worker)
            stamps = []
            th.start()
            started.wait()
            while th.is_alive():
                stamps.append(time.perf_counter())
            th.join()
            t0, t1 = window[0]
            lo, hi = t0 + 0.25 * (t1 - t0), t0 + 0.75 * (t1 - t0)
            if t1 - t0 > 0.02 and any(lo <= s <= hi for s in stamps):
                return
    finally:
        sys.setswitchinterval(old)
    pytest.fail("main thread never ran during a long update(): GIL not released")


def test_shared_object_concurrent_updates():
    """Updates of one object from several threads are serialised; since
    every thread feeds the same chunk, the result is order independent."""
    chunk = os.urandom(100_003)
    n_threads, n_updates = 4, 40
    h = Sha256()
    barrier = threading.Barrier(n_threads)

    def worker():
        barrier.wait()
        for _ in range(n_updates):
            h.update(chunk)
            h.digest()

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.digest() == hl(chunk * (n_threads * n_updates))


def test_independent_objects_in_threads():
    datas = [os.urandom(1_000_000 + i) for i in range(4)]
    results = [None] * len(datas)

    def worker(i):
        h = Sha256()
        for j in range(0, len(datas[i]), 65_537):
            h.update(datas[i][j : j + 65_537])
        results[i] = h.digest()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(datas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [hl(d) for d in datas]


# --------------------------------------------------------------------------
# The C API from C: tests/sha256_cavp.c against the CAVP files, natively and,
# when a cross compiler and qemu-user are installed, on aarch64 (the
# armv8-sha2 backend cannot run on an x86 host otherwise).


def _run_cavp_driver(tmp_path, compiler, runner, require, extra_flags=()):
    vectors = corpus_path("sha256")
    csrc = PROJECT_ROOT / "csrc"
    exe = tmp_path / "sha256_cavp"
    build = subprocess.run(
        [compiler, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", *extra_flags, "-I", str(csrc),
         str(csrc / "sha256.c"), str(PROJECT_ROOT / "tests" / "sha256_cavp.c"), "-o", str(exe)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([*runner, str(exe), str(vectors), "--require", require],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{require}: short 65, long 64, monte 100 records, 0 failures" in run.stdout
    assert "portable: short 65, long 64, monte 100 records, 0 failures" in run.stdout


def test_c_driver_native(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    _run_cavp_driver(tmp_path, cc, [], hashing.backend())


def test_c_driver_aarch64_qemu(tmp_path):
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if platform.machine() in ("aarch64", "arm64"):
        pytest.skip("native aarch64 host: test_c_driver_native covers armv8-sha2")
    if cc is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)")
    _run_cavp_driver(tmp_path, cc, [qemu], "armv8-sha2", extra_flags=["-static"])
