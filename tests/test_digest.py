"""Digests (layerstore.digest): the OCI descriptor.md "Digests" grammar and
registered algorithms, the Digest value type, hashing helpers, and the
streaming Verifier. Oracles: NIST CAVP SHA256ShortMsg (external corpus),
hashlib, and the digest fields of the OCI vectors."""
import hashlib
import json
import pickle
import re

import pytest

from conftest import corpus_path
from layerstore import digest as D
from layerstore.digest import Digest, Digester, Verifier, digest_of, is_digest, parse_digest
from layerstore.errors import DigestError, DigestMismatchError, LayerStoreError, SizeMismatchError

H64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256(b"")
H128 = hashlib.sha512(b"").hexdigest()


@pytest.mark.parametrize("text", [
    "sha256:" + H64,
    "sha512:" + H128,
    "sha256:" + "0" * 64,
])
def test_registered_accepted(text):
    d = parse_digest(text)
    assert isinstance(d, Digest) and isinstance(d, str)
    assert d == text and str(d) == text
    assert d.registered
    assert d.algorithm + ":" + d.hex == text
    assert d.encoded == d.hex
    assert len(d.raw) == len(d.hex) // 2
    assert d.short == d.hex[:12]
    assert Digest(text) == d == Digest(d.algorithm, d.hex)
    assert is_digest(text)


@pytest.mark.parametrize("text,kind", [
    ("", "format"),
    ("sha256", "format"),
    (":" + H64, "format"),
    ("sha256:", "format"),
    ("sha256:" + H64[:-1], "length"),
    ("sha256:" + H64 + "0", "length"),
    ("sha512:" + H64, "length"),
    ("sha256:" + H64.upper(), "format"),
    ("sha256:" + "g" * 64, "format"),
    ("SHA256:" + H64, "format"),
    ("sha256+b64:" + H64, "unsupported"),
    ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported"),
    ("sha256+foo+-b:" + H64, "format"),
    ("sha256:" + H64 + "\n", "length"),
    ("foo:bar baz", "format"),
])
def test_rejected(text, kind):
    with pytest.raises(DigestError) as info:
        parse_digest(text)
    err = info.value
    assert err.kind == kind
    assert isinstance(err, LayerStoreError) and isinstance(err, ValueError)
    assert repr(text) in str(err)  # the message names the input
    assert not is_digest(text)


@pytest.mark.parametrize("text", [
    "sha256+b64:c86f7763873b6c0aae22d963bab59b4f5debbed6685761b5951584f6efb0633b",
    "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
    "sha256+b64u.unknownlength:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564=",
    "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    "sha256.foo-bar:abc",
])
def test_unregistered_policy(text):
    with pytest.raises(DigestError) as info:
        parse_digest(text)
    assert info.value.kind == "unsupported"
    d = parse_digest(text, allow_unregistered=True)
    assert d == text and not d.registered
    assert Digest(text, allow_unregistered=True) == d
    assert is_digest(text, allow_unregistered=True)
    with pytest.raises(DigestError):
        d.raw
    with pytest.raises(DigestError):
        Verifier(d)
    with pytest.raises(DigestError):
        digest_of(b"", d.algorithm)


def test_algorithm_restriction():
    text = "sha512:" + H128
    with pytest.raises(DigestError) as info:
        parse_digest(text, algorithms=["sha256"])
    assert info.value.kind == "unsupported"
    assert parse_digest(text, algorithms=["sha512"]) == text


def test_type_errors():
    for value in (None, 5, b"sha256:" + H64.encode()):
        with pytest.raises(DigestError):
            parse_digest(value)


def test_value_type_behaviour():
    d = digest_of(b"")
    assert d == "sha256:" + H64
    assert repr(d) == f"Digest('sha256:{H64}')"
    assert {d: 1}["sha256:" + H64] == 1
    assert json.dumps({"digest": d}) == json.dumps({"digest": "sha256:" + H64})
    restored = pickle.loads(pickle.dumps(d))
    assert restored == d and type(restored) is Digest
    other = Digest("sha256+b64u:abc", allow_unregistered=True)
    assert pickle.loads(pickle.dumps(other)) == other
    assert Digest(d) is d
    assert Digest.parse("sha256:" + H64) == d
    with pytest.raises(AttributeError):
        d.algorithm = "sha512"


def test_from_bytes():
    raw = hashlib.sha256(b"abc").digest()
    d = Digest.from_bytes("sha256", raw)
    assert d == "sha256:" + raw.hex() and d.raw == raw
    assert Digest.from_bytes("sha512", hashlib.sha512(b"").digest()) == "sha512:" + H128
    with pytest.raises(DigestError) as info:
        Digest.from_bytes("sha256", raw[:-1])
    assert info.value.kind == "length"
    with pytest.raises(DigestError) as info:
        Digest.from_bytes("md5", b"\0" * 16)
    assert info.value.kind == "unsupported"


def _nist_short():
    path = corpus_path("sha256", "SHA256ShortMsg.rsp")
    text = path.read_text()
    cases = re.findall(r"Len = (\d+)\s+Msg = ([0-9a-f]+)\s+MD = ([0-9a-f]{64})", text)
    assert len(cases) == 65
    return [(bytes.fromhex(msg)[: int(bits) // 8], md) for bits, msg, md in cases]


def test_digest_of_nist_short_messages():
    for msg, md in _nist_short():
        assert digest_of(msg) == "sha256:" + md
        assert digest_of(memoryview(msg)) == "sha256:" + md
        d = Digester()
        for i in range(len(msg)):
            d.update(msg[i:i + 1])
        assert d.digest() == "sha256:" + md and d.size == len(msg)


def test_digest_of_sha512_and_errors():
    assert digest_of(b"abc", "sha512") == "sha512:" + hashlib.sha512(b"abc").hexdigest()
    with pytest.raises(TypeError):
        digest_of("text")
    with pytest.raises(DigestError):
        digest_of(b"", "md5")


def test_digester_streaming():
    data = bytes(range(256)) * 1000
    d = Digester("sha512")
    for off in range(0, len(data), 4099):
        assert d.write(data[off:off + 4099]) == len(data[off:off + 4099])
    assert d.size == len(data)
    assert d.digest() == digest_of(data, "sha512")
    assert d.digest() == digest_of(data, "sha512")  # may be read more than once
    with pytest.raises(TypeError):
        d.update("text")


def test_verifier_ok_and_mismatch():
    data = b"hello layer" * 100
    expected = digest_of(data)
    v = Verifier(str(expected), size=len(data))
    for off in range(0, len(data), 7):
        v.update(data[off:off + 7])
    assert v.verified() and v.size == len(data)
    assert v.verify() == expected

    v = Verifier(expected)
    v.update(data[:-1] + b"X")
    assert not v.verified()
    with pytest.raises(DigestMismatchError) as info:
        v.verify()
    assert info.value.expected == expected and info.value.actual == digest_of(data[:-1] + b"X")


def test_verifier_size():
    data = b"0123456789"
    v = Verifier(digest_of(data), size=5)
    with pytest.raises(SizeMismatchError) as info:
        v.update(data)  # detected while streaming
    assert (info.value.expected, info.value.actual) == (5, 10)
    v = Verifier(digest_of(data), size=11)
    v.update(data)
    assert not v.verified()
    with pytest.raises(SizeMismatchError):
        v.verify()
    with pytest.raises(ValueError):
        Verifier(digest_of(data), size=-1)
    with pytest.raises(DigestError):
        Verifier("sha256:xyz")


def test_hash_factory_swap():
    calls = []

    class Counting:
        def __init__(self):
            self._h = hashlib.sha256()

        def update(self, data):
            calls.append(len(data))
            self._h.update(data)

        def digest(self):
            return self._h.digest()

    try:
        D.set_hash_factory("sha256", Counting)
        assert D.hash_factory("sha256") is Counting
        assert digest_of(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
        v = Verifier(digest_of(b"xyz"))
        v.update(b"xyz")
        v.verify()
        assert calls == [3, 3, 3]
    finally:
        D.set_hash_factory("sha256", None)
    assert D.hash_factory("sha256") is hashlib.sha256
    with pytest.raises(DigestError):
        D.set_hash_factory("md5", Counting)


def test_store_sha256_is_a_drop_in_factory():
    hashing = pytest.importorskip("layerstore.hashing")
    try:
        D.set_hash_factory("sha256", hashing.Sha256)
        assert digest_of(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    finally:
        D.set_hash_factory("sha256", None)


def test_oci_vector_digest_fields():
    """The digest field of every OCI descriptor-vector case: valid under the
    document policy exactly when the case does not fail on its digest."""
    path = corpus_path("oci", "vectors.json")
    data = json.loads(path.read_text())
    group = next(g for g in data["groups"] if g["id"].endswith("TestDescriptor"))
    # Cases that fail because of their digest: no algorithm, no encoded part,
    # uppercase algorithm, uppercase sha256 hex, repeated separators.
    digest_failures = {12, 13, 14, 15, 26}
    seen = 0
    for i, case in enumerate(group["cases"]):
        parsed = case["parsed"]
        if not isinstance(parsed, dict) or "digest" not in parsed:
            continue
        seen += 1
        assert case["expect"] == "fail" or i not in digest_failures
        ok = i not in digest_failures
        assert is_digest(parsed["digest"], allow_unregistered=True) == ok, case["comment"]
    assert seen == 30
