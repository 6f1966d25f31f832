"""Union views of layer stacks (layerstore.views): listing, lookup, file
contents, flattened export, diff, per-layer changes and wasted bytes, and
import of a root filesystem.

Oracles: ``union_oracle`` (Python's tarfile reading the layers in order with
whiteouts applied per the OCI image spec, layer.md), the corpus's documented
facts (corpus/README.md: which layer holds which file and whiteout),
``tarfile`` reading what export writes, ``os.lstat`` of imported
directories, ``hashlib`` and ``gzip``.
"""
import gzip
import hashlib
import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from conftest import corpus_path
from union_oracle import docker_archive_layers, norm, oci_layout_layers, union
from layerstore.errors import TarFormatError, UnsafePathError
from layerstore.store import Store
from layerstore.views import (Change, ImageView, LayerSource, PathNotFoundError, ViewError, diff,
                              image_layers, import_rootfs)

AMD64 = "localhost/corpus/small:1.0-amd64"
AMD64_VFS = "localhost/corpus/small:1.0-amd64-vfs"
ARM64 = "localhost/corpus/small:1.0-arm64"
AMD64_DIFF_IDS = [
    "sha256:f593ec02b2d519fb7bc1f621348fd72b2dd5a5dca823ec99a36e856fe43d3e92",
    "sha256:03cdb4d57283cf828c0e460530f9285ae982604e4958603804ed44dc3542f5e5",
    "sha256:61407ee1beb0b786f9e2092eaeba9334467db2b63fb4e2246ba0228da2c92b10",
    "sha256:ab7f01943b94a9d59f6c81f54b5f1b4e292a2e5e663d7cbcdc58267c28aebdb0",
]


# --- helpers --------------------------------------------------------------------------------

def tar_bytes(*entries) -> bytes:
    """A layer tar from (name, kind, payload) triples: kind "file" (payload
    bytes), "dir", "symlink"/"hardlink" (payload: target), "fifo"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            tf.addfile(info)
    return buf.getvalue()


def sources(*layers: bytes):
    return [LayerSource("sha256:" + hashlib.sha256(b).hexdigest(), len(b), lambda b=b: io.BytesIO(b))
            for b in layers]


def view_of(*layers: bytes) -> ImageView:
    return ImageView(sources(*layers), "test")


def assert_view_matches(view: ImageView, layers):
    """Every path of the view against the oracle: type, mode, owner, size,
    mtime, link target, and the bytes of every file."""
    state, _counts = union(layers)
    nodes = {n.path: n for n in view.walk()}
    assert sorted(nodes) == sorted(state)
    for path, rec in state.items():
        node = nodes[path]
        assert node.type == rec.type, path
        assert (node.mode, node.uid, node.gid) == (rec.mode, rec.uid, rec.gid), path
        assert node.mtime == pytest.approx(rec.mtime, abs=1e-6), path
        if rec.type == "symlink":
            assert node.linkname == rec.linkname, path
        if rec.type == "hardlink":
            assert node.linkname == rec.linkname, path
        if rec.type in ("char", "block"):
            assert (node.devmajor, node.devminor) == (rec.devmajor, rec.devminor), path
        if rec.data is not None:
            assert node.size == len(rec.data), path
            assert b"".join(view.iter_content(path)) == rec.data, path
    return state


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("views") / "store"
    with Store.open(root) as s:
        for archive in ("small-amd64.podman.docker-archive.tar", "small-amd64-vfs.podman.docker-archive.tar",
                        "small-arm64.podman.docker-archive.tar"):
            s.load(corpus_path("images", archive))
        s.load(corpus_path("images", "small-amd64-umoci.oci-gzip"), name="localhost/corpus/umoci")
        yield s


# --- the real images ----------------------------------------------------------------------------

@pytest.mark.parametrize("reference, archive", [
    (AMD64, "small-amd64.podman.docker-archive.tar"),
    (AMD64_VFS, "small-amd64-vfs.podman.docker-archive.tar"),
    (ARM64, "small-arm64.podman.docker-archive.tar"),
])
def test_corpus_image_view_matches_tarfile_oracle(store, reference, archive):
    view = ImageView.of_image(store, reference)
    state = assert_view_matches(view, docker_archive_layers(archive))
    assert len(state) > 290


def test_umoci_image_view_matches_tarfile_oracle(store):
    view = ImageView.of_image(store, "localhost/corpus/umoci:1.1")
    assert_view_matches(view, oci_layout_layers("small-amd64-umoci.oci-gzip", "1.1"))


def test_corpus_whiteout_facts(store):
    """corpus/README.md: amd64 layer 2 whites out etc/motd; layer 3 replaces
    etc/profile.d (opaque on overlay, per-file whiteouts on vfs) by a
    directory holding app.sh; arm64 has neither RUN step; umoci 1.1 deletes
    smallapp/VERSION and app.sh and adds VERSION.txt and umoci.sh."""
    for ref in (AMD64, AMD64_VFS):
        view = ImageView.of_image(store, ref)
        with pytest.raises(PathNotFoundError):
            view.lookup("/etc/motd")
        assert [n.name for n in view.listdir("/etc/profile.d")] == ["app.sh"]
        assert b"".join(view.iter_content("/etc/profile.d/app.sh")) == b"export APP=smallapp\n"
        assert [n.path for n in view.walk() if ".wh." in n.path] == []
    arm = ImageView.of_image(store, ARM64)
    assert arm.lookup("/etc/motd").type == "file"
    assert [n.name for n in arm.listdir("/etc/profile.d")] == ["aliases.sh", "ps1.sh"]
    umoci = ImageView.of_image(store, "localhost/corpus/umoci:1.1")
    assert [n.name for n in umoci.listdir("/etc/profile.d")] == ["umoci.sh"]
    assert [n.name for n in umoci.listdir("/smallapp")] == ["VERSION.txt", "data.txt", "run.sh"]
    assert umoci.lookup("/smallapp/data.txt").size == 28890


def test_layers_of_an_image_come_from_its_config(store):
    assert [layer.diff_id for layer in image_layers(store, AMD64)] == AMD64_DIFF_IDS
    assert [layer.size for layer in image_layers(store, AMD64)] == [2141696, 33280, 4096, 4096]


def test_layer_changes_match_the_oracle(store):
    for ref, layers in [(AMD64, docker_archive_layers("small-amd64.podman.docker-archive.tar")),
                        (AMD64_VFS, docker_archive_layers("small-amd64-vfs.podman.docker-archive.tar")),
                        ("localhost/corpus/umoci:1.1", oci_layout_layers("small-amd64-umoci.oci-gzip", "1.1"))]:
        view = ImageView.of_image(store, ref)
        _state, counts = union(layers)
        got = [(c.added, c.changed, c.removed, c.whiteouts, c.content_bytes, c.wasted_bytes) for c in view.changes]
        want = [(c.added, c.changed, c.removed, c.whiteouts, c.content_bytes, c.wasted_bytes) for c in counts]
        assert got == want, ref
        assert [c.size for c in view.changes] == [len(b) for b in layers]
        assert [c.entries for c in view.changes] == [len(tarfile.open(fileobj=io.BytesIO(b)).getmembers())
                                                     for b in layers]
    # the facts behind those numbers (corpus/README.md): the base layer's
    # motd, aliases.sh and ps1.sh are hidden by layers 2 and 3
    base = dict((m.name, m.size) for m in tarfile.open(fileobj=io.BytesIO(
        docker_archive_layers("small-amd64.podman.docker-archive.tar")[0])).getmembers())
    view = ImageView.of_image(store, AMD64)
    assert view.changes[0].wasted_bytes == (base["etc/motd"] + base["etc/profile.d/aliases.sh"]
                                            + base["etc/profile.d/ps1.sh"])
    assert view.changes[3].removed == 2 and view.changes[3].whiteouts == 1


def test_export_of_a_corpus_image_is_the_oracle_rootfs(store, tmp_path):
    view = ImageView.of_image(store, AMD64)
    out = tmp_path / "rootfs.tar"
    with open(out, "wb") as f:
        written = view.export(f)
    assert written == out.stat().st_size
    state, _ = union(docker_archive_layers("small-amd64.podman.docker-archive.tar"))
    with tarfile.open(out) as tf:
        members = tf.getmembers()
        assert len({m.name for m in members}) == len(members)  # each path once
        got = {norm(m.name): m for m in members}
        assert sorted(got) == sorted(state)
        for path, rec in state.items():
            m = got[path]
            kind = "hardlink" if m.islnk() else "file" if m.isreg() else "dir" if m.isdir() else \
                "symlink" if m.issym() else "other"
            assert kind == rec.type, path
            assert (m.mode, m.uid, m.gid, int(m.mtime)) == (rec.mode, rec.uid, rec.gid, int(rec.mtime)), path
            if rec.type == "symlink":
                assert m.linkname == rec.linkname
            if rec.type == "file":
                assert tf.extractfile(m).read() == rec.data, path
        # parents come before children
        seen = set()
        for m in members:
            parent = os.path.dirname(norm(m.name))
            assert parent == "/" or parent in seen, m.name
            seen.add(norm(m.name))


def test_diff_between_umoci_tags_is_what_umoci_changed(store):
    """corpus/README.md: 1.1 = 1.0 plus a layer deleting smallapp/VERSION and
    etc/profile.d/app.sh, adding smallapp/VERSION.txt and etc/profile.d/umoci.sh."""
    a = ImageView.of_image(store, "localhost/corpus/umoci:1.0")
    b = ImageView.of_image(store, "localhost/corpus/umoci:1.1")
    changes = diff(a, b)
    assert [(c.kind, c.path) for c in changes if c.kind != "C"] == [
        ("D", "/etc/profile.d/app.sh"), ("A", "/etc/profile.d/umoci.sh"),
        ("D", "/smallapp/VERSION"), ("A", "/smallapp/VERSION.txt")]
    # C lines: exactly the paths whose oracle records differ in what docker diff compares
    sa, _ = union(oci_layout_layers("small-amd64-umoci.oci-gzip", "1.0"))
    sb, _ = union(oci_layout_layers("small-amd64-umoci.oci-gzip", "1.1"))
    want_c = sorted(p for p in set(sa) & set(sb)
                    if (sa[p].type, sa[p].mode, sa[p].uid, sa[p].gid, sa[p].linkname) !=
                    (sb[p].type, sb[p].mode, sb[p].uid, sb[p].gid, sb[p].linkname)
                    or (sa[p].type != "dir" and (sa[p].data != sb[p].data or int(sa[p].mtime) != int(sb[p].mtime))))
    assert [c.path for c in changes if c.kind == "C"] == want_c
    assert diff(a, a) == []


def test_diff_between_overlay_and_vfs_builds(store):
    """Same files, built by two storage drivers: only metadata of a few
    paths may differ, never the set of paths or a file's bytes."""
    a = ImageView.of_image(store, AMD64)
    b = ImageView.of_image(store, AMD64_VFS)
    changes = diff(a, b)
    assert all(c.kind == "C" for c in changes)
    assert all("content" not in c.what and "size" not in c.what for c in changes)


# --- synthetic stacks: each rule of layer.md -------------------------------------------------------

def test_opaque_whiteout_hides_lower_children_only_whatever_the_tar_order():
    base = tar_bytes(("d/", "dir", None), ("d/old", "file", b"old"), ("d/sub/", "dir", None),
                     ("d/sub/x", "file", b"x"), ("keep", "file", b"k"))
    # the new child comes before the opaque marker in the tar
    top = tar_bytes(("d/", "dir", None), ("d/new", "file", b"new"), ("d/.wh..wh..opq", "file", b""))
    view = view_of(base, top)
    assert [n.name for n in view.listdir("/d")] == ["new"]
    assert b"".join(view.iter_content("/keep")) == b"k"
    assert_view_matches(view, [base, top])
    c = view.changes[1]
    assert (c.added, c.changed, c.removed, c.whiteouts) == (1, 1, 3, 1)
    assert view.changes[0].wasted_bytes == len(b"old") + len(b"x")


def test_whiteout_of_a_directory_removes_its_tree_and_a_same_layer_entry_survives():
    base = tar_bytes(("a/", "dir", None), ("a/b/", "dir", None), ("a/b/c", "file", b"ccc"), ("f", "file", b"1"))
    top = tar_bytes(("a/.wh.b", "file", b""), (".wh.f", "file", b""), ("f", "file", b"22"))
    view = view_of(base, top)
    assert [n.path for n in view.walk()] == ["/a", "/f"]
    assert b"".join(view.iter_content("/f")) == b"22"
    assert view.changes[1].removed == 3
    assert view.changes[1].added == 1  # f again, after its whiteout
    assert view.changes[0].wasted_bytes == 4
    assert_view_matches(view, [base, top])


def test_replacing_a_directory_by_a_file_and_back():
    base = tar_bytes(("x/", "dir", None), ("x/y", "file", b"yy"), ("z", "file", b"zz"))
    mid = tar_bytes(("x", "file", b"now a file"), ("z/", "dir", None), ("z/w", "file", b"w"))
    view = view_of(base, mid)
    assert view.lookup("/x").type == "file"
    assert view.lookup("/z").is_dir
    assert (view.changes[1].changed, view.changes[1].removed, view.changes[1].added) == (2, 1, 1)
    assert_view_matches(view, [base, mid])


def test_missing_parents_are_created_and_aufs_metadata_ignored():
    layer = tar_bytes(("p/q/r", "file", b"r"), (".wh..wh.plnk/", "dir", None), (".wh..wh.plnk/1", "file", b"1"))
    view = view_of(layer)
    assert [n.path for n in view.walk()] == ["/p", "/p/q", "/p/q/r"]
    assert (view.lookup("/p").mode, view.lookup("/p").uid, view.lookup("/p").mtime) == (0o755, 0, 0)
    assert_view_matches(view, [layer])


def test_hard_link_keeps_the_content_of_a_removed_target_and_export_carries_it(tmp_path):
    base = tar_bytes(("t", "file", b"target bytes"), ("l1", "hardlink", "t"), ("l2", "hardlink", "t"),
                     ("live", "file", b"live"), ("l3", "hardlink", "live"))
    top = tar_bytes((".wh.t", "file", b""))
    view = view_of(base, top)
    assert b"".join(view.iter_content("/l1")) == b"target bytes"
    assert view.lookup("/l2").size == len(b"target bytes")
    assert view.changes[0].wasted_bytes == 0  # the content is still reachable
    buf = io.BytesIO()
    view.export(buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert sorted(members) == ["l1", "l2", "l3", "live"]
        # l1 carries the bytes; l2 links to it; l3 links to the live file
        assert members["l1"].isreg() and tf.extractfile("l1").read() == b"target bytes"
        assert members["l2"].islnk() and members["l2"].linkname == "l1"
        assert members["l3"].islnk() and members["l3"].linkname == "live"
        assert tf.extractfile("l2").read() == b"target bytes"
        tf.extractall(tmp_path / "x", **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    assert (tmp_path / "x" / "l2").read_bytes() == b"target bytes"
    assert os.stat(tmp_path / "x" / "l2").st_ino == os.stat(tmp_path / "x" / "l1").st_ino


def test_symbolic_links_are_followed_inside_the_view():
    layer = tar_bytes(("bin/", "dir", None), ("bin/busybox", "file", b"BB"), ("bin/sh", "symlink", "busybox"),
                      ("usr/", "dir", None), ("usr/bin", "symlink", "/bin"), ("up", "symlink", "../../../bin/sh"),
                      ("loop1", "symlink", "loop2"), ("loop2", "symlink", "loop1"))
    view = view_of(layer)
    assert view.lookup("/bin/sh", follow_symlinks=False).type == "symlink"
    assert view.lookup("/usr/bin/sh").path == "/bin/busybox"
    assert b"".join(view.iter_content("/up")) == b"BB"  # .. stops at the root
    with view.open("/usr/bin/sh") as f:
        assert f.read() == b"BB"
    assert [n.name for n in view.listdir("/usr/bin")] == ["busybox", "sh"]
    with pytest.raises(ViewError, match="too many levels"):
        view.lookup("/loop1")
    with pytest.raises(ViewError, match="is a directory"):
        list(view.iter_content("/bin"))
    with pytest.raises(ViewError, match="not a directory"):
        view.lookup("/bin/busybox/x")
    with pytest.raises(PathNotFoundError):
        view.lookup("/nope")


def test_member_with_dotdot_is_refused():
    with pytest.raises(UnsafePathError):
        view_of(tar_bytes(("a/../../etc/passwd", "file", b"x")))


def test_not_a_tar_is_refused():
    with pytest.raises(TarFormatError):
        view_of(b"this is not a tar archive" * 40)


def test_diff_reports_content_changes_of_equal_size_files():
    a = tar_bytes(("same", "file", b"abc"), ("edit", "file", b"abc"), ("gone", "file", b"g"), ("d/", "dir", None))
    b = tar_bytes(("same", "file", b"abc"), ("edit", "file", b"abd"), ("new", "file", b"n"), ("d/", "dir", None))
    assert diff(view_of(a), view_of(b)) == [Change("C", "/edit", ("content",)), Change("D", "/gone"),
                                            Change("A", "/new")]


# --- every tar format of the corpus as one layer --------------------------------------------------

TAR_FILES = ["gnutar-default.tar", "gnutar-gnu-sparse.tar", "gnutar-pax.tar", "gnutar-pax-sparse.tar",
             "gnutar-ustar.tar", "bsdtar-default.tar", "bsdtar-ustar.tar", "python-tarfile-pax.tar",
             "python-tarfile-gnu.tar"]


@pytest.mark.parametrize("name", TAR_FILES)
def test_corpus_tars_as_one_layer(name, tmp_path):
    """Long names, non-UTF-8 names, hard links, devices, FIFOs, sparse
    files (read back dense), base-256 numbers: the view and the export
    agree with tarfile."""
    raw = corpus_path("tars", name).read_bytes()
    view = view_of(raw)
    state = assert_view_matches(view, [raw])
    sparse = state.get("/sparse.bin")
    if sparse is not None:
        # corpus/README.md: 1 MiB, 4 KiB of data at offset 256 KiB, holes elsewhere
        assert len(sparse.data) == 1 << 20
        assert sparse.data[:256 << 10].count(0) == 256 << 10 and sparse.data[260 << 10:].count(0) == (1 << 20) - (260 << 10)
        assert b"".join(view.iter_content("/sparse.bin")) == sparse.data
    buf = io.BytesIO()
    view.export(buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        got = {norm(m.name): m for m in tf.getmembers()}
        assert sorted(got) == sorted(state)
        for path, rec in state.items():
            if rec.type == "file":
                assert tf.extractfile(got[path]).read() == rec.data, path


# --- streaming -----------------------------------------------------------------------------------------

def test_cat_and_export_stream_in_bounded_memory(tmp_path):
    """A 48 MiB file is read and exported with at most a few MiB of Python
    allocations (tracemalloc), never the whole file or layer."""
    size = 48 << 20
    layer = tmp_path / "big.tar"
    with tarfile.open(layer, "w") as tf:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        with open("/dev/zero", "rb") as zero:
            tf.addfile(info, zero)
    with Store.open(tmp_path / "s") as s:
        blob = s.ingest(layer)
        view = ImageView([LayerSource(blob.digest, blob.size, lambda: s.open_blob(blob.digest))])

        class Sink:
            n = 0

            def write(self, b):
                self.n += len(b)

        tracemalloc.start()
        try:
            n = 0
            for piece in view.iter_content("/big.bin"):
                n += len(piece)
            _cur, peak_cat = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            sink = Sink()
            view.export(sink)
            _cur, peak_export = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert n == size
    assert sink.n == 512 + size + 1024
    assert peak_cat < 16 << 20, peak_cat
    assert peak_export < 16 << 20, peak_export


# --- import ----------------------------------------------------------------------------------------------

def make_tree(root: Path):
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "conf").write_bytes(b"key=value\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    os.chmod(root / "bin" / "tool", 0o755)
    os.symlink("tool", root / "bin" / "alias")
    os.link(root / "bin" / "tool", root / "bin" / "hard")
    (root / "empty").mkdir()


def test_import_of_a_directory_is_reproducible_and_shows_the_tree(tmp_path):
    src = tmp_path / "tree"
    make_tree(src)
    with Store.open(tmp_path / "s1") as s1, Store.open(tmp_path / "s2") as s2:
        a = import_rootfs(s1, src, "localhost/imported:1", platform="linux/arm64/v8", message="from a tree")
        b = import_rootfs(s2, src, "localhost/imported:1", platform="linux/arm64/v8", message="from a tree")
        assert (a.digest, a.config_digest) == (b.digest, b.config_digest)
        assert s1.resolve("localhost/imported:1").digest == a.digest
        info = s1.inspect("localhost/imported:1")
        assert (info["Os"], info["Architecture"], info["Variant"]) == ("linux", "arm64", "v8")
        assert info["Created"] == "1970-01-01T00:00:00Z"
        assert s1.history("localhost/imported:1")[0].comment == "from a tree"
        view = ImageView.of_image(s1, "localhost/imported:1")
        want = {}
        for dirpath, dirnames, filenames in os.walk(src):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                want["/" + os.path.relpath(full, src)] = os.lstat(full)
        nodes = {n.path: n for n in view.walk()}
        assert sorted(nodes) == sorted(want)
        for path, st in want.items():
            node = nodes[path]
            assert node.mode == st.st_mode & 0o7777, path
            assert int(node.mtime) == int(st.st_mtime), path
            assert (node.uid, node.gid) == (st.st_uid, st.st_gid)
            if os.path.islink(src / path[1:]):
                assert node.type == "symlink" and node.linkname == os.readlink(src / path[1:])
            elif os.path.isfile(src / path[1:]):
                assert b"".join(view.iter_content(path)) == (src / path[1:]).read_bytes()
        # one of the two names of the hard-linked file is stored as a link to the other
        assert sorted(n.type for p, n in nodes.items() if p in ("/bin/hard", "/bin/tool")) == ["file", "hardlink"]


def test_import_of_tar_files_keeps_the_bytes(tmp_path):
    raw = tar_bytes(("a/", "dir", None), ("a/f", "file", b"content"))
    plain = tmp_path / "rootfs.tar"
    plain.write_bytes(raw)
    packed = tmp_path / "rootfs.tar.gz"
    packed.write_bytes(gzip.compress(raw, mtime=0))
    with Store.open(tmp_path / "s") as s:
        a = import_rootfs(s, plain, "localhost/flat:plain")
        (layer,) = a.layers
        assert layer.digest == layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert layer.status == "stored"
        b = import_rootfs(s, packed, "localhost/flat:gzip")
        (glayer,) = b.layers
        assert glayer.digest == "sha256:" + hashlib.sha256(packed.read_bytes()).hexdigest()
        assert glayer.diff_id == layer.diff_id
        assert glayer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
        assert s.read_blob(glayer.digest) == packed.read_bytes()
        assert b"".join(ImageView.of_image(s, "localhost/flat:gzip").iter_content("/a/f")) == b"content"
        again = import_rootfs(s, plain, "localhost/flat:again")
        assert again.layers[0].status == "already exists"
        assert again.config_digest == a.config_digest


def test_failed_import_leaves_nothing(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"not a tar\n" * 100)
    with Store.open(tmp_path / "s") as s:
        with pytest.raises(TarFormatError):
            import_rootfs(s, bad, "localhost/bad:1")
        assert s.tags() == [] and s.images() == []
        with pytest.raises(FileNotFoundError):
            import_rootfs(s, tmp_path / "absent", "localhost/bad:1")
