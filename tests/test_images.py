"""Tags and their history, resolving references and platforms, images,
inspect and history (layerstore.images via Store).

Oracles: the corpus's documented facts (corpus/README.md: digests, platforms,
layer tar sizes), the image configs read with ``json`` and ``tarfile`` from
the corpus files, ``gzip`` for uncompressed layer sizes, and hashlib.
"""
import gzip
import hashlib
import io
import json
import tarfile
import time
from datetime import datetime, timezone

import pytest

from conftest import corpus_path
from layerstore.errors import (ImageNotFoundError, InvalidDocumentError, PlatformNotFoundError,
                               ReferenceError)
from layerstore.manifest import host_platform
from layerstore.store import Store

REPO = "localhost/corpus/small"
AMD64_CONFIG = "sha256:b712967c1e19f5ef57c137b4df4f2c2196799ae64d83b3659f5769dd0ef61105"
ARM64_CONFIG = "sha256:1bc2a3a05b69693ec5764915501df49f34d47f7a1821be85d7194baa629f07b2"
AMD64_TAR_SIZES = [2141696, 33280, 4096, 4096]
ARM64_TAR_SIZES = [2006016, 33280]
M_AMD64_GZIP = "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af"
M_ARM64_GZIP = "sha256:5457c57d4d4d2820e3e7ac23225c24e8dc6a413d685f1cbae54ff927a78296ac"
M_AMD64_ZSTD = "sha256:fda7b156b4f6859a92da182937713830035ea45f55d19c8851205bf511915ed0"
I_GZIP = "sha256:0c73e3a6da15988bc8abf27c683f7ac16d35b729f83d7e52b1438a873f89a10f"
M_UMOCI_11 = "sha256:cb8afc53db0167911e92eb2ab7d16059d0ec12094d0157e869696ae23fd46d8a"
UMOCI_11_GZIP = "sha256:93a8813735aa9f8d81208212ef0248da71d76e551d3aeecd30915df9a2e617cc"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pack_bytes(root) -> int:
    return sum(p.stat().st_size for p in (root / "packs").glob("*.pack"))


def docker_archive_config(name: str, config_digest: str) -> bytes:
    with tarfile.open(corpus_path("images", name)) as tf:
        return tf.extractfile(config_digest.split(":")[1] + ".json").read()


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "store") as s:
        yield s


# --- tags ---------------------------------------------------------------------------------

def test_tag_is_normalised_and_copies_nothing(tmp_path):
    root = tmp_path / "s"
    with Store.open(root) as store:
        (img,) = store.load(corpus_path("images", "small-amd64.podman.docker-archive.tar"))
        store._packs.flush()
        before = pack_bytes(root)
        blobs_before = len(list(store._catalog.iter_blobs()))
        info = store.tag(f"{REPO}:1.0-amd64", "busybox")
        assert (info.repository, info.tag, info.digest) == ("docker.io/library/busybox", "latest", img.digest)
        assert info.familiar() == "busybox:latest"
        assert [(t.reference, t.digest) for t in store.tags()] == [
            ("docker.io/library/busybox:latest", img.digest), (f"{REPO}:1.0-amd64", img.digest)]
        assert [t.reference for t in store.tags("busybox")] == ["docker.io/library/busybox:latest"]
        assert [t.reference for t in store.tags("docker.io/library/busybox")] == ["docker.io/library/busybox:latest"]
        for name in ("busybox", "busybox:latest", "docker.io/library/busybox", "index.docker.io/library/busybox"):
            assert store.resolve(name).digest == img.digest
        store._packs.flush()
        assert pack_bytes(root) == before
        assert len(list(store._catalog.iter_blobs())) == blobs_before
        assert store.inspect("busybox")["RepoTags"] == ["busybox:latest", f"{REPO}:1.0-amd64"]


def test_tag_history_records_every_move(store):
    (a,) = store.load(corpus_path("images", "small-amd64.podman.docker-archive.tar"))
    (b,) = store.load(corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    store.tag(a.digest, "localhost/app")
    time.sleep(0.01)
    store.tag(f"{REPO}:1.0-arm64", "localhost/app:latest")
    store.tag(b.config_digest, "localhost/app")  # same image again: not a move
    time.sleep(0.01)
    store.untag("localhost/app")
    events = store.tag_history("localhost/app")
    assert [(e.digest, e.previous) for e in events] == [(a.digest, None), (b.digest, a.digest), (None, b.digest)]
    assert [e.origin for e in events] == [f"tag {a.digest}", f"tag {REPO}:1.0-arm64", "untag"]
    assert events[0].time < events[1].time < events[2].time
    # what the tag meant at each moment
    assert store.resolve("localhost/app", at=events[0].time).digest == a.digest
    assert store.resolve("localhost/app", at=(events[0].time + events[1].time) / 2).digest == a.digest
    when = datetime.fromtimestamp(events[1].time + 0.001, timezone.utc)  # datetime keeps microseconds only
    assert store.resolve("localhost/app", at=when).digest == b.digest
    with pytest.raises(ImageNotFoundError):
        store.resolve("localhost/app")
    with pytest.raises(ImageNotFoundError):
        store.resolve("localhost/app", at=events[2].time)
    with pytest.raises(ImageNotFoundError):
        store.resolve("localhost/app", at=events[0].time - 1)
    assert store.tag_history("localhost/never") == []


def test_load_moves_tag_and_old_image_becomes_dangling(store):
    store.load(corpus_path("images", "small-amd64.oci-zstd"), name=REPO)
    store.load(corpus_path("images", "small-amd64.skopeo.oci-archive-gzip.tar"), name=REPO)
    events = store.tag_history(f"{REPO}:1.0")
    assert [(e.digest, e.previous) for e in events] == [(M_AMD64_ZSTD, None), (M_AMD64_GZIP, M_AMD64_ZSTD)]
    assert events[0].origin.startswith("load oci:") and events[1].origin.startswith("load oci-archive:")
    rows = [(s.repository, s.tag, s.digest, s.id) for s in store.images()]
    assert sorted(rows, key=str) == sorted([(REPO, "1.0", M_AMD64_GZIP, AMD64_CONFIG),
                                            (None, None, M_AMD64_ZSTD, AMD64_CONFIG)], key=str)
    assert [s.digest for s in store.images(dangling=True)] == [M_AMD64_ZSTD]
    assert [s.digest for s in store.images(dangling=False)] == [M_AMD64_GZIP]
    # both manifests share one image ID; tagging by it works
    store.tag(AMD64_CONFIG, "localhost/byid:1")
    assert store.resolve("localhost/byid:1").platform.architecture == "amd64"


def test_tag_errors(store):
    store.load(corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    with pytest.raises(ImageNotFoundError):
        store.tag("localhost/nothing:here", "localhost/x")
    with pytest.raises(ReferenceError):
        store.tag(f"{REPO}:1.0-arm64", "localhost/x@" + ARM64_CONFIG)
    with pytest.raises(ReferenceError):
        store.tag(f"{REPO}:1.0-arm64", "localhost/UPPER")
    with pytest.raises(ImageNotFoundError):
        store.untag("localhost/x:nope")
    assert [t.tag for t in store.tags()] == ["1.0-arm64"]


def test_tags_survive_reopen(tmp_path):
    root = tmp_path / "s"
    with Store.open(root) as store:
        (img,) = store.load(corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    with Store.open(root) as store:
        assert store.resolve(f"{REPO}:1.0-arm64").digest == img.digest
        assert len(store.tag_history(f"{REPO}:1.0-arm64")) == 1


# --- resolve -------------------------------------------------------------------------------

def test_digest_references_resolve_without_tags(store):
    (idx,) = store.load(corpus_path("images", "small-multiarch.oci-gzip"))  # ref name "1.0", no repository
    assert idx.references == () and idx.ref_name == "1.0"
    assert store.tags() == []
    assert [(s.repository, s.digest) for s in store.images()] == [(None, I_GZIP)]
    assert store.resolve(I_GZIP, "linux/arm64").digest == M_ARM64_GZIP
    assert store.resolve(I_GZIP.split(":")[1], "linux/amd64").digest == M_AMD64_GZIP
    assert store.resolve(f"example.com/any/name@{I_GZIP}", "linux/arm64").digest == M_ARM64_GZIP
    assert store.resolve(M_ARM64_GZIP).digest == M_ARM64_GZIP
    assert store.resolve(ARM64_CONFIG).digest == M_ARM64_GZIP  # image ID
    assert store.resolve(ARM64_CONFIG.split(":")[1][:12]).digest == M_ARM64_GZIP  # short ID
    assert store.resolve(M_ARM64_GZIP.split(":")[1][:10]).digest == M_ARM64_GZIP
    with pytest.raises(ImageNotFoundError):
        store.resolve("sha256:" + "0" * 64)
    with pytest.raises(ImageNotFoundError):
        store.resolve("localhost/corpus/small:1.0")


def test_resolve_picks_platform_from_index(store):
    store.load(corpus_path("images", "small-multiarch.oci-gzip"), name=REPO)
    ref = f"{REPO}:1.0"
    for spec, want in [("linux/amd64", M_AMD64_GZIP), ("linux/arm64", M_ARM64_GZIP),
                       ("linux/arm64/v8", M_ARM64_GZIP), ("linux/aarch64", M_ARM64_GZIP),
                       ("linux/x86_64", M_AMD64_GZIP), ("linux/386", None), ("linux/arm/v7", None),
                       ("windows/amd64", None), ("linux/s390x", None)]:
        if want is None:
            with pytest.raises(PlatformNotFoundError) as exc:
                store.resolve(ref, spec)
            assert sorted(exc.value.available) == ["linux/amd64", "linux/arm64/v8"]
        else:
            desc = store.resolve(ref, spec)
            assert desc.digest == want
            assert desc.platform.architecture == ("amd64" if want == M_AMD64_GZIP else "arm64")
    host = host_platform()
    if host.os == "linux" and host.architecture in ("amd64", "arm64"):
        assert store.resolve(ref).digest == (M_AMD64_GZIP if host.architecture == "amd64" else M_ARM64_GZIP)
    # a single-platform image refuses an explicit other platform, as docker run --platform does
    store.load(corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    assert store.resolve(f"{REPO}:1.0-arm64").platform.architecture == "arm64"
    assert store.resolve(f"{REPO}:1.0-arm64", "linux/arm64/v8").platform.architecture == "arm64"
    with pytest.raises(PlatformNotFoundError):
        store.resolve(f"{REPO}:1.0-arm64", "linux/amd64")


# --- inspect, history, images ---------------------------------------------------------------

def test_inspect_matches_config(store):
    (img,) = store.load(corpus_path("images", "small-amd64.podman.docker-archive.tar"))
    raw = docker_archive_config("small-amd64.podman.docker-archive.tar", AMD64_CONFIG)
    config = json.loads(raw)
    d = store.inspect(f"{REPO}:1.0-amd64")
    assert d["Id"] == sha(raw) == AMD64_CONFIG
    assert d["RepoTags"] == [f"{REPO}:1.0-amd64"]
    assert d["RepoDigests"] == [f"{REPO}@{img.digest}"]
    assert d["Created"] == config["created"]
    assert (d["Architecture"], d["Os"]) == (config["architecture"], config["os"]) == ("amd64", "linux")
    assert "Variant" not in d
    assert d["Config"] == config["config"]
    assert d["RootFS"] == {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]}
    assert d["Size"] == sum(AMD64_TAR_SIZES) == 2183168
    assert d["Descriptor"]["digest"] == img.digest
    assert d["Descriptor"]["size"] == len(store.read_blob(img.digest))
    assert d["Metadata"]["LastTagTime"].endswith("Z")


def test_inspect_index_reaches_tags_through_index(store):
    store.load(corpus_path("images", "small-multiarch.oci-gzip"), name=REPO)
    arm = store.inspect(f"{REPO}:1.0", "linux/arm64")
    assert arm["Id"] == ARM64_CONFIG and arm["Architecture"] == "arm64"
    assert arm["RepoTags"] == [f"{REPO}:1.0"]
    assert arm["RepoDigests"] == [f"{REPO}@{I_GZIP}"]
    # uncompressed sizes, not the gzip blob sizes
    assert arm["Size"] == sum(ARM64_TAR_SIZES)
    assert store.inspect(f"{REPO}:1.0", "linux/amd64")["Size"] == sum(AMD64_TAR_SIZES)


def test_history_matches_config_newest_first(store):
    store.load(corpus_path("images", "small-amd64.podman.docker-archive.tar"))
    store.load(corpus_path("images", "small-multiarch.oci-gzip"), name=REPO)
    config = json.loads(docker_archive_config("small-amd64.podman.docker-archive.tar", AMD64_CONFIG))
    sizes = iter(AMD64_TAR_SIZES)
    diffs = iter(config["rootfs"]["diff_ids"])
    expected = []
    for h in config["history"]:
        empty = h.get("empty_layer", False)
        expected.append((h.get("created"), h.get("created_by", ""), h.get("comment", ""), empty,
                         0 if empty else next(sizes), None if empty else next(diffs)))
    expected.reverse()
    for ref, platform in ((f"{REPO}:1.0-amd64", None), (f"{REPO}:1.0", "linux/amd64")):
        steps = store.history(ref, platform)
        assert [(s.created, s.created_by, s.comment, s.empty_layer, s.size, s.diff_id) for s in steps] == expected
        assert steps[0].id == AMD64_CONFIG and all(s.id == "<missing>" for s in steps[1:])
        assert set(steps[0].tags) == {f"{REPO}:1.0-amd64", f"{REPO}:1.0"}
    assert sum(s.size for s in steps) == sum(AMD64_TAR_SIZES)


def test_history_size_of_gzip_layer_is_its_uncompressed_size(store):
    path = corpus_path("images", "small-amd64-umoci.oci-gzip")
    store.load(path, name=REPO)
    steps = store.history(f"{REPO}:1.1")
    layer = gzip.decompress((path / "blobs" / "sha256" / UMOCI_11_GZIP.split(":")[1]).read_bytes())
    newest_layer_step = next(s for s in steps if not s.empty_layer)
    assert newest_layer_step.size == len(layer)
    assert newest_layer_step.diff_id == sha(layer)
    assert store.inspect(f"{REPO}:1.1")["Size"] == sum(AMD64_TAR_SIZES) + len(layer)


def test_images_lists_tags_and_dangling(store):
    store.load(corpus_path("images", "small-multi.podman.docker-archive.tar"))
    store.load(corpus_path("images", "small-multiarch.oci-gzip"), name=REPO)
    rows = {(s.repository, s.tag): s for s in store.images()}
    assert set(rows) == {(REPO, "1.0-amd64"), (REPO, "1.0-amd64-vfs"), (REPO, "1.0")}
    assert rows[(REPO, "1.0-amd64")].id == AMD64_CONFIG
    assert rows[(REPO, "1.0-amd64")].size == sum(AMD64_TAR_SIZES)
    assert rows[(REPO, "1.0")].digest == I_GZIP
    host = host_platform()
    if host.os == "linux" and host.architecture == "amd64":
        assert rows[(REPO, "1.0")].id == AMD64_CONFIG
    assert not any(s.dangling for s in store.images())
    # move a tag away: the image it named is now dangling, like docker's <none>:<none>
    store.tag(f"{REPO}:1.0-amd64", f"{REPO}:1.0-amd64-vfs")
    dangling = store.images(dangling=True)
    assert [(s.repository, s.id) for s in dangling] == [(None, "sha256:411cb089741139d1ccc3c8849b21cbd9fb20a051042629d65ee79b69bca9679f")]
    # newest created first
    created = [s.created for s in store.images()]
    assert created == sorted(created, reverse=True)


# --- a hand-made image: history with more layer steps than layers ---------------------------------

def _make_layout(tmp_path, history):
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    layer = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
                         "history": history}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": sha(layer), "size": len(layer)}]}).encode()
    d = tmp_path / "layout"
    (d / "blobs" / "sha256").mkdir(parents=True)
    for blob in (layer, config, manifest):
        (d / "blobs" / "sha256" / sha(blob).split(":")[1]).write_bytes(blob)
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    return d, sha(manifest), len(layer)


def test_history_of_hand_made_image(store, tmp_path):
    d, digest, layer_size = _make_layout(tmp_path, [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD hello.txt"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "CMD", "empty_layer": True}])
    (img,) = store.load(d, name="localhost/hand")
    assert img.digest == digest and img.references == ("localhost/hand:v1",)
    steps = store.history("localhost/hand:v1")
    assert [(s.created_by, s.size) for s in steps] == [("CMD", 0), ("ADD hello.txt", layer_size)]


def test_history_with_more_layer_steps_than_layers_is_refused(store, tmp_path):
    d, _digest, _ = _make_layout(tmp_path, [{"created_by": "ADD a"}, {"created_by": "ADD b"}])
    store.load(d, name="localhost/hand")
    with pytest.raises(InvalidDocumentError, match="2 steps create layers"):
        store.history("localhost/hand:v1")
