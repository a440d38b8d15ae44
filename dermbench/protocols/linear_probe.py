"""Linear probe: one linear layer on frozen global features (PROTOCOL.md).

Cross-entropy, Adam lr 5e-3, cosine annealing to 0 over 50 epochs, batch 256, head
initialised N(0, 0.01) with zero bias, as in the official code. Features come from the
cache (no training-time augmentation: the frozen-feature protocol; recorded in info).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext
from dermbench.protocols.classification import calibration_info, calibration_split, global_features, predictions_table

LINEAR_DEFAULTS: dict[str, Any] = {
    "lr": 5e-3,
    "epochs": 50,
    "batch_size": 256,
    "weight_decay": 0.0,
    "init_std": 0.01,
    "batch_size_features": 32,
}


def train_linear_head(x_train: np.ndarray, y_train: np.ndarray, n_classes: int, config: dict, seed: int,
                      device: str = "cpu"):
    """Train a linear head on features; returns the trained ``torch.nn.Linear`` (on CPU, eval mode)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(x_train.shape[1], n_classes)
    with torch.no_grad():
        head.weight.normal_(0.0, float(config["init_std"]), generator=g)
        head.bias.zero_()
    head = head.to(device)
    opt = torch.optim.Adam(head.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    epochs = int(config["epochs"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.0)
    x = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    y = torch.as_tensor(y_train, dtype=torch.long, device=device)
    bs = int(config["batch_size"])
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g).to(device)
        for start in range(0, len(x), bs):
            batch = order[start : start + bs]
            opt.zero_grad(set_to_none=True)
            loss_fn(head(x[batch]), y[batch]).backward()
            opt.step()
        sched.step()
    return head.cpu().eval()


def predict_proba(head, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), dim=1).numpy().astype(np.float64)


class LinearProbe(Protocol):
    name = "linear"
    kind = "classification"
    defaults = dict(LINEAR_DEFAULTS)

    def run(self, ctx: RunContext) -> ProtocolOutput:
        x_train, y_train = global_features(ctx, "train")
        x_test, _ = global_features(ctx, "test")
        head = train_linear_head(x_train, y_train, ctx.card.num_classes, ctx.config, ctx.seed, ctx.device)
        proba = predict_proba(head, x_test)
        # held-out calibration scores from a second head (the test predictions above are unchanged)
        fit, held = calibration_split(y_train, ctx.seed)
        tables = {}
        if len(held):
            cal_head = train_linear_head(x_train[fit], y_train[fit], ctx.card.num_classes, ctx.config, ctx.seed, ctx.device)
            cal = predict_proba(cal_head, x_train[held])
            train = ctx.train
            tables["calibration"] = predictions_table(ctx, cal, cal.argmax(axis=1), [train[i] for i in held])
        return ProtocolOutput(
            predictions=predictions_table(ctx, proba, proba.argmax(axis=1)),
            kind=self.kind, n_train=len(x_train), n_test=len(x_test),
            info={"augmentation": "none (cached frozen features)", "calibration": calibration_info(ctx.seed, len(fit), len(held))},
            tables=tables,
        )
