"""The Q-network and its BatchNorm folding.

Architecture (fixed; the runtime's native fast path expects its folded form)::

    state[20] -> Linear(20,128) -> ReLU -> BatchNorm1d(128) -> Dropout(0.2)
              -> Linear(128,128) -> ReLU -> BatchNorm1d(128) -> Dropout(0.2)
              -> Linear(128,64)  -> ReLU -> BatchNorm1d(64)
              -> Linear(64,15)   -> q_values[15]

Folding (eval mode: BatchNorm uses its running statistics, Dropout is the identity). BatchNorm after a
ReLU is an affine map per channel, ``bn(h) = s * h + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - s * mean``. It folds forward into the next Linear ``y = W bn(h) + b``::

    W' = W * s[None, :]        b' = b + W @ t

so the eval-mode network is exactly ``Linear -> ReLU -> Linear -> ReLU -> Linear -> ReLU -> Linear``.
The fold is computed in float64 and rounded once to float32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from itp.actions import NUM_ACTIONS
from itp.state import NUM_FEATURES

__all__ = ["HIDDEN_SIZES", "QNetwork", "fold_batchnorm", "folded_forward"]

#: Widths of the three hidden layers.
HIDDEN_SIZES: tuple[int, int, int] = (128, 128, 64)
#: Dropout probability after the first two hidden blocks.
DROPOUT_P = 0.2


class QNetwork(nn.Module):
    """State (float32[N, 20], normalised) -> Q-values (float32[N, 15]); see the module docstring.

    Call ``.eval()`` before acting on single states: BatchNorm in train mode needs N > 1.
    """

    def __init__(self, num_features: int = NUM_FEATURES, num_actions: int = NUM_ACTIONS) -> None:
        super().__init__()
        h1, h2, h3 = HIDDEN_SIZES
        self.layers = nn.Sequential(
            nn.Linear(num_features, h1),
            nn.ReLU(),
            nn.BatchNorm1d(h1),
            nn.Dropout(DROPOUT_P),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.BatchNorm1d(h2),
            nn.Dropout(DROPOUT_P),
            nn.Linear(h2, h3),
            nn.ReLU(),
            nn.BatchNorm1d(h3),
            nn.Linear(h3, num_actions),
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Q-values float32[N, num_actions] for states float32[N, num_features]."""
        out: torch.Tensor = self.layers(states)
        return out


def fold_batchnorm(
    net: QNetwork,
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """The eval-mode network as four dense layers ``(W[out, in], b[out])``, BatchNorm folded forward.

    The network is not modified. ReLU follows each of the first three layers.
    """
    linears: list[nn.Linear] = []
    norms: list[nn.BatchNorm1d] = []
    for module in net.layers:
        if isinstance(module, nn.Linear):
            linears.append(module)
        elif isinstance(module, nn.BatchNorm1d):
            norms.append(module)
    if len(linears) != 4 or len(norms) != 3:
        raise ValueError(
            f"expected 4 Linear and 3 BatchNorm1d layers, got {len(linears)} and {len(norms)}"
        )
    with torch.no_grad():
        weights = [lin.weight.detach().double().clone() for lin in linears]
        biases = [lin.bias.detach().double().clone() for lin in linears]
        for i, bn in enumerate(norms):
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError("BatchNorm1d without running statistics cannot be folded")
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            shift = bn.bias.detach().double() - scale * bn.running_mean.double()
            nxt = i + 1
            biases[nxt] = biases[nxt] + weights[nxt] @ shift
            weights[nxt] = weights[nxt] * scale[None, :]
    return [
        (
            np.ascontiguousarray(w.numpy().astype(np.float32)),
            np.ascontiguousarray(b.numpy().astype(np.float32)),
        )
        for w, b in zip(weights, biases, strict=True)
    ]


def folded_forward(
    layers: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    states: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Numpy forward pass of folded layers: float32[N, in] -> float32[N, out], ReLU between layers.

    Used for fast greedy evaluation (no torch dispatch per state) and as a reference in tests.
    """
    h = np.asarray(states, dtype=np.float32)
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i != last:
            np.maximum(h, 0.0, out=h)
    return h
