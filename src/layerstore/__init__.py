"""layerstore: a content-addressed, deduplicating store for container image layers."""
from .errors import LayerStoreError

__version__ = "0.1.0"

__all__ = ["LayerStoreError", "__version__"]
