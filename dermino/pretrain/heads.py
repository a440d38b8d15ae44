"""Projection heads: DINOv2's DINO/iBOT head and the knowledge-guided prototype classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """MLP -> L2 normalisation -> weight-normed linear layer onto the prototypes (DINOv2).

    The last layer's magnitude starts at 1 for every prototype; ``last_layer`` is the layer
    whose learning rate is zero during the first epoch (``freeze_last_layer_epochs``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            layers: list[nn.Module] = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)


def project_text_embeddings(text: torch.Tensor, width: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Map text embeddings [N, d] to the backbone width, keeping their geometry.

    Equal widths: unchanged. Otherwise a seeded random orthogonal projection (an isometry when
    width > d; a Johnson-Lindenstrauss projection when width < d), rows renormalised to unit length
    as the text embeddings are. Returns (matrix, description for the run record).
    """
    n, d = text.shape
    if d == width:
        return text.clone(), f"text embeddings used as they are ({d}-d)"
    gen = torch.Generator().manual_seed(seed)
    big, small = max(d, width), min(d, width)
    q, _ = torch.linalg.qr(torch.randn(big, small, generator=gen, dtype=torch.float64))
    proj = q if d > width else q.T  # [d, width]
    out = F.normalize((text.double() @ proj), dim=-1).to(text.dtype)
    return out, f"random orthogonal projection {d} -> {width} (seed {seed}), rows renormalised"


class PrototypeClassifier(nn.Module):
    """p' = sigmoid(X_cls W^T), W [N_c, D] initialised from the merged labels' text embeddings.

    ``learnable=False`` keeps W at its initial value (a buffer), which is what the official code
    does in effect (its prototype layer sits outside the optimised module).
    """

    def __init__(self, init: torch.Tensor, learnable: bool):
        super().__init__()
        self.learnable = learnable
        if learnable:
            self.weight = nn.Parameter(init.clone().float())
        else:
            self.register_buffer("weight", init.clone().float())

    @property
    def num_prototypes(self) -> int:
        return self.weight.shape[0]

    def forward(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        return cls_tokens @ self.weight.to(cls_tokens.dtype).T
