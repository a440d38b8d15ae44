"""Frozen features: extraction through a backbone and the content-keyed feature cache.

Layer 2. May import: ``dermbench.models``, ``dermbench.data``, ``dermbench.io``, ``dermbench.config``.
"""
from dermbench.features.cache import KINDS, FeatureCache, ImageHashes, load_image, seg_input_size
from dermbench.features.extract import PRECISIONS, default_workers, resolve_precision

__all__ = ["KINDS", "PRECISIONS", "FeatureCache", "ImageHashes", "default_workers", "load_image", "resolve_precision",
           "seg_input_size"]
