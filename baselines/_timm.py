"""Shared builder for the baselines that timm implements: create the architecture, load the
release's weights strictly (through a converter where the release's keys differ), wrap it."""
from __future__ import annotations

from typing import Any, Callable, Optional

from dermbench.models.registry import BackboneMeta


def build_timm_backbone(meta: BackboneMeta, model_name: str, weights: Optional[str], kind: str = "vit",
                        convert: Optional[Callable[[dict], dict]] = None, variant: Optional[dict] = None,
                        **create_kwargs: Any):
    """kind: 'vit' (TimmViTBackbone) or 'cnn' (TimmCNNBackbone). No network access: pretrained=False,
    the weights come from dermbench.models.weights.resolve_weights."""
    import timm

    from dermbench.models.backbone import TimmCNNBackbone, TimmViTBackbone, seeded
    from dermbench.models.weights import load_weights_into

    with seeded(0):
        model = timm.create_model(model_name, pretrained=False, **{"num_classes": 0, **create_kwargs})
    sha = load_weights_into(model, meta, weights, convert)
    wrapper = TimmViTBackbone if kind == "vit" else TimmCNNBackbone
    return wrapper(model, meta, weights_sha256=sha, variant=variant)


def drop_keys(prefixes: tuple[str, ...]) -> Callable[[dict], dict]:
    """A converter that removes keys the frozen backbone does not use (classifier heads ...)."""

    def convert(state: dict) -> dict:
        from dermbench.models.weights import unwrap

        state = unwrap(state)
        return {k: v for k, v in state.items() if not k.startswith(prefixes)}

    convert.__name__ = f"drop_keys{prefixes}"
    return convert
