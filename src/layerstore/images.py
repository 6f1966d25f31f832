"""Images in the store: tags and their history, resolving references,
listing, inspecting, and loading/saving archives (formats.py).

What ``docker load``, ``docker save``, ``docker tag``, ``docker images``,
``docker image inspect`` and ``docker history`` do, as methods of
:class:`layerstore.store.Store` (which inherits :class:`ImagesMixin`).

Model (the object graph of ARCHITECTURE.md): a *tag* ``repository:tag`` is
a mutable pointer to a *manifest* or *image index* stored byte-exact as a
blob; an index points to per-platform manifests; a manifest to its *config*
(whose digest is the image ID) and *layers*. Tags never copy anything;
several may point to one image; every move of a tag is kept in its history
("what did ``latest`` mean last Tuesday": :meth:`ImagesMixin.tag_history`,
``resolve(..., at=...)``). A digest reference (``name@sha256:...``,
``sha256:...``, an image ID or a unique prefix of one) resolves without tags.

Catalog tables (created on first use; documented in docs/format.md,
"Catalog: images and tags"): ``images`` (every stored manifest and index),
``image_children`` (index membership, with whether each child was
imported), ``tags`` and ``tag_history``. Rows change in the same
transaction that makes an import's blobs visible.

Names are normalised with :func:`layerstore.reference.parse` (Docker's
``ParseDockerRef``: ``docker.io`` and ``library/`` defaults, tag
``latest``) and stored fully qualified; output uses the familiar form where
Docker does (``RepoTags``, ``RepoDigests``).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple, Union

from . import formats
from . import mediatypes as mt
from .digest import Digest, DigestError, parse_digest
from .errors import (ImageFormatError, ImageNotFoundError, InvalidDocumentError, PlatformNotFoundError,
                     ReferenceError)
from .formats import (ALREADY_EXISTS, STORED, ExportImage, LayerStatus, LoadedImage)
from .manifest import (Descriptor, ImageConfig, ImageIndex, Manifest, Platform, host_platform,
                       parse_config, parse_document)
from .reference import TAG_INVALID, Reference, parse, parse_normalized

__all__ = ["ImagesMixin", "TagInfo", "TagEvent", "ImageSummary", "HistoryStep", "LoadedImage", "LayerStatus",
           "ALREADY_EXISTS", "STORED", "IMAGES_SCHEMA_VERSION"]

IMAGES_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    digest     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    kind       TEXT NOT NULL,
    config     TEXT,
    platform   TEXT,
    toplevel   INTEGER NOT NULL DEFAULT 0,
    created    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_config ON images(config);
CREATE TABLE IF NOT EXISTS image_children (
    parent   TEXT NOT NULL,
    position INTEGER NOT NULL,
    child    TEXT NOT NULL,
    present  INTEGER NOT NULL,
    PRIMARY KEY (parent, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_children_by_child ON image_children(child);
CREATE TABLE IF NOT EXISTS tags (
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    updated    REAL NOT NULL,
    PRIMARY KEY (repository, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags(digest);
CREATE TABLE IF NOT EXISTS tag_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT,
    previous   TEXT,
    time       REAL NOT NULL,
    origin     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tag_history_by_tag ON tag_history(repository, tag, id);
"""

_HEX64_RE = re.compile(r"[a-f0-9]{64}")
_HEX_PREFIX_RE = re.compile(r"(?:sha256:)?([a-f0-9]{4,63})")
_MISSING = "<missing>"


# --- records returned ----------------------------------------------------------------

@dataclass(frozen=True)
class TagInfo:
    """A tag: ``repository`` (fully qualified, e.g. ``docker.io/library/busybox``),
    ``tag``, ``digest`` of the manifest or index it points to, ``updated``
    (seconds since the epoch, when it was last moved)."""

    repository: str
    tag: str
    digest: Digest
    updated: float

    @property
    def reference(self) -> str:
        """``repository:tag``, fully qualified."""
        return f"{self.repository}:{self.tag}"

    def familiar(self) -> str:
        """The short form Docker shows (``busybox:latest``)."""
        return parse(self.reference).familiar()


@dataclass(frozen=True)
class TagEvent:
    """One move of a tag: it points to ``digest`` (None: removed) from
    ``time`` (seconds since the epoch) on; it pointed to ``previous``
    (None: did not exist) before. ``origin`` says what moved it
    (``load <format>:<path>``, ``tag <source>``, ``untag``)."""

    repository: str
    tag: str
    digest: Optional[Digest]
    previous: Optional[Digest]
    time: float
    origin: str


@dataclass(frozen=True)
class ImageSummary:
    """One line of :meth:`ImagesMixin.images` (``docker images``).

    ``repository``/``tag``: the tag (fully qualified repository), both None
    for a dangling image; ``digest``: the manifest or index the tag points
    to; ``id``: the image ID (config digest) of the image shown (for an
    index, the one for this machine's platform, else the first imported);
    ``created``: the config's ``created`` (RFC 3339 text, as written);
    ``size``: bytes, the sum of its layers' uncompressed tar sizes;
    ``platform``: ``os/arch[/variant]``."""

    repository: Optional[str]
    tag: Optional[str]
    digest: Digest
    id: Digest
    created: Optional[str]
    size: int
    platform: Optional[str]

    @property
    def dangling(self) -> bool:
        return self.repository is None


@dataclass(frozen=True)
class HistoryStep:
    """One step of an image's history (config.md ``history``), as
    ``docker history`` shows it: ``id`` is the image ID for the newest step
    and ``<missing>`` for the others; ``size`` is the uncompressed size in
    bytes of the layer the step created (0 for ``empty_layer``); ``diff_id``
    that layer's diff ID; ``tags``: the image's tags (newest step only)."""

    id: str
    created: Optional[str]
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    diff_id: Optional[Digest]
    author: str = ""
    tags: Tuple[str, ...] = ()


def _when(at) -> float:
    if isinstance(at, datetime):
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        return at.timestamp()
    return float(at)


def _created_key(created: Optional[str]) -> float:
    if not created:
        return 0.0
    text = created.replace("Z", "+00:00").replace("z", "+00:00")
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)", text)
    if m:
        frac = (m.group(2) or "")[:7]
        text = m.group(1) + frac + m.group(3)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class ImagesMixin:
    """Image methods of :class:`layerstore.store.Store` (see the module
    docstring). Expects ``self._catalog`` (catalog.Catalog) and the blob
    methods of Store (``batch``, ``has``, ``stat``, ``read_blob``,
    ``open_blob``)."""

    _images_ready = False

    # -- schema -----------------------------------------------------------------
    def _images_db(self):
        """The catalog, with the image tables created (idempotent)."""
        if not self._images_ready:
            con = self._catalog._con()
            con.executescript(_SCHEMA)
            with self._catalog.write() as cur:
                cur.execute("INSERT OR IGNORE INTO meta VALUES ('images_schema_version', ?)",
                            (str(IMAGES_SCHEMA_VERSION),))
                row = cur.execute("SELECT value FROM meta WHERE key = 'images_schema_version'").fetchone()
            if int(row[0]) > IMAGES_SCHEMA_VERSION:
                from .errors import StoreError
                raise StoreError(f"catalog {self._catalog.path}: image tables have schema version {row[0]}, "
                                 f"newer than supported ({IMAGES_SCHEMA_VERSION})")
            self._images_ready = True
        return self._catalog

    def _row(self, digest: str):
        return self._images_db()._con().execute(
            "SELECT digest, media_type, kind, config, platform, toplevel, created FROM images WHERE digest = ?",
            (str(digest),)).fetchone()

    def _is_image(self, digest: str) -> bool:
        return self._row(digest) is not None

    # -- load / save --------------------------------------------------------------------
    def load(self, path, *, name: Optional[str] = None,
             platforms: Optional[Sequence[Union[str, Platform]]] = None) -> List[LoadedImage]:
        """Import every image of an archive or layout: a docker-archive
        (``docker save``/``podman save``, legacy or Docker 25 layout, one or
        several images), an oci-archive, an OCI image layout directory or a
        containers/image ``dir:`` directory (formats.py describes each).

        Everything becomes visible in one transaction, with the tags the
        input gives (``RepoTags``; ``io.containerd.image.name``; a tag-only
        ``org.opencontainers.image.ref.name`` combined with ``name``), or
        nothing does. A tag that pointed elsewhere is moved (and the move
        recorded), as ``docker load`` does.

        Args:
            path: the file or directory.
            name: repository (optionally ``:tag``) for images the input does
                not name fully (see :func:`formats.read_images`).
            platforms: import only these platforms of image indexes
                (``os/arch[/variant]``); default all.

        Returns one :class:`LoadedImage` per top-level image, with the
        per-layer status (``already exists`` / ``stored``) and sizes.

        Raises ImageFormatError (UnsafePathError, MissingContentError),
        InvalidDocumentError, DigestMismatchError, SizeMismatchError,
        TarFormatError, CompressedLayerError, ReferenceError; nothing of the
        input is visible afterwards."""
        self._images_db()
        with formats.open_input(path) as inp:
            origin = f"load {inp.format}:{inp.source}"
            with self.batch() as b:
                result = formats.read_images(self, b, inp, name=name, platforms=platforms,
                                             known_image=self._is_live_image)
                b.commit(extra=lambda cur: self._record_import(cur, result, origin))
        return result.images

    def _record_import(self, cur, result, origin: str):
        now = time.time()
        for rec in result.records.values():
            cur.execute(
                "INSERT INTO images(digest, media_type, kind, config, platform, toplevel, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(digest) DO UPDATE SET toplevel = max(toplevel, excluded.toplevel)",
                (str(rec.digest), rec.media_type, rec.kind, rec.config and str(rec.config), rec.platform,
                 int(rec.toplevel), now))
            for pos, child, present in rec.children:
                cur.execute(
                    "INSERT INTO image_children(parent, position, child, present) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(parent, position) DO UPDATE SET present = max(present, excluded.present)",
                    (str(rec.digest), pos, str(child), int(present)))
        for ref, digest in result.tags.items():
            self._move_tag(cur, ref, digest, origin, now)

    def _move_tag(self, cur, ref: Reference, digest: Optional[str], origin: str, now: float) -> bool:
        """Point ``ref`` at ``digest`` (None: remove it); record the move.
        False when nothing changed."""
        row = cur.execute("SELECT digest FROM tags WHERE repository = ? AND tag = ?",
                          (ref.name, ref.tag)).fetchone()
        previous = row[0] if row else None
        if previous == (str(digest) if digest is not None else None):
            return False
        if digest is None:
            cur.execute("DELETE FROM tags WHERE repository = ? AND tag = ?", (ref.name, ref.tag))
        else:
            cur.execute("INSERT INTO tags(repository, tag, digest, updated) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(repository, tag) DO UPDATE SET digest = excluded.digest, "
                        "updated = excluded.updated", (ref.name, ref.tag, str(digest), now))
        cur.execute("INSERT INTO tag_history(repository, tag, digest, previous, time, origin) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (ref.name, ref.tag, str(digest) if digest is not None else None, previous, now, origin))
        return True

    def save(self, references, path, format: str = formats.DOCKER_ARCHIVE, *,
             platform: Union[str, Platform, None] = None) -> List[dict]:
        """Write images to ``path`` as ``format``: ``"docker-archive"``,
        ``"oci-archive"`` (tar files) or ``"oci"`` (an OCI image layout
        directory, which must not exist or be empty); formats.py describes
        what each holds. The output appears complete or not at all; an
        existing archive file at ``path`` is replaced, as ``docker save -o``
        does.

        ``references``: one reference or a list (tags, digests, image IDs);
        a tag is written as the image's name, a digest gives an unnamed
        image. An image index is written whole (with the platforms that are
        in the store) unless ``platform`` is given or the format is a
        docker-archive, which holds one platform per image (``platform``,
        default this machine's).

        Returns the ``index.json`` entries written. Raises
        ImageNotFoundError, PlatformNotFoundError, ImageFormatError."""
        if isinstance(references, (str, Reference)):
            references = [references]
        if format not in formats.EXPORT_FORMATS:
            raise ImageFormatError(str(path), None,
                                   f"unknown format {format!r}; expected one of {', '.join(formats.EXPORT_FORMATS)}")
        groups: Dict[str, list] = {}
        for r in references:
            top, ref = self._lookup(r)
            if format == formats.DOCKER_ARCHIVE or platform is not None:
                desc = self._select(top, platform, str(r))
            else:
                row = self._row(top)
                desc = Descriptor(row[1], Digest(row[0]), self.stat(row[0]).size)
            entry = groups.setdefault(desc.digest, [desc, []])
            if ref is not None and ref.tag is not None and ref not in entry[1]:
                entry[1].append(ref)
        images = [ExportImage(desc, tuple(refs)) for desc, refs in groups.values()]
        return formats.write_images(self, images, path, format)

    # -- tags ---------------------------------------------------------------------------
    def tag(self, source, target) -> TagInfo:
        """Point the tag ``target`` (``[registry/]repository[:tag]``, tag
        ``latest`` by default) at the image ``source`` names (a tag, a
        digest reference, an image ID or a unique prefix of one), as
        ``docker tag`` does. Copies nothing; the move is recorded.

        Raises ImageNotFoundError, ReferenceError (``target`` invalid or
        carrying a digest)."""
        digest, _ = self._lookup(source)
        ref = self._tag_reference(target)
        now = time.time()
        with self._images_db().write() as cur:
            if cur.execute("SELECT 1 FROM images WHERE digest = ?", (str(digest),)).fetchone() is None:
                raise ImageNotFoundError(str(source), "removed meanwhile")
            cur.execute("UPDATE images SET toplevel = 1 WHERE digest = ?", (str(digest),))
            self._move_tag(cur, ref, digest, f"tag {source}", now)
            row = cur.execute("SELECT updated FROM tags WHERE repository = ? AND tag = ?",
                              (ref.name, ref.tag)).fetchone()
        return TagInfo(ref.name, ref.tag, Digest(digest), row[0])

    def untag(self, reference) -> TagInfo:
        """Remove a tag (``docker rmi`` of a tag, without deleting content);
        the removal is recorded in its history. Returns the tag as it was.
        Raises ImageNotFoundError if there is no such tag."""
        ref = self._tag_reference(reference)
        with self._images_db().write() as cur:
            row = cur.execute("SELECT digest, updated FROM tags WHERE repository = ? AND tag = ?",
                              (ref.name, ref.tag)).fetchone()
            if row is None:
                raise ImageNotFoundError(str(reference), "no such tag")
            self._move_tag(cur, ref, None, "untag", time.time())
        return TagInfo(ref.name, ref.tag, Digest(row[0]), row[1])

    @staticmethod
    def _tag_reference(text) -> Reference:
        ref = text if isinstance(text, Reference) else parse(text)
        if ref.digest is not None or ref.tag is None:
            raise ReferenceError(str(text), TAG_INVALID, "a tag reference (name[:tag]) is needed, not a digest")
        return ref

    def tags(self, repository: Optional[str] = None) -> List[TagInfo]:
        """Every tag, or those of one repository (normalised:
        ``busybox`` means ``docker.io/library/busybox``), sorted by
        repository and tag."""
        con = self._images_db()._con()
        if repository is None:
            rows = con.execute("SELECT repository, tag, digest, updated FROM tags ORDER BY repository, tag")
        else:
            name = parse_normalized(repository).name
            rows = con.execute("SELECT repository, tag, digest, updated FROM tags WHERE repository = ? "
                               "ORDER BY tag", (name,))
        return [TagInfo(r, t, Digest(d), u) for r, t, d, u in rows]

    def tag_history(self, reference) -> List[TagEvent]:
        """Every move of the tag ``reference`` (tag ``latest`` by default),
        oldest first: creation, each move (with what it pointed to before)
        and removal. Empty when the tag never existed."""
        ref = self._tag_reference(reference)
        rows = self._images_db()._con().execute(
            "SELECT repository, tag, digest, previous, time, origin FROM tag_history "
            "WHERE repository = ? AND tag = ? ORDER BY id", (ref.name, ref.tag))
        return [TagEvent(r, t, Digest(d) if d else None, Digest(p) if p else None, ts, o)
                for r, t, d, p, ts, o in rows]

    # -- resolving ------------------------------------------------------------------------
    def _by_digest(self, d: str, text: str) -> str:
        if self._row(d) is not None:
            return d
        row = self._images_db()._con().execute(
            "SELECT digest FROM images WHERE config = ? ORDER BY toplevel DESC, created DESC, digest LIMIT 1",
            (d,)).fetchone()
        if row is None:
            raise ImageNotFoundError(text, "no manifest, index or image ID with that digest")
        return row[0]

    def _by_prefix(self, hexpart: str, text: str) -> Optional[str]:
        con = self._images_db()._con()
        like = "sha256:" + hexpart + "%"
        rows = con.execute("SELECT digest, config FROM images WHERE digest LIKE ? OR config LIKE ?",
                           (like, like)).fetchall()
        ids = {c if c and c.startswith("sha256:" + hexpart) else d for d, c in rows}
        if not ids:
            return None
        if len(ids) > 1:
            raise ImageNotFoundError(text, f"ambiguous: {len(ids)} images have IDs or digests starting with it")
        return self._by_digest(ids.pop(), text)

    def _lookup(self, reference, at=None) -> Tuple[str, Optional[Reference]]:
        """(manifest or index digest, the tag reference used or None)."""
        self._images_db()
        if isinstance(reference, Reference):
            ref, text = reference, str(reference)
            if ref.tag is None and ref.digest is None:
                ref = ref.with_tag("latest")
        else:
            text = str(reference).strip()
            if _HEX64_RE.fullmatch(text):
                return self._by_digest("sha256:" + text, text), None
            if text.startswith("sha256:"):
                try:
                    return self._by_digest(parse_digest(text), text), None
                except DigestError:
                    pass
            try:
                ref = parse(text)
            except ReferenceError:
                m = _HEX_PREFIX_RE.fullmatch(text)
                if m:
                    found = self._by_prefix(m.group(1), text)
                    if found:
                        return found, None
                    raise ImageNotFoundError(text) from None
                raise
        if ref.digest is not None:
            if self._row(ref.digest) is None:
                raise ImageNotFoundError(text, "no manifest or index with that digest")
            return str(ref.digest), None
        con = self._images_db()._con()
        if at is None:
            row = con.execute("SELECT digest FROM tags WHERE repository = ? AND tag = ?",
                              (ref.name, ref.tag)).fetchone()
        else:
            row = con.execute("SELECT digest FROM tag_history WHERE repository = ? AND tag = ? AND time <= ? "
                              "ORDER BY id DESC LIMIT 1", (ref.name, ref.tag, _when(at))).fetchone()
            if row is not None and row[0] is None:
                raise ImageNotFoundError(text, f"the tag was removed at {_iso(_when(at))}")
        if row is not None:
            return row[0], ref
        m = _HEX_PREFIX_RE.fullmatch(text)
        if m and at is None:
            found = self._by_prefix(m.group(1), text)
            if found:
                return found, None
        raise ImageNotFoundError(text, "no such tag" + (f" at {_iso(_when(at))}" if at is not None else ""))

    def _document(self, digest: str, media_type: Optional[str] = None):
        return parse_document(self.read_blob(digest), media_type)

    def _present_children(self, digest: str) -> Dict[str, int]:
        rows = self._images_db()._con().execute(
            "SELECT child, position FROM image_children WHERE parent = ? AND present = 1", (digest,))
        return {c: p for c, p in rows}

    def _select(self, top: str, platform, label: str, lenient: bool = False) -> Descriptor:
        """The manifest ``top`` stands for on ``platform`` (default: this
        machine's): ``top`` itself when it is a manifest (refused if an
        explicit ``platform`` cannot run it), else the best imported child
        of the index (containerd's platform order). ``lenient``: an index
        with no child for the platform gives its first imported child."""
        row = self._row(top)
        if row is None:
            raise ImageNotFoundError(label)
        digest, media_type, kind, _config, plat_json = row[:5]
        if kind == "manifest":
            plat = Platform.from_json(json.loads(plat_json)) if plat_json else None
            if platform is not None and plat is not None:
                wanted = Platform.parse(platform) if isinstance(platform, str) else platform
                if not wanted.compatible(plat):
                    raise PlatformNotFoundError(label, str(wanted.normalized()), [str(plat)])
            return Descriptor(media_type, Digest(digest), self.stat(digest).size, platform=plat)
        index: ImageIndex = self._document(digest, media_type)
        present = self._present_children(digest)
        wanted = host_platform() if platform is None else (
            Platform.parse(platform) if isinstance(platform, str) else platform)
        for cand in index.matching(wanted):
            if cand.digest in present and mt.is_manifest(cand.media_type):
                return cand
        have = [d for d in index.manifests if d.digest in present and mt.is_manifest(d.media_type)]
        if lenient and platform is None and have:
            return have[0]
        raise PlatformNotFoundError(label, str(wanted.normalized()),
                                    [str(d.platform) for d in have if d.platform is not None])

    def resolve(self, reference, platform: Union[str, Platform, None] = None, *, at=None) -> Descriptor:
        """The descriptor of the image manifest ``reference`` names on
        ``platform`` (``os/arch[/variant]``, default this machine's), as
        ``docker pull`` picks it from an index (image-index.md; containerd's
        platform matching and preference order), among the platforms that
        were imported. The descriptor carries the manifest's ``platform``.

        ``reference``: a tag (``busybox`` = ``docker.io/library/busybox:latest``),
        ``name@digest`` or a bare digest (resolved without tags), an image
        ID (config digest) or a unique prefix of one. ``at``: resolve the tag
        as it was at that time (seconds since the epoch or a datetime).

        Raises ImageNotFoundError, PlatformNotFoundError, ReferenceError."""
        top, _ = self._lookup(reference, at=at)
        return self._select(top, platform, str(reference))

    # -- reading images ---------------------------------------------------------------------
    def _image(self, desc: Descriptor) -> Tuple[Manifest, ImageConfig]:
        manifest = self._document(desc.digest, desc.media_type)
        if not isinstance(manifest, Manifest):
            raise InvalidDocumentError("(document)", f"{desc.digest} is not an image manifest", desc.media_type)
        if not mt.is_config(manifest.config.media_type):
            raise InvalidDocumentError("config.mediaType", f"{manifest.config.media_type!r}: not an image "
                                                           f"(an artifact)", manifest.media_type)
        config = parse_config(self.read_blob(manifest.config.digest), manifest.config.media_type)
        return manifest, config

    def _layer_sizes(self, manifest: Manifest, config: ImageConfig) -> List[int]:
        """Uncompressed size in bytes of each layer (its diff ID's tar)."""
        sizes = []
        for layer, diff_id in zip(manifest.layers, config.diff_ids):
            d = diff_id if self.has(diff_id) else layer.digest
            sizes.append(self.stat(d).size)
        return sizes

    def _names(self, image_id: str) -> List[Tuple[str, str, str, float]]:
        """Tags pointing at a manifest with config ``image_id``, directly or
        through an index holding it: (repository, tag, digest, updated)."""
        con = self._images_db()._con()
        rows = con.execute(
            "SELECT t.repository, t.tag, t.digest, t.updated FROM tags t JOIN images i ON i.digest = t.digest "
            "WHERE i.config = ? "
            "UNION "
            "SELECT t.repository, t.tag, t.digest, t.updated FROM tags t "
            "JOIN image_children c ON c.parent = t.digest JOIN images i ON i.digest = c.child "
            "WHERE c.present = 1 AND i.config = ? ORDER BY 1, 2", (image_id, image_id)).fetchall()
        return rows

    def inspect(self, reference, platform: Union[str, Platform, None] = None) -> dict:
        """What ``docker image inspect`` shows of the image ``reference``
        names (for an index: the manifest for ``platform``, default this
        machine's):

        ``Id`` (config digest), ``RepoTags`` (familiar ``name:tag`` of every
        tag reaching this image ID, directly or through an index),
        ``RepoDigests`` (``name@digest`` of what those tags point to),
        ``Parent`` (""), ``Comment``, ``Created`` (config ``created``, as
        written), ``DockerVersion``, ``Author``, ``Config`` (the execution
        parameters), ``Architecture``, ``Variant`` (when set), ``Os``,
        ``OsVersion`` (when set), ``Size`` (bytes: the layers' uncompressed
        tar sizes), ``RootFS`` {``Type``, ``Layers``: diff IDs},
        ``Metadata`` {``LastTagTime``}, ``Descriptor`` (the manifest's
        mediaType, digest, size).

        Raises ImageNotFoundError, PlatformNotFoundError, InvalidDocumentError
        (not an image)."""
        desc = self.resolve(reference, platform)
        manifest, config = self._image(desc)
        sizes = self._layer_sizes(manifest, config)
        names = self._names(config.digest)
        repo_tags = list(dict.fromkeys(parse(f"{r}:{t}").familiar() for r, t, _d, _u in names))
        repo_digests = list(dict.fromkeys(f"{parse(f'{r}:{t}').familiar_name()}@{d}" for r, t, d, _u in names))
        last_tag = max((u for *_x, u in names), default=None)
        out = {
            "Id": str(config.digest),
            "RepoTags": repo_tags,
            "RepoDigests": repo_digests,
            "Parent": "",
            "Comment": config.json.get("comment", "") or "",
            "Created": config.created,
            "DockerVersion": config.json.get("docker_version", "") or "",
            "Author": config.author or "",
            "Config": config.config,
            "Architecture": config.architecture,
        }
        if config.variant:
            out["Variant"] = config.variant
        out["Os"] = config.os
        if config.os_version:
            out["OsVersion"] = config.os_version
        out.update({
            "Size": sum(sizes),
            "RootFS": {"Type": "layers", "Layers": [str(d) for d in config.diff_ids]},
            "Metadata": {"LastTagTime": _iso(last_tag) if last_tag is not None else "0001-01-01T00:00:00Z"},
            "Descriptor": {"mediaType": manifest.media_type, "digest": str(manifest.digest),
                           "size": len(manifest.raw)},
        })
        return out

    def history(self, reference, platform: Union[str, Platform, None] = None) -> List[HistoryStep]:
        """The image's history (config.md ``history``), newest step first,
        as ``docker history`` shows it: each step's ``created``,
        ``created_by``, ``comment`` and ``size`` (the uncompressed size of
        the layer it created, in the order of ``rootfs.diff_ids``; 0 for an
        ``empty_layer`` step). The newest step carries the image ID and
        tags, the others ``<missing>``.

        Raises ImageNotFoundError, PlatformNotFoundError, InvalidDocumentError
        (more layer-creating steps than layers)."""
        desc = self.resolve(reference, platform)
        manifest, config = self._image(desc)
        sizes = self._layer_sizes(manifest, config)
        creating = len(config.non_empty_history)
        if creating > len(config.diff_ids):
            raise InvalidDocumentError("history", f"{creating} steps create layers but rootfs.diff_ids has "
                                                  f"{len(config.diff_ids)}", config.media_type)
        steps, k = [], 0
        for h in config.history:
            if h.empty_layer:
                size, diff_id = 0, None
            else:
                size, diff_id = sizes[k], config.diff_ids[k]
                k += 1
            steps.append(HistoryStep(_MISSING, h.created, h.created_by or "", size, h.comment or "",
                                     h.empty_layer, diff_id, h.author or ""))
        steps.reverse()
        if steps:
            tags = tuple(dict.fromkeys(parse(f"{r}:{t}").familiar() for r, t, _d, _u in self._names(config.digest)))
            s = steps[0]
            steps[0] = HistoryStep(str(config.digest), s.created, s.created_by, s.size, s.comment,
                                   s.empty_layer, s.diff_id, s.author, tags)
        return steps

    def images(self, *, dangling: Optional[bool] = None) -> List[ImageSummary]:
        """``docker images``: one line per tag, plus one per dangling image
        (loaded or tagged as an image, but with no tag now pointing at it,
        directly or through an index), newest ``created`` first.
        ``dangling``: True lists only those, False only tagged ones."""
        self._images_db()
        with self._catalog.read() as cur:
            tagged = cur.execute("SELECT repository, tag, digest FROM tags").fetchall()
            loose = cur.execute(
                "SELECT i.digest FROM images i WHERE i.toplevel = 1 "
                "AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.digest = i.digest) "
                "AND NOT EXISTS (SELECT 1 FROM image_children c JOIN tags t ON t.digest = c.parent "
                "                WHERE c.child = i.digest AND c.present = 1)").fetchall()
        lines = []
        if dangling is not True:
            lines += [(r, t, d) for r, t, d in tagged]
        if dangling is not False:
            lines += [(None, None, d) for (d,) in loose]
        cache: Dict[str, tuple] = {}
        out = []
        for repo, tag, digest in lines:
            if digest not in cache:
                cache[digest] = self._summary(digest)
            s = cache[digest]
            if s is None:
                continue
            out.append(ImageSummary(repo, tag, Digest(digest), *s))
        out.sort(key=lambda s: (-_created_key(s.created), s.repository or "\uffff", s.tag or "", s.digest))
        return out

    def _summary(self, digest: str):
        try:
            desc = self._select(digest, None, digest, lenient=True)
            manifest, config = self._image(desc)
        except (PlatformNotFoundError, InvalidDocumentError):
            return None
        size = sum(self._layer_sizes(manifest, config))
        return Digest(config.digest), config.created, size, str(config.platform)
