"""QNetwork architecture as designed, and BatchNorm folding: the four folded dense layers reproduce the
eval-mode network (property test over random weights and running statistics), in float32 and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from itp.actions import NUM_ACTIONS  # noqa: E402
from itp.state import NUM_FEATURES  # noqa: E402
from itp.training.network import DROPOUT_P, HIDDEN_SIZES, QNetwork, fold_batchnorm, folded_forward  # noqa: E402


def randomised_network(seed: int, scale: float = 1.0) -> QNetwork:
    """A network with non-trivial BatchNorm parameters and running statistics (not the 0/1 defaults)."""
    torch.manual_seed(seed)
    net = QNetwork()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in net.layers:
            if isinstance(module, nn.BatchNorm1d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen) * scale)
                module.bias.copy_((torch.rand(n, generator=gen) - 0.5) * scale)
                module.running_mean.copy_(torch.rand(n, generator=gen) * scale)  # type: ignore[union-attr]
                module.running_var.copy_(0.05 + torch.rand(n, generator=gen) * scale)  # type: ignore[union-attr]
    net.eval()
    return net


def test_architecture_is_the_designed_one() -> None:
    net = QNetwork()
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Dropout",
                     "Linear", "ReLU", "BatchNorm1d", "Dropout",
                     "Linear", "ReLU", "BatchNorm1d",
                     "Linear"]
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (NUM_FEATURES, 128), (128, 128), (128, 64), (64, NUM_ACTIONS)]
    assert HIDDEN_SIZES == (128, 128, 64) and (NUM_FEATURES, NUM_ACTIONS) == (20, 15)
    assert all(m.p == DROPOUT_P == 0.2 for m in net.layers if isinstance(m, nn.Dropout))
    out = net.eval()(torch.zeros(3, NUM_FEATURES))
    assert out.shape == (3, NUM_ACTIONS) and out.dtype == torch.float32


def test_train_mode_uses_dropout_and_batch_statistics() -> None:
    net = randomised_network(0)
    x = torch.rand(16, NUM_FEATURES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eval_out = net.eval()(x)
        net.train()
        torch.manual_seed(0)
        train_a = net(x)
        torch.manual_seed(1)
        train_b = net(x)
    assert not torch.equal(train_a, train_b)  # dropout masks differ with the RNG
    assert not torch.allclose(train_a, eval_out)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.05, 3.0), batch=st.integers(1, 40))
def test_folded_layers_reproduce_the_eval_network(seed: int, scale: float, batch: int) -> None:
    net = randomised_network(seed, scale)
    states = np.random.default_rng(seed).random((batch, NUM_FEATURES), dtype=np.float32)
    layers = fold_batchnorm(net)
    with torch.no_grad():
        expected = net(torch.from_numpy(states)).double().numpy()
    got = folded_forward(layers, states)
    assert got.dtype == np.float32 and got.shape == (batch, NUM_ACTIONS)
    assert np.max(np.abs(got - expected)) < 1e-4 * max(1.0, float(np.max(np.abs(expected))))


def test_fold_matches_a_float64_reference_of_the_formula() -> None:
    """W' = W * s, b' = b + W @ t with s = gamma / sqrt(var + eps), t = beta - s * mean."""
    net = randomised_network(7)
    layers = fold_batchnorm(net)
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    norms = [m for m in net.layers if isinstance(m, nn.BatchNorm1d)]
    w0 = linears[0].weight.detach().double().numpy()
    np.testing.assert_array_equal(layers[0][0], w0.astype(np.float32))  # first layer untouched
    for i, bn in enumerate(norms):
        s = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)  # type: ignore[union-attr]
        t = bn.bias.detach().double().numpy() - s * bn.running_mean.double().numpy()  # type: ignore[union-attr]
        w = linears[i + 1].weight.detach().double().numpy()
        b = linears[i + 1].bias.detach().double().numpy()
        np.testing.assert_allclose(layers[i + 1][0], w * s[None, :], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(layers[i + 1][1], b + w @ t, rtol=1e-6, atol=1e-6)
    for w, b in layers:
        assert w.dtype == b.dtype == np.float32 and w.flags.c_contiguous and b.flags.c_contiguous


def test_fold_does_not_modify_the_network() -> None:
    net = randomised_network(3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    fold_batchnorm(net)
    assert net.training  # mode untouched
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fold_rejects_another_architecture() -> None:
    net = QNetwork()
    net.layers = nn.Sequential(nn.Linear(20, 15))
    with pytest.raises(ValueError, match="expected 4 Linear and 3 BatchNorm1d"):
        fold_batchnorm(net)


def test_fold_rejects_batchnorm_without_running_statistics() -> None:
    net = QNetwork()
    h1 = HIDDEN_SIZES[0]
    net.layers[2] = nn.BatchNorm1d(h1, track_running_stats=False)
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(net)
