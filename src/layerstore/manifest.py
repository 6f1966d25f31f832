"""OCI and Docker image documents: manifests, indexes, configs, descriptors.

Every document is parsed **from the exact bytes received**: its digest is
the digest of those bytes (``Manifest.digest``), never of re-serialised
JSON, and the bytes are kept (``.raw``).

Formats and the rules checked (file and section of the source of each):

* Content descriptor -- OCI image spec descriptor.md "Properties" and
  schema/content-descriptor.json, defs-descriptor.json:
  ``mediaType`` (required; RFC 6838 section 4.2 restricted name: ``type/subtype``,
  each 1..127 characters of ``[A-Za-z0-9!#$&^_.+-]`` starting alphanumeric),
  ``digest`` (required; descriptor.md "Digests" grammar; sha256/sha512 must be
  lowercase hex of the right length; other well-formed algorithms are
  accepted but cannot be verified), ``size`` (required; JSON integer,
  0 <= size <= 2**63-1, bytes), ``urls`` (array of RFC 3986 absolute URIs),
  ``annotations`` (object, string values; annotations.md), ``artifactType``
  (RFC 6838 media type), ``data`` (RFC 4648 section 4 base64 with padding;
  descriptor.md "Embedded Content": when present its decoded length must equal
  ``size`` and, for sha256/sha512, hash to ``digest``), ``platform`` (below).
* Platform -- image-index.md "manifests" / "platform" and
  schema/image-index-schema.json: ``architecture`` and ``os`` (required
  strings), ``os.version`` (string), ``os.features`` (array of strings),
  ``variant`` (string), ``features`` (array of strings; Docker manifest list).
* Image manifest -- manifest.md and schema/image-manifest-schema.json:
  ``schemaVersion`` == 2 (required), ``mediaType`` (when present, the
  manifest type), ``artifactType``, ``config`` (required descriptor),
  ``layers`` (required array of descriptors, at least one: the schema's
  ``minItems``), ``subject`` (descriptor), ``annotations``.
  Docker schema 2 manifest (distribution ``manifest-v2-2.md``, "Image
  Manifest Field Descriptions"): same, ``mediaType`` required.
* Image index -- image-index.md and schema/image-index-schema.json:
  ``schemaVersion`` == 2, ``mediaType``, ``artifactType``, ``manifests``
  (required array of descriptors with optional ``platform``), ``subject``,
  ``annotations``. Docker manifest list (manifest-v2-2.md, "Manifest List"):
  same, ``mediaType`` required.
* Image config -- config.md "Properties" and schema/config-schema.json:
  ``architecture`` and ``os`` (required strings), ``rootfs`` (required;
  ``type`` == ``"layers"``, ``diff_ids`` array of digests), ``created`` (RFC 3339
  section 5.6 date-time), ``author``, ``variant``, ``os.version`` (strings),
  ``os.features`` (array of strings), ``config`` (object: ``User``,
  ``WorkingDir``, ``StopSignal`` strings; ``Env`` array of ``NAME=value``
  strings -- the ``=`` rule is config.md's and image-spec's Go validator's;
  ``Entrypoint``/``Cmd`` string arrays or null; ``ExposedPorts`` object of
  objects; ``Volumes`` object of objects or null; ``Labels`` object of strings
  or null; ``ArgsEscaped`` boolean), ``history`` (array of objects:
  ``created`` date-time, ``author``/``created_by``/``comment`` strings,
  ``empty_layer`` boolean). For the Docker config type ``null`` is also
  accepted for ``config``, its array/object fields and ``rootfs.diff_ids``
  (Go's encoding/json writes nil slices and maps as ``null`` and Docker
  writes configs that way).
* Image layout header -- image-layout.md "oci-layout file":
  ``imageLayoutVersion`` == ``"1.0.0"``.

Rules beyond the JSON Schemas, on the whole document:

* JSON per RFC 8259: UTF-8 without a byte order mark; duplicate object keys
  are refused (two parsers could otherwise read different values from the
  same digest-addressed bytes); ``NaN``/``Infinity`` refused.
* The document kind comes from its ``mediaType`` field and/or the media type
  it was received with; when both are present they must be equal. Without
  either, the kind is inferred from the fields (``manifests`` -> index;
  ``config``/``layers`` -> manifest; ``rootfs`` -> config;
  ``imageLayoutVersion`` -> layout header). A manifest with a non-empty
  ``manifests`` field or an index with ``config`` or a non-empty ``layers``
  field is refused as ambiguous (the check containerd applies since
  CVE-2021-41190). Docker schema 1 is refused.
* Sizes must be non-negative everywhere (the index schema's ``int64`` alone
  would allow negative sizes).

All violations raise :class:`layerstore.errors.InvalidDocumentError` whose
``field`` is the path of the offending field (``layers[2].digest``,
``manifests[0].platform.architecture``, ``config.Env[0]``,
``platform["os.version"]``) and whose ``problem`` says what is wrong.

Platform matching follows containerd's ``platforms`` package (see
:class:`Platform`).
"""
from __future__ import annotations

import base64
import binascii
import calendar
import json
import platform as _pyplatform
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from . import mediatypes as mt
from .digest import Digest, DigestError, digest_of, parse_digest
from .errors import DigestMismatchError, InvalidDocumentError, PlatformError, SizeMismatchError

__all__ = [
    "Platform",
    "Descriptor",
    "Manifest",
    "ImageIndex",
    "ImageConfig",
    "History",
    "ImageLayout",
    "parse_document",
    "parse_manifest",
    "parse_index",
    "parse_config",
    "parse_descriptor",
    "parse_image_layout",
    "check_manifest_config",
    "host_platform",
    "InvalidDocumentError",
]

DOCUMENT = "(document)"
MAX_SIZE = 2 ** 63 - 1

_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
# RFC 3986 section 3: scheme ":" followed by URI characters (unreserved,
# reserved, pct-encoded) only.
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*")
_DATE_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))")
_ENV_RE = re.compile(r"[^=]+=.*")
_PLATFORM_COMPONENT_RE = re.compile(r"[A-Za-z0-9_.-]+")

_KIND_BY_TYPE = {
    mt.OCI_IMAGE_MANIFEST: "manifest",
    mt.DOCKER_MANIFEST: "manifest",
    mt.OCI_IMAGE_INDEX: "index",
    mt.DOCKER_MANIFEST_LIST: "index",
    mt.OCI_IMAGE_CONFIG: "config",
    mt.DOCKER_CONFIG: "config",
    mt.OCI_DESCRIPTOR: "descriptor",
    mt.OCI_LAYOUT_HEADER: "layout",
}
_DOCKER_TYPES = frozenset({mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_CONFIG})


# --- platforms ---------------------------------------------------------------

def _normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def _normalize_arch(arch: str, variant: str) -> Tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("", "8", "v8", "v8.0"):
            variant = "v8"
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def _version_number(variant: str) -> Optional[int]:
    m = re.fullmatch(r"v([0-9]+)", variant)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Platform:
    """The platform an image runs on (image-index.md, ``platform``; config.md).

    Fields: ``os``, ``architecture`` (GOOS/GOARCH values), ``variant``
    (``""`` when absent), ``os_version`` (``os.version``), ``os_features``
    (``os.features``) and ``features`` (Docker manifest lists), as tuples.

    Normalisation (:meth:`normalized`, as containerd ``platforms.Normalize``,
    except that the defaults are made explicit): lowercase; ``macos`` ->
    ``darwin``; ``x86_64``/``x86-64`` -> ``amd64`` (variant ``v1`` dropped);
    ``i386`` -> ``386``; ``aarch64`` -> ``arm64`` with default variant ``v8``
    (``8``, ``v8.0`` -> ``v8``; ``9``, ``v9.0`` -> ``v9``); ``armhf`` -> ``arm/v7``;
    ``armel`` -> ``arm/v6``; ``arm`` default variant ``v7`` (``5``/``6``/``7``/``8``
    -> ``vN``). containerd spells arm64/v8 without the variant; both spellings
    compare equal here because both sides are normalised.

    Matching:

    * :meth:`matches` -- containerd ``NewMatcher`` / ``OnlyStrict``: same
      normalised os, architecture and variant; the candidate's
      ``os_features`` must be a subset of ours; for ``windows`` with an
      ``os_version``, a candidate that has one must share major.minor.build.
    * :meth:`compatible_platforms` / :meth:`compatible` / :meth:`rank` --
      containerd ``Only``: also what this platform can run, in preference
      order: amd64/vN -> amd64/v(N-1)..v1, then 386; arm/vN -> arm/v(N-1)..v5;
      arm64/v8.x -> arm64/v8.(x-1)..v8, arm64/v9.x -> v9.(x-1)..v9, then
      v8.(x+5)..v8; every arm64 -> arm/v8, v7, v6, v5.
    """

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: Tuple[str, ...] = ()
    features: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, specifier: str) -> "Platform":
        """Parse ``os/arch[/variant]`` (e.g. ``linux/arm64/v8``) and normalise it.

        Each component must be ``[A-Za-z0-9_.-]+``. Raises PlatformError."""
        if not isinstance(specifier, str):
            raise PlatformError(f"platform specifier must be a string, got {type(specifier).__name__}")
        parts = specifier.split("/")
        if len(parts) not in (2, 3) or not all(_PLATFORM_COMPONENT_RE.fullmatch(p) for p in parts):
            raise PlatformError(f"invalid platform specifier {specifier!r}: expected os/arch[/variant] "
                                "with components of [A-Za-z0-9_.-]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Platform":
        """From a validated ``platform`` JSON object (or an image config), as written."""
        return cls(
            os=obj.get("os", ""),
            architecture=obj.get("architecture", ""),
            variant=obj.get("variant") or "",
            os_version=obj.get("os.version") or "",
            os_features=tuple(obj.get("os.features") or ()),
            features=tuple(obj.get("features") or ()),
        )

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        if self.features:
            out["features"] = list(self.features)
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalized(self) -> "Platform":
        arch, variant = _normalize_arch(self.architecture, self.variant)
        return Platform(_normalize_os(self.os), arch, variant, self.os_version,
                        tuple(sorted(set(self.os_features))), self.features)

    def matches(self, candidate: "Platform") -> bool:
        """Exact match after normalisation (see the class docstring)."""
        a, b = self.normalized(), candidate.normalized()
        if (a.os, a.architecture, a.variant) != (b.os, b.architecture, b.variant):
            return False
        if a.os == "windows" and a.os_version and b.os_version:
            if a.os_version.split(".")[:3] != b.os_version.split(".")[:3]:
                return False
        return set(b.os_features) <= set(a.os_features)

    def compatible_platforms(self) -> List["Platform"]:
        """This platform and those it can also run, most preferred first."""
        p = self.normalized()

        def v(arch, variant):
            return Platform(p.os, arch, variant, p.os_version, p.os_features)

        out = [p]
        if p.architecture == "amd64":
            n = _version_number(p.variant)
            if n is not None and n > 1:
                out += [v("amd64", f"v{k}" if k > 1 else "") for k in range(n - 1, 0, -1)]
            out.append(v("386", ""))
        elif p.architecture == "arm":
            n = _version_number(p.variant)
            if n is not None and n > 5:
                out += [v("arm", f"v{k}") for k in range(n - 1, 4, -1)]
        elif p.architecture == "arm64":
            m = re.fullmatch(r"v([0-9]+)(?:\.([0-9]+))?", p.variant)
            if m and int(m.group(1)) >= 8:
                major, minor = int(m.group(1)), int(m.group(2) or 0)
                if major == 9:
                    out += [v("arm64", f"v9.{k}" if k else "v9") for k in range(minor - 1, -1, -1)]
                    major, minor = 8, minor + 5
                    out.append(v("arm64", f"v8.{minor}"))
                out += [v("arm64", f"v8.{k}" if k else "v8") for k in range(minor - 1, -1, -1)]
            out += [v("arm", f"v{k}") for k in (8, 7, 6, 5)]
        return out

    def rank(self, candidate: "Platform") -> Optional[int]:
        """Position of ``candidate`` in :meth:`compatible_platforms` order
        (0 = exact), or ``None`` if this platform cannot run it."""
        for i, p in enumerate(self.compatible_platforms()):
            if p.matches(candidate):
                return i
        return None

    def compatible(self, candidate: "Platform") -> bool:
        """``True`` if this platform can run ``candidate`` (containerd ``Only``)."""
        return self.rank(candidate) is not None


def host_platform() -> Platform:
    """The platform of the running interpreter, normalised (``linux/amd64``,
    ``linux/arm64/v8``, ...). For 32-bit ARM the variant comes from the machine
    name (``armv6l`` -> ``v6``), defaulting to ``v7``."""
    if sys.platform.startswith("linux"):
        os_name = "linux"
    elif sys.platform in ("win32", "cygwin"):
        os_name = "windows"
    elif sys.platform == "darwin":
        os_name = "darwin"
    else:
        os_name = re.sub(r"[0-9]+$", "", sys.platform) or _pyplatform.system().lower()
    machine = (_pyplatform.machine() or "unknown").lower()
    variant = ""
    m = re.fullmatch(r"armv([5-8])[a-z]*", machine)
    if m:
        machine, variant = "arm", "v" + m.group(1)
    machine = {"x64": "amd64", "i686": "386", "i586": "386", "ppc64el": "ppc64le"}.get(machine, machine)
    return Platform(os_name, machine, variant).normalized()


# --- value types ---------------------------------------------------------------

@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (descriptor.md).

    Fields: ``media_type`` (str), ``digest`` (:class:`Digest`), ``size``
    (int, bytes), ``urls`` (tuple of str), ``annotations`` (dict str->str),
    ``platform`` (:class:`Platform` or None), ``artifact_type`` (str or None),
    ``data`` (decoded embedded bytes or None). Hashes by (media_type, digest, size).
    """

    media_type: str
    digest: Digest
    size: int
    urls: Tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Optional[Platform] = None
    artifact_type: Optional[str] = None
    data: Optional[bytes] = None

    def __hash__(self):
        return hash((self.media_type, self.digest, self.size))

    @classmethod
    def from_json(cls, obj: Any, *, field_path: str = "") -> "Descriptor":
        """Validate a descriptor JSON object (already decoded) and build it.
        Raises InvalidDocumentError naming ``field_path``-relative fields."""
        return _descriptor(_Ctx(None), obj, field_path)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


class _Document:
    """Shared behaviour: identity is the digest of the exact bytes."""

    raw: bytes
    digest: Digest

    @property
    def size(self) -> int:
        """Length of the raw document in bytes."""
        return len(self.raw)

    def descriptor(self, **extra) -> "Descriptor":
        """A descriptor of this document (media type, digest and size of ``raw``);
        ``extra`` sets the other Descriptor fields (platform, annotations, ...)."""
        return Descriptor(self.media_type, self.digest, len(self.raw), **extra)

    def __eq__(self, other):
        return type(other) is type(self) and other.raw == self.raw

    def __hash__(self):
        return hash(self.digest)


@dataclass(frozen=True, eq=False)
class Manifest(_Document):
    """An OCI image manifest or Docker schema 2 manifest.

    Fields: ``media_type`` (the manifest's type), ``schema_version`` (2),
    ``config`` and ``layers`` (:class:`Descriptor`, tuple of), ``annotations``,
    ``subject`` (Descriptor or None), ``artifact_type`` (str or None), ``raw``
    (the exact bytes), ``digest`` (sha256 of ``raw``), ``json`` (decoded
    object). Equal when the bytes are equal."""

    media_type: str
    schema_version: int
    config: Descriptor
    layers: Tuple[Descriptor, ...]
    annotations: Mapping[str, str]
    subject: Optional[Descriptor]
    artifact_type: Optional[str]
    raw: bytes = field(repr=False)
    digest: Digest
    json: Dict[str, Any] = field(repr=False)


@dataclass(frozen=True, eq=False)
class ImageIndex(_Document):
    """An OCI image index or Docker manifest list.

    Fields: ``media_type``, ``schema_version``, ``manifests`` (tuple of
    :class:`Descriptor`, with ``platform`` where given), ``annotations``,
    ``subject``, ``artifact_type``, ``raw``, ``digest``, ``json``."""

    media_type: str
    schema_version: int
    manifests: Tuple[Descriptor, ...]
    annotations: Mapping[str, str]
    subject: Optional[Descriptor]
    artifact_type: Optional[str]
    raw: bytes = field(repr=False)
    digest: Digest
    json: Dict[str, Any] = field(repr=False)

    def select(self, platform: Union[Platform, str, None] = None, *, strict: bool = False) -> Optional[Descriptor]:
        """The manifest for ``platform`` (a :class:`Platform` or ``os/arch[/variant]``;
        default :func:`host_platform`), or ``None``.

        Entries without a platform are ignored. Non-strict selection prefers
        an exact match and then falls back in :meth:`Platform.compatible_platforms`
        order (containerd ``Only``); ``strict`` accepts exact matches only
        (``OnlyStrict``). Ties go to the first entry in the index."""
        matches = self.matching(platform, strict=strict)
        return matches[0] if matches else None

    def matching(self, platform: Union[Platform, str, None] = None, *, strict: bool = False) -> List[Descriptor]:
        """All entries runnable on ``platform``, best first (see :meth:`select`)."""
        wanted = host_platform() if platform is None else (
            Platform.parse(platform) if isinstance(platform, str) else platform)
        order = [wanted.normalized()] if strict else wanted.compatible_platforms()
        out: List[Descriptor] = []
        for p in order:
            for d in self.manifests:
                if d.platform is not None and d not in out and p.matches(d.platform):
                    out.append(d)
        return out


@dataclass(frozen=True)
class History:
    """One ``history`` entry of an image config (config.md)."""

    created: Optional[str] = None
    created_by: Optional[str] = None
    author: Optional[str] = None
    comment: Optional[str] = None
    empty_layer: bool = False


@dataclass(frozen=True, eq=False)
class ImageConfig(_Document):
    """An OCI or Docker image configuration.

    Fields: ``media_type``, ``architecture``, ``os``, ``variant`` (str or
    None), ``os_version``, ``os_features``, ``created`` (RFC 3339 string or
    None), ``author``, ``config`` (the execution parameters object, or None),
    ``diff_ids`` (tuple of :class:`Digest`, one per layer, of the
    uncompressed layer tars), ``history`` (tuple of :class:`History`), ``raw``,
    ``digest`` (the image ID), ``json``."""

    media_type: str
    architecture: str
    os: str
    variant: Optional[str]
    os_version: Optional[str]
    os_features: Tuple[str, ...]
    created: Optional[str]
    author: Optional[str]
    config: Optional[Dict[str, Any]]
    diff_ids: Tuple[Digest, ...]
    history: Tuple[History, ...]
    raw: bytes = field(repr=False)
    digest: Digest
    json: Dict[str, Any] = field(repr=False)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant or "", self.os_version or "",
                        self.os_features)

    @property
    def non_empty_history(self) -> Tuple[History, ...]:
        """History entries that created a layer (``empty_layer`` false)."""
        return tuple(h for h in self.history if not h.empty_layer)


@dataclass(frozen=True, eq=False)
class ImageLayout(_Document):
    """The ``oci-layout`` file of an image layout (image-layout.md)."""

    image_layout_version: str
    raw: bytes = field(repr=False)
    digest: Digest
    json: Dict[str, Any] = field(repr=False)


Document = Union[Manifest, ImageIndex, ImageConfig, Descriptor, ImageLayout]


# --- validation helpers --------------------------------------------------------

class _Ctx:
    def __init__(self, media_type):
        self.media_type = media_type
        self.docker = media_type in _DOCKER_TYPES

    def fail(self, path, problem):
        return InvalidDocumentError(path or DOCUMENT, problem, self.media_type)


def _key(path, key):
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _item(path, i):
    return f"{path}[{i}]"


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _require_object(c, v, path, what="an object"):
    if not isinstance(v, dict):
        raise c.fail(path, f"must be {what}, got {_type_name(v)}")
    return v


def _get(c, obj, key, path, required):
    if key not in obj:
        if required:
            raise c.fail(_key(path, key), "required field is missing")
        return False, None
    return True, obj[key]


def _string(c, obj, key, path, required=False, nullable=False):
    present, v = _get(c, obj, key, path, required)
    if not present or (v is None and nullable):
        return None
    if not isinstance(v, str):
        raise c.fail(_key(path, key), f"must be a string, got {_type_name(v)}")
    return v


def _boolean(c, obj, key, path):
    present, v = _get(c, obj, key, path, False)
    if not present:
        return None
    if not isinstance(v, bool):
        raise c.fail(_key(path, key), f"must be a boolean, got {_type_name(v)}")
    return v


def _string_array(c, obj, key, path, required=False, nullable=False, item_check=None):
    present, v = _get(c, obj, key, path, required)
    if not present or (v is None and nullable):
        return None
    p = _key(path, key)
    if not isinstance(v, list):
        raise c.fail(p, f"must be an array of strings, got {_type_name(v)}")
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise c.fail(_item(p, i), f"must be a string, got {_type_name(s)}")
        if item_check is not None:
            item_check(c, s, _item(p, i))
    return tuple(v)


def _map(c, obj, key, path, value_type, nullable=False):
    """Object whose values are all ``value_type`` (defs.json mapStringString /
    mapStringObject)."""
    present, v = _get(c, obj, key, path, False)
    if not present or (v is None and nullable):
        return None
    p = _key(path, key)
    if not isinstance(v, dict):
        raise c.fail(p, f"must be an object, got {_type_name(v)}")
    want = "string" if value_type is str else "object"
    for k, val in v.items():
        if not isinstance(val, value_type):
            raise c.fail(_key(p, k), f"must be a{'n' if want == 'object' else ''} {want}, got {_type_name(val)}")
    return v


def _media_type(c, obj, key, path, required):
    v = _string(c, obj, key, path, required)
    if v is not None and not _MEDIA_TYPE_RE.fullmatch(v):
        raise c.fail(_key(path, key), f"{v!r} is not an RFC 6838 media type (type/subtype, each 1-127 "
                                      "characters of [A-Za-z0-9!#$&^_.+-] starting with a letter or digit)")
    return v


def _digest_value(c, v, path):
    if not isinstance(v, str):
        raise c.fail(path, f"must be a string, got {_type_name(v)}")
    try:
        return parse_digest(v, allow_unregistered=True)
    except DigestError as exc:
        raise c.fail(path, exc.reason) from None


def _date_time(c, s, path):
    m = _DATE_TIME_RE.fullmatch(s)
    ok = m is not None
    if ok:
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        ok = (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
              and hour <= 23 and minute <= 59 and second <= 60)
        if ok and m.group(7) is not None:
            ok = int(m.group(7)) <= 23 and int(m.group(8)) <= 59
    if not ok:
        raise c.fail(path, f"{s!r} is not an RFC 3339 date-time (section 5.6)")


def _size(c, obj, path):
    p = _key(path, "size")
    present, v = _get(c, obj, "size", path, True)
    if not isinstance(v, int) or isinstance(v, bool):
        raise c.fail(p, f"must be an integer, got {_type_name(v)}")
    if v < 0 or v > MAX_SIZE:
        raise c.fail(p, f"must be between 0 and 2**63-1 bytes, got {v}")
    return v


def _uri(c, s, path):
    if not _URI_RE.fullmatch(s):
        raise c.fail(path, f"{s!r} is not an absolute RFC 3986 URI")


def _platform(c, v, path):
    obj = _require_object(c, v, path)
    _string(c, obj, "architecture", path, required=True)
    _string(c, obj, "os", path, required=True)
    _string(c, obj, "os.version", path)
    _string_array(c, obj, "os.features", path)
    _string(c, obj, "variant", path)
    _string_array(c, obj, "features", path)
    return Platform.from_json(obj)


def _descriptor(c, v, path) -> Descriptor:
    obj = _require_object(c, v, path, "an object (content descriptor)")
    media_type = _media_type(c, obj, "mediaType", path, required=True)
    size = _size(c, obj, path)
    _, raw_digest = _get(c, obj, "digest", path, True)
    digest = _digest_value(c, raw_digest, _key(path, "digest"))
    urls = _string_array(c, obj, "urls", path, item_check=_uri) or ()
    artifact_type = _media_type(c, obj, "artifactType", path, required=False)
    annotations = _map(c, obj, "annotations", path, str) or {}
    platform = None
    if "platform" in obj:
        platform = _platform(c, obj["platform"], _key(path, "platform"))
    data = None
    data_text = _string(c, obj, "data", path)
    if data_text is not None:
        p = _key(path, "data")
        try:
            data = base64.b64decode(data_text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise c.fail(p, "is not valid base64 (RFC 4648 section 4, with padding)") from None
        if len(data) != size:
            raise c.fail(p, f"decodes to {len(data)} bytes but size is {size}")
        if digest.registered and digest_of(data, digest.algorithm) != digest:
            raise c.fail(p, f"decodes to content whose digest is {digest_of(data, digest.algorithm)}, "
                            f"not {digest}")
    return Descriptor(media_type, digest, size, urls, annotations, platform, artifact_type, data)


def _schema_version(c, obj):
    present, v = _get(c, obj, "schemaVersion", "", True)
    if not isinstance(v, int) or isinstance(v, bool):
        raise c.fail("schemaVersion", f"must be an integer, got {_type_name(v)}")
    if v != 2:
        raise c.fail("schemaVersion", f"must be 2, got {v}")
    return v


def _optional_descriptor(c, obj, key):
    if key not in obj:
        return None
    return _descriptor(c, obj[key], key)


def _validate_manifest(c, obj, media_type, raw, digest):
    obj = _require_object(c, obj, "", "a JSON object")
    version = _schema_version(c, obj)
    _media_type(c, obj, "mediaType", "", required=c.docker)
    artifact_type = _media_type(c, obj, "artifactType", "", required=False)
    if "config" not in obj:
        raise c.fail("config", "required field is missing")
    config = _descriptor(c, obj["config"], "config")
    _, layers_v = _get(c, obj, "layers", "", True)
    if not isinstance(layers_v, list):
        raise c.fail("layers", f"must be an array, got {_type_name(layers_v)}")
    if not layers_v:
        raise c.fail("layers", "must have at least one entry (image-manifest-schema.json minItems)")
    layers = tuple(_descriptor(c, d, _item("layers", i)) for i, d in enumerate(layers_v))
    subject = _optional_descriptor(c, obj, "subject")
    annotations = _map(c, obj, "annotations", "", str) or {}
    if isinstance(obj.get("manifests"), list) and obj["manifests"]:
        raise c.fail("manifests", "a manifest must not have manifests (ambiguous with an image index)")
    return Manifest(media_type, version, config, layers, annotations, subject, artifact_type,
                    raw, digest, obj)


def _validate_index(c, obj, media_type, raw, digest):
    obj = _require_object(c, obj, "", "a JSON object")
    version = _schema_version(c, obj)
    _media_type(c, obj, "mediaType", "", required=c.docker)
    artifact_type = _media_type(c, obj, "artifactType", "", required=False)
    _, manifests_v = _get(c, obj, "manifests", "", True)
    if not isinstance(manifests_v, list):
        raise c.fail("manifests", f"must be an array, got {_type_name(manifests_v)}")
    manifests = tuple(_descriptor(c, d, _item("manifests", i)) for i, d in enumerate(manifests_v))
    subject = _optional_descriptor(c, obj, "subject")
    annotations = _map(c, obj, "annotations", "", str) or {}
    if obj.get("config") is not None:
        raise c.fail("config", "an index must not have a config (ambiguous with a manifest)")
    if isinstance(obj.get("layers"), list) and obj["layers"]:
        raise c.fail("layers", "an index must not have layers (ambiguous with a manifest)")
    return ImageIndex(media_type, version, manifests, annotations, subject, artifact_type,
                      raw, digest, obj)


def _env_item(c, s, path):
    if not _ENV_RE.fullmatch(s):
        raise c.fail(path, f"{s!r} is not of the form NAME=value (config.md, Env)")


def _validate_config(c, obj, media_type, raw, digest):
    obj = _require_object(c, obj, "", "a JSON object")
    lenient = c.docker
    created = _string(c, obj, "created", "")
    if created is not None:
        _date_time(c, created, "created")
    author = _string(c, obj, "author", "")
    architecture = _string(c, obj, "architecture", "", required=True)
    os_name = _string(c, obj, "os", "", required=True)
    variant = _string(c, obj, "variant", "")
    os_version = _string(c, obj, "os.version", "")
    os_features = _string_array(c, obj, "os.features", "") or ()

    exec_config = None
    if "config" in obj and not (lenient and obj["config"] is None):
        exec_config = _require_object(c, obj["config"], "config")
        p = "config"
        _string(c, exec_config, "User", p)
        _map(c, exec_config, "ExposedPorts", p, dict, nullable=lenient)
        _string_array(c, exec_config, "Env", p, nullable=lenient, item_check=_env_item)
        _string_array(c, exec_config, "Entrypoint", p, nullable=True)
        _string_array(c, exec_config, "Cmd", p, nullable=True)
        _map(c, exec_config, "Volumes", p, dict, nullable=True)
        _string(c, exec_config, "WorkingDir", p)
        _map(c, exec_config, "Labels", p, str, nullable=True)
        _string(c, exec_config, "StopSignal", p)
        _boolean(c, exec_config, "ArgsEscaped", p)

    if "rootfs" not in obj:
        raise c.fail("rootfs", "required field is missing")
    rootfs = _require_object(c, obj["rootfs"], "rootfs")
    rootfs_type = _string(c, rootfs, "type", "rootfs", required=True)
    if rootfs_type != "layers":
        raise c.fail("rootfs.type", f"must be \"layers\", got {rootfs_type!r}")
    diff_ids_v = _string_array(c, rootfs, "diff_ids", "rootfs", required=True, nullable=lenient) or ()
    diff_ids = tuple(_digest_value(c, d, _item("rootfs.diff_ids", i)) for i, d in enumerate(diff_ids_v))

    history: List[History] = []
    if "history" in obj and not (lenient and obj["history"] is None):
        hv = obj["history"]
        if not isinstance(hv, list):
            raise c.fail("history", f"must be an array, got {_type_name(hv)}")
        for i, h in enumerate(hv):
            p = _item("history", i)
            h = _require_object(c, h, p)
            h_created = _string(c, h, "created", p)
            if h_created is not None:
                _date_time(c, h_created, _key(p, "created"))
            history.append(History(
                created=h_created,
                author=_string(c, h, "author", p),
                created_by=_string(c, h, "created_by", p),
                comment=_string(c, h, "comment", p),
                empty_layer=bool(_boolean(c, h, "empty_layer", p)),
            ))
    return ImageConfig(media_type, architecture, os_name, variant, os_version, tuple(os_features),
                       created, author, exec_config, diff_ids, tuple(history), raw, digest, obj)


def _validate_layout(c, obj, media_type, raw, digest):
    obj = _require_object(c, obj, "", "a JSON object")
    version = _string(c, obj, "imageLayoutVersion", "", required=True)
    if version != "1.0.0":
        raise c.fail("imageLayoutVersion", f"must be \"1.0.0\", got {version!r}")
    return ImageLayout(version, raw, digest, obj)


def _validate_descriptor_document(c, obj, media_type, raw, digest):
    return _descriptor(c, obj, "")


_VALIDATORS = {
    "manifest": _validate_manifest,
    "index": _validate_index,
    "config": _validate_config,
    "layout": _validate_layout,
    "descriptor": _validate_descriptor_document,
}


# --- JSON ----------------------------------------------------------------------

class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"duplicate object key {k!r}")
        out[k] = v
    return out


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON (RFC 8259, section 6)")


def _load_json(raw: bytes, c: _Ctx):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise c.fail(DOCUMENT, f"not UTF-8 (RFC 8259, section 8.1): bad byte at offset {exc.start}") from None
    if text.startswith("\ufeff"):
        raise c.fail(DOCUMENT, "starts with a byte order mark (RFC 8259, section 8.1)")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise c.fail(DOCUMENT, f"invalid JSON: {exc}") from None


def _as_bytes(raw) -> bytes:
    if isinstance(raw, str):
        raise TypeError("documents are parsed from the bytes received; encode str first")
    return bytes(raw)


# --- public parsing --------------------------------------------------------------

def parse_document(raw, media_type: Optional[str] = None) -> Document:
    """Parse and validate a document from its exact bytes.

    Args:
        raw: the bytes received (bytes-like).
        media_type: the media type it was received as (e.g. a descriptor's
            ``mediaType`` or an HTTP ``Content-Type``; parameters after ``;``
            are ignored), or ``None`` to rely on the document.

    Returns a :class:`Manifest`, :class:`ImageIndex`, :class:`ImageConfig`,
    :class:`Descriptor` (for ``application/vnd.oci.descriptor.v1+json``) or
    :class:`ImageLayout` (for ``application/vnd.oci.layout.header.v1+json``).
    Configs, descriptors and layout headers carry no ``mediaType`` of their
    own, so their media type must be given (a config is also recognised by
    its ``rootfs`` field).

    Raises:
        InvalidDocumentError: invalid JSON, an unsupported or conflicting
            media type, or a broken rule (see the module docstring).
        TypeError: ``raw`` is a ``str``.
    """
    data = _as_bytes(raw)
    given = mt.base_type(media_type) if media_type else None
    c = _Ctx(given)
    if given is not None:
        if mt.is_schema1(given):
            raise c.fail(DOCUMENT, "Docker image manifest schema 1 is not supported")
        if given not in _KIND_BY_TYPE:
            raise c.fail(DOCUMENT, f"{given!r} is not a manifest, index, config, descriptor "
                                   "or image layout media type")
    obj = _load_json(data, c)
    kind = _KIND_BY_TYPE.get(given)
    if isinstance(obj, dict) and kind in (None, "manifest") and (
            "fsLayers" in obj or obj.get("schemaVersion") == 1):
        raise c.fail("schemaVersion", "Docker image manifest schema 1 is not supported")
    if kind in (None, "manifest", "index"):
        doc_type = obj.get("mediaType") if isinstance(obj, dict) else None
        if doc_type is not None:
            _media_type(c, obj, "mediaType", "", required=True)
            if mt.is_schema1(doc_type):
                raise c.fail("mediaType", "Docker image manifest schema 1 is not supported")
            if given is not None and doc_type != given:
                raise c.fail("mediaType", f"the document says {doc_type!r} but was received as {given!r}")
            if doc_type not in _KIND_BY_TYPE or _KIND_BY_TYPE[doc_type] not in ("manifest", "index"):
                raise c.fail("mediaType", f"{doc_type!r} is not a manifest or index media type")
            given, kind = doc_type, _KIND_BY_TYPE[doc_type]
            c = _Ctx(given)
        elif given is None:
            given, kind = _infer_kind(c, obj)
            c = _Ctx(given)
        elif given in _DOCKER_TYPES:
            raise c.fail("mediaType", f"required field is missing ({given} documents must carry it)")
    digest = digest_of(data)
    return _VALIDATORS[kind](c, obj, given, data, digest)


def _infer_kind(c, obj):
    if not isinstance(obj, dict):
        raise c.fail(DOCUMENT, f"must be a JSON object, got {_type_name(obj)}")
    is_index = "manifests" in obj
    is_manifest = "config" in obj or "layers" in obj
    if is_index and is_manifest:
        raise c.fail(DOCUMENT, "has both manifests and config/layers and no mediaType: ambiguous")
    if is_index:
        return mt.OCI_IMAGE_INDEX, "index"
    if is_manifest:
        return mt.OCI_IMAGE_MANIFEST, "manifest"
    if "rootfs" in obj:
        return mt.OCI_IMAGE_CONFIG, "config"
    if "imageLayoutVersion" in obj:
        return mt.OCI_LAYOUT_HEADER, "layout"
    raise c.fail(DOCUMENT, "cannot tell the document kind (no mediaType and no distinguishing "
                           "field); give its media type")


def _expect(doc, kind_cls, what, media_type):
    if not isinstance(doc, kind_cls):
        raise InvalidDocumentError(DOCUMENT, f"expected {what}, got {type(doc).__name__}", media_type)
    return doc


def parse_manifest(raw, media_type: Optional[str] = None) -> Manifest:
    """Like :func:`parse_document`, but the result must be a :class:`Manifest`
    (OCI image manifest or Docker schema 2); raises InvalidDocumentError otherwise."""
    return _expect(parse_document(raw, media_type), Manifest, "a manifest", media_type)


def parse_index(raw, media_type: Optional[str] = None) -> ImageIndex:
    """Like :func:`parse_document`, but the result must be an :class:`ImageIndex`
    (OCI image index or Docker manifest list); raises InvalidDocumentError otherwise."""
    return _expect(parse_document(raw, media_type), ImageIndex, "an index", media_type)


def parse_image_layout(raw) -> ImageLayout:
    """Parse an ``oci-layout`` file (``application/vnd.oci.layout.header.v1+json``)."""
    return parse_document(raw, mt.OCI_LAYOUT_HEADER)


def parse_config(raw, media_type: Optional[str] = mt.OCI_IMAGE_CONFIG) -> ImageConfig:
    """Parse an image config (default media type: the OCI config type; pass
    :data:`layerstore.mediatypes.DOCKER_CONFIG` for Docker configs)."""
    return _expect(parse_document(raw, media_type), ImageConfig, "an image config", media_type)


def parse_descriptor(raw) -> Descriptor:
    """Parse a standalone descriptor document (``application/vnd.oci.descriptor.v1+json``)."""
    return parse_document(raw, mt.OCI_DESCRIPTOR)


def check_manifest_config(manifest: Manifest, config: ImageConfig) -> None:
    """Check that ``config`` is the one ``manifest`` names and that they agree.

    * the config's digest and size equal ``manifest.config``'s
      (:class:`DigestMismatchError`, :class:`SizeMismatchError`);
    * ``len(manifest.layers) == len(config.diff_ids)`` (manifest.md "layers"
      and config.md "rootfs": one diff ID per layer, in order)
      (:class:`InvalidDocumentError` on field ``layers``).
    """
    if config.digest != manifest.config.digest:
        raise DigestMismatchError(manifest.config.digest, config.digest, what="config")
    if len(config.raw) != manifest.config.size:
        raise SizeMismatchError(manifest.config.size, len(config.raw), what="config")
    if len(manifest.layers) != len(config.diff_ids):
        raise InvalidDocumentError(
            "layers", f"the manifest has {len(manifest.layers)} layers but the config's "
                      f"rootfs.diff_ids has {len(config.diff_ids)}", manifest.media_type)
