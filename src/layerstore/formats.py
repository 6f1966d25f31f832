"""Image archives and layouts: reading them into the store and writing them out.

Formats read (:func:`open_input` tells them apart by their files):

``docker-archive``
    What ``docker save`` and ``podman save`` write (Docker image spec v1.2,
    "Combined Image JSON + Filesystem Changeset Format"). ``manifest.json``
    is a JSON array with one item per image: ``Config`` (member path of the
    image config), ``RepoTags`` (references, may be null) and ``Layers``
    (member paths of the layer tars, base first, one per
    ``rootfs.diff_ids`` entry). Two layouts exist:

    * legacy: ``<id>/layer.tar`` + ``<id>/json`` + ``<id>/VERSION`` (Docker
      before 25) or podman's ``<diffID hex>.tar`` and ``<config hex>.json``
      with ``<id>/layer.tar`` symlinks to them; ``repositories`` maps names
      to legacy layer IDs and is not needed when ``manifest.json`` is there;
    * Docker 25 and later: the same ``manifest.json`` and ``repositories``
      beside an OCI image layout (``oci-layout``, ``index.json``,
      ``blobs/sha256/...``) that holds the real manifests; ``Layers`` and
      ``Config`` are paths into ``blobs/``.

    A legacy archive holds no manifest, so one is built for each image,
    deterministically, from the config and the layers: an OCI image
    manifest (manifest.md), as Docker 25's ``docker save`` writes one,
    serialised as compact JSON with the keys in the order
    ``schemaVersion``, ``mediaType``, ``config``, ``layers`` and, in each
    descriptor, ``mediaType``, ``digest``, ``size`` (the order Go's
    encoding/json gives the image-spec structures). The config descriptor
    is the config file as found (``application/vnd.oci.image.config.v1+json``);
    each layer descriptor is the uncompressed layer: digest = diff ID,
    size = the uncompressed tar's length,
    ``application/vnd.oci.image.layer.v1.tar``. A config that is not a valid
    OCI image config (Docker writes ``null`` for some empty fields, which
    config.md does not allow) gets a Docker schema 2 manifest of the same
    shape instead (``manifest-v2-2.md``; Docker config type, layers
    ``application/vnd.docker.image.rootfs.diff.tar``), as containerd's
    importer builds it. The same image thus always gets the same manifest
    digest, and every format round-trips it. In a Docker 25 archive the
    manifests of ``index.json`` are kept byte-exact instead, and
    ``manifest.json`` only adds ``RepoTags``; images it lists that
    ``index.json`` lacks are read the legacy way.

``oci-archive`` and ``oci`` (OCI image spec, image-layout.md)
    A tar of, or a directory holding, ``oci-layout``
    (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an image index)
    and ``blobs/<algorithm>/<encoded>``. Each entry of ``index.json`` is an
    image manifest or an image index; it is named by the annotation
    ``io.containerd.image.name`` (a full reference, as containerd and Docker
    write it) or ``org.opencontainers.image.ref.name`` (annotations.md; in
    practice a tag, which needs a repository from the caller to make a
    reference; a full reference is accepted too).

``dir`` (containers/image ``dir:`` transport, "Directory Transport Version" 1.0/1.1)
    ``version``, ``manifest.json`` (the manifest or index, byte-exact),
    every blob as ``<encoded sha256>`` and, for an index, each platform's
    manifest as ``<encoded sha256>.manifest.json``. It names no image.

What is checked on import, before anything becomes visible (one store batch,
committed at the end or not at all): member names (absolute paths, ``..``
components and links leading outside the archive are refused for every
member); every document's size and digest against the descriptor naming it
(descriptor.md); documents parsed and validated (manifest.py); the
manifest's config against the config (digest, size, one layer per diff ID,
manifest.md and config.md); every layer's size and digest, and the diff ID
of its uncompressed tar against ``rootfs.diff_ids``; member lengths (a
truncated member is reported as such). A layer already in the store (by its
digest; for a docker-archive, by its diff ID) is not read at all and is
reported ``already exists``, as ``docker pull`` does.

An image index child whose manifest is not in the input (a layout copied
for some platforms only) is recorded as not imported: the index is kept
byte-exact and resolving picks among the platforms that were imported.

Export writes, streaming every blob from the store:

``oci`` / ``oci-archive``
    An image layout (directory, or an uncompressed tar of it). Blobs are
    the stored ones, byte-exact; ``index.json`` has one entry per
    reference, annotated with ``io.containerd.image.name`` (full reference)
    and ``org.opencontainers.image.ref.name`` (the tag), or no annotation
    for an image saved by digest. An index is written with the children
    that are in the store.
``docker-archive``
    The Docker 25 layout: an OCI image layout (as above, one entry per
    reference, with the platform of the image) plus ``manifest.json``
    (``Config``, ``RepoTags`` in familiar form, ``Layers`` as ``blobs/...``
    paths) and ``repositories``. Layers are the stored blobs as the
    manifest names them (a gzip layer stays gzip; Docker, containerd and
    containers/image all decompress layers of a docker-archive), so
    re-importing gives back the same manifest digest. One platform per
    image (an index is resolved first).

Archives are written with fixed metadata (mode 0644/0755, uid/gid 0,
mtime 0, PAX format) so saving the same images twice gives the same bytes.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import mediatypes as mt
from .digest import Digest, DigestError, digest_of
from .errors import (
    DigestMismatchError,
    ImageFormatError,
    InvalidDocumentError,
    LayerStoreError,
    MissingContentError,
    ReferenceError,
    SizeMismatchError,
    UnsafePathError,
)
from .manifest import (
    Descriptor,
    ImageConfig,
    ImageIndex,
    Manifest,
    Platform,
    check_manifest_config,
    parse_config,
    parse_document,
    parse_image_layout,
    parse_index,
    parse_manifest,
)
from .reference import Reference, parse_normalized

__all__ = [
    "DOCKER_ARCHIVE", "OCI_ARCHIVE", "OCI_LAYOUT", "DIR", "EXPORT_FORMATS",
    "ALREADY_EXISTS", "STORED",
    "ANNOTATION_REF_NAME", "ANNOTATION_IMAGE_NAME",
    "LayerStatus", "LoadedImage", "ImageRecord", "LoadResult", "ExportImage",
    "open_input", "read_images", "write_images", "docker_archive_manifest",
]

DOCKER_ARCHIVE = "docker-archive"
OCI_ARCHIVE = "oci-archive"
OCI_LAYOUT = "oci"
DIR = "dir"
EXPORT_FORMATS = (DOCKER_ARCHIVE, OCI_ARCHIVE, OCI_LAYOUT)

#: Layer status: the blob was in the store before (or earlier in the same
#: import) and was not read.
ALREADY_EXISTS = "already exists"
#: Layer status: the blob was read from the input and stored.
STORED = "stored"

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
#: containerd's annotation holding the full image name (``images.AnnotationImageName``).
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"

_OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
_DIR_VERSIONS = (b"Directory Transport Version: 1.0\n", b"Directory Transport Version: 1.1\n")
#: Largest document read whole (manifest, index, config): containers/image's
#: limits for manifests and configs are 4 MiB.
_DOC_LIMIT = 4 << 20
#: Largest ``manifest.json`` / ``index.json`` / ``repositories`` read whole.
_INDEX_FILE_LIMIT = 16 << 20
_MAX_LINK_HOPS = 16
_MAX_INDEX_DEPTH = 8
_COPY_SIZE = 1 << 20
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


# --- results ------------------------------------------------------------------

@dataclass(frozen=True)
class LayerStatus:
    """One layer of an imported image.

    ``digest``/``size``/``media_type``: the layer's descriptor in the
    manifest (size in bytes of the blob); ``diff_id``: the digest of its
    uncompressed tar (config.md ``rootfs.diff_ids``); ``status``:
    :data:`ALREADY_EXISTS` or :data:`STORED`."""

    digest: Digest
    diff_id: Optional[Digest]
    size: int
    media_type: str
    status: str

    @property
    def already_exists(self) -> bool:
        return self.status == ALREADY_EXISTS


@dataclass(frozen=True)
class LoadedImage:
    """An image (manifest) or image index imported by :meth:`Store.load`.

    ``digest``/``media_type``: the manifest or index stored (the digest of
    its exact bytes); ``references``: the tags it was given, fully
    qualified (``docker.io/library/busybox:latest``), possibly none;
    ``ref_name``: the ``org.opencontainers.image.ref.name`` the input gave
    it, if any; ``config_digest``: the image ID (None for an index or an
    artifact); ``platform``: ``os/arch[/variant]`` of the config;
    ``layers``: per layer, what was done (:class:`LayerStatus`);
    ``manifests``: for an index, the children imported; ``missing``: for an
    index, the children not in the input (their platform, or digest when
    they name none)."""

    digest: Digest
    media_type: str
    references: Tuple[str, ...] = ()
    ref_name: Optional[str] = None
    config_digest: Optional[Digest] = None
    platform: Optional[str] = None
    layers: Tuple[LayerStatus, ...] = ()
    manifests: Tuple["LoadedImage", ...] = ()
    missing: Tuple[str, ...] = ()

    @property
    def image_id(self) -> Optional[Digest]:
        """The config digest (``docker images`` IMAGE ID)."""
        return self.config_digest

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)


@dataclass(frozen=True)
class ImageRecord:
    """What the catalog records of a stored manifest or index (written by
    images.py): ``kind`` ``"manifest"`` or ``"index"``; ``config``: config
    digest of an image manifest; ``platform``: the config's platform as JSON
    text; ``children``: for an index, ``(position, child digest, present)``;
    ``toplevel``: named or listed in the input's top level."""

    digest: Digest
    media_type: str
    kind: str
    config: Optional[Digest] = None
    platform: Optional[str] = None
    children: Tuple[Tuple[int, Digest, bool], ...] = ()
    toplevel: bool = False


@dataclass
class LoadResult:
    """Outcome of :func:`read_images`: ``images`` (top-level, in input
    order), ``records`` (every manifest/index staged or referenced, by
    digest) and ``tags`` (reference -> digest, the last assignment of each
    reference in input order)."""

    format: str
    images: List[LoadedImage] = field(default_factory=list)
    records: Dict[str, ImageRecord] = field(default_factory=dict)
    tags: Dict[Reference, Digest] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportImage:
    """One image to write: ``descriptor`` of the manifest or index,
    ``references`` (tagged :class:`Reference` objects, possibly none)."""

    descriptor: Descriptor
    references: Tuple[Reference, ...] = ()


# --- reading inputs ---------------------------------------------------------------

def _clean_name(source: str, raw: str) -> str:
    """A member name relative to the archive root, ``./`` and repeated
    slashes removed; absolute names and ``..`` components are refused."""
    if raw.startswith("/"):
        raise UnsafePathError(source, raw, "absolute member name (path traversal)")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(source, raw, "member name has a '..' component (path traversal)")
    return "/".join(parts)


class _Exact(io.RawIOBase):
    """Reads exactly ``size`` bytes from ``inner``: fewer is reported as a
    truncated member, read errors as an unreadable one."""

    def __init__(self, inner, size: int, source: str, member: str):
        super().__init__()
        self._inner = inner
        self._left = size
        self._size = size
        self._source = source
        self._member = member

    def readable(self):
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            return 0
        want = min(len(b), self._left)
        try:
            n = self._inner.readinto(memoryview(b)[:want])
        except LayerStoreError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise ImageFormatError(self._source, self._member, f"unreadable or truncated: {exc}") from None
        if n == 0:
            raise ImageFormatError(self._source, self._member,
                                   f"truncated: {self._size - self._left} of {self._size} bytes present")
        self._left -= n
        return n

    def close(self):
        try:
            self._inner.close()
        finally:
            super().close()


class _Input:
    """Files of an archive or directory, by name relative to its root."""

    format: str = ""
    source: str = ""

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def open(self, name: str):
        raise NotImplementedError

    def read(self, name: str, limit: int = _DOC_LIMIT, what: str = "file") -> bytes:
        """The whole file (at most ``limit`` bytes)."""
        if not self.has(name):
            raise MissingContentError(self.source, name, f"{what} is not in the {self.format}")
        n = self.size(name)
        if n > limit:
            raise ImageFormatError(self.source, name, f"{what} is {n} bytes, more than the {limit}-byte limit")
        with self.open(name) as f:
            return f.read()

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _TarInput(_Input):
    """Random access to the members of a tar file (read with :mod:`tarfile`,
    headers first; a gzip/bzip2/xz-compressed tar is decompressed on the
    fly, at the cost of re-reading from the start for each backward seek).
    Nothing is extracted to disk. Every member name is checked, and links
    are resolved inside the archive."""

    def __init__(self, path: Path):
        self.source = str(path)
        try:
            self._tar = tarfile.open(path, "r:*", copybufsize=_COPY_SIZE)
        except LayerStoreError:
            raise
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ImageFormatError(self.source, None, f"not a readable tar archive: {exc}") from None
        self._members: Dict[str, tarfile.TarInfo] = {}
        last = None
        try:
            for m in self._tar:
                last = m
                name = _clean_name(self.source, m.name)
                if m.issym() or m.islnk():
                    self._link_target(name, m)
                if name and (m.isreg() or m.issym() or m.islnk()):
                    self._members[name] = m
                elif name and name in self._members and not m.isdir():
                    del self._members[name]
        except LayerStoreError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            self._tar.close()
            if last is None:
                raise ImageFormatError(self.source, None, f"corrupt or truncated tar archive: {exc}") from None
            raise ImageFormatError(self.source, last.name, f"truncated or corrupt archive: it ends inside or "
                                                           f"right after this member ({exc})") from None
        except BaseException:
            self._tar.close()
            raise

    def _link_target(self, name: str, m: tarfile.TarInfo) -> str:
        link = m.linkname
        if m.issym():
            if link.startswith("/"):
                raise UnsafePathError(self.source, name, f"symbolic link to absolute path {link!r}")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
        else:
            if link.startswith("/"):
                raise UnsafePathError(self.source, name, f"hard link to absolute path {link!r}")
            target = posixpath.normpath(link)
        if target == ".." or target.startswith("../"):
            raise UnsafePathError(self.source, name, f"link to {link!r} points outside the archive")
        return "" if target == "." else target

    def _resolve(self, name: str) -> Optional[tarfile.TarInfo]:
        m = self._members.get(name)
        hops = 0
        while m is not None and (m.issym() or m.islnk()):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise ImageFormatError(self.source, name, f"more than {_MAX_LINK_HOPS} links to follow")
            name = self._link_target(name, m)
            m = self._members.get(name)
        return m

    def has(self, name: str) -> bool:
        return self._resolve(name) is not None

    def size(self, name: str) -> int:
        m = self._resolve(name)
        if m is None:
            raise MissingContentError(self.source, name, "not in the archive")
        return m.size

    def open(self, name: str):
        m = self._resolve(name)
        if m is None:
            raise MissingContentError(self.source, name, "not in the archive")
        try:
            f = self._tar.extractfile(m)
        except LayerStoreError:
            raise
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise ImageFormatError(self.source, name, f"unreadable: {exc}") from None
        return _Exact(f, m.size, self.source, name)

    def close(self):
        self._tar.close()


class _DirInput(_Input):
    """Files of a directory. Names are checked as archive member names;
    a symbolic link leading outside the directory is refused."""

    def __init__(self, path: Path, fmt: str):
        self.root = Path(path)
        self.source = str(path)
        self.format = fmt
        self._real = os.path.realpath(self.root)

    def _path(self, name: str) -> str:
        name = _clean_name(self.source, name)
        p = os.path.join(self.root, name)
        real = os.path.realpath(p)
        if real != self._real and not real.startswith(self._real + os.sep):
            raise UnsafePathError(self.source, name, "symbolic link leads outside the directory")
        return p

    def has(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise MissingContentError(self.source, name, f"not in the {self.format}") from None

    def open(self, name: str):
        p = self._path(name)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            raise MissingContentError(self.source, name, f"not in the {self.format}") from None
        except OSError as exc:
            raise ImageFormatError(self.source, name, f"unreadable: {exc}") from None
        return _Exact(f, os.fstat(f.fileno()).st_size, self.source, name)


def open_input(path: Union[str, os.PathLike]) -> _Input:
    """Open ``path`` and tell its format: a directory with ``oci-layout`` or
    ``index.json`` is an OCI image layout (``oci``); one with ``version``
    and ``manifest.json`` a containers/image ``dir:`` layout; a tar with
    ``manifest.json`` a docker-archive (either layout); a tar with
    ``index.json`` or ``oci-layout`` and no ``manifest.json`` an
    oci-archive. Raises ImageFormatError (UnsafePathError for a bad member
    name) otherwise."""
    p = Path(path)
    if p.is_dir():
        if (p / "oci-layout").is_file() or (p / "index.json").is_file():
            return _DirInput(p, OCI_LAYOUT)
        if (p / "manifest.json").is_file() and (p / "version").is_file():
            return _DirInput(p, DIR)
        raise ImageFormatError(str(p), None, "directory is neither an OCI image layout (oci-layout, "
                                              "index.json) nor a dir: layout (version, manifest.json)")
    if not p.exists():
        raise ImageFormatError(str(p), None, "no such file or directory")
    inp = _TarInput(p)
    if inp.has("manifest.json"):
        inp.format = DOCKER_ARCHIVE
    elif inp.has("index.json") or inp.has("oci-layout"):
        inp.format = OCI_ARCHIVE
    else:
        inp.close()
        if inp._members and any(n.endswith("/json") for n in inp._members) and "repositories" in inp._members:
            raise ImageFormatError(str(p), None, "docker-archive without manifest.json (written before "
                                                  "Docker 1.10): not supported")
        raise ImageFormatError(str(p), None, "tar holds neither manifest.json (docker-archive) nor "
                                              "index.json/oci-layout (oci-archive)")
    return inp


# --- import ---------------------------------------------------------------------------

def _in_context(exc: LayerStoreError, where: str) -> LayerStoreError:
    """The same error, of the same type and attributes, with ``where``
    prefixed to its message."""
    if isinstance(exc, ImageFormatError):
        return exc
    new = exc.__class__.__new__(exc.__class__)
    new.__dict__.update(exc.__dict__)
    new.args = (f"{where}: {exc}",)
    return new


class _Layout:
    """Where the blobs of an OCI-like input are: ``blobs/<alg>/<encoded>``
    for OCI image layouts, ``<encoded>`` and ``<encoded>.manifest.json``
    for ``dir:``."""

    def __init__(self, inp: _Input, dir_layout: bool = False):
        self.inp = inp
        self.dir_layout = dir_layout

    def blob(self, d: Digest) -> str:
        if self.dir_layout:
            return d.encoded
        return f"blobs/{d.algorithm}/{d.encoded}"

    def manifest(self, d: Digest) -> str:
        if self.dir_layout:
            return f"{d.encoded}.manifest.json"
        return self.blob(d)


def docker_archive_manifest(config: ImageConfig, layers: Sequence[Tuple[str, int]]) -> Tuple[bytes, str]:
    """The manifest built for a legacy docker-archive image (see the module
    docstring) and its media type. ``config`` is the parsed config file
    (Docker-lenient); ``layers`` is ``[(diff_id, uncompressed size in
    bytes), ...]`` base first."""
    try:
        parse_config(config.raw, mt.OCI_IMAGE_CONFIG)
        types = (mt.OCI_IMAGE_MANIFEST, mt.OCI_IMAGE_CONFIG, mt.OCI_LAYER_TAR)
    except InvalidDocumentError:
        types = (mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, mt.DOCKER_LAYER_TAR)
    doc = {
        "schemaVersion": 2,
        "mediaType": types[0],
        "config": {"mediaType": types[1], "digest": str(config.digest), "size": len(config.raw)},
        "layers": [{"mediaType": types[2], "digest": str(d), "size": size} for d, size in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode(), types[0]


def _platform_text(config: ImageConfig) -> str:
    return json.dumps(config.platform.to_json(), sort_keys=True, separators=(",", ":"))


def _platform_label(p: Optional[Platform]) -> Optional[str]:
    return str(p) if p is not None else None


class _Importer:
    """Reads images from one input into one store batch."""

    def __init__(self, store, batch, inp: _Input, platforms: Optional[Sequence[Platform]],
                 known_image: Callable[[str], bool]):
        self.store = store
        self.batch = batch
        self.inp = inp
        self.platforms = list(platforms) if platforms else None
        self.known_image = known_image
        self.infos: Dict[str, object] = {}
        self.docs: Dict[str, bytes] = {}
        self.records: Dict[str, ImageRecord] = {}
        self.loaded: Dict[str, LoadedImage] = {}

    # -- blobs -------------------------------------------------------------------
    def _has(self, d: str) -> bool:
        return d in self.infos or self.batch.has(d)

    def _has_layer(self, d: str) -> bool:
        """True when ``d`` is held as a layer (a blob with a diff ID); a blob
        stored earlier as raw chunks is not, and is ingested again so that
        the store upgrades it."""
        return self._has(d) and self._stat(d).diff_id is not None

    def _stat(self, d: str):
        info = self.infos.get(d)
        if info is not None:
            return info
        return self.batch.stat(d)

    def _where(self, name: Optional[str]) -> str:
        return f"{self.inp.source}: {name}" if name else self.inp.source

    def _ingest(self, source, name: str, expected: Optional[str], media_type: Optional[str]):
        try:
            if isinstance(source, (bytes, bytearray)):
                info = self.batch.ingest(bytes(source), expected_digest=expected, media_type=media_type)
            else:
                with self.inp.open(source) as f:
                    info = self.batch.ingest(f, expected_digest=expected, media_type=media_type)
        except LayerStoreError as exc:
            raise _in_context(exc, self._where(name)) from exc
        self.infos[info.digest] = info
        return info

    def _document(self, name: str, desc: Descriptor, what: str) -> bytes:
        """The bytes of a document named by ``desc``: from this import, the
        store or the input, checked against the descriptor's size and digest."""
        raw = self.docs.get(desc.digest)
        if desc.size > _DOC_LIMIT:
            raise ImageFormatError(self.inp.source, name,
                                   f"{what} {desc.digest} claims {desc.size} bytes, over the {_DOC_LIMIT}-byte limit for documents")
        if raw is None and desc.digest not in self.infos and self.store.has(desc.digest):
            if self.store.stat(desc.digest).size > _DOC_LIMIT:
                raise ImageFormatError(self.inp.source, name,
                                       f"{what} {desc.digest} is a stored blob over the {_DOC_LIMIT}-byte limit for documents")
            raw = self.store.read_blob(desc.digest)
        if raw is None:
            if not self.inp.has(name):
                raise MissingContentError(self.inp.source, name, f"{what} {desc.digest} is not in the {self.inp.format}")
            size = self.inp.size(name)
            if size != desc.size:
                raise SizeMismatchError(desc.size, size, what=f"{self._where(name)} ({what} {desc.digest})")
            raw = self.inp.read(name, _DOC_LIMIT, what)
        if len(raw) != desc.size:
            raise SizeMismatchError(desc.size, len(raw), what=f"{self._where(name)} ({what} {desc.digest})")
        try:
            actual = digest_of(raw, desc.digest.algorithm)
        except (DigestError, ValueError) as exc:
            raise ImageFormatError(self.inp.source, name, f"{what}: cannot verify digest {desc.digest}: {exc}") from None
        if actual != desc.digest:
            raise DigestMismatchError(desc.digest, actual, what=f"{self._where(name)} ({what})")
        self.docs[desc.digest] = raw
        return raw

    def _stage_document(self, raw: bytes, digest: Digest, media_type: str, name: str):
        if not self._has(digest):
            self._ingest(raw, name, digest, media_type)

    # -- OCI-like inputs ------------------------------------------------------------
    def import_descriptor(self, layout: _Layout, desc: Descriptor, where: str, *, name: Optional[str] = None,
                          depth: int = 0) -> LoadedImage:
        """Import the manifest or index ``desc`` names (and everything it
        references) from ``layout``; ``name`` overrides the member to read."""
        if desc.digest in self.loaded:
            return self.loaded[desc.digest]
        if mt.is_index(desc.media_type):
            loaded = self._import_index(layout, desc, where, name, depth)
        elif mt.is_manifest(desc.media_type):
            loaded = self._import_manifest(layout, desc, where, name)
        else:
            raise ImageFormatError(self.inp.source, where,
                                   f"media type {desc.media_type!r} is neither an image manifest nor an image index")
        self.loaded[desc.digest] = loaded
        return loaded

    def _parse(self, fn, raw, media_type, name):
        try:
            return fn(raw, media_type)
        except LayerStoreError as exc:
            raise _in_context(exc, self._where(name)) from exc

    def _import_manifest(self, layout: _Layout, desc: Descriptor, where: str, name: Optional[str]) -> LoadedImage:
        name = name or layout.manifest(desc.digest)
        raw = self._document(name, desc, "manifest")
        m: Manifest = self._parse(parse_manifest, raw, desc.media_type, name)
        cfg = m.config
        cfg_name = layout.blob(cfg.digest)
        config = None
        layers: List[LayerStatus] = []
        if mt.is_config(cfg.media_type):
            cfg_raw = self._document(cfg_name, cfg, "config")
            config = self._parse(parse_config, cfg_raw, cfg.media_type, cfg_name)
            try:
                check_manifest_config(m, config)
            except LayerStoreError as exc:
                raise _in_context(exc, self._where(name)) from exc
            self._stage_document(cfg_raw, cfg.digest, cfg.media_type, cfg_name)
            for i, ld in enumerate(m.layers):
                # A layer type this store does not know is kept as an opaque
                # blob (manifest.md: storing must not fail on unknown types).
                diff_id = config.diff_ids[i] if mt.is_layer(ld.media_type) else None
                layers.append(self._import_blob(layout, ld, f"{name} layers[{i}]", diff_id))
        else:
            # Not an image (an artifact, e.g. an attestation): its blobs are kept as they are.
            self._import_blob(layout, cfg, f"{name} config", None)
            for i, ld in enumerate(m.layers):
                layers.append(self._import_blob(layout, ld, f"{name} layers[{i}]", None))
        self._stage_document(raw, desc.digest, m.media_type, name)
        platform = _platform_text(config) if config is not None else None
        self.records[desc.digest] = ImageRecord(desc.digest, m.media_type, "manifest",
                                                config.digest if config is not None else None, platform)
        return LoadedImage(
            digest=desc.digest,
            media_type=m.media_type,
            config_digest=config.digest if config is not None else None,
            platform=str(config.platform) if config is not None else None,
            layers=tuple(layers),
        )

    def _import_blob(self, layout: _Layout, ld: Descriptor, where: str, diff_id: Optional[Digest]) -> LayerStatus:
        name = layout.blob(ld.digest)
        if self._has_layer(ld.digest) if diff_id is not None else self._has(ld.digest):
            info = self._stat(ld.digest)
            status = ALREADY_EXISTS
        else:
            if not self.inp.has(name):
                raise MissingContentError(self.inp.source, name,
                                          f"blob {ld.digest} ({where}) is not in the {self.inp.format}")
            size = self.inp.size(name)
            if size != ld.size:
                raise SizeMismatchError(ld.size, size, what=f"{self._where(name)} ({where})")
            info = self._ingest(name, name, ld.digest, ld.media_type)
            status = STORED
        if info.size != ld.size:
            raise SizeMismatchError(ld.size, info.size, what=f"{self._where(name)} ({where})")
        if diff_id is not None and info.diff_id is None:
            raise ImageFormatError(self.inp.source, name, f"{where}: blob {ld.digest} is held by the store as an "
                                                          "opaque blob, not as a layer tar")
        if diff_id is not None and info.diff_id != diff_id:
            raise DigestMismatchError(diff_id, info.diff_id, what=f"{self._where(name)} ({where}) diff ID")
        return LayerStatus(ld.digest, info.diff_id, ld.size, ld.media_type, status)

    def _child_wanted(self, child: Descriptor) -> bool:
        if self.platforms is None:
            return True
        if child.platform is None:
            return False
        return any(p.matches(child.platform) for p in self.platforms)

    def _import_index(self, layout: _Layout, desc: Descriptor, where: str, name: Optional[str],
                      depth: int) -> LoadedImage:
        if depth >= _MAX_INDEX_DEPTH:
            raise ImageFormatError(self.inp.source, where, f"image indexes nested more than {_MAX_INDEX_DEPTH} deep")
        name = name or layout.manifest(desc.digest)
        raw = self._document(name, desc, "image index")
        idx: ImageIndex = self._parse(parse_index, raw, desc.media_type, name)
        children, loaded, missing = [], [], []
        for pos, child in enumerate(idx.manifests):
            present = False
            if mt.is_manifest(child.media_type) or mt.is_index(child.media_type):
                if self._child_wanted(child):
                    if self.inp.has(layout.manifest(child.digest)) or child.digest in self.loaded:
                        loaded.append(self.import_descriptor(layout, child, f"{name} manifests[{pos}]",
                                                             depth=depth + 1))
                        present = True
                    elif self.known_image(child.digest):
                        present = True
            # Other media types in manifests[] are ignored (image-index.md).
            if not present:
                missing.append(_platform_label(child.platform) or str(child.digest))
            children.append((pos, child.digest, present))
        self._stage_document(raw, desc.digest, idx.media_type, name)
        self.records[desc.digest] = ImageRecord(desc.digest, idx.media_type, "index", children=tuple(children))
        return LoadedImage(digest=desc.digest, media_type=idx.media_type, manifests=tuple(loaded),
                           missing=tuple(missing))

    # -- docker-archive (legacy) --------------------------------------------------------
    def import_docker_item(self, i: int, item: dict) -> LoadedImage:
        where = f"manifest.json[{i}]"
        cfg_name = _clean_name(self.inp.source, item["Config"])
        cfg_raw = self.inp.read(cfg_name, _DOC_LIMIT, f"config ({where}.Config)")
        cfg_digest = digest_of(cfg_raw)
        config = self._parse(parse_config, cfg_raw, mt.DOCKER_CONFIG, cfg_name)
        paths = item["Layers"]
        if len(paths) != len(config.diff_ids):
            raise ImageFormatError(self.inp.source, f"{where}.Layers",
                                   f"{len(paths)} layers but the config ({cfg_name}) has "
                                   f"{len(config.diff_ids)} rootfs.diff_ids")
        statuses, sizes = [], []
        for j, (path, diff_id) in enumerate(zip(paths, config.diff_ids)):
            lname = _clean_name(self.inp.source, path)
            if not self.inp.has(lname):
                raise MissingContentError(self.inp.source, lname, f"layer {j} ({where}.Layers[{j}]) is not in the archive")
            if self._has_layer(diff_id):
                status = ALREADY_EXISTS
            else:
                # The file may be compressed: the store tells from its bytes.
                info = self._ingest(lname, lname, None, None)
                if info.diff_id != diff_id:
                    raise DigestMismatchError(diff_id, info.diff_id or info.digest,
                                              what=f"{self._where(lname)} ({where}.Layers[{j}]) diff ID")
                status = STORED
            sizes.append((diff_id, self._stat(diff_id).size))
            statuses.append(status)
        raw, media_type = docker_archive_manifest(config, sizes)
        oci = media_type == mt.OCI_IMAGE_MANIFEST
        layer_type = mt.OCI_LAYER_TAR if oci else mt.DOCKER_LAYER_TAR
        cfg_type = mt.OCI_IMAGE_CONFIG if oci else mt.DOCKER_CONFIG
        self._stage_document(cfg_raw, cfg_digest, cfg_type, cfg_name)
        digest = digest_of(raw)
        self._stage_document(raw, digest, media_type, f"(manifest built for {where})")
        self.records[digest] = ImageRecord(digest, media_type, "manifest", cfg_digest, _platform_text(config))
        layers = tuple(LayerStatus(d, d, size, layer_type, status) for (d, size), status in zip(sizes, statuses))
        loaded = LoadedImage(digest=digest, media_type=media_type, config_digest=cfg_digest,
                             platform=str(config.platform), layers=layers)
        self.loaded[digest] = loaded
        return loaded


def _images_within(loaded: LoadedImage) -> List[LoadedImage]:
    """The image manifests of ``loaded``: itself, or an index's children."""
    if loaded.config_digest is not None:
        return [loaded]
    return [m for child in loaded.manifests for m in _images_within(child)]


def _json_file(inp: _Input, name: str, what: str):
    raw = inp.read(name, _INDEX_FILE_LIMIT, what)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageFormatError(inp.source, name, f"{what} is not valid JSON: {exc}") from None


def _docker_items(inp: _Input) -> List[dict]:
    """``manifest.json`` of a docker-archive, checked for shape."""
    doc = _json_file(inp, "manifest.json", "manifest.json")
    if not isinstance(doc, list):
        raise ImageFormatError(inp.source, "manifest.json", "must be a JSON array of images")
    for i, item in enumerate(doc):
        where = f"manifest.json[{i}]"
        if not isinstance(item, dict):
            raise ImageFormatError(inp.source, where, "must be an object")
        if not isinstance(item.get("Config"), str):
            raise ImageFormatError(inp.source, f"{where}.Config", "must be a string (member path)")
        layers = item.get("Layers")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ImageFormatError(inp.source, f"{where}.Layers", "must be an array of member paths")
        tags = item.get("RepoTags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(x, str) for x in tags)):
            raise ImageFormatError(inp.source, f"{where}.RepoTags", "must be an array of strings or null")
    return doc


def _tagged(text: str, source: str, where: str) -> Reference:
    """A tagged reference from a name in the input (normalised, as
    ``docker load`` does with ``ParseNormalizedNamed``)."""
    try:
        ref = parse_normalized(text)
    except ReferenceError as exc:
        raise ImageFormatError(source, where, f"invalid reference {text!r}: {exc.reason}") from None
    if ref.tag is None or ref.digest is not None:
        raise ImageFormatError(source, where, f"{text!r} is not a name:tag reference")
    return ref


def _names_from_annotations(desc: Descriptor,
                            repository: Optional[Reference]) -> Tuple[List[Reference], Optional[str]]:
    """Names of an ``index.json`` entry: ``io.containerd.image.name``, else
    a full reference in ``org.opencontainers.image.ref.name``, else its tag
    with ``repository``. Returns (references, ref name)."""
    ann = desc.annotations or {}
    ref_name = ann.get(ANNOTATION_REF_NAME)
    full = ann.get(ANNOTATION_IMAGE_NAME)
    if full:
        try:
            ref = parse_normalized(full)
        except ReferenceError:
            ref = None
        if ref is not None and ref.digest is None:
            if ref.tag is None:
                tag = ref_name if ref_name and _TAG_RE.fullmatch(ref_name) else "latest"
                ref = ref.with_tag(tag)
            return [ref], ref_name
    if ref_name:
        if _TAG_RE.fullmatch(ref_name):
            if repository is not None:
                return [Reference(repository.domain, repository.path, ref_name)], ref_name
            return [], ref_name
        try:
            ref = parse_normalized(ref_name)
        except ReferenceError:
            return [], ref_name
        if ref.tag is not None and ref.digest is None:
            return [ref], ref_name
    return [], ref_name


def read_images(store, batch, inp: _Input, *, name: Optional[str] = None,
                platforms: Optional[Sequence[Union[str, Platform]]] = None,
                known_image: Callable[[str], bool] = lambda d: False) -> LoadResult:
    """Stage every image of ``inp`` (from :func:`open_input`) into ``batch``
    (a :class:`layerstore.store.Batch` of ``store``); nothing is visible
    until the caller commits it.

    ``name``: a repository (optionally with a tag) for images the input does
    not name fully: an OCI entry whose ``ref.name`` is a tag gets
    ``repository:ref.name``; the one unnamed entry of an OCI layout, the
    image of a ``dir:`` layout and docker-archive images without
    ``RepoTags`` get ``name`` itself (tag ``latest`` by default).
    ``platforms``: import only these children of image indexes
    (``os/arch[/variant]`` or :class:`Platform`; the others are recorded as
    not imported). ``known_image(digest)``: True when the store already
    holds that manifest or index with everything it references.

    Raises ImageFormatError (and its subclasses UnsafePathError,
    MissingContentError), InvalidDocumentError, DigestMismatchError,
    SizeMismatchError, TarFormatError, CompressedLayerError, ReferenceError;
    every message names the input and the member."""
    wanted = None
    if platforms:
        wanted = [Platform.parse(p) if isinstance(p, str) else p.normalized() for p in platforms]
    given = parse_normalized(name) if name is not None else None
    imp = _Importer(store, batch, inp, wanted, known_image)
    result = LoadResult(inp.format)
    # top-level images by digest, in input order: [loaded, references, ref name]
    tops: Dict[str, list] = {}

    def add_top(loaded, refs, ref_name):
        top = tops.setdefault(loaded.digest, [loaded, [], ref_name])
        top[1] += [r for r in refs if r not in top[1]]
        top[2] = top[2] or ref_name

    if inp.format in (OCI_LAYOUT, OCI_ARCHIVE) or (inp.format == DOCKER_ARCHIVE and inp.has("index.json")):
        layout = _Layout(inp)
        if inp.has("oci-layout"):
            try:
                parse_image_layout(inp.read("oci-layout", _DOC_LIMIT, "oci-layout"))
            except InvalidDocumentError as exc:
                raise _in_context(exc, f"{inp.source}: oci-layout") from exc
        elif inp.format != DOCKER_ARCHIVE:
            raise MissingContentError(inp.source, "oci-layout", "required file of an image layout is missing")
        index_raw = inp.read("index.json", _INDEX_FILE_LIMIT, "index.json")
        index = imp._parse(parse_index, index_raw, None, "index.json")
        unnamed = [d for d in index.manifests
                   if not _names_from_annotations(d, given)[0]
                   and not (d.annotations or {}).get(ANNOTATION_REF_NAME)]
        docker_tags: Dict[str, List[Reference]] = {}
        items = _docker_items(inp) if inp.format == DOCKER_ARCHIVE else []
        for i, item in enumerate(items):
            cfg = _clean_name(inp.source, item["Config"])
            key = str(digest_of(inp.read(cfg, _DOC_LIMIT, f"config (manifest.json[{i}].Config)")))
            docker_tags.setdefault(key, []).extend(
                _tagged(t, inp.source, f"manifest.json[{i}].RepoTags[{k}]")
                for k, t in enumerate(item.get("RepoTags") or ()))
        covered = set()
        for pos, desc in enumerate(index.manifests):
            where = f"index.json manifests[{pos}]"
            if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)):
                continue  # image-layout.md: other descriptors are not images
            loaded = imp.import_descriptor(layout, desc, where)
            refs, ref_name = _names_from_annotations(desc, given)
            if not refs and given is not None and len(unnamed) == 1 and desc is unnamed[0]:
                refs = [given if given.tag else given.with_tag("latest")]
            # manifest.json names the images (of this manifest, or of the
            # platforms of this index) by their config
            for image in _images_within(loaded):
                covered.add(str(image.config_digest))
                refs += [r for r in docker_tags.get(str(image.config_digest), []) if r not in refs]
            add_top(loaded, refs, ref_name)
        for i, item in enumerate(items):
            cfg = _clean_name(inp.source, item["Config"])
            key = str(digest_of(inp.read(cfg, _DOC_LIMIT, "config")))
            if key in covered:
                continue
            loaded = imp.import_docker_item(i, item)
            refs = docker_tags.get(key, [])
            add_top(loaded, refs, None)
    elif inp.format == DOCKER_ARCHIVE:
        items = _docker_items(inp)
        if not items:
            raise ImageFormatError(inp.source, "manifest.json", "lists no image")
        for i, item in enumerate(items):
            refs = [_tagged(t, inp.source, f"manifest.json[{i}].RepoTags[{k}]")
                    for k, t in enumerate(item.get("RepoTags") or ())]
            loaded = imp.import_docker_item(i, item)
            if not refs and given is not None:
                refs = [given if given.tag else given.with_tag("latest")]
            add_top(loaded, refs, None)
    elif inp.format == DIR:
        version = inp.read("version", 4096, "version")
        if version not in _DIR_VERSIONS:
            raise ImageFormatError(inp.source, "version", f"unsupported dir: transport version {version!r}")
        raw = inp.read("manifest.json", _DOC_LIMIT, "manifest.json")
        doc = imp._parse(parse_document, raw, None, "manifest.json")
        if not isinstance(doc, (Manifest, ImageIndex)):
            raise ImageFormatError(inp.source, "manifest.json", "is neither an image manifest nor an image index")
        desc = Descriptor(doc.media_type, doc.digest, len(raw))
        loaded = imp.import_descriptor(_Layout(inp, dir_layout=True), desc, "manifest.json", name="manifest.json")
        refs = [given if given.tag else given.with_tag("latest")] if given is not None else []
        add_top(loaded, refs, None)
    else:  # pragma: no cover - open_input gives only the formats above
        raise ImageFormatError(inp.source, None, f"unknown format {inp.format!r}")

    for loaded, refs, _ref_name in tops.values():
        for ref in refs:
            result.tags[ref] = loaded.digest
    for loaded, refs, ref_name in tops.values():
        mine = tuple(dict.fromkeys(str(r) for r in refs if result.tags.get(r) == loaded.digest))
        result.images.append(replace(loaded, references=mine, ref_name=ref_name))
        rec = imp.records[loaded.digest]
        imp.records[loaded.digest] = replace(rec, toplevel=True)
    result.records = imp.records
    return result


# --- export ------------------------------------------------------------------------------

class _TarOutput:
    """An uncompressed tar written to a temporary file beside ``path`` and
    renamed over it when complete (removed on error)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise ImageFormatError(str(path), None, "destination is a directory")
        parent = self.path.parent
        if not parent.is_dir():
            raise ImageFormatError(str(path), None, f"directory {parent} does not exist")
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=".layerstore-save-", dir=str(parent))
        except OSError as exc:
            raise ImageFormatError(str(path), None, f"cannot write in {parent}: {exc.strerror}") from None
        # mkstemp makes the file 0600; an archive is an ordinary file (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        self._f = os.fdopen(fd, "wb")
        self._tar = tarfile.open(fileobj=self._f, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_SIZE)
        self._dirs = set()

    def _info(self, name, size=0, kind=tarfile.REGTYPE):
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def _parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._tar.addfile(self._info(d + "/", kind=tarfile.DIRTYPE))

    def add_bytes(self, name: str, data: bytes):
        self._parents(name)
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))

    def add_blob(self, name: str, store, digest: str, size: int):
        self._parents(name)
        # tarfile copies in fixed-size reads and takes a short read for the
        # end of data: a buffered reader returns whole reads.
        with io.BufferedReader(store.open_blob(digest), _COPY_SIZE) as f:
            self._tar.addfile(self._info(name, size), f)

    def commit(self):
        self._tar.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self):
        try:
            self._tar.close()
        except Exception:  # the file is being discarded
            pass
        self._f.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class _DirOutput:
    """A directory written as a temporary sibling and renamed into place
    when complete. ``path`` must not exist or be an empty directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise ImageFormatError(str(path), None, "destination exists and is not an empty directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=".layerstore-save-", dir=str(self.path.parent)))
        os.chmod(self._tmp, 0o755)

    def _file(self, name):
        p = self._tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_bytes(self, name: str, data: bytes):
        with open(self._file(name), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def add_blob(self, name: str, store, digest: str, size: int):
        written = 0
        with open(self._file(name), "wb") as out, store.open_blob(digest) as f:
            while True:
                buf = f.read(_COPY_SIZE)
                if not buf:
                    break
                out.write(buf)
                written += len(buf)
            out.flush()
            os.fsync(out.fileno())
        if written != size:
            raise SizeMismatchError(size, written, what=f"blob {digest}")

    def commit(self):
        if self.path.exists():
            self.path.rmdir()
        os.rename(self._tmp, self.path)
        fd = os.open(str(self.path.parent), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def abort(self):
        shutil.rmtree(self._tmp, ignore_errors=True)


def _compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _blob_name(d: Digest) -> str:
    return f"blobs/{d.algorithm}/{d.encoded}"


def _closure(store, desc: Descriptor, out: Dict[str, Descriptor]):
    """Every blob ``desc`` references, children first, into ``out``
    (digest -> descriptor, insertion order = write order). Index children
    not in the store are left out."""
    if desc.digest in out:
        return
    raw = store.read_blob(desc.digest)
    doc = parse_document(raw, desc.media_type)
    if isinstance(doc, ImageIndex):
        for child in doc.manifests:
            if (mt.is_manifest(child.media_type) or mt.is_index(child.media_type)) and store.has(child.digest):
                _closure(store, child, out)
    elif isinstance(doc, Manifest):
        for d in (doc.config, *doc.layers):
            out.setdefault(d.digest, Descriptor(d.media_type, d.digest, d.size))
    out[desc.digest] = Descriptor(desc.media_type, desc.digest, desc.size)


def _index_entries(images: Sequence[ExportImage], with_platform: bool) -> List[dict]:
    entries = []
    for img in images:
        base = {"mediaType": img.descriptor.media_type, "digest": str(img.descriptor.digest),
                "size": img.descriptor.size}
        if with_platform and img.descriptor.platform is not None:
            base["platform"] = img.descriptor.platform.to_json()
        if not img.references:
            entries.append(base)
        for ref in img.references:
            e = dict(base)
            e["annotations"] = {ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag}
            entries.append(e)
    return entries


def write_images(store, images: Sequence[ExportImage], path: Union[str, os.PathLike], fmt: str) -> List[dict]:
    """Write ``images`` from ``store`` to ``path`` in format ``fmt``
    (:data:`EXPORT_FORMATS`; see the module docstring). The output appears
    complete or not at all. Returns the ``index.json`` entries written.

    Raises ImageFormatError (bad destination, or an image a docker-archive
    cannot hold), BlobNotFoundError / CorruptBlobError from the store."""
    if fmt not in EXPORT_FORMATS:
        raise ImageFormatError(str(path), None, f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if not images:
        raise ImageFormatError(str(path), None, "nothing to save: no image given")
    blobs: Dict[str, Descriptor] = {}
    items = []
    for img in images:
        _closure(store, img.descriptor, blobs)
        if fmt == DOCKER_ARCHIVE:
            m = parse_manifest(store.read_blob(img.descriptor.digest), img.descriptor.media_type)
            if not mt.is_config(m.config.media_type):
                raise ImageFormatError(str(path), None, f"{img.descriptor.digest} is not an image "
                                                        f"(config type {m.config.media_type}); a docker-archive holds images only")
            items.append((img, m))
    out = _DirOutput(Path(path)) if fmt == OCI_LAYOUT else _TarOutput(Path(path))
    try:
        out.add_bytes("oci-layout", _OCI_LAYOUT_BYTES)
        for d, desc in blobs.items():
            out.add_blob(_blob_name(desc.digest), store, d, store.stat(d).size)
        entries = _index_entries(images, fmt == DOCKER_ARCHIVE)
        out.add_bytes("index.json", _compact({"schemaVersion": 2, "mediaType": mt.OCI_IMAGE_INDEX,
                                              "manifests": entries}))
        if fmt == DOCKER_ARCHIVE:
            manifest_json, repositories = [], {}
            for img, m in items:
                tags = [r.familiar() for r in img.references]
                manifest_json.append({"Config": _blob_name(m.config.digest), "RepoTags": tags,
                                      "Layers": [_blob_name(layer.digest) for layer in m.layers]})
                for r in img.references:
                    repositories.setdefault(r.familiar_name(), {})[r.tag] = m.layers[-1].digest.encoded
            out.add_bytes("manifest.json", _compact(manifest_json))
            if repositories:
                out.add_bytes("repositories", _compact(repositories))
        out.commit()
    except BaseException:
        out.abort()
        raise
    return entries
