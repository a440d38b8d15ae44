"""Backbone registry: metadata records, a registration decorator, entry-point discovery.

Backbones register with :func:`register_backbone` on a factory function. Built-in
and third-party backbones alike are found through the ``dermbench.backbones``
entry-point group: each entry point names a module (or an object in it) whose
import registers its backbones.

Registration must stay cheap: a plugin module imports torch/timm inside its
factory, never at module level, so that ``dermbench --help`` and
``dermbench list models`` never build or import a model (tested).
"""
from __future__ import annotations

import contextvars
import dataclasses
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Optional

ENTRY_POINT_GROUP = "dermbench.backbones"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneMeta:
    """What a reader (and a result file) needs to know about a backbone."""

    key: str
    architecture: str
    embed_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # 'shortest_crop': resize the short side to input_size / crop_pct, centre-crop input_size.
    # 'squash': resize both sides to input_size (aspect ratio not kept).
    resize_mode: str = "shortest_crop"
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    patch_size: Optional[int] = None  # None for CNNs
    grid: Optional[tuple[int, int]] = None  # token grid at input_size (None for CNNs)
    token_dim: Optional[int] = None  # channels of forward_tokens (defaults to embed_dim)
    level_indices: tuple[int, ...] = ()  # default UperNet levels (blocks or stages)
    level_channels: tuple[int, ...] = ()
    licence: str = "unknown"
    weights_source: str = ""  # where the released weights live (human readable)
    hub_id: Optional[str] = None  # Hugging Face hub repo, if any
    weights_filename: Optional[str] = None  # file expected inside the hub repo / weights folder
    # Other names/places the same release is published under (looked for in the weights folder / local hub cache)
    alternative_files: tuple[str, ...] = ()
    alternative_hub: tuple[tuple[str, str], ...] = ()  # (hub repo, file)
    # Which vector is the "global feature", and the upstream code it follows (recorded with every result)
    global_feature: str = ""
    # The upstream evaluation transform this preprocessing follows (file / function)
    preprocessing_source: str = ""
    pretraining_datasets: tuple[str, ...] = ()
    # Evaluation tasks whose *training* images the backbone saw during pretraining
    # (task keys); results on them are flagged as potentially contaminated.
    seen_tasks: tuple[str, ...] = ()
    citation: str = ""
    description: str = ""
    num_params: Optional[int] = None  # filled in once built, if not known up front

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Factory = Callable[..., Any]  # (weights: str | None, **options) -> FrozenBackbone


@dataclass
class BackboneEntry:
    meta: BackboneMeta
    factory: Factory
    source: str = ""  # module that registered it
    options: dict[str, Any] = field(default_factory=dict)  # fixed factory kwargs (variants)

    def build(self, weights: Optional[str] = None, **options: Any):
        """Build the frozen backbone. ``weights``: None (default resolution), 'random', or a path.

        Weights from a file (``--weights PATH``): the architecture is first built without its random
        initialisation (see :data:`BUILD_WITHOUT_INIT`), which the file would overwrite anyway; where
        that does not give a complete model, it is built again the ordinary way."""
        kwargs = {**self.options, **options}
        if not BUILD_WITHOUT_INIT.get() and _weights_file_on_this_machine(self.meta, weights):
            token = BUILD_WITHOUT_INIT.set(True)
            try:
                backbone = self.factory(weights=weights, meta=self.meta, **kwargs)
                if not _has_meta_tensors(backbone):
                    return backbone
            except (InitNeeded, NotImplementedError, RuntimeError):
                pass  # incomplete without its initialisation, or a builder that computes on tensor values:
                # the ordinary build below (which raises the error again if it is not the meta device's)
            finally:
                BUILD_WITHOUT_INIT.reset(token)
        return self.factory(weights=weights, meta=self.meta, **kwargs)


# While True (set by BackboneEntry.build when the weights come from a file), `models.backbone.seeded`
# builds on the meta device: no random initialisation, whose cost is pure waste when the file's tensors
# replace it (a ViT-B's takes ~2.5 CPU-s, a ViT-L's ~4.5). `weights.load_strict` then gives the module
# real memory and copies the file into it, exactly as it copies into an initialised module; it raises
# `InitNeeded` (the build is redone with the initialisation) when some parameter or buffer
# would not come from the file (a buffer computed at construction, not saved in state dicts).
BUILD_WITHOUT_INIT: "contextvars.ContextVar[bool]" = contextvars.ContextVar("dermbench_build_without_init",
                                                                            default=False)


def _weights_file_on_this_machine(meta: BackboneMeta, weights: Optional[str]) -> bool:
    """True for ``--weights PATH`` of a file that exists (other cases, and errors, are the ordinary build's)."""
    import os

    return bool(weights) and weights != "random" and os.path.isfile(os.path.expanduser(weights))


class InitNeeded(Exception):
    """A module built without initialisation (BUILD_WITHOUT_INIT) has tensors a state dict does not hold:
    BackboneEntry.build builds it again with its initialisation."""


def _has_meta_tensors(backbone: Any) -> bool:
    """A plugin that loads its weights by other means than load_weights_into would keep meta tensors."""
    tensors = getattr(backbone, "parameters", None), getattr(backbone, "buffers", None)
    if not all(callable(t) for t in tensors):
        return True  # not an nn.Module: nothing to check it with, build it the ordinary way
    return any(t.is_meta for get in tensors for t in get())


_REGISTRY: dict[str, BackboneEntry] = {}
_DISCOVERED = False
_DISCOVERY_ERRORS: dict[str, str] = {}


def register_backbone(meta: BackboneMeta, **options: Any) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory`` under ``meta.key``.

    The factory is called as ``factory(weights=..., meta=meta, **options)``; the same
    factory may be registered several times (variants) with different ``options``.
    """

    def decorator(factory: Factory) -> Factory:
        existing = _REGISTRY.get(meta.key)
        module = getattr(factory, "__module__", "")
        if existing is not None and existing.source != module:
            raise ValueError(
                f"backbone key {meta.key!r} registered twice: by {existing.source} and by {module}; "
                "rename one of them"
            )
        _REGISTRY[meta.key] = BackboneEntry(meta=meta, factory=factory, source=module, options=dict(options))
        return factory

    return decorator


def discover(force: bool = False) -> None:
    """Import every module named in the ``dermbench.backbones`` entry-point group."""
    global _DISCOVERED
    if _DISCOVERED and not force:
        return
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the others; reported by `list`
            _DISCOVERY_ERRORS[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
            continue
        if isinstance(obj, BackboneEntry):
            _REGISTRY.setdefault(obj.meta.key, obj)
    _DISCOVERED = True


def discovery_errors() -> dict[str, str]:
    discover()
    return dict(_DISCOVERY_ERRORS)


def available() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get(key: str) -> BackboneEntry:
    discover()
    if key not in _REGISTRY:
        from dermbench.names import did_you_mean

        hint = (f" (its plugin failed to import: {_DISCOVERY_ERRORS[key]})" if key in _DISCOVERY_ERRORS
                else did_you_mean(key, available()))
        raise KeyError(f"unknown model {key!r}{hint}. Valid models: {', '.join(available())}")
    return _REGISTRY[key]


def build(key: str, weights: Optional[str] = None, **options: Any):
    return get(key).build(weights=weights, **options)


def torch_imported() -> bool:
    """True if torch has been imported in this process (used to test lazy imports)."""
    return "torch" in sys.modules


