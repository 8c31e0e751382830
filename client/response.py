"""Partner-side statistics of response models: Gram matrices and clipped gradient sums.

torch and Opacus are imported only inside :func:`clipped_gradient_sum`, so the segmentation
stages (and every process that never runs logistic regression) start without them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["clipped_gradient_sum", "gram_statistics", "upper_triangle"]

_CHUNK_ROWS = 65_536


class _SampledParameter(Protocol):
    """A parameter after backward through Opacus' ``GradSampleModule``."""

    grad_sample: torch.Tensor


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Row-major upper triangle (with the diagonal) of a square matrix."""
    return matrix[np.triu_indices(matrix.shape[0])]


def gram_statistics(z: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``Z'Z`` (as its upper triangle) and ``Z'y`` (empty when ``y`` is None).

    One customer changes ``Z'Z`` by ``z z'`` (Frobenius norm ``|z|**2``) and ``Z'y`` by
    ``y z`` (norm ``|y| |z|``): the sensitivities of the two releases.
    """
    gram = np.zeros((z.shape[1], z.shape[1]))
    xty = np.zeros(z.shape[1])
    for start in range(0, len(z), _CHUNK_ROWS):
        block = np.asarray(z[start:start + _CHUNK_ROWS], dtype=float)
        gram += block.T @ block
        if y is not None:
            xty += block.T @ y[start:start + _CHUNK_ROWS]
    return upper_triangle(gram), (xty if y is not None else np.zeros(0))


def clipped_gradient_sum(z: np.ndarray, y: np.ndarray, theta: np.ndarray, clip: float
                         ) -> np.ndarray:
    """Sum over customers of the logistic-loss gradient at ``theta``, each clipped to ``clip``.

    Per-customer gradients come from Opacus' per-sample gradients of a torch linear model
    (``GradSampleModule``); each is scaled to L2 norm at most ``clip`` before summing, so
    one customer changes the sum by at most ``clip``.
    """
    import torch
    from opacus import GradSampleModule

    model = torch.nn.Linear(z.shape[1], 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(theta, dtype=torch.float64)[None, :])
    sampled = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    total = np.zeros(z.shape[1])
    for start in range(0, len(z), _CHUNK_ROWS):
        inputs = torch.as_tensor(np.asarray(z[start:start + _CHUNK_ROWS]), dtype=torch.float64)
        labels = torch.as_tensor(y[start:start + _CHUNK_ROWS], dtype=torch.float64)
        sampled.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook")
            loss_fn(sampled(inputs)[:, 0], labels).backward()
        # GradSampleModule's backward hooks set grad_sample on every trainable parameter
        weight = cast(_SampledParameter, model.weight)
        per_sample = weight.grad_sample[:, 0, :].detach().numpy()
        norms = np.linalg.norm(per_sample, axis=1)
        factors = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
        total += factors @ per_sample
    sampled._close()
    return total
