"""Store: ingest and read back byte-exact, dedup, digest checks, verify.
Oracles: hashlib (digests), the input bytes (round trip), file sizes on disk."""
import gzip
import hashlib
import io
import random
import tarfile

import pytest

from conftest import corpus_path, make_tar
from layerstore.errors import BlobNotFoundError, CorruptBlobError, DigestMismatchError, LayerStoreError, TarFormatError
from layerstore.store import Store


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def trailing_padding(layer):
    """Bytes after the two end-of-archive blocks (tarfile pads to 10240-byte
    records): the store chunks them like content."""
    end = len(layer.rstrip(b"\0"))
    end += -end % 512 + 1024
    return len(layer) - end


def pack_bytes(root):
    return sum(p.stat().st_size for p in (root / "packs").glob("*.pack"))


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "store") as s:
        yield s


def test_raw_blob_round_trip(store):
    rnd = random.Random(1)
    for size in [0, 1, 100, 70_000, 1_000_000]:
        data = rnd.randbytes(size)
        info = store.ingest(io.BytesIO(data), media_type="application/octet-stream")
        assert info.digest == sha(data)
        assert info.size == size
        assert store.has(info.digest)
        assert store.read_blob(info.digest) == data


def test_layer_round_trip_and_dedup(tmp_path):
    rnd = random.Random(2)
    shared = [(f"usr/lib/f{i}", rnd.randbytes(rnd.randrange(1, 300_000))) for i in range(20)]
    layer1 = make_tar(shared + [("a", rnd.randbytes(50_000))])
    layer2 = make_tar([("other/place/" + n, d) for n, d in shared] + [("b", rnd.randbytes(50_000))])
    root = tmp_path / "s"
    with Store.open(root) as store:
        info1 = store.ingest(io.BytesIO(layer1))
        assert info1.kind == "layer" and info1.digest == sha(layer1) and info1.entries == 21
        store._packs.flush()
        after1 = pack_bytes(root)
        info2 = store.ingest(io.BytesIO(layer2))
        store._packs.flush()
        after2 = pack_bytes(root)
        # the second layer adds only its own new file (random: incompressible)
        assert after2 - after1 < 50_000 + 2_000
        assert store.read_blob(info1.digest) == layer1
        assert store.read_blob(info2.digest) == layer2
        li = store.layer_info(info2.digest)
        assert li.entries == 21 and li.size == len(layer2)
        # shared: the common files, and the record padding after the end of
        # both archives (identical zero bytes, chunked like content)
        assert li.shared_bytes == sum(len(d) for _, d in shared) + trailing_padding(layer2)
    with Store.open(root) as store:  # reopen: everything still there
        assert store.read_blob(info2.digest) == layer2
        assert store.verify().ok


def test_digest_mismatch_leaves_nothing_visible(store):
    data = b"hello" * 1000
    with pytest.raises(DigestMismatchError):
        store.ingest(io.BytesIO(data), expected_digest=sha(b"other"))
    assert not store.has(sha(data))
    assert not store.has(sha(b"other"))
    with pytest.raises(BlobNotFoundError):
        store.open_blob(sha(data))


def test_declared_layer_that_is_not_tar_is_rejected(store):
    with pytest.raises(TarFormatError):
        store.ingest(io.BytesIO(b"x" * 2000), media_type="application/vnd.oci.image.layer.v1.tar")


def test_undeclared_almost_tar_falls_back_to_raw(store):
    # a valid first header, then garbage: stored as an ordinary blob
    data = make_tar([("f", b"abc")])[:512] + b"\x01" * 5000
    info = store.ingest(io.BytesIO(data))
    assert info.kind == "raw"
    assert store.read_blob(info.digest) == data


def test_corrupt_pack_byte_is_detected(tmp_path):
    root = tmp_path / "s"
    data = random.Random(5).randbytes(300_000)
    with Store.open(root, codec="none") as store:
        digest = store.ingest(io.BytesIO(data)).digest
    pack = next((root / "packs").glob("*.pack"))
    raw = bytearray(pack.read_bytes())
    pos = raw.find(data[100_000:100_064])
    assert pos > 0
    raw[pos] ^= 1
    pack.write_bytes(bytes(raw))
    with Store.open(root) as store:
        with pytest.raises(CorruptBlobError):
            store.read_blob(digest)
        report = store.verify()
        assert not report.ok
        assert any(digest in p for p in report.problems)


def test_corpus_tars_round_trip(store):
    for path in sorted(corpus_path("tars").glob("*.tar")):
        data = path.read_bytes()
        info = store.ingest(path)
        assert info.digest == sha(data), path.name
        assert store.read_blob(info.digest) == data, path.name


def test_corpus_image_blobs_round_trip(store):
    root = corpus_path("images")
    for layout in sorted(p for p in root.iterdir() if p.is_dir()):
        for blob in sorted((layout / "blobs" / "sha256").iterdir()):
            info = store.ingest(blob, expected_digest="sha256:" + blob.name)
            assert store.read_blob(info.digest) == blob.read_bytes()
    assert store.verify().ok


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_layer_keeps_blob_and_dedups_content(tmp_path, compression):
    import zstandard

    rnd = random.Random(9)
    files = {f"f{i}": rnd.randbytes(rnd.randrange(1, 200_000)) for i in range(10)}
    tar = make_tar(list(files.items()))
    blob = gzip.compress(tar, 6) if compression == "gzip" else zstandard.ZstdCompressor(level=3).compress(tar)
    media = f"application/vnd.oci.image.layer.v1.tar+{compression}"
    root = tmp_path / "s"
    with Store.open(root) as store:
        info = store.ingest(io.BytesIO(blob), media_type=media, expected_digest=sha(blob))
        assert info.kind == compression and info.diff_id == sha(tar) and info.entries == 10
        assert store.read_blob(info.digest) == blob
        assert store.read_blob(info.diff_id) == tar
        layer = store.layer_info(info.diff_id)
        assert not layer.deduplicated and layer.content_bytes == len(blob)  # held as the compressed bytes
        # given uncompressed under its digest: stored already, a no-op
        assert store.ingest(io.BytesIO(tar), expected_digest=info.diff_id).digest == info.diff_id
        assert not store.layer_info(info.diff_id).deduplicated
        # given uncompressed, its digest not known in advance: scanned, so
        # deduplicated on the way
        assert store.ingest(io.BytesIO(tar)).digest == info.diff_id
        layer = store.layer_info(info.diff_id)
        assert layer.deduplicated and layer.entries == 10
        # its file contents, and the zero blocks after the end-of-archive marker
        assert 0 <= layer.content_bytes - sum(len(data) for data in files.values()) < 10240
        assert store.read_blob(info.diff_id) == tar
        store._packs.flush()
        before = pack_bytes(root)
        # and again: its files are stored, so it adds no pack bytes
        assert store.ingest(io.BytesIO(tar)).digest == info.diff_id
        store._packs.flush()
        assert pack_bytes(root) == before
        assert store.verify().ok


def test_corrupt_gzip_layer_is_rejected_and_invisible(store):
    tar = make_tar([("f", b"x" * 100_000)])
    blob = bytearray(gzip.compress(tar))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(Exception) as exc:
        store.ingest(io.BytesIO(bytes(blob)), media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    from layerstore.errors import LayerStoreError

    assert isinstance(exc.value, LayerStoreError)
    assert not store.has(sha(bytes(blob)))
    assert not store.has(sha(tar))


@pytest.mark.parametrize("when", [1, 3, "last"])
def test_a_failure_storing_the_compressed_bytes_fails_the_ingest_and_leaves_nothing(store, monkeypatch, when):
    """The compressed bytes of a gzip layer are hashed and stored on a
    worker thread: an error there (here an OSError, as from a full disk)
    reaches the caller, as it is, whether it happens early, late or on the
    last buffer, and nothing becomes visible."""
    from layerstore import store as store_module

    rnd = random.Random(8)
    tar = make_tar([(f"f{i}", rnd.randbytes(300_000)) for i in range(12)])
    blob = gzip.compress(tar, 1)
    calls = []
    original = store_module._RawBlob.feed

    def feed(self, buf):
        calls.append(len(buf))
        if when != "last" and len(calls) == when:
            raise OSError(28, "No space left on device")
        original(self, buf)

    def finish(self, expected_digest):
        if when == "last":
            raise OSError(28, "No space left on device")
        return original_finish(self, expected_digest)

    original_finish = store_module._RawBlob.finish
    monkeypatch.setattr(store_module._RawBlob, "feed", feed)
    monkeypatch.setattr(store_module._RawBlob, "finish", finish)
    with pytest.raises(OSError, match="No space left"):
        store.ingest(io.BytesIO(blob), media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    assert not store.has(sha(blob)) and not store.has(sha(tar))
    monkeypatch.undo()
    assert store.ingest(io.BytesIO(blob)).diff_id == sha(tar)
    assert store.read_blob(sha(blob)) == blob and store.read_blob(sha(tar)) == tar
    assert store.verify().ok


def test_gzip_layers_inflate_without_isal_internal_reader(store, monkeypatch):
    """isal's C reader is reached through a private name; without it the
    public IGzipFile is used, with the same results and errors."""
    from isal import isal_zlib

    monkeypatch.delattr(isal_zlib, "_GzipReader")
    rnd = random.Random(9)
    tar = make_tar([(f"f{i}", rnd.randbytes(50_000)) for i in range(5)])
    blob = gzip.compress(tar) + gzip.compress(b"")  # a second, empty member
    info = store.ingest(io.BytesIO(blob))
    assert info.kind == "gzip" and info.diff_id == sha(tar)
    assert store.read_blob(sha(blob)) == blob
    with pytest.raises(LayerStoreError):
        store.ingest(io.BytesIO(blob[:-25]), media_type="application/vnd.oci.image.layer.v1.tar+gzip")  # cut inside the first member


def test_gzip_of_non_tar_without_media_type_is_a_plain_blob(store):
    blob = gzip.compress(b"just some text\n" * 1000)
    info = store.ingest(io.BytesIO(blob))
    assert info.kind == "raw"
    assert store.read_blob(info.digest) == blob


from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_names = st.text(alphabet="abcdefgh/._-é", min_size=1, max_size=120).filter(lambda n: n.strip("/") != "")
_trees = st.lists(
    st.tuples(_names, st.one_of(st.binary(max_size=3000), st.sampled_from([b"", b"A" * 70_000])),
              st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])),
    min_size=1, max_size=6,
)


def _tar_tree(files):
    out = io.BytesIO()
    fmt = files[0][2]
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, data, _ in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            try:
                tf.addfile(info, io.BytesIO(data))
            except ValueError:  # name too long for ustar: skip that entry
                continue
    return out.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(trees=st.lists(_trees, min_size=1, max_size=5), order=st.randoms())
def test_random_tar_trees_round_trip_in_one_store(tmp_path_factory, trees, order):
    layers = [_tar_tree(t) for t in trees]
    order.shuffle(layers)
    with Store.open(tmp_path_factory.mktemp("hyp")) as store:
        digests = [store.ingest(io.BytesIO(data)).digest for data in layers]
        for digest, data in zip(digests, layers):
            assert digest == sha(data)
            assert store.read_blob(digest) == data


def test_batch_is_visible_all_at_once_or_not_at_all(tmp_path):
    rnd = random.Random(12)
    shared = rnd.randbytes(150_000)
    a = make_tar([("a/shared", shared), ("a/own", rnd.randbytes(1000))])
    b = make_tar([("b/shared", shared), ("b/own", rnd.randbytes(1000))])
    root = tmp_path / "s"
    with Store.open(root) as store:
        with store.batch() as batch:
            batch.ingest(io.BytesIO(a))
            assert batch.has(sha(a)) and not store.has(sha(a))
            batch.ingest(io.BytesIO(b))
        assert not store.has(sha(a)) and not store.has(sha(b))  # discarded
        with store.batch() as batch:
            batch.ingest(io.BytesIO(a))
            batch.ingest(io.BytesIO(b))
            seen = []
            import sqlite3

            def peek(cur):
                other = sqlite3.connect(root / "catalog.db")
                seen.append(other.execute("SELECT count(*) FROM blobs").fetchone()[0])
                other.close()

            batch.commit(extra=peek)
        assert seen == [0]  # another connection sees nothing before COMMIT
        assert store.read_blob(sha(a)) == a and store.read_blob(sha(b)) == b
        # the shared file was written once within the batch
        assert store.layer_info(sha(b)).shared_bytes == len(shared) + trailing_padding(b)
        assert store.verify().ok


def test_failed_blob_in_a_batch_does_not_poison_the_next(tmp_path):
    rnd = random.Random(13)
    shared = rnd.randbytes(120_000)
    a = make_tar([("a/shared", shared)])
    b = make_tar([("b/shared", shared), ("b/own", b"x")])
    with Store.open(tmp_path / "s") as store:
        with store.batch() as batch:
            with pytest.raises(DigestMismatchError):
                batch.ingest(io.BytesIO(a), expected_digest=sha(b"not a"))
            batch.ingest(io.BytesIO(b))
            batch.commit()
        assert not store.has(sha(a))
        assert store.read_blob(sha(b)) == b
        assert store.verify().ok


def test_open_refuses_what_is_not_a_store(tmp_path):
    from layerstore.errors import DigestError, StoreError

    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        Store.open(tmp_path / "file")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError):
        Store.open(tmp_path / "home")
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["notes.txt"]
    with Store.open(tmp_path / "s") as store:
        assert "s" in repr(store)
        with pytest.raises(DigestError):
            store.read_blob("nope")


def test_truncated_zstd_layer_is_rejected(store):
    import zstandard

    from layerstore.errors import CompressedLayerError

    tar = make_tar([("f", random.Random(3).randbytes(300_000)), ("g", bytes(200_000))])
    for kw in ({}, {"write_checksum": True}):
        blob = zstandard.ZstdCompressor(level=3, **kw).compress(tar)
        for cut in (len(blob) - 1, len(blob) - 4, len(blob) // 2):
            with pytest.raises(CompressedLayerError):
                store.ingest(io.BytesIO(blob[:cut]), media_type="application/vnd.oci.image.layer.v1.tar+zstd")
            assert not store.has(sha(blob[:cut]))
        assert store.ingest(io.BytesIO(blob)).diff_id == sha(tar)


def test_rewind_returns_to_where_the_blob_started(store):
    # a file object positioned after a prefix; the blob looks like a tar but is not one
    blob = make_tar([("f", b"abc")])[:512] + b"\x01" * 300
    f = io.BytesIO(b"PREFIX" * 50 + blob)
    f.seek(300)
    info = store.ingest(f)
    assert info.kind == "raw" and info.digest == sha(blob)
    assert store.read_blob(info.digest) == blob


def test_read_error_of_the_source_is_not_taken_for_a_bad_stream(store):
    tar = make_tar([("f", random.Random(4).randbytes(3_000_000))])
    blob = gzip.compress(tar)

    class Flaky(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(blob)
            self.reads = 0

        def readable(self):
            return True

        def seekable(self):
            return True

        def seek(self, *a):
            return self.inner.seek(*a)

        def tell(self):
            return self.inner.tell()

        def readinto(self, b):
            self.reads += 1
            if self.reads == 3:
                raise OSError(5, "Input/output error")
            data = self.inner.read(len(b))
            b[: len(data)] = data
            return len(data)

    with pytest.raises(OSError) as exc:
        store.ingest(Flaky())
    assert exc.value.errno == 5
    assert not store.has(sha(blob))
    info = store.ingest(io.BytesIO(blob))
    assert info.kind == "gzip"


def _damaged_copy(tmp_path, name, damage):
    import shutil
    import sqlite3

    src = tmp_path / "orig"
    if not src.exists():
        with Store.open(src) as s:
            s.ingest(io.BytesIO(random.Random(8).randbytes(100_000)))
    dst = tmp_path / name
    shutil.copytree(src, dst)
    damage(dst, sqlite3)
    return dst


@pytest.mark.parametrize("name,damage,when", [
    ("garbage-catalog", lambda d, sq: (d / "catalog.db").write_bytes(b"not sqlite" * 100), "open"),
    ("marker-list", lambda d, sq: (d / "store.json").write_text("[1, 2]"), "open"),
    ("marker-version", lambda d, sq: (d / "store.json").write_text('{"format": "layerstore", "version": "x"}'), "open"),
    ("catalog-gone", lambda d, sq: (d / "catalog.db").unlink(), "open"),
    ("chunking-garbage", lambda d, sq: _sql(d, sq, "UPDATE meta SET value = 'zz' WHERE key = 'chunking'"), "open"),
    ("pack-gone", lambda d, sq: [p.unlink() for p in (d / "packs").glob("*.pack")], "read"),
    ("huge-stored-length", lambda d, sq: _sql(d, sq, "UPDATE chunks SET stored_length = 1099511627776"), "read"),
    ("text-offset", lambda d, sq: _sql(d, sq, "UPDATE chunks SET offset = 'abc'"), "read"),
    ("unknown-kind", lambda d, sq: _sql(d, sq, "UPDATE blobs SET kind = 'weird'"), "read"),
])
def test_on_disk_damage_gives_typed_errors(tmp_path, name, damage, when):
    from layerstore.errors import LayerStoreError, StoreError

    root = _damaged_copy(tmp_path, name, damage)
    if when == "open":
        with pytest.raises(StoreError):
            Store.open(root)
        return
    with Store.open(root) as store:
        digest = next(store._catalog.iter_blobs())[0]
        with pytest.raises(LayerStoreError):
            store.stat(digest)
            store.read_blob(digest)
        if name != "unknown-kind":
            assert not store.verify().ok


def _sql(root, sqlite3, statement):
    con = sqlite3.connect(root / "catalog.db")
    con.execute(statement)
    con.commit()
    con.close()


def test_recovery_never_cuts_entries_the_catalog_references(tmp_path):
    from layerstore.errors import CorruptBlobError

    root = tmp_path / "s"
    rnd = random.Random(30)
    a, b = rnd.randbytes(200_000), rnd.randbytes(90_000)
    with Store.open(root, codec="none") as store:
        da = store.ingest(io.BytesIO(a)).digest
        db = store.ingest(io.BytesIO(b)).digest
    pack = next((root / "packs").glob("*.pack"))
    idx = pack.with_suffix(".idx")
    raw = bytearray(idx.read_bytes())
    raw[-1] ^= 1  # index trailer checksum: the pack looks unsealed
    idx.write_bytes(bytes(raw))
    data = bytearray(pack.read_bytes())
    last = data.rfind(b"LSEN")  # header of the last entry (b's last chunk)
    data[last + 9] ^= 0xFF
    pack.write_bytes(bytes(data))
    size = pack.stat().st_size
    with Store.open(root) as store:
        assert pack.stat().st_size == size  # nothing cut
        assert store.read_blob(da) == a
        with pytest.raises(CorruptBlobError):
            store.read_blob(db)
        assert not store.verify().ok


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_raw_blob_becomes_layer_when_ingested_as_one(tmp_path, compress):
    """A layer tar first ingested under a non-layer media type is held as
    raw chunks; ingesting it again as a layer upgrades it in place: kind,
    diff ID and entries change, the raw chunks lose their references and a
    prune reclaims them, and the bytes still come back exact."""
    rnd = random.Random(7)
    layer = make_tar([(f"f{i}", rnd.randbytes(rnd.randrange(1, 200_000))) for i in range(12)])
    blob = gzip.compress(layer, mtime=0) if compress else layer
    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    with Store.open(tmp_path / "s") as store:
        first = store.ingest(io.BytesIO(blob), media_type="application/octet-stream")
        assert first.kind == "raw" and first.diff_id is None
        # a non-layer media type (or the same one) leaves it as it is
        assert store.ingest(io.BytesIO(blob), expected_digest=sha(blob), media_type="application/json").kind == "raw"
        info = store.ingest(io.BytesIO(blob), expected_digest=sha(blob), media_type=layer_type)
        assert info.digest == sha(blob)
        assert info.kind == (compress or "layer")
        assert info.diff_id == sha(layer) and info.entries == 12
        assert store.stat(sha(blob)).media_type == layer_type
        assert store.read_blob(sha(blob)) == blob
        assert store.read_blob(sha(layer)) == layer
        assert store.layer_info(sha(layer)).entries == 12
        report = store.verify()  # recounts every chunk's references from the recipes
        assert report.ok, report.problems
        # An uncompressed layer's raw chunks are now at zero references (the
        # next prune deletes them); a gzip blob is kept as the same raw
        # chunks as before, which stay referenced.
        con = store._catalog._con()
        unreferenced = con.execute("SELECT count(*) FROM chunks WHERE refs <= 0").fetchone()[0]
        assert (unreferenced == 0) if compress else (unreferenced > 0)


def test_raw_blob_without_media_type_is_upgraded_by_content(store):
    layer = make_tar([("a", b"x" * 5000)])
    assert store.ingest(io.BytesIO(layer), media_type="application/octet-stream").kind == "raw"
    info = store.ingest(io.BytesIO(layer), expected_digest=sha(layer))
    assert info.kind == "layer" and info.diff_id == sha(layer) and info.entries == 1
    assert info.media_type != "application/octet-stream"  # the layer kind's default, not the raw one's
    # a raw blob that is not a tar stays raw
    other = b"not a tar" * 100
    store.ingest(io.BytesIO(other), media_type="application/octet-stream")
    assert store.ingest(io.BytesIO(other), expected_digest=sha(other)).kind == "raw"
    assert store.verify().ok


def test_close_closes_every_catalog_connection(tmp_path):
    """Worker threads open catalog connections of their own; close() closes
    them all, so no descriptor of the catalog stays open and SQLite removes
    the write-ahead log at once (a store's size on disk is then final)."""
    root = tmp_path / "s"
    rnd = random.Random(9)
    layers = [make_tar([(f"f{i}", rnd.randbytes(rnd.randrange(1, 300_000))) for i in range(8)]) for _ in range(3)]
    with Store.open(root) as store:
        for layer in layers:
            store.ingest(io.BytesIO(gzip.compress(layer, mtime=0)))
        for layer in layers:
            assert store.read_blob(sha(layer)) == layer
    import os
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert not [f for f in open_files if f.startswith(str(root / "catalog.db"))]
    assert not (root / "catalog.db-wal").exists()


def test_threads_that_ended_do_not_keep_catalog_connections(tmp_path):
    """A long-lived store used from a thread per request: the connection of
    each thread that ended is closed, so descriptors stay bounded."""
    import os
    import threading

    def catalog_fds():
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
            except OSError:
                pass
        return n

    with Store.open(tmp_path / "s") as store:
        digest = store.ingest(io.BytesIO(b"x" * 1000)).digest
        before = catalog_fds()
        for _ in range(200):
            t = threading.Thread(target=lambda: store.has(digest))
            t.start()
            t.join()
        assert catalog_fds() <= before + 4
    with pytest.raises(LayerStoreError, match="closed"):
        store.has(digest)


def test_reingest_of_a_raw_blob_that_is_no_layer_reads_only_its_head(store):
    """A stored raw blob given again without a media type: 512 bytes tell it
    is not a layer, and nothing more is read."""
    data = random.Random(12).randbytes(1 << 20)
    store.ingest(io.BytesIO(data), media_type="application/octet-stream")
    src = io.BytesIO(data)
    info = store.ingest(src, expected_digest=sha(data))
    assert info.kind == "raw" and src.tell() <= 512
    # gzip content that is not a tar, from a pipe-like (unseekable) source
    gz = gzip.compress(b"not a tar " * 5000, mtime=0)
    store.ingest(io.BytesIO(gz), media_type="application/octet-stream")

    class Pipe(io.RawIOBase):
        def __init__(self, b):
            self.b = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, buf):
            return self.b.readinto(buf)

    assert store.ingest(Pipe(gz), expected_digest=sha(gz)).kind == "raw"


def test_batch_upgrades_a_blob_staged_as_raw(store):
    """In one batch: a layer staged first as raw, then as a layer (directly,
    and as the diff ID of a gzip layer): the commit stores the layer."""
    rnd = random.Random(13)
    layer = make_tar([(f"f{i}", rnd.randbytes(20_000)) for i in range(5)])
    gz = gzip.compress(layer, mtime=0)
    with store.batch() as b:
        assert b.ingest(io.BytesIO(layer), media_type="application/octet-stream").kind == "raw"
        assert b.ingest(io.BytesIO(gz)).diff_id == sha(layer)
        assert b.stat(sha(layer)).kind == "layer"
        assert b.ingest(io.BytesIO(layer), expected_digest=sha(layer),
                        media_type="application/vnd.oci.image.layer.v1.tar").kind == "layer"
        b.commit()
    assert store.stat(sha(layer)).kind == "layer"
    assert store.layer_info(sha(layer)).entries == 5
    assert store.stat(sha(gz)).kind == "gzip"
    assert store.read_blob(sha(layer)) == layer and store.read_blob(sha(gz)) == gz
    report = store.verify()
    assert report.ok, report.problems


def test_batch_with_a_gzip_layer_then_the_same_layer_plain(store):
    """In one batch: a gzip layer (its layer held as the compressed bytes),
    the same layer as a plain tar (deduplicated: it replaces the staged
    record), then a layer sharing a file with it, which finds that file's
    chunk in the batch. The commit stores all of them."""
    rnd = random.Random(15)
    shared = rnd.randbytes(300_000)
    layer = make_tar([("a/file", shared)])
    other = make_tar([("b/file", shared), ("b/y", rnd.randbytes(7000))])
    gz = gzip.compress(layer, mtime=0)
    with store.batch() as b:
        b.ingest(io.BytesIO(gz))
        b.ingest(io.BytesIO(layer))
        b.ingest(io.BytesIO(other))
        b.commit()
    for data in (layer, other, gz):
        assert store.read_blob(sha(data)) == data
    assert store.layer_info(sha(layer)).deduplicated
    assert store.layer_info(sha(other)).shared_bytes == len(shared)
    report = store.verify()
    assert report.ok, report.problems


def test_decompressor_close_without_waiting_returns_while_its_source_blocks():
    """``close(wait=False)`` (what a layer reader's close uses) returns at
    once while the decompressing thread waits for input, and the thread
    ends by itself once the input comes; ``close()`` waits for it."""
    import threading
    import time

    from layerstore.decompress import Decompressor

    rnd = random.Random(17)
    first = gzip.compress(rnd.randbytes(3 << 20), 1)  # one member: one 2 MiB buffer and some
    gate = threading.Event()

    def source():
        yield first
        gate.wait(60)  # the second member is held back
        yield gzip.compress(rnd.randbytes(1 << 20), 1)

    for wait in (False, True):
        gate.clear()
        pipe = Decompressor(source(), "gzip", lambda _buf: None)
        assert len(next(iter(pipe))) > 0
        t0 = time.monotonic()
        if wait:
            threading.Timer(0.5, gate.set).start()
        pipe.close(wait=wait)
        took = time.monotonic() - t0
        assert took < 0.25 if not wait else took >= 0.4, (wait, took)
        gate.set()
        pipe._thread.join(10)
        assert not pipe._thread.is_alive()


def test_closing_a_layer_reader_does_not_wait_for_its_chunk_reads(store):
    """A reader dropped unclosed is closed by the garbage collector on any
    thread, an "io" worker's included. Closing a reader of a layer held as
    its compressed bytes must not wait for its decompressing thread, whose
    chunk reads may need that very worker: here its chunk reads are held
    back until the close has returned."""
    import threading

    rnd = random.Random(16)
    layer = make_tar([(f"f{i}", rnd.randbytes(1 << 20)) for i in range(40)])
    store.ingest(gzip.compress(layer, 1, mtime=0))
    reader = store.open_blob(sha(layer))
    assert reader.read(1000) == layer[:1000]
    gate, held, closed = threading.Event(), threading.Event(), threading.Event()
    read_run = store._read_run

    def gated(*args):
        held.set()
        gate.wait(60)
        return read_run(*args)

    store._read_run = gated
    closer = threading.Thread(target=lambda: (reader.close(), closed.set()))
    try:
        assert held.wait(20)  # the decompressing thread's reads now wait
        closer.start()
        assert closed.wait(10), "close waited for the held chunk reads"
    finally:
        gate.set()
        if closer.ident is not None:  # started
            closer.join(60)
        del store._read_run
    assert store.read_blob(sha(layer)) == layer


def test_verify_reports_unknown_blob_kind_and_a_diff_id_held_raw(tmp_path):
    """Catalog rows edited by hand (or by a newer version): verify reports
    them and repair leaves the bytes alone."""
    import sqlite3

    rnd = random.Random(14)
    layer = make_tar([("a", rnd.randbytes(30_000))])
    gz = gzip.compress(layer, mtime=0)
    other = rnd.randbytes(5000)
    root = tmp_path / "s"
    with Store.open(root) as store:
        store.ingest(io.BytesIO(gz))
        store.ingest(io.BytesIO(other), media_type="application/octet-stream")
    con = sqlite3.connect(root / "catalog.db")
    con.execute("UPDATE blobs SET kind = 'future' WHERE digest = ?", (sha(other),))
    con.execute("UPDATE blobs SET kind = 'raw', diff_id = NULL, entries = NULL WHERE digest = ?", (sha(layer),))
    con.commit()
    con.close()
    with Store.open(root) as store:
        report = store.verify()
        whats = {f.subject: f.what for f in report.faults}
        assert "unknown blob kind 'future'" in whats[sha(other)]
        assert "stored as a raw blob, not as a layer" in whats[sha(gz)]
        store.verify(repair=True)
        assert store.read_blob(sha(gz)) == gz  # nothing dropped
        store.ingest(io.BytesIO(layer), media_type="application/vnd.oci.image.layer.v1.tar")
        assert not [f for f in store.verify().faults if f.subject == sha(gz)]
