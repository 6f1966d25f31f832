"""layerstore: a content-addressed, deduplicating store for container image layers.

Start with :class:`layerstore.Store` (``Store.open(path)``); the modules are
named for what they hold: ``digest``, ``reference``, ``mediatypes``,
``manifest`` (OCI/Docker documents), ``hashing``, ``tar``, ``chunking`` and
``scan`` (wrappers of the C core), ``packs``, ``catalog``, ``recipe``,
``store``.
"""
from .errors import LayerStoreError
from .store import Store

__version__ = "0.1.0"

__all__ = ["LayerStoreError", "Store", "__version__"]
