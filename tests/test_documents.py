"""OCI/Docker documents (layerstore.manifest, layerstore.mediatypes).

* Every case of the external ``oci/vectors.json`` (image-spec schema tests
  and spec examples) gets its expected pass/fail verdict from
  ``parse_document`` with the group's validator media type; failures must
  name the expected field. Backwards-compatibility cases are real Docker
  documents: their SHA-256 over the exact bytes is checked, they are
  validated after the listed media-type substitutions (as upstream does),
  and also as the Docker documents they are.
* The real images under ``corpus/images`` (OCI layouts, oci-archives and the
  configs in docker-archives) parse, their digests equal their file names,
  layer counts match diff_ids, and platform selection in the multi-arch
  indexes picks the expected manifests.
"""
import base64
import hashlib
import json
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CORPUS, corpus_path
from layerstore import mediatypes as mt
from layerstore.digest import Digest, digest_of
from layerstore.errors import (DigestMismatchError, InvalidDocumentError, LayerStoreError,
                               PlatformError, SizeMismatchError)
from layerstore.manifest import (Descriptor, ImageConfig, ImageIndex, ImageLayout, Manifest, Platform,
                                 check_manifest_config, host_platform, parse_config, parse_descriptor,
                                 parse_document, parse_index, parse_manifest)

VECTORS = CORPUS / "oci" / "vectors.json"
IMAGES = CORPUS / "images"

# Deliberate differences from an expected verdict: (group id, index) -> reason.
# There are none; the mapping exists so one would have to be listed here.
DELIBERATE_DIFFERENCES = {}

# For each "fail" case, the field the error must name. Where a document has
# several faults (the upstream config cases 3-5 also have "os": 123), the
# first one reported is listed.
FAIL_FIELDS = {
    ("image-spec:schema/config_test.go:TestConfig", 0): "os",
    ("image-spec:schema/config_test.go:TestConfig", 1): "variant",
    ("image-spec:schema/config_test.go:TestConfig", 2): "config.User",
    ("image-spec:schema/config_test.go:TestConfig", 3): "os",
    ("image-spec:schema/config_test.go:TestConfig", 4): "os",
    ("image-spec:schema/config_test.go:TestConfig", 5): "os",
    ("image-spec:schema/config_test.go:TestConfig", 6): "(document)",
    ("image-spec:schema/config_test.go:TestConfig", 9): "config.Env[0]",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 2): "mediaType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 3): "mediaType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 4): "mediaType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 5): "mediaType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 7): "mediaType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 8): "mediaType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 9): "size",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 10): "size",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 11): "digest",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 12): "digest",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 13): "digest",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 14): "digest",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 15): "digest",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 17): "urls[0]",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 19): "artifactType",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 26): "digest",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 29): "data",
    ("image-spec:schema/descriptor_test.go:TestDescriptor", 30): "size",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 0): "manifests[0].mediaType",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 1): "manifests[0].size",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 2): "manifests[0].digest",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 3): "manifests[0].platform.architecture",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 4): "manifests[0].mediaType",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 5): "manifests[0].mediaType",
    ("image-spec:schema/imageindex_test.go:TestImageIndex", 11): "subject",
    ("image-spec:schema/imagelayout_test.go:TestImageLayout", 0): "(document)",
    ("image-spec:schema/manifest_test.go:TestManifest", 0): "config.mediaType",
    ("image-spec:schema/manifest_test.go:TestManifest", 1): "(document)",
    ("image-spec:schema/manifest_test.go:TestManifest", 2): "layers[0].size",
    ("image-spec:schema/manifest_test.go:TestManifest", 5): "layers",
    ("image-spec:schema/manifest_test.go:TestManifest", 8): "subject",
    ("image-spec:schema/manifest_test.go:TestManifest", 9): "layers[0].digest",
}


def _load():
    if not VECTORS.exists():
        return None
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def _params():
    data = _load()
    if data is None:
        return [pytest.param(None, None, None, None, id="corpus-missing")]
    out = []
    for group in data["groups"]:
        for i, case in enumerate(group["cases"]):
            out.append(pytest.param(data, group, i, case, id=f"{group['id']}[{i}]"))
    return out


def _verdict(raw, media_type):
    try:
        doc = parse_document(raw, media_type)
    except InvalidDocumentError as err:
        return "fail", err
    return "pass", doc


@pytest.mark.parametrize("data,group,index,case", _params())
def test_oci_vector(data, group, index, case):
    corpus_path("oci", "vectors.json")
    media_type = group.get("validator_media_type") or case["media_type"]
    raw = case["document"].encode("utf-8")
    if "digest_of_document" in case:
        # A real Docker document: the digest is over the exact bytes ...
        assert digest_of(raw) == case["digest_of_document"]
        assert hashlib.sha256(raw).hexdigest() == case["digest_of_document"].split(":")[1]
        # ... it is valid as the Docker document it is ...
        docker_type = {v: k for k, v in data["_about"]["compat_media_type_map"].items()}[media_type]
        doc = parse_document(raw, docker_type)
        assert doc.digest == case["digest_of_document"]
        assert doc.raw == raw
        # ... and upstream validates it after replacing the Docker media types.
        text = case["document"]
        for old, new in data["_about"]["compat_media_type_map"].items():
            text = text.replace(old, new)
        raw = text.encode("utf-8")
    verdict, result = _verdict(raw, media_type)
    expected = case["expect"]
    key = (group["id"], index)
    if key in DELIBERATE_DIFFERENCES:
        assert verdict != expected, f"listed difference no longer differs: {DELIBERATE_DIFFERENCES[key]}"
        return
    assert verdict == expected, f"{case.get('comment') or case.get('title')}: {result}"
    if verdict == "fail":
        assert isinstance(result, LayerStoreError)
        assert result.field == FAIL_FIELDS[key], str(result)
        assert result.media_type == media_type
    elif not isinstance(result, Descriptor):
        assert result.digest == digest_of(raw)
        assert result.raw == raw


def test_oci_vector_inventory():
    corpus_path("oci", "vectors.json")
    data = _load()
    cases = [(g, i, c) for g in data["groups"] for i, c in enumerate(g["cases"])]
    assert len(cases) == 81
    for g, i, c in cases:
        assert g.get("validator_media_type") or c.get("media_type")
    fails = {(g["id"], i) for g, i, c in cases if c["expect"] == "fail"}
    assert fails == set(FAIL_FIELDS)


# --- real images ------------------------------------------------------------------

LAYOUTS = ["small-amd64-umoci.oci-gzip", "small-amd64.oci-zstd", "small-multiarch.oci-gzip",
           "small-multiarch.oci-zstd"]
OCI_ARCHIVES = ["small-amd64.skopeo.oci-archive-gzip.tar", "small-multiarch.skopeo-all.oci-archive-gzip.tar"]
DOCKER_ARCHIVES = ["small-amd64.podman.docker-archive.tar", "small-amd64-vfs.podman.docker-archive.tar",
                   "small-arm64.podman.docker-archive.tar", "small-multi.podman.docker-archive.tar"]

# Manifests reachable from each artifact (README.md of the corpus).
EXPECTED_MANIFESTS = {
    "small-amd64-umoci.oci-gzip": {
        "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af": 4,
        "sha256:cb8afc53db0167911e92eb2ab7d16059d0ec12094d0157e869696ae23fd46d8a": 5},
    "small-amd64.oci-zstd": {"sha256:fda7b156b4f6859a92da182937713830035ea45f55d19c8851205bf511915ed0": 4},
    "small-multiarch.oci-gzip": {
        "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af": 4,
        "sha256:5457c57d4d4d2820e3e7ac23225c24e8dc6a413d685f1cbae54ff927a78296ac": 2},
    "small-multiarch.oci-zstd": {
        "sha256:fda7b156b4f6859a92da182937713830035ea45f55d19c8851205bf511915ed0": 4,
        "sha256:99ad0dee83588d9b3b439c143fab8319dae4afd27c644ea16d83cc5a572eea9b": 2},
    "small-amd64.skopeo.oci-archive-gzip.tar": {
        "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af": 4},
    "small-multiarch.skopeo-all.oci-archive-gzip.tar": {
        "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af": 4,
        "sha256:5457c57d4d4d2820e3e7ac23225c24e8dc6a413d685f1cbae54ff927a78296ac": 2},
}
MULTIARCH = {
    "small-multiarch.oci-gzip": (
        "sha256:0c73e3a6da15988bc8abf27c683f7ac16d35b729f83d7e52b1438a873f89a10f",
        "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af",
        "sha256:5457c57d4d4d2820e3e7ac23225c24e8dc6a413d685f1cbae54ff927a78296ac"),
    "small-multiarch.oci-zstd": (
        "sha256:4b1372195de22fadafbb06519d27df0b94afd27b16b0cf80339621816e0cd7ea",
        "sha256:fda7b156b4f6859a92da182937713830035ea45f55d19c8851205bf511915ed0",
        "sha256:99ad0dee83588d9b3b439c143fab8319dae4afd27c644ea16d83cc5a572eea9b"),
}


class _LayoutBlobs:
    def __init__(self, root):
        self.root = root

    def top(self, name):
        return (self.root / name).read_bytes()

    def get(self, digest):
        path = self.root / "blobs" / digest.algorithm / digest.encoded
        raw = path.read_bytes()
        assert digest_of(raw) == digest == f"{path.parent.name}:{path.name}"
        return raw


class _ArchiveBlobs:
    def __init__(self, tar):
        self.tar = tar

    def top(self, name):
        return self.tar.extractfile(name).read()

    def get(self, digest):
        name = f"blobs/{digest.algorithm}/{digest.encoded}"
        raw = self.tar.extractfile(name).read()
        assert digest_of(raw) == digest
        return raw


def _walk(blobs, descriptor, found, compression):
    raw = blobs.get(descriptor.digest)
    assert len(raw) == descriptor.size
    doc = parse_document(raw, descriptor.media_type)
    assert doc.digest == descriptor.digest and doc.raw == raw
    assert doc.media_type == descriptor.media_type
    if isinstance(doc, ImageIndex):
        for child in doc.manifests:
            _walk(blobs, child, found, compression)
        return
    assert isinstance(doc, Manifest)
    config_raw = blobs.get(doc.config.digest)
    config = parse_config(config_raw, doc.config.media_type)
    check_manifest_config(doc, config)
    assert len(doc.layers) == len(config.diff_ids) == len(config.non_empty_history)
    if descriptor.platform is not None:
        assert Platform.parse(f"{config.os}/{config.architecture}").matches(descriptor.platform)
    for layer in doc.layers:
        assert mt.is_layer(layer.media_type)
        assert mt.layer_compression(layer.media_type) == compression
        assert len(blobs.get(layer.digest)) == layer.size
    found[doc.digest] = len(doc.layers)


def _check_tree(name, blobs):
    index = parse_document(blobs.top("index.json"))  # no mediaType field: inferred
    assert isinstance(index, ImageIndex) and index.media_type == mt.OCI_IMAGE_INDEX
    layout = parse_document(blobs.top("oci-layout"), mt.OCI_LAYOUT_HEADER)
    assert isinstance(layout, ImageLayout) and layout.image_layout_version == "1.0.0"
    found = {}
    compression = "zstd" if "zstd" in name else "gzip"
    for d in index.manifests:
        assert d.annotations["org.opencontainers.image.ref.name"]
        _walk(blobs, d, found, compression)
    assert found == EXPECTED_MANIFESTS[name]


@pytest.mark.parametrize("name", LAYOUTS)
def test_real_oci_layout(name):
    root = corpus_path("images", name)
    _check_tree(name, _LayoutBlobs(root))


@pytest.mark.parametrize("name", OCI_ARCHIVES)
def test_real_oci_archive(name):
    path = corpus_path("images", name)
    with tarfile.open(path) as tar:
        _check_tree(name, _ArchiveBlobs(tar))


@pytest.mark.parametrize("name", DOCKER_ARCHIVES)
def test_real_docker_archive_configs(name):
    path = corpus_path("images", name)
    with tarfile.open(path) as tar:
        images = json.loads(tar.extractfile("manifest.json").read())
        assert images
        for image in images:
            raw = tar.extractfile(image["Config"]).read()
            config = parse_config(raw, mt.DOCKER_CONFIG)
            assert config.digest.encoded == image["Config"].rsplit("/", 1)[-1][:-len(".json")]
            assert len(config.diff_ids) == len(image["Layers"])
            # Uncompressed layers: each layer file's digest is its diff ID.
            for diff_id, layer_name in zip(config.diff_ids, image["Layers"]):
                member = tar.getmember(layer_name)
                if member.issym():
                    continue  # legacy <id>/layer.tar links to <diffID>.tar
                assert digest_of(tar.extractfile(member).read()) == diff_id


@pytest.mark.parametrize("name", sorted(MULTIARCH))
def test_platform_selection_multiarch(name):
    root = corpus_path("images", name)
    blobs = _LayoutBlobs(root)
    index_digest, amd64, arm64 = MULTIARCH[name]
    top = parse_index(blobs.top("index.json"))
    assert [d.digest for d in top.manifests] == [index_digest]
    index = parse_index(blobs.get(top.manifests[0].digest), top.manifests[0].media_type)
    assert index.digest == index_digest
    assert index.select("linux/amd64").digest == amd64
    assert index.select("linux/arm64/v8").digest == arm64
    assert index.select("linux/arm64").digest == arm64
    assert index.select(Platform("linux", "aarch64")).digest == arm64
    assert index.select("linux/x86_64").digest == amd64
    assert index.select("linux/amd64", strict=True).digest == amd64
    assert index.select("linux/arm64", strict=True).digest == arm64
    assert index.select("linux/arm/v7") is None
    assert index.select("linux/s390x") is None
    assert index.select("windows/amd64") is None
    assert [d.digest for d in index.matching("linux/arm64/v8.2")] == [arm64]


# --- unit checks ----------------------------------------------------------------------

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
EMPTY_JSON = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def _manifest(**over):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_IMAGE_MANIFEST,
        "config": {"mediaType": mt.OCI_IMAGE_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_TAR_GZIP, "digest": D2, "size": 20}] * 3,
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def _index(**over):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_IMAGE_INDEX,
        "manifests": [{"mediaType": mt.OCI_IMAGE_MANIFEST, "digest": D1, "size": 10,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def _config(**over):
    doc = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [D1]}}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def _b(obj):
    return json.dumps(obj).encode()


def _fails(raw, media_type=None, field=None):
    with pytest.raises(InvalidDocumentError) as info:
        parse_document(raw, media_type)
    if field is not None:
        assert info.value.field == field, str(info.value)
    assert isinstance(info.value, LayerStoreError) and isinstance(info.value, ValueError)
    return info.value


def test_digest_is_of_exact_bytes():
    obj = _manifest()
    compact = json.dumps(obj, separators=(",", ":")).encode()
    pretty = json.dumps(obj, indent=3).encode()
    a, b = parse_manifest(compact), parse_manifest(pretty)
    assert a.digest == digest_of(compact) and b.digest == digest_of(pretty)
    assert a.digest != b.digest and a != b
    assert a.size == len(compact)
    assert a.descriptor().to_json() == {"mediaType": mt.OCI_IMAGE_MANIFEST, "digest": a.digest,
                                        "size": len(compact)}
    assert parse_manifest(bytearray(compact)) == a and hash(parse_manifest(compact)) == hash(a)
    with pytest.raises(TypeError):
        parse_document(compact.decode())


def test_manifest_fields():
    m = parse_document(_b(_manifest(annotations={"a": "b"}, artifactType="application/x.y",
                                    subject={"mediaType": mt.OCI_IMAGE_MANIFEST, "digest": D2, "size": 5})))
    assert isinstance(m, Manifest)
    assert m.media_type == mt.OCI_IMAGE_MANIFEST and m.schema_version == 2
    assert m.config.digest == D1 and isinstance(m.config.digest, Digest)
    assert [layer.size for layer in m.layers] == [20, 20, 20]
    assert m.annotations == {"a": "b"} and m.artifact_type == "application/x.y"
    assert m.subject.size == 5


def test_kind_detection_and_conflicts():
    assert isinstance(parse_document(_b(_manifest(mediaType=None))), Manifest)
    assert isinstance(parse_document(_b(_index(mediaType=None))), ImageIndex)
    assert isinstance(parse_document(_b(_config())), ImageConfig)
    assert isinstance(parse_document(_b({"imageLayoutVersion": "1.0.0"})), ImageLayout)
    # given and document media types must agree
    _fails(_b(_manifest()), mt.DOCKER_MANIFEST, "mediaType")
    _fails(_b(_manifest()), mt.OCI_IMAGE_INDEX, "mediaType")
    _fails(_b(_index()), mt.OCI_IMAGE_MANIFEST, "mediaType")
    assert parse_document(_b(_manifest()), mt.OCI_IMAGE_MANIFEST + "; charset=utf-8")
    # ambiguous documents
    _fails(_b(dict(_index(mediaType=None), layers=[])), None, "(document)")
    _fails(_b(dict(_manifest(), manifests=_index()["manifests"])), None, "manifests")
    _fails(_b(dict(_index(), config=_manifest()["config"])), None, "config")
    _fails(_b({"foo": 1}), None, "(document)")
    _fails(_b([1, 2]), None, "(document)")
    # unknown types
    _fails(_b(_manifest(mediaType="application/vnd.oci.artifact.manifest.v1+json")), None, "mediaType")
    _fails(_b(_manifest()), mt.OCI_LAYER_TAR, "(document)")
    # Docker documents must carry their media type
    _fails(_b(_manifest(mediaType=None)), mt.DOCKER_MANIFEST, "mediaType")
    docker = _manifest(mediaType=mt.DOCKER_MANIFEST)
    assert parse_document(_b(docker)).media_type == mt.DOCKER_MANIFEST
    assert parse_document(_b(_index(mediaType=mt.DOCKER_MANIFEST_LIST))).media_type == mt.DOCKER_MANIFEST_LIST


def test_schema1_refused():
    _fails(_b({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}))
    _fails(_b(_manifest()), mt.DOCKER_SCHEMA1_SIGNED_MANIFEST)
    _fails(_b(_manifest(mediaType=mt.DOCKER_SCHEMA1_MANIFEST)), None, "mediaType")
    _fails(_b(_manifest(schemaVersion=3)), None, "schemaVersion")
    _fails(_b(_manifest(schemaVersion="2")), None, "schemaVersion")


@pytest.mark.parametrize("raw,why", [
    (b'{"schemaVersion": 2, "schemaVersion": 2, "config": {}, "layers": []}', "duplicate"),
    (b'\xef\xbb\xbf' + _b(_manifest()), "byte order mark"),
    (b'{"a": "\xff"}', "UTF-8"),
    (b'{"size": NaN}', "NaN"),
    (b"", "invalid JSON"),
])
def test_json_strictness(raw, why):
    err = _fails(raw, mt.OCI_IMAGE_MANIFEST, "(document)")
    assert why in str(err)


@pytest.mark.parametrize("doc,media_type,field", [
    (_manifest(layers=[_manifest()["layers"][0]] * 2 + [{"mediaType": mt.OCI_LAYER_TAR, "digest": "sha256:x", "size": 1}]),
     None, "layers[2].digest"),
    (_manifest(layers=[{"mediaType": mt.OCI_LAYER_TAR, "digest": D1, "size": 1.0}]), None, "layers[0].size"),
    (_manifest(layers=[{"mediaType": mt.OCI_LAYER_TAR, "digest": D1, "size": True}]), None, "layers[0].size"),
    (_manifest(layers=[{"mediaType": mt.OCI_LAYER_TAR, "digest": D1, "size": 2 ** 63}]), None, "layers[0].size"),
    (_manifest(layers="x"), None, "layers"),
    (_manifest(config=None), None, "config"),
    (_manifest(annotations={"k": 1}), None, 'annotations.k'),
    (_manifest(annotations={"org.example": None}), None, 'annotations["org.example"]'),
    (_manifest(annotations=[]), None, "annotations"),
    (_manifest(artifactType="nope"), None, "artifactType"),
    (_manifest(layers=[{"mediaType": mt.OCI_LAYER_TAR, "digest": D1, "size": 1, "urls": ["a b"]}]),
     None, "layers[0].urls[0]"),
    (_manifest(layers=[{"mediaType": mt.OCI_LAYER_TAR, "digest": D1, "size": 1, "urls": "http://x"}]),
     None, "layers[0].urls"),
    (_index(manifests=[{"mediaType": mt.OCI_IMAGE_MANIFEST, "digest": D1, "size": 1,
                        "platform": {"architecture": "arm", "os": "linux", "os.version": 10}}]),
     None, 'manifests[0].platform["os.version"]'),
    (_index(manifests=[{"mediaType": mt.OCI_IMAGE_MANIFEST, "digest": D1, "size": 1,
                        "platform": {"architecture": "arm", "os": "linux", "os.features": [1]}}]),
     None, 'manifests[0].platform["os.features"][0]'),
    (_index(manifests=[{"mediaType": mt.OCI_IMAGE_MANIFEST, "digest": D1, "size": -1}]), None, "manifests[0].size"),
    (_index(manifests={}), None, "manifests"),
    (_index(manifests=None), None, "manifests"),
    (_config(config={"Env": ["A=1", "B"]}), mt.OCI_IMAGE_CONFIG, "config.Env[1]"),
    (_config(config={"Env": [7353]}), mt.OCI_IMAGE_CONFIG, "config.Env[0]"),
    (_config(config={"Env": None}), mt.OCI_IMAGE_CONFIG, "config.Env"),
    (_config(config={"Volumes": ["/a"]}), mt.OCI_IMAGE_CONFIG, "config.Volumes"),
    (_config(config={"ExposedPorts": {"80/tcp": "x"}}), mt.OCI_IMAGE_CONFIG, 'config.ExposedPorts["80/tcp"]'),
    (_config(config={"Labels": {"a": 1}}), mt.OCI_IMAGE_CONFIG, "config.Labels.a"),
    (_config(config={"ArgsEscaped": "yes"}), mt.OCI_IMAGE_CONFIG, "config.ArgsEscaped"),
    (_config(history="should be an array"), mt.OCI_IMAGE_CONFIG, "history"),
    (_config(history=[{"created": "2015-10-31T22:22:56Z"}, {"created": "2015-13-31T22:22:56Z"}]),
     mt.OCI_IMAGE_CONFIG, "history[1].created"),
    (_config(history=[{"empty_layer": "true"}]), mt.OCI_IMAGE_CONFIG, "history[0].empty_layer"),
    (_config(created="2015-10-31 22:22:56"), mt.OCI_IMAGE_CONFIG, "created"),
    (_config(created="2015-02-29T00:00:00Z"), mt.OCI_IMAGE_CONFIG, "created"),
    (_config(rootfs={"type": "layers", "diff_ids": ["sha256:abc"]}), mt.OCI_IMAGE_CONFIG, "rootfs.diff_ids[0]"),
    (_config(rootfs={"type": "tarball", "diff_ids": []}), mt.OCI_IMAGE_CONFIG, "rootfs.type"),
    (_config(rootfs={"type": "layers"}), mt.OCI_IMAGE_CONFIG, "rootfs.diff_ids"),
    (_config(rootfs=None), mt.OCI_IMAGE_CONFIG, "rootfs"),
    (_config(architecture=None), mt.OCI_IMAGE_CONFIG, "architecture"),
    (_config(**{"os.features": "x"}), mt.OCI_IMAGE_CONFIG, '["os.features"]'),
    ({"imageLayoutVersion": "1.1.0"}, mt.OCI_LAYOUT_HEADER, "imageLayoutVersion"),
])
def test_field_paths(doc, media_type, field):
    err = _fails(_b(doc), media_type, field)
    assert err.problem in str(err)


@pytest.mark.parametrize("created", [
    "2015-10-31T22:22:56.015925234Z", "2015-10-31t22:22:56z", "2016-02-29T00:00:00+05:30",
    "0001-01-01T00:00:00Z", "2015-06-30T23:59:60Z"])
def test_rfc3339_accepted(created):
    assert parse_config(_b(_config(created=created))).created == created


def test_config_fields_and_docker_nulls():
    cfg = parse_config(_b(_config(variant="v8", architecture="arm64", created="2020-01-01T00:00:00Z",
                                  history=[{"created_by": "x", "empty_layer": True}, {"comment": "y"}])))
    assert cfg.platform == Platform("linux", "arm64", "v8")
    assert cfg.diff_ids == (D1,)
    assert [h.empty_layer for h in cfg.history] == [True, False]
    assert len(cfg.non_empty_history) == 1
    docker = _config(config={"Env": None, "Cmd": None, "ExposedPorts": None, "Volumes": None, "Labels": None})
    assert parse_config(_b(docker), mt.DOCKER_CONFIG).config["Env"] is None
    _fails(_b(docker), mt.OCI_IMAGE_CONFIG, "config.ExposedPorts")
    null_config = dict(_config(), config=None)
    assert parse_config(_b(null_config), mt.DOCKER_CONFIG).config is None
    _fails(_b(null_config), mt.OCI_IMAGE_CONFIG, "config")
    null_diff_ids = dict(_config(), rootfs={"type": "layers", "diff_ids": None})
    assert parse_config(_b(null_diff_ids), mt.DOCKER_CONFIG).diff_ids == ()
    _fails(_b(null_diff_ids), mt.OCI_IMAGE_CONFIG, "rootfs.diff_ids")


def test_descriptor_data():
    content = b"https://github.com/opencontainers\n"
    good = {"mediaType": "text/plain", "size": len(content), "digest": digest_of(content),
            "data": base64.b64encode(content).decode()}
    d = parse_descriptor(_b(good))
    assert d.data == content and d.size == 34
    assert Descriptor.from_json(d.to_json()) == d
    _fails(_b(dict(good, size=33)), mt.OCI_DESCRIPTOR, "data")
    _fails(_b(dict(good, digest=D1)), mt.OCI_DESCRIPTOR, "data")
    _fails(_b(dict(good, data="!!!!")), mt.OCI_DESCRIPTOR, "data")
    # an unregistered algorithm cannot be checked, so its data is accepted
    other = dict(good, digest="sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564")
    assert parse_descriptor(_b(other)).digest.registered is False
    empty = {"mediaType": mt.OCI_EMPTY, "digest": EMPTY_JSON, "size": 2, "data": "e30="}
    assert parse_descriptor(_b(empty)).data == b"{}"


def test_descriptor_from_json_paths():
    with pytest.raises(InvalidDocumentError) as info:
        Descriptor.from_json({"mediaType": "a/b", "digest": D1, "size": "1"}, field_path="layers[4]")
    assert info.value.field == "layers[4].size"


def test_check_manifest_config():
    config_raw = _b(_config(rootfs={"type": "layers", "diff_ids": [D1, D2, D1]}))
    config = parse_config(config_raw)
    manifest = parse_manifest(_b(_manifest(config={"mediaType": mt.OCI_IMAGE_CONFIG,
                                                   "digest": config.digest, "size": len(config_raw)})))
    check_manifest_config(manifest, config)
    two = parse_manifest(_b(_manifest(config=manifest.json["config"], layers=manifest.json["layers"][:2])))
    with pytest.raises(InvalidDocumentError) as info:
        check_manifest_config(two, config)
    assert info.value.field == "layers"
    with pytest.raises(DigestMismatchError):
        check_manifest_config(parse_manifest(_b(_manifest())), config)
    wrong_size = parse_manifest(_b(_manifest(config=dict(manifest.json["config"], size=1))))
    with pytest.raises(SizeMismatchError):
        check_manifest_config(wrong_size, config)


# --- platforms ------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("linux/amd64", ("linux", "amd64", "")),
    ("linux/x86_64", ("linux", "amd64", "")),
    ("Linux/X86-64/v1", ("linux", "amd64", "")),
    ("linux/amd64/v3", ("linux", "amd64", "v3")),
    ("linux/aarch64", ("linux", "arm64", "v8")),
    ("linux/arm64", ("linux", "arm64", "v8")),
    ("linux/arm64/8", ("linux", "arm64", "v8")),
    ("linux/arm64/v8.0", ("linux", "arm64", "v8")),
    ("linux/arm64/v8.2", ("linux", "arm64", "v8.2")),
    ("linux/arm", ("linux", "arm", "v7")),
    ("linux/arm/6", ("linux", "arm", "v6")),
    ("linux/armhf", ("linux", "arm", "v7")),
    ("linux/armel", ("linux", "arm", "v6")),
    ("linux/i386", ("linux", "386", "")),
    ("macos/arm64", ("darwin", "arm64", "v8")),
    ("windows/amd64", ("windows", "amd64", "")),
])
def test_platform_parse_normalize(spec, expected):
    p = Platform.parse(spec)
    assert (p.os, p.architecture, p.variant) == expected
    assert str(p) == "/".join(x for x in expected if x)


@pytest.mark.parametrize("bad", ["linux", "linux/", "linux/amd64/v1/x", "linux/am d64", 5])
def test_platform_parse_errors(bad):
    with pytest.raises(PlatformError):
        Platform.parse(bad)


def test_platform_matching():
    assert Platform.parse("linux/arm64").matches(Platform("linux", "arm64"))
    assert Platform("linux", "arm64").matches(Platform("linux", "arm64", "v8"))
    assert not Platform.parse("linux/arm64").matches(Platform("linux", "arm", "v7"))
    assert Platform.parse("linux/arm64").compatible(Platform("linux", "arm", "v7"))
    assert Platform.parse("linux/arm/v7").compatible(Platform("linux", "arm", "v5"))
    assert not Platform.parse("linux/arm/v6").compatible(Platform("linux", "arm", "v7"))
    assert Platform.parse("linux/amd64").compatible(Platform("linux", "386"))
    assert [str(p) for p in Platform.parse("linux/amd64/v3").compatible_platforms()] == [
        "linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]
    assert [str(p) for p in Platform.parse("linux/arm64/v9.1").compatible_platforms()][:4] == [
        "linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6", "linux/arm64/v8.5"]
    assert Platform.parse("linux/arm64/v8.2").rank(Platform("linux", "arm64")) == 2
    assert not Platform("linux", "amd64").compatible(Platform("windows", "amd64"))
    # os.features of the candidate must be a subset of the wanted ones
    win = Platform("windows", "amd64", os_version="10.0.17763.1234", os_features=("win32k",))
    assert win.matches(Platform("windows", "amd64", os_features=("win32k",)))
    assert not Platform("windows", "amd64").matches(Platform("windows", "amd64", os_features=("win32k",)))
    assert win.matches(Platform("windows", "amd64", os_version="10.0.17763.999"))
    assert not win.matches(Platform("windows", "amd64", os_version="10.0.20348.1"))
    assert Platform.from_json(win.to_json()) == win


def test_index_select_preference():
    def entry(arch, variant=None):
        plat = {"architecture": arch, "os": "linux"}
        if variant:
            plat["variant"] = variant
        return {"mediaType": mt.OCI_IMAGE_MANIFEST, "size": 1, "platform": plat,
                "digest": digest_of(f"{arch}{variant}".encode())}
    index = parse_index(_b(_index(manifests=[
        entry("arm", "v5"), entry("arm", "v7"), entry("386"), entry("amd64"),
        {"mediaType": mt.OCI_IMAGE_MANIFEST, "size": 1, "digest": D1}])))
    assert index.select("linux/arm/v7").platform.variant == "v7"
    assert index.select("linux/arm/v6").platform.variant == "v5"
    assert index.select("linux/arm64").platform.variant == "v7"
    assert index.select("linux/arm64", strict=True) is None
    assert index.select("linux/amd64/v2").platform.architecture == "amd64"
    assert [d.platform.architecture for d in index.matching("linux/amd64")] == ["amd64", "386"]


def test_host_platform():
    p = host_platform()
    assert p == p.normalized()
    assert p.os and p.architecture
    if p.architecture == "arm64":
        assert p.variant == "v8"


# --- media types ---------------------------------------------------------------------

def test_mediatypes():
    assert mt.is_manifest(mt.OCI_IMAGE_MANIFEST) and mt.is_manifest(mt.DOCKER_MANIFEST)
    assert not mt.is_manifest(mt.OCI_IMAGE_INDEX)
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST) and mt.is_index(mt.OCI_IMAGE_INDEX)
    assert mt.is_config(mt.DOCKER_CONFIG) and not mt.is_config(mt.OCI_EMPTY)
    assert mt.is_schema1(mt.DOCKER_SCHEMA1_SIGNED_MANIFEST)
    expected = {
        mt.OCI_LAYER_TAR: "none", mt.OCI_LAYER_TAR_GZIP: "gzip", mt.OCI_LAYER_TAR_ZSTD: "zstd",
        mt.OCI_LAYER_NONDISTRIBUTABLE_TAR: "none", mt.OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP: "gzip",
        mt.OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD: "zstd", mt.DOCKER_LAYER_TAR: "none",
        mt.DOCKER_LAYER_TAR_GZIP: "gzip", mt.DOCKER_FOREIGN_LAYER_TAR_GZIP: "gzip",
        mt.DOCKER_FOREIGN_LAYER_TAR: "none",
    }
    for media_type, compression in expected.items():
        assert mt.is_layer(media_type)
        assert mt.layer_compression(media_type) == compression
    assert set(expected) == mt.LAYER_TYPES
    assert mt.is_nondistributable(mt.DOCKER_FOREIGN_LAYER_TAR_GZIP)
    assert not mt.is_nondistributable(mt.OCI_LAYER_TAR_GZIP)
    for other in (mt.OCI_IMAGE_MANIFEST, mt.OCI_IMAGE_CONFIG, "application/vnd.oci.image.layer.v1.tar+bzip2", None):
        assert not mt.is_layer(other) and mt.layer_compression(other) is None
    assert mt.base_type(" application/json ; charset=utf-8") == "application/json"


# --- properties -------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2 ** 64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from([D1, mt.OCI_IMAGE_MANIFEST, mt.OCI_LAYER_TAR, "linux", "layers"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["mediaType", "digest", "size", "schemaVersion", "config", "layers", "manifests",
                         "platform", "os", "architecture", "rootfs", "diff_ids", "type", "annotations",
                         "urls", "data", "history", "Env", "subject", "x"]), children, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.sampled_from([None, mt.OCI_IMAGE_MANIFEST, mt.OCI_IMAGE_INDEX, mt.OCI_IMAGE_CONFIG,
                                      mt.OCI_DESCRIPTOR, mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG]))
def test_parse_document_raises_only_invalid_document(value, media_type):
    raw = json.dumps(value).encode()
    try:
        doc = parse_document(raw, media_type)
    except InvalidDocumentError as err:
        assert err.field and err.problem
        return
    if not isinstance(doc, Descriptor):
        assert doc.raw == raw and doc.digest == digest_of(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parse_document_arbitrary_bytes(raw):
    try:
        parse_document(raw)
    except InvalidDocumentError:
        pass
