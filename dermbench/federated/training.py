"""The linear head that every federated client, the centralised baseline and the local-only heads train.

A head is two float32 arrays, ``weight`` [C, D] and ``bias`` [C] (the layout of ``torch.nn.Linear``
and of the Flower ``ArrayRecord`` the clients exchange). Training is cross-entropy with Adam and a
cosine learning-rate schedule evaluated in closed form per epoch, so a client that trains epochs
``[first_epoch, first_epoch + epochs)`` of a ``horizon``-epoch schedule uses exactly the learning
rates a single centralised run would use for those epochs.

Determinism: every call gets an explicit seed (derived from the run seed, the round and the client
by :func:`derive_seed`), draws its batch order from its own ``torch.Generator`` and runs on one CPU
thread, so the same seeds give bit-identical heads in a Ray actor, a Flower SuperNode process or
the main process.
"""
from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the run seed and a path of names (e.g. ``derive_seed(0, "client", 2, "ph2-cls")``)."""
    text = "|".join(str(p) for p in (int(seed), *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def init_head(dim: int, n_classes: int, init_std: float, seed: int) -> dict[str, np.ndarray]:
    """N(0, init_std) weights and zero bias (the linear probe's initialisation), seeded."""
    import torch

    g = torch.Generator().manual_seed(derive_seed(seed, "init"))
    weight = torch.empty(n_classes, dim).normal_(0.0, float(init_std), generator=g)
    return {"weight": weight.numpy().astype(np.float32), "bias": np.zeros(n_classes, dtype=np.float32)}


def cosine_lr(epoch: int, horizon: int, lr: float, eta_min: float) -> float:
    """Cosine annealing from ``lr`` (epoch 0) towards ``eta_min`` over ``horizon`` epochs."""
    return eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * epoch / max(horizon, 1))) / 2.0


@contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_head(head: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, epochs: int, first_epoch: int,
               horizon: int, lr: float, eta_min: float, batch_size: int, weight_decay: float,
               seed: int) -> tuple[dict[str, np.ndarray], float]:
    """Train a copy of ``head`` for ``epochs`` epochs; returns (new head, mean training loss of the last epoch).

    A fresh Adam optimiser per call: a Flower client keeps no optimiser state between rounds.
    """
    import torch
    from torch import nn

    with _one_thread():
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        weight = np.asarray(head["weight"], dtype=np.float32)
        layer = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(head["bias"], dtype=np.float32).copy()))
        opt = torch.optim.Adam(layer.parameters(), lr=float(lr), weight_decay=float(weight_decay))
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
        loss_fn = nn.CrossEntropyLoss()
        last_loss = float("nan")
        for e in range(int(epochs)):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(int(first_epoch) + e, int(horizon), float(lr), float(eta_min))
            order = torch.randperm(len(xt), generator=g)
            total, seen = 0.0, 0
            for start in range(0, len(xt), int(batch_size)):
                batch = order[start : start + int(batch_size)]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(layer(xt[batch]), yt[batch])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
            last_loss = total / max(seen, 1)
        out = {"weight": layer.weight.detach().numpy().astype(np.float32).copy(),
               "bias": layer.bias.detach().numpy().astype(np.float32).copy()}
    return out, last_loss


def predict_proba(head: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Softmax class probabilities [n, C] (float64) of the head on features ``x``."""
    import torch

    with _one_thread(), torch.no_grad():
        logits = torch.as_tensor(np.asarray(x, dtype=np.float32)) @ torch.as_tensor(head["weight"]).T \
            + torch.as_tensor(head["bias"])
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)


def cross_entropy(head: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    proba = predict_proba(head, x)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), np.asarray(y, dtype=np.int64)], 1e-12, None))))
