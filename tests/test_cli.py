"""The ``layerstore`` command, driven as a subprocess (``python -m
layerstore --store <tmp> ...``) on the real images of the corpus.

Oracles: the corpus's documented facts (corpus/README.md: image IDs,
diff IDs, layer tar sizes, which files each layer holds and removes);
``union_oracle`` (Python's tarfile reading the layers in order with
whiteouts applied per the OCI image spec, layer.md); the configs read with
``json`` from the archives; ``hashlib``; file sizes on disk.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading

import pytest

from conftest import PROJECT_ROOT, corpus_path
from union_oracle import children, docker_archive_layers, norm, oci_layout_layers, union

AMD64 = "localhost/corpus/small:1.0-amd64"
AMD64_VFS = "localhost/corpus/small:1.0-amd64-vfs"
ARM64 = "localhost/corpus/small:1.0-arm64"
AMD64_ID = "sha256:b712967c1e19f5ef57c137b4df4f2c2196799ae64d83b3659f5769dd0ef61105"
VFS_ID = "sha256:411cb089741139d1ccc3c8849b21cbd9fb20a051042629d65ee79b69bca9679f"
ARM64_ID = "sha256:1bc2a3a05b69693ec5764915501df49f34d47f7a1821be85d7194baa629f07b2"
AMD64_DIFF_IDS = [
    "sha256:f593ec02b2d519fb7bc1f621348fd72b2dd5a5dca823ec99a36e856fe43d3e92",
    "sha256:03cdb4d57283cf828c0e460530f9285ae982604e4958603804ed44dc3542f5e5",
    "sha256:61407ee1beb0b786f9e2092eaeba9334467db2b63fb4e2246ba0228da2c92b10",
    "sha256:ab7f01943b94a9d59f6c81f54b5f1b4e292a2e5e663d7cbcdc58267c28aebdb0",
]
AMD64_TAR_SIZES = [2141696, 33280, 4096, 4096]
ARM64_TAR_SIZES = [2006016, 33280]
UMOCI_11_MANIFEST = "sha256:cb8afc53db0167911e92eb2ab7d16059d0ec12094d0157e869696ae23fd46d8a"

# every artifact of corpus/images, with the name given to images the input
# does not name fully (OCI ref names that are only a tag)
INPUTS = [
    ("small-amd64.podman.docker-archive.tar", None),
    ("small-amd64-vfs.podman.docker-archive.tar", None),
    ("small-arm64.podman.docker-archive.tar", None),
    ("small-multi.podman.docker-archive.tar", None),
    ("small-amd64.skopeo.oci-archive-gzip.tar", "localhost/corpus/ociarchive"),
    ("small-amd64.oci-zstd", "localhost/corpus/zstd"),
    ("small-multiarch.oci-gzip", "localhost/corpus/multi"),
    ("small-multiarch.oci-zstd", "localhost/corpus/multi-zstd"),
    ("small-amd64-umoci.oci-gzip", "localhost/corpus/umoci"),
    ("small-multiarch.skopeo-all.oci-archive-gzip.tar", "localhost/corpus/multi"),
]

ERROR_LINE = re.compile(r"layerstore: error: \S.*")


def cli_env():
    env = {k: v for k, v in os.environ.items() if k not in ("LAYERSTORE_PATH", "SOURCE_DATE_EPOCH")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(store, *args, expect=0, stdin=None):
    """Run ``python -m layerstore --store STORE ARGS``; check the exit code;
    returns (stdout bytes, stderr text)."""
    cmd = [sys.executable, "-m", "layerstore"] + (["--store", str(store)] if store is not None else []) + \
        [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, env=cli_env(), stdin=subprocess.DEVNULL if stdin is None else stdin,
                       timeout=300)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == expect, f"{cmd}: exit {p.returncode}, stderr:\n{err}"
    return p.stdout, err


def run_json(store, *args):
    out, err = run(store, *args, "--format", "json")
    assert err == ""
    return json.loads(out)


def one_error_line(err: str) -> str:
    """stderr of a failed command: exactly one line, in the documented form."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert ERROR_LINE.fullmatch(lines[0]), err
    assert "Traceback" not in err
    return lines[0]


def config_of(archive: str) -> bytes:
    with tarfile.open(corpus_path("images", archive)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        return tf.extractfile(manifest[0]["Config"]).read()


def host_arch_id():
    import platform

    return ARM64_ID if platform.machine().lower() in ("aarch64", "arm64") else AMD64_ID


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A store holding every image of corpus/images, loaded through the CLI;
    yields (store path, {input: load JSON})."""
    store = tmp_path_factory.mktemp("cli") / "store"
    reports = {}
    for name, repo in INPUTS:
        args = ["load", corpus_path("images", name)] + (["--name", repo] if repo else [])
        out, err = run(store, *args, "--format", "json")
        assert err == ""  # no progress bar: stderr is not a terminal
        reports[name] = json.loads(out)
    return store, reports


# --- load, images, tag, inspect, history ---------------------------------------------------------

def test_load_reports_each_layer_stored_or_already_existing(loaded):
    _store, reports = loaded
    (first,) = reports["small-amd64.podman.docker-archive.tar"]
    (image,) = first["images"]
    assert [(layer["diff_id"], layer["size"], layer["status"]) for layer in image["layers"]] == [
        (d, s, "stored") for d, s in zip(AMD64_DIFF_IDS, AMD64_TAR_SIZES)]
    assert image["config_digest"] == AMD64_ID
    assert image["references"] == [AMD64]
    # small-multi holds the amd64 and vfs images again: nothing new
    (multi,) = reports["small-multi.podman.docker-archive.tar"]
    assert len(multi["images"]) == 2
    assert {layer["status"] for img in multi["images"] for layer in img["layers"]} == {"already exists"}
    # the vfs image shares only the base layer with amd64 (corpus/README.md)
    (vfs,) = reports["small-amd64-vfs.podman.docker-archive.tar"][0]["images"]
    assert [layer["status"] for layer in vfs["layers"]] == ["already exists", "stored", "stored", "stored"]


def test_load_text_output_names_layers_and_images(tmp_path):
    out, err = run(tmp_path / "s", "load", "-i", corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    lines = out.decode().splitlines()
    assert lines == ["6de3fe51bc6e: stored (2.01MB)", "a6304fec2077: stored (33.3kB)",
                     f"Loaded image: {ARM64}"]
    assert err == ""
    out, _ = run(tmp_path / "s", "load", corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    assert out.decode().splitlines()[:2] == ["6de3fe51bc6e: already exists (2.01MB)",
                                            "a6304fec2077: already exists (33.3kB)"]
    out, _ = run(tmp_path / "s", "-q", "load", corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    assert out.decode().splitlines() == [f"Loaded image: {ARM64}"]


def test_images_lists_every_tag_with_its_image_id(loaded):
    store, _ = loaded
    umoci_11_config = json.loads((corpus_path("images", "small-amd64-umoci.oci-gzip") / "blobs" / "sha256" /
                                  UMOCI_11_MANIFEST.split(":")[1]).read_bytes())["config"]["digest"]
    rows = run_json(store, "images")
    got = sorted((r["repository"], r["tag"], r["id"], r["size"]) for r in rows)
    amd_size, arm_size = sum(AMD64_TAR_SIZES), sum(ARM64_TAR_SIZES)
    host_id = host_arch_id()
    host_size = amd_size if host_id == AMD64_ID else arm_size
    want = sorted([
        ("localhost/corpus/small", "1.0-amd64", AMD64_ID, amd_size),
        ("localhost/corpus/small", "1.0-amd64-vfs", VFS_ID, amd_size),
        ("localhost/corpus/small", "1.0-arm64", ARM64_ID, arm_size),
        ("localhost/corpus/ociarchive", "1.0", AMD64_ID, amd_size),
        ("localhost/corpus/zstd", "1.0", AMD64_ID, amd_size),
        ("localhost/corpus/multi", "1.0", host_id, host_size),
        ("localhost/corpus/multi-zstd", "1.0", host_id, host_size),
        ("localhost/corpus/umoci", "1.0", AMD64_ID, amd_size),
        ("localhost/corpus/umoci", "1.1", umoci_11_config, amd_size + 5632),
    ])
    assert got == want
    out, _ = run(store, "images", "localhost/corpus/small")
    lines = out.decode().splitlines()
    assert re.fullmatch(r"REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE", lines[0])
    assert len(lines) == 4
    row = [line for line in lines if " 1.0-amd64 " in line][0].split()
    assert row[:3] == ["localhost/corpus/small", "1.0-amd64", AMD64_ID[7:19]]
    assert row[-1] == "2.18MB"
    out, _ = run(store, "images", "-q", "localhost/corpus/small")
    assert sorted(out.decode().split()) == sorted(d[7:19] for d in (AMD64_ID, VFS_ID, ARM64_ID))


def test_tag_inspect_and_history(loaded):
    store, _ = loaded
    run(store, "tag", AMD64, "busybox:cli-test")
    (info,) = run_json(store, "inspect", "busybox:cli-test")  # inspect is JSON anyway
    assert info["Id"] == AMD64_ID
    assert "busybox:cli-test" in info["RepoTags"] and "localhost/corpus/small:1.0-amd64" in info["RepoTags"]
    assert info["RootFS"] == {"Type": "layers", "Layers": AMD64_DIFF_IDS}
    assert info["Size"] == sum(AMD64_TAR_SIZES)
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    config = json.loads(config_of("small-amd64.podman.docker-archive.tar"))
    assert info["Created"] == config["created"]
    steps = run_json(store, "history", "busybox:cli-test")
    assert [s["size"] for s in steps if not s["empty_layer"]] == list(reversed(AMD64_TAR_SIZES))
    assert [s["created_by"] for s in steps] == [h.get("created_by", "") for h in reversed(config["history"])]
    assert steps[0]["id"] == AMD64_ID and all(s["id"] == "<missing>" for s in steps[1:])
    out, _ = run(store, "history", "busybox:cli-test")
    lines = out.decode().splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert lines[1].startswith(AMD64_ID[7:19])
    assert len(lines) == 1 + len(config["history"])


# --- views: ls, cat, export, diff, layers ---------------------------------------------------------

def test_ls_matches_the_tarfile_oracle(loaded):
    store, _ = loaded
    state, _ = union(docker_archive_layers("small-amd64.podman.docker-archive.tar"))
    for directory in ("/", "/etc", "/etc/profile.d", "/smallapp"):
        rows = run_json(store, "ls", AMD64, directory)
        assert [r["path"] for r in rows] == children(state, directory)
        for r in rows:
            rec = state[r["path"]]
            assert (r["type"], r["mode"], r["uid"], r["gid"], r["size"]) == \
                (rec.type, rec.mode, rec.uid, rec.gid, rec.size), r["path"]
            assert int(r["mtime"]) == int(rec.mtime)
            if rec.type == "symlink":
                assert r["linkname"] == rec.linkname
    everything = run_json(store, "ls", "-R", AMD64, "/")
    assert sorted(r["path"] for r in everything) == sorted(state)
    out, _ = run(store, "ls", AMD64, "/etc/profile.d")
    (line,) = out.decode().splitlines()
    assert re.fullmatch(r"-rw-r--r-- 0/0 20 \d{4}-\d\d-\d\d \d\d:\d\d /etc/profile.d/app.sh", line)
    out, _ = run(store, "ls", AMD64, "/bin/sh")
    assert out.decode().split()[0].startswith("l") and out.decode().rstrip().endswith(f"-> {state['/bin/sh'].linkname}")


def test_cat_streams_files_of_the_union(loaded):
    store, _ = loaded
    amd, _ = union(docker_archive_layers("small-amd64.podman.docker-archive.tar"))
    out, err = run(store, "cat", AMD64, "/etc/profile.d/app.sh")
    assert out == amd["/etc/profile.d/app.sh"].data == b"export APP=smallapp\n"
    assert err == ""
    # a symbolic link is followed inside the image: /bin/sh -> /bin/busybox
    out, _ = run(store, "cat", AMD64, "/bin/sh")
    assert out == amd["/bin/busybox"].data and len(out) > 1_000_000
    out, _ = run(store, "cat", AMD64, "/etc/os-release", "/smallapp/VERSION")
    assert out == amd["/etc/os-release"].data + amd["/smallapp/VERSION"].data
    # whited out in layer 2 of amd64; still there on arm64 (no RUN steps)
    _, err = run(store, "cat", AMD64, "/etc/motd", expect=3)
    assert one_error_line(err) == f"layerstore: error: cat {AMD64} /etc/motd: no such file or directory"
    arm, _ = union(docker_archive_layers("small-arm64.podman.docker-archive.tar"))
    out, _ = run(store, "cat", ARM64, "/etc/motd")
    assert out == arm["/etc/motd"].data and out
    # umoci 1.1 deleted VERSION and added VERSION.txt
    umoci, _ = union(oci_layout_layers("small-amd64-umoci.oci-gzip", "1.1"))
    out, _ = run(store, "cat", "localhost/corpus/umoci:1.1", "/smallapp/VERSION.txt")
    assert out == umoci["/smallapp/VERSION.txt"].data
    run(store, "cat", "localhost/corpus/umoci:1.1", "/smallapp/VERSION", expect=3)


def test_export_is_the_flattened_rootfs(loaded, tmp_path):
    store, _ = loaded
    state, _ = union(docker_archive_layers("small-amd64.podman.docker-archive.tar"))
    out_path = tmp_path / "rootfs.tar"
    out, err = run(store, "export", AMD64, "-o", out_path)
    assert out == b"" and err == ""
    with tarfile.open(out_path) as tf:
        members = {norm(m.name): m for m in tf.getmembers()}
        assert sorted(members) == sorted(state)
        for path, rec in state.items():
            m = members[path]
            assert (m.mode, m.uid, m.gid) == (rec.mode, rec.uid, rec.gid), path
            if rec.type == "file":
                assert m.isreg() and tf.extractfile(m).read() == rec.data, path
            elif rec.type == "symlink":
                assert m.issym() and m.linkname == rec.linkname, path
            elif rec.type == "dir":
                assert m.isdir(), path
    assert "/etc/motd" not in members and not any(".wh." in p for p in members)
    piped, _ = run(store, "export", AMD64)  # stdout is a pipe here
    assert piped == out_path.read_bytes()


def test_diff_and_layers(loaded):
    store, _ = loaded
    out, _ = run(store, "diff", "localhost/corpus/umoci:1.0", "localhost/corpus/umoci:1.1")
    lines = [line for line in out.decode().splitlines() if not line.startswith("C ")]
    assert lines == ["D /etc/profile.d/app.sh", "A /etc/profile.d/umoci.sh", "D /smallapp/VERSION",
                     "A /smallapp/VERSION.txt"]
    changes = run_json(store, "diff", AMD64, ARM64)
    amd, _ = union(docker_archive_layers("small-amd64.podman.docker-archive.tar"))
    arm, _ = union(docker_archive_layers("small-arm64.podman.docker-archive.tar"))
    assert sorted(c["path"] for c in changes if c["kind"] == "A") == sorted(set(arm) - set(amd))
    assert sorted(c["path"] for c in changes if c["kind"] == "D") == sorted(set(amd) - set(arm))
    assert "/bin/busybox" in {c["path"] for c in changes if c["kind"] == "C" and "content" in c["what"]}
    report = run_json(store, "layers", AMD64)
    _, counts = union(docker_archive_layers("small-amd64.podman.docker-archive.tar"))
    assert [(r["diff_id"], r["size"], r["added"], r["changed"], r["removed"], r["wasted_bytes"])
            for r in report["layers"]] == [
        (d, s, c.added, c.changed, c.removed, c.wasted_bytes) for d, s, c in zip(AMD64_DIFF_IDS, AMD64_TAR_SIZES, counts)]
    assert report["wasted_bytes"] == sum(c.wasted_bytes for c in counts) > 0
    assert report["layers"][2]["created_by"].endswith("rm /etc/motd")
    out, _ = run(store, "layers", AMD64)
    assert out.decode().splitlines()[0].split()[:3] == ["#", "DIFF", "ID"]


# --- blobs, save, import ----------------------------------------------------------------------------

def test_blobs_list_and_cat(loaded):
    store, _ = loaded
    config = config_of("small-amd64.podman.docker-archive.tar")
    rows = {r["digest"]: r for r in run_json(store, "blobs", "ls")}
    assert rows[AMD64_ID]["size"] == len(config)
    for d, size in zip(AMD64_DIFF_IDS, AMD64_TAR_SIZES):
        assert (rows[d]["kind"], rows[d]["size"]) == ("layer", size)
    out, _ = run(store, "blobs", "cat", AMD64_ID)
    assert out == config
    out, _ = run(store, "blobs", "cat", AMD64_DIFF_IDS[1])
    assert "sha256:" + hashlib.sha256(out).hexdigest() == AMD64_DIFF_IDS[1] and len(out) == AMD64_TAR_SIZES[1]
    info = run_json(store, "blobs", "info", AMD64_DIFF_IDS[1])
    assert (info["entries"], info["size"]) == (4, AMD64_TAR_SIZES[1])


def test_save_round_trips_through_another_store(loaded, tmp_path):
    store, _ = loaded
    archive = tmp_path / "small.oci.tar"
    run(store, "save", "--format", "oci-archive", "-o", archive, AMD64)
    with tarfile.open(archive) as tf:
        for m in tf.getmembers():
            if m.isreg() and m.name.startswith("blobs/sha256/"):
                assert hashlib.sha256(tf.extractfile(m).read()).hexdigest() == m.name.rsplit("/", 1)[1]
    other = tmp_path / "other"
    out, _ = run(other, "load", archive)
    assert out.decode().splitlines()[-1] == f"Loaded image: {AMD64}"  # the name travels in the archive
    (info,) = run_json(other, "inspect", AMD64)
    assert info["Id"] == AMD64_ID and info["RootFS"]["Layers"] == AMD64_DIFF_IDS


def test_import_of_an_exported_rootfs_has_the_same_files(loaded, tmp_path):
    store, _ = loaded
    rootfs = tmp_path / "rootfs.tar"
    run(store, "export", AMD64, "-o", rootfs)
    out1, _ = run(store, "import", rootfs, "localhost/flat:1")
    out2, _ = run(store, "import", rootfs, "localhost/flat:2")
    image_id = out1.decode().strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id) and out2.decode().strip() == image_id  # deterministic
    (info,) = run_json(store, "inspect", "localhost/flat:1")
    assert info["Id"] == image_id
    assert info["RootFS"]["Layers"] == ["sha256:" + hashlib.sha256(rootfs.read_bytes()).hexdigest()]
    key = lambda r: (r["path"], r["type"], r["mode"], r["size"], r["linkname"], int(r["mtime"]))
    assert [key(r) for r in run_json(store, "ls", "-R", "localhost/flat:1", "/")] == \
        [key(r) for r in run_json(store, "ls", "-R", AMD64, "/")]
    out, _ = run(store, "cat", "localhost/flat:1", "/smallapp/data.txt")
    ref, _ = run(store, "cat", AMD64, "/smallapp/data.txt")
    assert out == ref and len(out) == 28890
    # a directory
    tree = tmp_path / "tree"
    (tree / "app").mkdir(parents=True)
    (tree / "app" / "hello.txt").write_bytes(b"hello\n")
    out, _ = run(store, "import", tree, "localhost/tree:1", "--timestamp", "1700000000")
    (info,) = run_json(store, "inspect", "localhost/tree:1")
    assert info["Created"] == "2023-11-14T22:13:20Z"
    out, _ = run(store, "cat", "localhost/tree:1", "/app/hello.txt")
    assert out == b"hello\n"


# --- df, prune, repack, fsck ---------------------------------------------------------------------------

def pack_bytes(store) -> int:
    return sum(p.stat().st_size for p in (store / "packs").iterdir() if p.suffix in (".pack", ".idx"))


def test_df_prune_repack_fsck(tmp_path):
    """Load amd64 and arm64, remove arm64: df says what only arm64 used is
    reclaimable, prune deletes it, repack gives the bytes back to the disk,
    fsck finds the store clean."""
    store = tmp_path / "s"
    run(store, "load", corpus_path("images", "small-amd64.podman.docker-archive.tar"),
        corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    before = run_json(store, "df")
    assert (before["images"], before["active"]) == (2, 2)
    arm_config = config_of("small-arm64.podman.docker-archive.tar")
    (arm_info,) = run_json(store, "inspect", ARM64)
    arm_blob_bytes = sum(ARM64_TAR_SIZES) + len(arm_config) + arm_info["Descriptor"]["size"]
    out, _ = run(store, "df")
    assert re.match(r"TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE\nImages\s+2\s+2\s", out.decode())

    out, _ = run(store, "rmi", ARM64)
    assert out.decode().splitlines() == [f"Untagged: {ARM64}", f"Deleted: {arm_info['Descriptor']['digest']}"]
    dry = run_json(store, "prune", "--dry-run")
    assert dry["dry_run"] and dry["reclaimed_bytes"] > 0
    assert run_json(store, "df")["logical_bytes"] == before["logical_bytes"]  # a dry run removes nothing
    report = run_json(store, "prune")
    assert report["reclaimed_bytes"] == dry["reclaimed_bytes"]
    assert sorted(report["blobs"]) == sorted(dry["blobs"])
    after = run_json(store, "df")
    assert (after["images"], after["active"]) == (1, 1)
    assert before["logical_bytes"] - after["logical_bytes"] == arm_blob_bytes

    disk_before = pack_bytes(store)
    repack = run_json(store, "repack", "--threshold", "0")
    disk_after = pack_bytes(store)
    assert repack["bytes_before"] - repack["bytes_after"] == disk_before - disk_after > 0
    assert disk_before - disk_after >= report["reclaimed_bytes"] * 0.95

    out, err = run(store, "fsck")
    assert err == "" and out.decode().rstrip().endswith(": ok")
    assert run_json(store, "fsck")["ok"] is True
    run(store, "cat", AMD64, "/etc/profile.d/app.sh")
    run(store, "cat", ARM64, "/etc/motd", expect=3)


def test_fsck_reports_a_damaged_pack_with_exit_code_5(tmp_path):
    store = tmp_path / "s"
    run(store, "load", corpus_path("images", "small-arm64.podman.docker-archive.tar"))
    pack = max((store / "packs").glob("*.pack"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    out, err = run(store, "fsck", expect=5)
    assert err == "" and "faults" in out.decode().splitlines()[-1]
    report = json.loads(run(store, "fsck", "--format", "json", expect=5)[0])
    assert report["ok"] is False and report["faults"]
    _, err = run(store, "cat", ARM64, "/bin/busybox", expect=5)
    one_error_line(err)
    # repair drops what cannot be recovered; the store is then clean
    out, _ = run(store, "fsck", "--repair")
    assert "0 remain after repair" in out.decode().splitlines()[-1]
    assert any(line.startswith("repaired: ") for line in out.decode().splitlines())
    run(store, "fsck")


# --- errors, help, progress --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, text", [
    (["frobnicate"], 2, "No such command"),
    (["ls"], 2, "Missing argument"),
    (["images", "--format", "xml"], 2, "Invalid value"),
    (["inspect", "localhost/absent:1"], 3, "not found"),
    (["ls", AMD64, "/no/such/path"], 3, "no such file or directory"),
    (["cat", AMD64, "/etc"], 4, "is a directory"),
    (["tag", AMD64, "Not A Reference"], 4, "invalid reference"),
    (["blobs", "cat", "sha256:" + "0" * 64], 3, "not found"),
    (["blobs", "cat", "md5:abc"], 4, "digest"),
    (["load", "/nonexistent/archive.tar"], 3, "no such file or directory"),
    (["export", AMD64, "-o", "/nonexistent/dir/rootfs.tar"], 3, "no such directory"),
    (["save", "-o", "/nonexistent/dir/small.tar", AMD64], 3, "no such directory"),
    (["save", "-o", "/tmp/never-written.tar", "localhost/absent:1"], 3, "not found"),
    (["rmi", AMD64_ID], 6, "--force"),
])
def test_errors_are_one_line_with_a_documented_code(loaded, args, code, text):
    store, _ = loaded
    _, err = run(store, *args, expect=code)
    line = one_error_line(err)
    assert text in line


def test_input_that_is_not_an_image_and_a_store_that_is_not_a_store(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive at all\n" * 100)
    _, err = run(tmp_path / "s", "load", junk, expect=4)
    assert one_error_line(err).startswith(f"layerstore: error: load {junk}: ")
    (tmp_path / "s" / "store.json").write_text("{garbage")
    _, err = run(tmp_path / "s", "images", expect=5)
    one_error_line(err)
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "mine.txt").write_text("x")
    _, err = run(tmp_path / "notastore", "images", expect=5)
    assert "not a layerstore store" in one_error_line(err)


def test_debug_shows_the_traceback(loaded):
    store, _ = loaded
    _, err = run(store, "--debug", "inspect", "localhost/absent:1", expect=1)
    assert "Traceback" in err and "ImageNotFoundError" in err


def test_help_version_and_exit_code_table():
    out, _ = run(None, "--version")
    assert re.fullmatch(r"layerstore \d+\.\d+\.\d+\n", out.decode())
    out, _ = run(None, "--help")
    text = out.decode()
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 130, 141):
        assert re.search(rf"^\s+{code}\s+\S", text, re.M), code
    commands = ["load", "save", "import", "images", "tag", "rmi", "inspect", "history", "df", "prune", "repack",
                "fsck", "ls", "cat", "export", "diff", "layers", ["blobs", "ls"], ["blobs", "cat"], ["blobs", "info"]]
    for cmd in commands:
        cmd = cmd if isinstance(cmd, list) else [cmd]
        out, _ = run(None, *cmd, "--help")
        help_text = out.decode()
        assert "Example:" in help_text and "  layerstore " + " ".join(cmd) in help_text, cmd


def test_console_script_is_installed():
    exe = shutil.which("layerstore")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("the layerstore console script is not on PATH after pip install")
        pytest.skip("layerstore console script not installed here (pip install -e . installs it)")
    p = subprocess.run([exe, "--version"], capture_output=True, env=cli_env(), timeout=60)
    assert p.returncode == 0 and p.stdout.decode().startswith("layerstore ")


def run_on_terminal(store, *args):
    """Run with stderr on a pseudo-terminal (stdout a pipe); returns (exit
    code, stdout bytes, what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    cmd = [sys.executable, "-m", "layerstore", "--store", str(store)] + [str(a) for a in args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=cli_env())
    os.close(slave)
    shown = bytearray()

    def read_terminal():  # concurrently: Linux drops what is unread once the last writer closes
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    out = p.stdout.read()
    code = p.wait(timeout=120)
    reader.join(10)
    os.close(master)
    return code, out, bytes(shown).decode("utf-8", "replace")


def test_progress_bar_only_on_a_terminal(tmp_path):
    store = tmp_path / "s"
    archive = corpus_path("images", "small-amd64.podman.docker-archive.tar")
    code, out, shown = run_on_terminal(store, "load", archive)
    assert code == 0
    assert f"Loaded image: {AMD64}" in out.decode()
    # the bar: label, bytes done/total (the archive's size), elapsed<ETA, rate
    bar = re.compile(r"([^:\r]+): +\d+%\|.*\| \d+(\.\d+)?[kMG]?B/(\d+(\.\d+)?[kMG]?B) \[\d\d:\d\d<[^,]*, [^\]]*B/s\]")
    m = bar.search(shown)
    assert m, shown
    assert m.group(1) == "load small-amd64.podman.docker-archive.tar" and m.group(3) == "2.20MB"
    code, out, shown = run_on_terminal(store, "export", AMD64, "-o", tmp_path / "r.tar")
    m = bar.search(shown)
    assert code == 0 and m and m.group(1) == "export", shown
    for args, label in [(["save", "-o", tmp_path / "s.tar", AMD64], "save s.tar"), (["fsck"], "fsck")]:
        code, _, shown = run_on_terminal(store, *args)
        m = bar.search(shown)
        assert code == 0 and m and m.group(1) == label, shown
    code, _, shown = run_on_terminal(store, "--quiet", "export", AMD64, "-o", tmp_path / "r2.tar")
    assert code == 0 and shown == ""
    assert (tmp_path / "r.tar").read_bytes() == (tmp_path / "r2.tar").read_bytes()
    # not a terminal: nothing on stderr
    _, err = run(store, "export", AMD64, "-o", tmp_path / "r3.tar")
    assert err == ""


# --- README ---------------------------------------------------------------------------------------------

def readme_section(title: str) -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def test_readme_exit_codes_are_the_commands():
    from layerstore.cli import EXIT_CODES

    rows = re.findall(r"^\| (\d+) \| (.+) \|$", readme_section("Command line"), re.M)
    assert [int(code) for code, _ in rows] == list(EXIT_CODES)


def test_readme_session_works_when_pasted_into_a_shell(tmp_path):
    """The shell session of README.md's "Command line" section, run by bash
    from the project root (``set -e``: every command but the one shown
    failing must succeed) on a fresh default store."""
    (block,) = re.findall(r"```sh\n(.*?)```", readme_section("Command line"), re.S)
    script = f'layerstore() {{ "{sys.executable}" -m layerstore "$@"; }}\nset -e\n' + block
    env = cli_env()
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    p = subprocess.run(["bash", "-c", script], cwd=PROJECT_ROOT, capture_output=True, env=env, timeout=600)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, f"{out}\n{err}"
    assert f"Loaded image: {AMD64}" in out and "Loaded image: localhost/corpus/umoci:1.1" in out
    assert "exit code 3" in out
    assert err.splitlines() == ["layerstore: error: cat localhost/demo /etc/motd: no such file or directory"]
    assert "A /smallapp/VERSION.txt" in out
    assert out.rstrip().endswith(": ok")  # fsck
    assert (tmp_path / "data" / "layerstore" / "store.json").is_file()


def test_codec_of_a_new_store_and_a_mismatch(tmp_path):
    """--codec picks the compression of a new store; df names it; opening
    the store with another codec is refused with one error line (exit 5)."""
    store = tmp_path / "z"
    run(None, "--store", store, "--codec", "zstd", "load", corpus_path("images", "small-amd64.podman.docker-archive.tar"))
    out, _ = run(store, "df")
    assert "(after zstd compression)" in out.decode()
    # per image: named by manifest digest, under a DIGEST heading
    (info,) = run_json(store, "inspect", "localhost/corpus/small:1.0-amd64")
    manifest = info["Descriptor"]["digest"]
    lines = run(store, "df", "-v")[0].decode().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("DIGEST"))
    assert lines[head + 1].split()[0] == manifest.split(":")[1][:12]
    z = run_json(store, "df")
    plain = tmp_path / "l"
    run(plain, "load", corpus_path("images", "small-amd64.podman.docker-archive.tar"))
    assert "(after lz4 compression)" in run(plain, "df")[0].decode()
    assert z["logical_bytes"] == run_json(plain, "df")["logical_bytes"]
    assert z["stored_bytes"] < run_json(plain, "df")["stored_bytes"]
    _, err = run(None, "--store", store, "--codec", "lz4", "images", expect=2)  # a bad --codec
    assert "codec" in one_error_line(err)
    run(None, "--store", store, "--codec", "zstd", "images")  # the same codec is fine
