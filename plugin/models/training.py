"""The one small training loop shared by the demo models and clone students."""
from __future__ import annotations

import math

import numpy as np


def fit(model, X, Y, *, epochs: int, batch_size: int = 128, lr: float = 3e-3, shift: int = 3,
        rng: np.random.Generator):
    """Trains ``model`` on preprocessed ``X`` (N, C, H, W) and int labels ``Y``.

    AdamW with a one-cycle schedule and label smoothing; small random shifts,
    because real classifiers are trained with augmentation, which is what gives
    them the invariance the functional score probes. Returns the model in eval mode.
    """
    import torch

    per_epoch = math.ceil(len(X) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(X)))
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            xb = X[idx]
            if shift:
                dx, dy = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), Y[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()
