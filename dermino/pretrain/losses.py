"""DermINO's losses: DINO (image level), iBOT (masked patches), KoLeo, supervised prototype BCE.

Conventions follow DINOv2 (and the official DermINO code built on it). Every function works on
one process's share of the global batch; where a statistic spans the batch (Sinkhorn-Knopp sums,
the number of labelled crops, KoLeo neighbours with ``gather=True``) it is all-reduced, so N
processes compute what one process would on the whole global batch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if distributed():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Teacher targets [B, K]: Sinkhorn-Knopp centring of exp(logits / temp) (SwAV, DINOv2).

    Alternately normalises prototype rows to equal mass 1/K and sample columns to 1/B over the
    *global* batch (sums all-reduced), then scales columns so each sample's target sums to 1.
    With zero rows here (e.g. no masked patch in this process) it still joins the reductions.
    """
    logits = teacher_logits.float()
    n_local = torch.tensor([logits.shape[0]], dtype=torch.float64, device=logits.device)
    n_total = _all_reduce(n_local).item()
    k = logits.shape[1]
    if n_total == 0:
        return logits.new_zeros(logits.shape)
    # Subtracting the global maximum changes nothing after normalisation but keeps exp finite.
    peak = logits.max() if logits.numel() else logits.new_tensor(float("-inf"))
    peak = _all_reduce(peak.reshape(1).clone(), dist.ReduceOp.MAX if distributed() else None)
    q = torch.exp((logits - peak) / temp).T  # [K, B]
    q /= _all_reduce(q.sum().reshape(1))
    for _ in range(n_iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= n_total
    q *= n_total
    return q.T


def dino_loss(student_global: torch.Tensor, student_local: Optional[torch.Tensor], teacher_probs: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """Cross-entropy between teacher targets and student log-softmax over all (student, teacher) crop pairs.

    student_global [N_g, B, K], student_local [N_l, B, K] (or None), teacher_probs [N_g, B, K].
    A global crop is never matched with itself. Each pair's cross-entropy is averaged over the
    batch; the sum over pairs is divided by N_g (N_g - 1) + max(N_g N_l, 1), as DINOv2 does
    (``dinov2/train/ssl_meta_arch.py::SSLMetaArch.forward_backward``: ``n_local_crops_loss_terms =
    max(n_local_crops * n_global_crops, 1)``): without local crops that is N_g (N_g - 1) + 1, one more
    than the number of pairs.
    """
    n_g = student_global.shape[0]
    students = student_global if student_local is None or student_local.shape[0] == 0 else \
        torch.cat([student_global, student_local])
    log_p = F.log_softmax(students.float() / student_temp, dim=-1)
    # pair[s, t] = mean over the batch of -sum_k teacher_t * log student_s
    pair = -torch.einsum("sbk,tbk->st", log_p, teacher_probs.float()) / students.shape[1]
    valid = torch.ones_like(pair, dtype=torch.bool)
    valid[torch.arange(n_g), torch.arange(n_g)] = False
    n_l = students.shape[0] - n_g
    n_terms = n_g * (n_g - 1) + max(n_g * n_l, 1)
    return pair[valid].sum() / n_terms


def ibot_loss(student_masked: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """iBOT masked-patch loss: each masked patch's cross-entropy weighted by 1 / (its image's
    masked count), summed, divided by the number of global-crop images (masked or not).

    student_masked, teacher_probs [M, K] for the masked patches in row-major order of
    ``masks`` [N_img, P] (bool).
    """
    per_patch = -(teacher_probs.float() * F.log_softmax(student_masked.float() / student_temp, dim=-1)).sum(-1)
    weight = (1.0 / masks.sum(-1).clamp(min=1)).unsqueeze(-1).expand_as(masks)[masks]
    return (per_patch * weight.to(per_patch.dtype)).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8, gather: bool = False) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser: -mean log distance to the nearest neighbour
    (features L2-normalised). ``gather`` searches neighbours in the global batch (all processes);
    the gradient then also reaches neighbours held by other processes, as in one process.
    """
    x = F.normalize(x.float(), eps=eps, p=2, dim=-1)
    pool, offset = x, 0
    if gather and distributed() and dist.get_world_size() > 1:
        from torch.distributed._functional_collectives import all_gather_single_autograd

        pool = all_gather_single_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD)
        offset = dist.get_rank() * x.shape[0]
    with torch.no_grad():
        # float64: near collapse (early training) neighbours differ by ~1e-4, and a float32 product
        # would let rounding, which depends on the batch layout, pick the neighbour
        dots = x.double() @ pool.double().T
        own = torch.arange(x.shape[0], device=x.device)
        dots[own, own + offset] = -2.0  # below any cosine: never one's own neighbour
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, pool[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


def prototype_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-crop supervised loss: BCE(sigmoid(logits), targets) averaged over the crop's *known*
    labels (its source datasets' label spaces, n_ij = 1); other prototypes are ignored.

    Returns (per-crop loss [C], labelled [C] bool); unlabelled crops (no known label) get 0.
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    n_known = known.sum(-1)
    per_crop = (bce * known).sum(-1) / n_known.clamp(min=1)
    return per_crop, n_known > 0


def prototype_loss(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean of :func:`prototype_bce` over the labelled crops of the global batch.

    Each process returns its labelled crops' sum divided by the global labelled count, times the
    world size, so that the data-parallel gradient average equals the single-process gradient.
    Returns (loss, global number of labelled crops).
    """
    per_crop, labelled = prototype_bce(logits, targets, known)
    count = _all_reduce(labelled.sum().to(torch.float64).reshape(1)).item()
    world = dist.get_world_size() if distributed() else 1
    total = per_crop[labelled].sum()
    return total * world / max(count, 1.0), int(count)
