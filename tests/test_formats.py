"""Image archives and layouts in and out of the store (layerstore.formats via
Store.load / Store.save).

Oracles: the corpus's documented facts (corpus/README.md: manifest, config,
layer digests and sizes of every image), hashlib over the input files and
over what is written, Python ``tarfile`` for archive contents, and the real
``skopeo`` (1.9.3), which must accept every export and, for docker-archives,
reports the digest of the manifest it derives from the archive. Bad inputs
are built from corpus files with ``tarfile`` and must be refused with a
typed error naming the member, leaving nothing visible in the store.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import corpus_path
from layerstore import formats
from layerstore.errors import (DigestMismatchError, ImageFormatError, LayerStoreError, MissingContentError,
                               SizeMismatchError, UnsafePathError)
from layerstore.formats import ALREADY_EXISTS, STORED
from layerstore.manifest import parse_document
from layerstore.store import Store

# --- corpus facts (corpus/README.md) ----------------------------------------------

AMD64_CONFIG = "sha256:b712967c1e19f5ef57c137b4df4f2c2196799ae64d83b3659f5769dd0ef61105"
VFS_CONFIG = "sha256:411cb089741139d1ccc3c8849b21cbd9fb20a051042629d65ee79b69bca9679f"
ARM64_CONFIG = "sha256:1bc2a3a05b69693ec5764915501df49f34d47f7a1821be85d7194baa629f07b2"
AMD64_DIFFS = [
    "sha256:f593ec02b2d519fb7bc1f621348fd72b2dd5a5dca823ec99a36e856fe43d3e92",
    "sha256:03cdb4d57283cf828c0e460530f9285ae982604e4958603804ed44dc3542f5e5",
    "sha256:61407ee1beb0b786f9e2092eaeba9334467db2b63fb4e2246ba0228da2c92b10",
    "sha256:ab7f01943b94a9d59f6c81f54b5f1b4e292a2e5e663d7cbcdc58267c28aebdb0",
]
AMD64_TAR_SIZES = [2141696, 33280, 4096, 4096]
VFS_DIFFS = [
    AMD64_DIFFS[0],
    "sha256:4e05953ed0595de71cd08c5f9a5ed6d5456369249fae2250fb2a631926ea5e2e",
    "sha256:8a5332b85690e791ae9ddc259b3f1388d0cd11b3b823eb57ad9f6593f7acdd63",
    "sha256:0b7000ba03fbadc9998e379ca161457449f0eda5879228ed2c1fc8f9d36a1420",
]
ARM64_DIFFS = [
    "sha256:6de3fe51bc6e7adbd81dad3ecd9adde8495cbcef392ff3f13cb0b66ec7ca8888",
    "sha256:a6304fec20779799b35c418edd7d218a49e4da68464906d5bc70b5301cd3c7ca",
]
AMD64_GZIP = [
    ("sha256:0fd64de60676bc8db8bf0622918873dd2d1e6dfa17d321cf498d104875939b82", 1089254),
    ("sha256:3fb0b0b68375fa23e7c5876ff1b25b0c51783a0bde52a918594f5cff7338880c", 7117),
    ("sha256:1f5fb6a75afb9e80783895785d95e18cca0ddbc0a1cfdaf1d2436f191d87cea6", 201),
    ("sha256:d094ee2512d68edf690088e2c1081c0ead12ae07d66389e8ee61596ed5bf37b3", 228),
]
AMD64_ZSTD = [
    ("sha256:9d7d721deaef052fcd51d8f2d33a745358995e103213152f4d4d7fbf24820a90", 1094254),
    ("sha256:23e3c50385677c8d421348874540733f3cdea9c8bc158e251563b045d825201a", 2715),
    ("sha256:791f4f24a801da385cb064adc4ef856e7d18290ff7487b46744390b1f323bed3", 191),
    ("sha256:28f05fc618bcf240455f1c4098a2ef78c96bef35943ecf169c8d41674a649245", 223),
]
M_AMD64_GZIP = "sha256:69f43e5b3e7cb6a71a0b738cc9a1235a6702268bb3549f0761d8d819f52c85af"
M_AMD64_ZSTD = "sha256:fda7b156b4f6859a92da182937713830035ea45f55d19c8851205bf511915ed0"
M_ARM64_GZIP = "sha256:5457c57d4d4d2820e3e7ac23225c24e8dc6a413d685f1cbae54ff927a78296ac"
M_ARM64_ZSTD = "sha256:99ad0dee83588d9b3b439c143fab8319dae4afd27c644ea16d83cc5a572eea9b"
I_GZIP = "sha256:0c73e3a6da15988bc8abf27c683f7ac16d35b729f83d7e52b1438a873f89a10f"
I_ZSTD = "sha256:4b1372195de22fadafbb06519d27df0b94afd27b16b0cf80339621816e0cd7ea"
M_UMOCI_11 = "sha256:cb8afc53db0167911e92eb2ab7d16059d0ec12094d0157e869696ae23fd46d8a"
UMOCI_11_LAYER = ("sha256:93a8813735aa9f8d81208212ef0248da71d76e551d3aeecd30915df9a2e617cc", 295)
UMOCI_11_DIFF = "sha256:9e50c24b8fedaeb7bc27cf66df430e3217a0d69ed197c45976daa9427b6c0944"
REPO = "localhost/corpus/small"

# Each corpus input: (file, name passed to load, expected top-level images as
# (kind, digest or None for a built docker-archive manifest, references, config)).
CASES = {
    "small-amd64.podman.docker-archive.tar": [("manifest", None, [f"{REPO}:1.0-amd64"], AMD64_CONFIG)],
    "small-amd64-vfs.podman.docker-archive.tar": [("manifest", None, [f"{REPO}:1.0-amd64-vfs"], VFS_CONFIG)],
    "small-arm64.podman.docker-archive.tar": [("manifest", None, [f"{REPO}:1.0-arm64"], ARM64_CONFIG)],
    "small-multi.podman.docker-archive.tar": [("manifest", None, [f"{REPO}:1.0-amd64"], AMD64_CONFIG),
                                              ("manifest", None, [f"{REPO}:1.0-amd64-vfs"], VFS_CONFIG)],
    "small-amd64.skopeo.oci-archive-gzip.tar": [("manifest", M_AMD64_GZIP, [f"{REPO}:1.0"], AMD64_CONFIG)],
    "small-amd64.oci-zstd": [("manifest", M_AMD64_ZSTD, [f"{REPO}:1.0"], AMD64_CONFIG)],
    "small-multiarch.oci-gzip": [("index", I_GZIP, [f"{REPO}:1.0"], None)],
    "small-multiarch.oci-zstd": [("index", I_ZSTD, [f"{REPO}:1.0"], None)],
    "small-amd64-umoci.oci-gzip": [("manifest", M_AMD64_GZIP, [f"{REPO}:1.0"], AMD64_CONFIG),
                                   ("manifest", M_UMOCI_11, [f"{REPO}:1.1"], None)],
    "small-multiarch.skopeo-all.oci-archive-gzip.tar": [("index", I_GZIP, [f"{REPO}:1.0"], None)],
}
INDEX_CHILDREN = {I_GZIP: {"linux/amd64": M_AMD64_GZIP, "linux/arm64/v8": M_ARM64_GZIP},
                  I_ZSTD: {"linux/amd64": M_AMD64_ZSTD, "linux/arm64/v8": M_ARM64_ZSTD}}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pack_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "packs").glob("*.pack"))


def skopeo() -> str:
    exe = shutil.which("skopeo")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("skopeo is required in CI (.ci/run installs it)")
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    return exe


def run_skopeo(*args) -> str:
    proc = subprocess.run([skopeo(), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def input_files(path: Path) -> dict:
    """name -> bytes of every regular file of a corpus input (tar members,
    symlinks resolved by tarfile, or directory files)."""
    out = {}
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                out[str(p.relative_to(path))] = p.read_bytes()
    else:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.isreg() or m.issym():
                    out[m.name] = tf.extractfile(m).read()
    return out


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "store") as s:
        yield s


def assert_nothing_visible(store, digests=()):
    assert store.tags() == []
    assert store.images() == []
    for d in digests:
        assert not store.has(d), d


# --- import ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_corpus_input_imports_byte_exact(store, case):
    path = corpus_path("images", case)
    loaded = store.load(path, name=REPO)
    expected = CASES[case]
    assert len(loaded) == len(expected)
    files = input_files(path)
    by_digest = {sha(data): data for data in files.values()}
    for img, (kind, digest, refs, config) in zip(loaded, expected):
        assert img.is_index == (kind == "index")
        if digest is not None:
            assert img.digest == digest
        assert list(img.references) == refs
        if config is not None:
            assert img.config_digest == config
        # every stored blob comes back byte-exact; those the input holds
        # are the same bytes (the built docker-archive manifest is new)
        for d in [img.digest, *(m.digest for m in img.manifests)]:
            raw = store.read_blob(d)
            assert sha(raw) == d
            if digest is not None:
                assert raw == by_digest[d]
        if kind == "index":
            children = {m.platform: m.digest for m in img.manifests}
            assert children == {p.replace("/v8", ""): d for p, d in INDEX_CHILDREN[digest].items()}
            assert img.missing == ()
        for child in [img, *img.manifests]:
            for layer in child.layers:
                assert store.has(layer.digest) and store.has(layer.diff_id)
                if layer.status == STORED and layer.digest in by_digest:
                    assert store.read_blob(layer.digest) == by_digest[layer.digest]
    # listed and inspectable
    listed = {(s.repository, s.tag): s for s in store.images()}
    for img, (kind, digest, refs, config) in zip(loaded, expected):
        for ref in refs:
            name, tag = ref.rsplit(":", 1)
            assert listed[(name, tag)].digest == img.digest
            if kind == "index":
                assert store.inspect(ref, "linux/amd64")["Id"] == AMD64_CONFIG
                assert store.inspect(ref, "linux/arm64")["Id"] == ARM64_CONFIG
            else:
                manifest = json.loads(by_digest[img.digest]) if digest else None
                want = config or manifest["config"]["digest"]
                assert store.inspect(ref)["Id"] == want == listed[(name, tag)].id


def test_docker_archive_layers_and_built_manifest(store):
    path = corpus_path("images", "small-amd64.podman.docker-archive.tar")
    (img,) = store.load(path)
    assert [l.diff_id for l in img.layers] == AMD64_DIFFS
    assert [l.digest for l in img.layers] == AMD64_DIFFS
    assert [l.size for l in img.layers] == AMD64_TAR_SIZES
    assert all(l.status == STORED for l in img.layers)
    with tarfile.open(path) as tf:
        config_bytes = tf.extractfile(AMD64_CONFIG.split(":")[1] + ".json").read()
        tar_sizes = [tf.getmember(d.split(":")[1] + ".tar").size for d in AMD64_DIFFS]
    assert sha(config_bytes) == AMD64_CONFIG == img.config_digest
    # the documented construction, written out by hand
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        f'"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{AMD64_CONFIG}",'
        f'"size":{len(config_bytes)}}},"layers":['
        + ",".join(f'{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}'
                   for d, n in zip(AMD64_DIFFS, tar_sizes))
        + "]}").encode()
    assert store.read_blob(img.digest) == expected
    assert img.digest == sha(expected)
    assert store.read_blob(AMD64_CONFIG) == config_bytes


def test_docker_archive_manifest_matches_what_skopeo_derives(store, tmp_path):
    """skopeo derives a Docker schema 2 manifest from a docker-archive; ours
    (OCI) names the same config and the same layers with the same sizes."""
    for name in ("small-amd64.podman.docker-archive.tar", "small-arm64.podman.docker-archive.tar"):
        path = corpus_path("images", name)
        (img,) = store.load(path)
        out = tmp_path / name
        run_skopeo("copy", "-q", f"docker-archive:{path}", f"dir:{out}")
        theirs = json.loads((out / "manifest.json").read_bytes())
        ours = json.loads(store.read_blob(img.digest))
        assert ours["config"]["digest"] == theirs["config"]["digest"] == img.config_digest
        assert ours["config"]["size"] == theirs["config"]["size"]
        assert [(l["digest"], l["size"]) for l in ours["layers"]] == \
            [(l["digest"], l["size"]) for l in theirs["layers"]]
        for layer in theirs["layers"]:
            blob = (out / layer["digest"].split(":")[1]).read_bytes()
            assert store.read_blob(layer["digest"]) == blob


def test_multi_image_docker_archive_shares_base_layer(store):
    a, b = store.load(corpus_path("images", "small-multi.podman.docker-archive.tar"))
    assert [l.status for l in a.layers] == [STORED] * 4
    assert [l.status for l in b.layers] == [ALREADY_EXISTS, STORED, STORED, STORED]
    assert [l.diff_id for l in b.layers] == VFS_DIFFS
    assert (a.config_digest, b.config_digest) == (AMD64_CONFIG, VFS_CONFIG)


def test_second_image_sharing_base_layer_adds_no_pack_bytes_and_is_not_read(tmp_path, monkeypatch):
    root = tmp_path / "s"
    opened = []
    real_open = formats._TarInput.open

    def spy(self, name):
        opened.append(name)
        return real_open(self, name)

    monkeypatch.setattr(formats._TarInput, "open", spy)
    with Store.open(root) as store:
        store.load(corpus_path("images", "small-amd64.podman.docker-archive.tar"))
        store._packs.flush()
        before = pack_bytes(root)
        base_stored = store.layer_info(AMD64_DIFFS[0]).stored_bytes
        opened.clear()
        (img,) = store.load(corpus_path("images", "small-amd64-vfs.podman.docker-archive.tar"))
        store._packs.flush()
        grown = pack_bytes(root) - before
        assert img.layers[0].status == ALREADY_EXISTS and img.layers[0].diff_id == AMD64_DIFFS[0]
        assert [l.status for l in img.layers[1:]] == [STORED] * 3
        assert AMD64_DIFFS[0].split(":")[1] + ".tar" not in opened
        # what the vfs image adds: 3 small layers, config and manifest
        new_raw = sum(AMD64_TAR_SIZES[1:]) + 1983 + 912
        assert base_stored > 500_000
        assert 0 < grown < new_raw
        assert store.verify().ok


def test_gzip_compressed_docker_archive_loads(store, tmp_path):
    src = corpus_path("images", "small-arm64.podman.docker-archive.tar")
    gz = tmp_path / "a.tar.gz"
    gz.write_bytes(gzip.compress(src.read_bytes(), 1))
    (img,) = store.load(gz)
    assert img.config_digest == ARM64_CONFIG
    assert [l.diff_id for l in img.layers] == ARM64_DIFFS


def test_docker_archive_with_layer_files_in_id_directories(store, tmp_path):
    """The layout of docker save before Docker 25: <id>/layer.tar are the
    files themselves (podman writes them as symlinks)."""
    src = corpus_path("images", "small-arm64.podman.docker-archive.tar")
    dst = tmp_path / "legacy.tar"
    with tarfile.open(src) as tf, tarfile.open(dst, "w") as out:
        items = json.loads(tf.extractfile("manifest.json").read())
        layers = []
        for m in tf.getmembers():
            if m.issym() and m.name.endswith("/layer.tar"):
                data = tf.extractfile(m).read()
                info = tarfile.TarInfo(m.name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
                layers.append(m.name)
            elif m.isreg() and not m.name.endswith(".tar") and m.name != "manifest.json":
                out.addfile(m, tf.extractfile(m))
        by_target = {}
        for m in tf.getmembers():
            if m.issym():
                by_target[m.linkname.split("/")[-1]] = m.name
        items[0]["Layers"] = [by_target[p] for p in items[0]["Layers"]]
        data = json.dumps(items).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    (img,) = store.load(dst)
    other = tmp_path / "s2"
    with Store.open(other) as s2:
        (podman_img,) = s2.load(src)
    assert img.digest == podman_img.digest
    assert img.references == (f"{REPO}:1.0-arm64",)


def test_docker25_archive_keeps_oci_manifest(store, tmp_path):
    """Docker 25+ docker save: an OCI layout plus manifest.json and
    repositories; the manifest of index.json is kept byte-exact and the
    names come from both files."""
    layout = corpus_path("images", "small-amd64.oci-zstd")
    dst = tmp_path / "docker25.tar"
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": M_AMD64_ZSTD,
                            "size": 1038, "annotations": {
                                "io.containerd.image.name": "docker.io/library/small:1.0",
                                "org.opencontainers.image.ref.name": "1.0"}}]}
    manifest_json = [{"Config": "blobs/sha256/" + AMD64_CONFIG.split(":")[1], "RepoTags": ["small:1.0", "other/small:2"],
                      "Layers": ["blobs/sha256/" + d.split(":")[1] for d, _ in AMD64_ZSTD]}]
    with tarfile.open(dst, "w") as out:
        for p in sorted((layout / "blobs" / "sha256").iterdir()):
            out.add(p, arcname=f"blobs/sha256/{p.name}")
        for name, obj in (("index.json", index), ("manifest.json", manifest_json),
                          ("repositories", {"small": {"1.0": AMD64_ZSTD[-1][0].split(":")[1]}})):
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        out.add(layout / "oci-layout", arcname="oci-layout")
    (img,) = store.load(dst)
    assert img.digest == M_AMD64_ZSTD
    assert set(img.references) == {"docker.io/library/small:1.0", "docker.io/other/small:2"}
    assert [(l.digest, l.size) for l in img.layers] == AMD64_ZSTD
    assert store.resolve("small:1.0").digest == M_AMD64_ZSTD


def _dir_layout_from_oci(oci: Path, dst: Path, manifest_digest: str):
    """A containers/image dir: layout, written by hand from its description:
    version, manifest.json, blobs by encoded digest."""
    dst.mkdir()
    (dst / "version").write_bytes(b"Directory Transport Version: 1.1\n")
    for p in (oci / "blobs" / "sha256").iterdir():
        if "sha256:" + p.name == manifest_digest:
            (dst / "manifest.json").write_bytes(p.read_bytes())
        else:
            (dst / p.name).write_bytes(p.read_bytes())


def test_dir_layout_imports(store, tmp_path):
    d = tmp_path / "dir"
    _dir_layout_from_oci(corpus_path("images", "small-amd64.oci-zstd"), d, M_AMD64_ZSTD)
    (img,) = store.load(d, name="localhost/fromdir:7")
    assert img.digest == M_AMD64_ZSTD and img.config_digest == AMD64_CONFIG
    assert img.references == ("localhost/fromdir:7",)
    assert [(l.digest, l.size) for l in img.layers] == AMD64_ZSTD


def test_dir_layout_from_skopeo_with_index(store, tmp_path):
    out = tmp_path / "all"
    run_skopeo("copy", "-q", "--all", f"oci:{corpus_path('images', 'small-multiarch.oci-gzip')}:1.0", f"dir:{out}")
    (img,) = store.load(out)
    assert img.digest == I_GZIP and img.references == ()
    assert {m.digest for m in img.manifests} == {M_AMD64_GZIP, M_ARM64_GZIP}
    assert store.resolve(I_GZIP, "linux/arm64").digest == M_ARM64_GZIP


def test_platform_filter_keeps_index_and_records_missing_platform(store):
    path = corpus_path("images", "small-multiarch.oci-zstd")
    (img,) = store.load(path, name=REPO, platforms=["linux/amd64"])
    assert img.digest == I_ZSTD
    assert [m.digest for m in img.manifests] == [M_AMD64_ZSTD]
    assert img.missing == ("linux/arm64/v8",)
    assert store.read_blob(I_ZSTD) == (path / "blobs" / "sha256" / I_ZSTD.split(":")[1]).read_bytes()
    assert not store.has(M_ARM64_ZSTD)
    (again,) = store.load(path, name=REPO)
    assert again.missing == ()
    arm = store.resolve(f"{REPO}:1.0", "linux/arm64")
    assert arm.digest == M_ARM64_ZSTD


# --- bad inputs --------------------------------------------------------------------------------

def _rewrite_tar(src: Path, dst: Path, *, drop=(), replace=None, add=(), first=()):
    """Copy a tar member by member: ``drop`` names, ``replace`` name ->
    bytes, ``add`` (TarInfo, bytes or None) at the end, ``first`` names
    moved to the front."""
    replace = replace or {}
    with tarfile.open(src) as tf, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
        members = tf.getmembers()
        members.sort(key=lambda m: 0 if m.name in first else 1)
        for m in members:
            if m.name in drop:
                continue
            if m.name in replace:
                data = replace[m.name]
                info = tarfile.TarInfo(m.name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            elif m.isreg():
                out.addfile(m, tf.extractfile(m))
            else:
                out.addfile(m)
        for info, data in add:
            out.addfile(info, io.BytesIO(data) if data is not None else None)


def _info(name, size=0, kind=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name)
    i.size, i.type, i.linkname = size, kind, link
    return i


DOCKER_AMD64 = "small-amd64.podman.docker-archive.tar"


@pytest.mark.parametrize("bad", [
    _info("../evil.txt", 4),
    _info("/etc/evil.txt", 4),
    _info("x/../../evil.txt", 4),
    _info("escape", kind=tarfile.SYMTYPE, link="../../../etc/passwd"),
    _info("abs-link", kind=tarfile.SYMTYPE, link="/etc/passwd"),
    _info("hard", kind=tarfile.LNKTYPE, link="../outside"),
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-escape", "symlink-absolute", "hardlink-escape"])
def test_path_traversal_is_refused(store, tmp_path, bad):
    dst = tmp_path / "bad.tar"
    _rewrite_tar(corpus_path("images", DOCKER_AMD64), dst, add=[(bad, b"evil" if bad.size else None)])
    with pytest.raises(UnsafePathError) as exc:
        store.load(dst)
    assert bad.name.lstrip("/").split("/")[-1] in str(exc.value) and str(dst) in str(exc.value)
    assert_nothing_visible(store, [AMD64_CONFIG, *AMD64_DIFFS])


def test_layer_symlink_leading_outside_is_refused(store, tmp_path):
    src = corpus_path("images", DOCKER_AMD64)
    with tarfile.open(src) as tf:
        link = next(m.name for m in tf.getmembers() if m.issym())
    dst = tmp_path / "bad.tar"
    _rewrite_tar(src, dst, drop={link}, add=[(_info(link, kind=tarfile.SYMTYPE, link="../../x.tar"), None)])
    with pytest.raises(UnsafePathError, match="outside"):
        store.load(dst)
    assert_nothing_visible(store, [AMD64_CONFIG])


def test_missing_layer_in_docker_archive(store, tmp_path):
    dst = tmp_path / "bad.tar"
    missing = AMD64_DIFFS[3].split(":")[1] + ".tar"
    _rewrite_tar(corpus_path("images", DOCKER_AMD64), dst, drop={missing})
    with pytest.raises(MissingContentError) as exc:
        store.load(dst)
    assert missing in str(exc.value)
    assert_nothing_visible(store, [AMD64_CONFIG, *AMD64_DIFFS])


def test_layer_with_wrong_diff_id_in_docker_archive(store, tmp_path):
    src = corpus_path("images", DOCKER_AMD64)
    with tarfile.open(src) as tf:
        other = tf.extractfile(AMD64_DIFFS[2].split(":")[1] + ".tar").read()
    victim = AMD64_DIFFS[3].split(":")[1] + ".tar"
    dst = tmp_path / "bad.tar"
    _rewrite_tar(src, dst, replace={victim: other})
    with pytest.raises(DigestMismatchError) as exc:
        store.load(dst)
    assert exc.value.expected == AMD64_DIFFS[3] and exc.value.actual == AMD64_DIFFS[2]
    assert victim in str(exc.value)
    assert_nothing_visible(store, [AMD64_CONFIG, AMD64_DIFFS[0], AMD64_DIFFS[1]])


def test_truncated_layer_in_docker_archive(store, tmp_path):
    src = corpus_path("images", DOCKER_AMD64)
    dst = tmp_path / "bad.tar"
    base = AMD64_DIFFS[0].split(":")[1] + ".tar"
    cfg = AMD64_CONFIG.split(":")[1] + ".json"
    _rewrite_tar(src, dst, first={"manifest.json", cfg})
    with tarfile.open(dst) as tf:
        m = tf.getmember(base)
        cut = m.offset_data + m.size // 2
    with open(dst, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(ImageFormatError) as exc:
        store.load(dst)
    assert "truncated" in str(exc.value) or "unexpected end" in str(exc.value)
    assert base in str(exc.value)
    assert_nothing_visible(store, [AMD64_CONFIG, *AMD64_DIFFS])


def test_layer_count_must_match_diff_ids(store, tmp_path):
    src = corpus_path("images", DOCKER_AMD64)
    with tarfile.open(src) as tf:
        items = json.loads(tf.extractfile("manifest.json").read())
    items[0]["Layers"] = items[0]["Layers"][:3]
    dst = tmp_path / "bad.tar"
    _rewrite_tar(src, dst, replace={"manifest.json": json.dumps(items).encode()})
    with pytest.raises(ImageFormatError, match="3 layers but the config"):
        store.load(dst)
    assert_nothing_visible(store, [AMD64_CONFIG])


def _copy_layout(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(corpus_path("images", name), dst)
    for p in dst.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(dst, 0o755)
    return dst


def test_missing_blob_in_oci_layout(store, tmp_path):
    d = _copy_layout("small-amd64.oci-zstd", tmp_path)
    last = AMD64_ZSTD[3][0].split(":")[1]
    (d / "blobs" / "sha256" / last).unlink()
    with pytest.raises(MissingContentError) as exc:
        store.load(d, name=REPO)
    assert last in str(exc.value)
    assert_nothing_visible(store, [AMD64_CONFIG, M_AMD64_ZSTD, *(x for x, _ in AMD64_ZSTD), *AMD64_DIFFS])


def test_corrupt_blob_in_oci_layout(store, tmp_path):
    d = _copy_layout("small-amd64.oci-zstd", tmp_path)
    cfg = d / "blobs" / "sha256" / AMD64_CONFIG.split(":")[1]
    data = bytearray(cfg.read_bytes())
    data[data.index(b"amd64")] = ord("A")
    cfg.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError) as exc:
        store.load(d, name=REPO)
    assert exc.value.expected == AMD64_CONFIG and exc.value.actual == sha(bytes(data))
    assert_nothing_visible(store, [M_AMD64_ZSTD])


def test_corrupt_layer_in_oci_layout(store, tmp_path):
    d = _copy_layout("small-amd64.oci-zstd", tmp_path)
    layer = d / "blobs" / "sha256" / AMD64_ZSTD[1][0].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0x55
    layer.write_bytes(bytes(data))
    with pytest.raises(LayerStoreError) as exc:
        store.load(d, name=REPO)
    assert AMD64_ZSTD[1][0].split(":")[1] in str(exc.value)
    assert_nothing_visible(store, [AMD64_ZSTD[0][0], AMD64_DIFFS[0], AMD64_ZSTD[1][0]])


def test_wrong_size_in_index_json(store, tmp_path):
    d = _copy_layout("small-amd64.oci-zstd", tmp_path)
    index = json.loads((d / "index.json").read_text())
    index["manifests"][0]["size"] += 1
    (d / "index.json").write_text(json.dumps(index))
    with pytest.raises(SizeMismatchError):
        store.load(d, name=REPO)
    assert_nothing_visible(store, [M_AMD64_ZSTD])


def test_not_an_image_input(store, tmp_path):
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tf:
        tf.addfile(_info("hello.txt", 2), io.BytesIO(b"hi"))
    with pytest.raises(ImageFormatError, match="neither manifest.json"):
        store.load(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFormatError):
        store.load(tmp_path / "empty")
    (tmp_path / "text").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageFormatError):
        store.load(tmp_path / "text")


# --- export ----------------------------------------------------------------------------------

EXPORTS = ["docker-archive", "oci-archive", "oci"]


def _blob_files(path: Path, fmt: str) -> dict:
    files = input_files(path)
    return {"sha256:" + n.split("/")[-1]: data for n, data in files.items() if n.startswith("blobs/sha256/")}


@pytest.mark.parametrize("fmt", EXPORTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_export_reimport_and_skopeo(tmp_path, case, fmt):
    src = corpus_path("images", case)
    out = tmp_path / ("export" if fmt == "oci" else "export.tar")
    with Store.open(tmp_path / "a") as a:
        loaded = a.load(src, name=REPO)
        refs = [r for img in loaded for r in img.references]
        want = {}
        for img in loaded:
            for r in img.references:
                if fmt == "docker-archive":
                    want[r] = a.resolve(r).digest
                else:
                    want[r] = img.digest
        configs = {r: a.inspect(r)["Id"] for r in refs}
        rootfs = {r: a.inspect(r)["RootFS"]["Layers"] for r in refs}
        entries = a.save(refs, out, format=fmt)
        assert {e["annotations"]["io.containerd.image.name"] for e in entries} == set(refs)
        # every blob written is byte-exact: its name is its digest
        blobs = _blob_files(out, fmt)
        for d, data in blobs.items():
            assert sha(data) == d
            assert data == a.read_blob(d)
    with Store.open(tmp_path / "b") as b:
        again = b.load(out, name=REPO)
        got = {r: img.digest for img in again for r in img.references}
        assert got == want
        for r in refs:
            assert b.inspect(r)["Id"] == configs[r]
    # skopeo reads it
    for r in refs:
        tag = r.rsplit(":", 1)[1]
        if fmt == "docker-archive":
            info = json.loads(run_skopeo("inspect", f"docker-archive:{out}:{r}"))
            # skopeo lists a docker-archive's layers by diff ID
            assert info["Layers"] == rootfs[r]
        else:
            transport = "oci" if fmt == "oci" else "oci-archive"
            raw = run_skopeo("inspect", "--raw", f"{transport}:{out}:{tag}").encode()
            assert sha(raw) == want[r]
            copy = tmp_path / f"copy-{tag}"
            run_skopeo("copy", "-q", "--all", "--preserve-digests", f"{transport}:{out}:{tag}", f"oci:{copy}:{tag}")
            copied = _blob_files(copy, "oci")
            assert set(copied) <= set(blobs) and want[r] in copied
            for d, data in copied.items():
                assert sha(data) == d


def test_export_of_oci_image_to_docker_archive_is_what_skopeo_derives(tmp_path):
    """A gzip image saved as docker-archive keeps its gzip layers; skopeo
    decompresses them and derives the same manifest podman's archive gives."""
    with Store.open(tmp_path / "a") as a:
        a.load(corpus_path("images", "small-amd64.skopeo.oci-archive-gzip.tar"), name=REPO)
        out = tmp_path / "d.tar"
        a.save(f"{REPO}:1.0", out)
        with tarfile.open(out) as tf:
            names = set(tf.getnames())
        assert {"blobs/sha256/" + d.split(":")[1] for d, _ in AMD64_GZIP} <= names
    derived = json.loads(run_skopeo("inspect", f"docker-archive:{out}"))
    podman = json.loads(run_skopeo("inspect", f"docker-archive:{corpus_path('images', DOCKER_AMD64)}"))
    assert derived["Digest"] == podman["Digest"]
    assert derived["Layers"] == AMD64_DIFFS


def test_save_is_deterministic_and_atomic(tmp_path, store):
    store.load(corpus_path("images", "small-multiarch.oci-gzip"), name=REPO)
    one, two = tmp_path / "1.tar", tmp_path / "2.tar"
    store.save(f"{REPO}:1.0", one, format="oci-archive")
    store.save(f"{REPO}:1.0", two, format="oci-archive")
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(two.read_bytes()).digest()
    # a failing save leaves no file and no temporary behind
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(LayerStoreError):
        store.save([f"{REPO}:1.0", "localhost/nothing:here"], tmp_path / "3.tar", format="oci-archive")
    assert sorted(os.listdir(tmp_path)) == before


def test_save_by_digest_writes_unnamed_entry(tmp_path, store):
    store.load(corpus_path("images", "small-amd64.oci-zstd"), name=REPO)
    out = tmp_path / "layout"
    entries = store.save(M_AMD64_ZSTD, out, format="oci")
    assert entries == [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": M_AMD64_ZSTD,
                        "size": 1038}]
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    raw = run_skopeo("inspect", "--raw", f"oci:{out}").encode()
    assert sha(raw) == M_AMD64_ZSTD


def test_save_index_for_one_platform(tmp_path, store):
    store.load(corpus_path("images", "small-multiarch.oci-gzip"), name=REPO)
    out = tmp_path / "arm.tar"
    (entry,) = store.save(f"{REPO}:1.0", out, format="oci-archive", platform="linux/arm64")
    assert entry["digest"] == M_ARM64_GZIP
    with tarfile.open(out) as tf:
        blobs = {n for n in tf.getnames() if n.startswith("blobs/sha256/") and n.count("/") == 2}
    assert "blobs/sha256/" + I_GZIP.split(":")[1] not in blobs
    assert "blobs/sha256/" + M_ARM64_GZIP.split(":")[1] in blobs
    assert "blobs/sha256/" + M_AMD64_GZIP.split(":")[1] not in blobs



def test_docker_config_with_nulls_gets_a_docker_schema2_manifest(store, tmp_path):
    """A config OCI does not allow (``Env: null``) keeps its Docker types."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        tf.addfile(_info("hello.txt", 5), io.BytesIO(b"hello"))
    layer = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": None, "Cmd": None},
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
                         "history": [{"created_by": "ADD hello.txt"}]}).encode()
    archive = tmp_path / "nulls.tar"
    with tarfile.open(archive, "w") as tf:
        for name, data in ((sha(layer)[7:] + "/layer.tar", layer), (sha(config)[7:] + ".json", config),
                           ("manifest.json", json.dumps([{"Config": sha(config)[7:] + ".json",
                                                          "RepoTags": ["nulls:1"],
                                                          "Layers": [sha(layer)[7:] + "/layer.tar"]}]).encode())):
            tf.addfile(_info(name, len(data)), io.BytesIO(data))
    (img,) = store.load(archive)
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{sha(config)}",'
        f'"size":{len(config)}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar",'
        f'"digest":"{sha(layer)}","size":{len(layer)}}}]}}').encode()
    assert store.read_blob(img.digest) == expected
    assert img.references == ("docker.io/library/nulls:1",)
    out = tmp_path / "again.tar"
    store.save("nulls:1", out)
    with Store.open(tmp_path / "other") as other:
        (again,) = other.load(out)
    assert again.digest == img.digest and again.references == img.references


def test_oci_destination_must_be_new_or_empty(store, tmp_path):
    store.load(corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ImageFormatError, match="not an empty directory"):
        store.save(f"{REPO}:1.0-arm64", busy, format="oci")
    assert os.listdir(busy) == ["x"]
    empty = tmp_path / "empty"
    empty.mkdir()
    store.save(f"{REPO}:1.0-arm64", empty, format="oci")
    with Store.open(tmp_path / "other") as other:
        (img,) = other.load(empty)
    assert img.config_digest == ARM64_CONFIG and img.references == (f"{REPO}:1.0-arm64",)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".layerstore")] == []


def test_save_destination_errors_and_file_mode(store, tmp_path):
    import stat as stat_mod

    from layerstore.errors import ImageFormatError

    store.load(corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    ref = "localhost/corpus/small:1.0-arm64"
    with pytest.raises(ImageFormatError, match="does not exist"):
        store.save(ref, tmp_path / "missing" / "x.tar", format="oci-archive")
    with pytest.raises(ImageFormatError, match="unknown format"):
        store.save(ref, tmp_path / "x.tar", format="tarball")
    out = tmp_path / "x.tar"
    old = os.umask(0o022)
    try:
        store.save(ref, out, format="docker-archive")
    finally:
        os.umask(old)
    assert stat_mod.S_IMODE(out.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".layerstore-save-")]


@pytest.mark.parametrize("case", ["small-amd64.podman.docker-archive.tar", "small-amd64-umoci.oci-gzip"])
def test_layer_first_stored_as_opaque_blob_loads(store, case):
    """A layer blob ingested earlier under a non-layer media type is held as
    raw chunks; loading an image that uses it upgrades it to a layer instead
    of refusing the image."""
    path = corpus_path("images", case)
    files = input_files(path)
    layers = [data for data in files.values() if data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar"]
    assert layers
    for data in layers:
        assert store.ingest(io.BytesIO(data), media_type="application/octet-stream").kind == "raw"
    loaded = store.load(path, name=REPO)
    assert loaded
    for layer in [layer for img in loaded for layer in img.layers]:
        info = store.stat(layer.digest)
        assert info.diff_id == layer.diff_id and info.kind != "raw"
        assert store.layer_info(layer.diff_id).entries > 0
    for data in layers:
        assert store.read_blob(sha(data)) == data
    assert store.verify().ok
