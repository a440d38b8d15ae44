"""Frozen features: extraction through a backbone and the content-keyed feature cache.

Layer 2. May import: ``dermbench.models``, ``dermbench.data``, ``dermbench.io``, ``dermbench.config``.
"""
from dermbench.features.cache import KINDS, FeatureCache, ImageHashes, load_image, seg_input_size

__all__ = ["KINDS", "FeatureCache", "ImageHashes", "load_image", "seg_input_size"]
