"""Media types of OCI and Docker image documents and layers.

Sources:

* OCI image spec, media-types.md ("Media Types") and layer.md (layer
  compression and the deprecated non-distributable layers); descriptor.md
  for the descriptor type; image-layout.md for the layout header;
  manifest.md ("Guidance for an Empty Descriptor") for the empty type.
* Docker "Image Manifest V 2, Schema 2" (distribution/distribution
  ``docs/spec/manifest-v2-2.md``, "Media Types") for the Docker types; schema 1
  (``manifest-v2-1.md``) is listed only so it can be recognised and refused.

Media type strings are compared exactly (they are case-sensitive tokens in
these specs); :func:`base_type` strips ``;`` parameters first where a type
arrives from an HTTP ``Content-Type`` header.
"""
from __future__ import annotations

from typing import Optional

__all__ = [
    "OCI_DESCRIPTOR", "OCI_LAYOUT_HEADER", "OCI_IMAGE_INDEX", "OCI_IMAGE_MANIFEST",
    "OCI_IMAGE_CONFIG", "OCI_EMPTY", "OCI_LAYER_TAR", "OCI_LAYER_TAR_GZIP", "OCI_LAYER_TAR_ZSTD",
    "OCI_LAYER_NONDISTRIBUTABLE_TAR", "OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD",
    "DOCKER_MANIFEST", "DOCKER_MANIFEST_LIST", "DOCKER_CONFIG", "DOCKER_LAYER_TAR",
    "DOCKER_LAYER_TAR_GZIP", "DOCKER_FOREIGN_LAYER_TAR", "DOCKER_FOREIGN_LAYER_TAR_GZIP",
    "DOCKER_PLUGIN_CONFIG", "DOCKER_SCHEMA1_MANIFEST", "DOCKER_SCHEMA1_SIGNED_MANIFEST",
    "MANIFEST_TYPES", "INDEX_TYPES", "CONFIG_TYPES", "LAYER_TYPES", "SCHEMA1_TYPES",
    "is_manifest", "is_index", "is_config", "is_layer", "is_schema1", "is_nondistributable",
    "layer_compression", "base_type",
]

# --- OCI (media-types.md) ----------------------------------------------------
OCI_DESCRIPTOR = "application/vnd.oci.descriptor.v1+json"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
OCI_IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
#: The empty JSON object ``{}`` (manifest.md, "Guidance for an Empty Descriptor").
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Deprecated by the spec (layer.md, "Non-Distributable Layers"), still read.
OCI_LAYER_NONDISTRIBUTABLE_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# --- Docker (manifest-v2-2.md) ----------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
#: Uncompressed Docker layer (not in manifest-v2-2.md's list; written by
#: containerd and accepted by Docker).
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_PLUGIN_CONFIG = "application/vnd.docker.plugin.v1+json"
# Schema 1 (manifest-v2-1.md): recognised only to be refused.
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_IMAGE_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_IMAGE_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_IMAGE_CONFIG, DOCKER_CONFIG})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST})

_COMPRESSION = {
    OCI_LAYER_TAR: "none",
    OCI_LAYER_TAR_GZIP: "gzip",
    OCI_LAYER_TAR_ZSTD: "zstd",
    OCI_LAYER_NONDISTRIBUTABLE_TAR: "none",
    OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP: "gzip",
    OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD: "zstd",
    DOCKER_LAYER_TAR: "none",
    DOCKER_LAYER_TAR_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_TAR: "none",
    DOCKER_FOREIGN_LAYER_TAR_GZIP: "gzip",
}
LAYER_TYPES = frozenset(_COMPRESSION)
_NONDISTRIBUTABLE = frozenset({
    OCI_LAYER_NONDISTRIBUTABLE_TAR, OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD, DOCKER_FOREIGN_LAYER_TAR, DOCKER_FOREIGN_LAYER_TAR_GZIP,
})


def base_type(media_type: str) -> str:
    """``media_type`` without parameters or surrounding blanks
    (``"application/json; charset=utf-8"`` -> ``"application/json"``)."""
    return media_type.split(";", 1)[0].strip()


def is_manifest(media_type: Optional[str]) -> bool:
    """OCI image manifest or Docker schema 2 manifest."""
    return media_type in MANIFEST_TYPES


def is_index(media_type: Optional[str]) -> bool:
    """OCI image index or Docker manifest list."""
    return media_type in INDEX_TYPES


def is_config(media_type: Optional[str]) -> bool:
    """OCI or Docker image configuration."""
    return media_type in CONFIG_TYPES


def is_schema1(media_type: Optional[str]) -> bool:
    """Docker image manifest schema 1 (signed or not), which layerstore refuses."""
    return media_type in SCHEMA1_TYPES


def is_layer(media_type: Optional[str]) -> bool:
    """Any known layer type: OCI tar/tar+gzip/tar+zstd and their
    non-distributable forms, Docker rootfs diff (tar, tar.gzip) and foreign layers."""
    return media_type in _COMPRESSION


def is_nondistributable(media_type: Optional[str]) -> bool:
    """OCI non-distributable or Docker foreign layer (content may have to be
    fetched from the descriptor's ``urls``)."""
    return media_type in _NONDISTRIBUTABLE


def layer_compression(media_type: Optional[str]) -> Optional[str]:
    """``"none"``, ``"gzip"`` or ``"zstd"`` for a known layer type, ``None``
    for anything else (including unknown ``+suffix`` layer types, which
    layer.md does not define)."""
    return _COMPRESSION.get(media_type)
