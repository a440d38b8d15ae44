"""Backbones: the registry and its metadata, the frozen-backbone interface, weights resolution, random-vit.

Owns: :mod:`~dermbench.models.registry` (``BackboneMeta``, ``@register_backbone``, entry-point
discovery of the ``dermbench.backbones`` group), :mod:`~dermbench.models.backbone` (the
``FrozenBackbone`` interface and its timm/open_clip wrappers), :mod:`~dermbench.models.weights`
(finding, reading and strictly loading release files), :mod:`~dermbench.models.random_vit`,
:mod:`~dermbench.models.devices` (the one resolver of a ``--device`` choice).

Layer 1. May import: ``dermbench.io``, ``dermbench.config``. Nothing above.
"""
