"""Compaction, in two passes.

1. Layers still held as the compressed blob they were ingested from (an
   inflated recipe: ingest keeps only the compressed bytes, so that it runs
   at the speed of decompressing) are deduplicated: each is read back
   (decompressed and verified against its diff ID), scanned like an
   uncompressed layer, its new file-content chunks written as they are
   (their packs listed for the next repack to compress), and one
   transaction swaps its recipe for the layer recipe, adding references to
   its chunks and dropping those to the compressed bytes.

2. gzip and zstd layer blobs kept as compressed bytes are re-stored as
   reconstruction data against their (now deduplicated) layer
   (``reconstruct``), so the store holds the layer's file contents once
   instead of twice.

In pass 2, :meth:`Store.compact` (CompactMixin) goes over those blobs,
each in one pass: the stored blob is read back (verified) and analyzed
(gzip: inflated by the analyzer; zstd: parsed beside the stored layer's
bytes), and its reconstruction data is written to packs and, at the same
time, rebuilt against the plaintext. The new form is committed only when
the plaintext hashes to the blob's diff ID (so reads, which rebuild from the stored layer, see the same
plaintext) and the rebuilt bytes hash to the blob's digest (so the
reconstruction is proven exact); then one catalog transaction swaps the
blob's recipe, adds references to the new chunks and drops those of the
compressed bytes, which a later prune and repack reclaim.

Layers and blobs are compacted in parallel, one per core (up to four):
decompression, scanning, the analyzers and the rebuilders run in C without
the GIL.

A crash before either pass's transaction leaves the layer or blob as it was
(the chunks written are unreferenced, reclaimed by repack). One changed by
another writer in the meantime is left alone.

Trade-off: a rebuilt blob needs its layer; the layer can no longer be
recovered from the compressed blob by ``verify(repair=True)``.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import recipe as recipe_codec
from .errors import LayerStoreError
from .reconstruct import GzipAnalyzer, Rebuilder, ZstdAnalyzer

__all__ = ["CompactReport", "CompactMixin"]

_READ = 1 << 20
_MAX_THREADS = 4


@dataclass
class CompactReport:
    """What :meth:`Store.compact` did. ``examined``: gzip and zstd blobs held as
    compressed bytes that were looked at; ``rebuilt``: digests now held as
    reconstruction data; ``blob_bytes``: their total size; ``data_bytes``:
    the reconstruction data written for them; ``skipped``: (digest, reason)
    for the blobs left as they were. ``deduplicated``: diff IDs of the layers
    deduplicated in pass 1 (module docstring); ``layer_bytes``: their total
    size; ``content_bytes_written``: bytes of new file content written for
    them (before compression)."""

    deduplicated: List[str] = field(default_factory=list)
    layer_bytes: int = 0
    content_bytes_written: int = 0
    examined: int = 0
    rebuilt: List[str] = field(default_factory=list)
    blob_bytes: int = 0
    data_bytes: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)


class _Proof:
    """The two checks a compaction must pass, made as the bytes go by: the
    plaintext hashes to the diff ID, and the rebuild (fed the
    reconstruction data and the plaintext as they appear) hashes to the
    blob's digest. ``size`` counts the compressed bytes read.

    The plaintext is hashed here only for gzip, where the analyzer makes
    it; zstd's comes from the stored layer's reader, which checks the diff
    ID itself when it reaches the end (and the analyzer reads to the end)."""

    def __init__(self, kind):
        self.rebuilder = Rebuilder(kind)
        self._plain = hashlib.sha256() if kind == "gzip" else None
        self._rebuilt = hashlib.sha256()
        self._live = True
        self.size = 0

    def counted(self, buffers):
        for buf in buffers:
            self.size += len(buf)
            yield buf

    def plain(self, pieces, live):
        self._live = self._live and live
        for p in pieces:
            if self._plain is not None:
                self._plain.update(p)
            if self._live:
                self.rebuilder.plain(p)
        self._pump()

    def _pump(self):
        if self._live:
            for out in self.rebuilder.run():
                self._rebuilt.update(out)

    def plain_mismatch(self, diff_id) -> Optional[str]:
        """Why the plaintext is not the layer's, or None."""
        if self._plain is None or "sha256:" + self._plain.hexdigest() == diff_id:
            return None
        return f"it decompresses to sha256:{self._plain.hexdigest()}, not its diff ID {diff_id}"

    def rebuilt_matches(self, digest) -> bool:
        self.rebuilder.plain_end()
        self._pump()
        return self.rebuilder.wants is None and "sha256:" + self._rebuilt.hexdigest() == digest


def _run_each(fn, jobs, report: CompactReport, done):
    """``fn(*job)`` for each job (a tuple starting with a digest), one per
    core at a time (up to _MAX_THREADS; the work runs in C without the
    GIL). ``fn`` returns (why it left the digest as it was or None, two
    figures); a job that returns a reason or raises LayerStoreError goes to
    ``report.skipped``, and ``done(digest, *figures)`` is called for the
    others, in job order."""

    def one(job):
        try:
            return fn(*job)
        except LayerStoreError as exc:
            return str(exc), 0, 0

    threads = max(1, min(len(jobs), os.cpu_count() or 1, _MAX_THREADS))
    with ThreadPoolExecutor(threads, thread_name_prefix="layerstore-compact") as pool:
        for job, (why, *figures) in zip(jobs, pool.map(one, jobs)):
            if why:
                report.skipped.append((job[0], why))
            else:
                done(job[0], *figures)


class CompactMixin:
    """:meth:`compact` for :class:`layerstore.store.Store`."""

    def compact(self, digests: Optional[List[str]] = None) -> CompactReport:
        """Re-store gzip and zstd layer blobs held as compressed bytes as
        reconstruction data against their layer (module docstring).

        ``digests``: only these blobs (a digest or a list; default: every
        candidate). The disk
        space of the compressed bytes comes back with :meth:`prune` then
        :meth:`repack`. Blobs whose stream the reconstruction cannot express
        (see docs/format.md), or whose layer is not stored as a layer, are
        listed in ``skipped`` with the reason. Raises StoreError when the
        store is closed; a damaged blob is skipped, not raised."""
        if isinstance(digests, str):
            digests = [digests]
        report = CompactReport()
        with self._catalog.read() as cur:
            rows = cur.execute("SELECT digest, kind, diff_id, recipe FROM blobs WHERE kind IN ('gzip', 'zstd') "
                               "ORDER BY digest").fetchall()
            # the version byte of the recipe header tells an inflated one (substr counts from 1)
            inflated = cur.execute("SELECT digest, recipe FROM blobs WHERE kind = 'layer' AND substr(recipe, ?, 1) = ? "
                                   "ORDER BY digest", (recipe_codec.VERSION_OFFSET + 1,
                                                       bytes([recipe_codec.VERSION_INFLATED]))).fetchall()
        wanted = set(digests) if digests is not None else None
        if wanted is not None:
            layers = wanted | {diff_id for digest, _k, diff_id, _r in rows if digest in wanted}
            inflated = [row for row in inflated if row[0] in layers]
        self._deduplicate_layers(inflated, report)
        jobs = []
        for digest, kind, diff_id, raw in rows:
            if wanted is not None and digest not in wanted:
                continue
            try:
                if recipe_codec.decode(raw, what=f"recipe of {digest}").source:
                    continue
            except LayerStoreError as exc:
                report.skipped.append((digest, str(exc)))
                continue
            jobs.append((digest, kind, diff_id, raw))
        report.examined = len(jobs)

        def rebuilt(digest, blob_bytes, data_bytes):
            report.rebuilt.append(digest)
            report.blob_bytes += blob_bytes
            report.data_bytes += data_bytes

        _run_each(self._compact_one, jobs, report, rebuilt)
        return report

    def _deduplicate_layers(self, rows, report: CompactReport):
        """Pass 1 (module docstring) over ``rows`` of (diff ID, inflated
        recipe), one layer per core at a time (decompression, scanning and
        hashing run without the GIL). A layer that fails is left as it was,
        in ``report.skipped``."""

        def deduplicated(digest, size, written):
            report.deduplicated.append(digest)
            report.layer_bytes += size
            report.content_bytes_written += written

        _run_each(self._deduplicate_layer, rows, report, deduplicated)

    def _deduplicate_layer(self, digest, old_raw) -> Tuple[Optional[str], int, int]:
        """Deduplicate one layer held as an inflated recipe: (why it was left
        as it was or None, layer bytes, new content bytes written)."""
        from .store import _abandon_on_error, _LayerBlob

        with self._lease():
            # its new chunks are written as they are, their packs listed for
            # the repack that follows compact and prune (which rewrites those
            # packs anyway, for the compressed bytes compact lets go of)
            layer = _LayerBlob(self, defer=self._packs.codec != "none")
            with _abandon_on_error(layer):
                with self.open_blob(digest) as f:  # checks the diff ID at the end
                    for buf in iter(lambda: f.read(_READ), b""):
                        layer.feed(buf)
                layer.finish(digest)
                rec = layer.record(digest, None)
            if not self._swap_recipe(digest, old_raw, rec.encoded, rec.new_chunks, rec.recipe.chunks, rec.to_compress):
                layer.chunks.abandon()
                return "it changed while being deduplicated", 0, 0
            return None, rec.recipe.size, sum(row[4] for row in rec.new_chunks)

    def _compact_one(self, digest, kind, diff_id, old_raw) -> Tuple[Optional[str], int, int]:
        """Compact one blob: (why it was skipped or None, blob bytes,
        reconstruction data bytes)."""
        from .store import KIND_LAYER, _abandon_on_error, _RawBlob

        with self._lease():
            layer = self._catalog.get_blob(diff_id) if diff_id and self._live_kind(diff_id) else None
            if layer is None or layer[3] != KIND_LAYER:
                return f"its diff ID {diff_id} is not stored as a layer", 0, 0
            if recipe_codec.version(layer[6]) == recipe_codec.VERSION_INFLATED:
                # a rebuilt blob is read through its layer: never through one
                # that is read through a compressed blob
                return f"its layer {diff_id} is not deduplicated yet", 0, 0
            side = _RawBlob(self, compress=False)  # range-coded: does not compress further
            proof = _Proof(kind)

            def on_side(data):
                side.feed(data)
                proof.rebuilder.side(data)

            with _abandon_on_error(side):
                with self.open_blob(digest) as blob:
                    compressed = proof.counted(iter(lambda: blob.read(_READ), b""))
                    if kind == "gzip":
                        analyzer = GzipAnalyzer(on_side)
                        for buf in compressed:
                            proof.plain(analyzer.feed(buf), analyzer.exact)
                        proof.plain(analyzer.finish(), analyzer.exact)
                    else:
                        with self.open_blob(diff_id) as layer:
                            analyzer = ZstdAnalyzer(on_side, on_plain=lambda p: proof.plain([p], True))
                            analyzer.run(compressed, iter(lambda: layer.read(_READ), b""))
                why = None
                if not analyzer.exact:
                    why = f"its {kind} stream cannot be reconstructed: {analyzer.reason}"
                elif mismatch := proof.plain_mismatch(diff_id):
                    why = mismatch
                elif not proof.rebuilt_matches(digest):
                    why = "the rebuilt bytes do not match its digest (not stored)"
                if why:
                    side.chunks.abandon()
                    return why, 0, 0
                side.finish(None)
                rows = [(d, loc.pack_id, loc.offset, loc.stored_length, loc.raw_length, loc.codec)
                        for d, loc in side.chunks.locations().items()]
                method = recipe_codec.METHOD_GZIP if kind == "gzip" else recipe_codec.METHOD_ZSTD
                new_raw = recipe_codec.encode_rebuilt(proof.size, diff_id, method, side.chunks.refs, side.size)
            if not self._swap_recipe(digest, old_raw, new_raw, rows, side.chunks.refs):
                return "it changed while being compacted", 0, 0
            return None, proof.size, side.size

    def _swap_recipe(self, digest, old_raw, new_raw, new_rows, new_refs, to_compress=()) -> bool:
        """One transaction: the blob's recipe ``old_raw`` becomes ``new_raw``;
        references move from the old recipe's chunks to ``new_refs``; the
        packs ``to_compress`` are listed for repack."""
        self._packs.flush(sync=True)
        with self._catalog.write() as cur:
            row = cur.execute("SELECT recipe FROM blobs WHERE digest = ?", (digest,)).fetchone()
            if row is None or row[0] != old_raw:
                return False
            self._catalog.add_chunks(cur, new_rows)
            self._catalog.mark_to_compress(cur, to_compress)
            cur.execute("UPDATE blobs SET recipe = ? WHERE digest = ?", (new_raw, digest))
            self._move_refs(cur, digest, new_refs, old_raw, "compaction")
        return True
