"""layerstore: a content-addressed, deduplicating store for container image layers.

Start with :class:`layerstore.Store` (``Store.open(path)``); the modules are
named for what they hold: ``digest``, ``reference``, ``mediatypes``,
``manifest`` (OCI/Docker documents), ``hashing``, ``tar``, ``chunking`` and
``scan`` (wrappers of the C core), ``packs``, ``catalog``, ``recipe``,
``store``, ``images`` and ``formats``. Every error raised on bad input or a
bad store is a :class:`LayerStoreError`; the subclasses are in
:mod:`layerstore.errors`.
"""
from .errors import (
    BlobNotFoundError,
    CorruptBlobError,
    DigestError,
    DigestMismatchError,
    ImageFormatError,
    ImageNotFoundError,
    LayerStoreError,
    StoreError,
    TarFormatError,
)
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "BlobNotFoundError",
    "CorruptBlobError",
    "DigestError",
    "DigestMismatchError",
    "ImageFormatError",
    "ImageNotFoundError",
    "LayerStoreError",
    "Store",
    "StoreError",
    "TarFormatError",
    "__version__",
]
