"""Exploration among the k best actions (``explore_top_k``): the sampler, its propensities against the
pure-Python target probabilities the off-policy gate uses, k = 15 unchanged, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import itp
from itp import _native
from itp.actions import NUM_ACTIONS
from itp.learning.offpolicy import epsilon_greedy_probabilities

RAW = np.array(
    [4e8, 3e8, 2e8, 1e8, 0.02, 0.03, 0.04, 0.05, 0.1, 0.1, 0.2, 0.2, 1.0, 1.0, 1.0, 1.0,
     2.0, 64e6, 0.5, 12.0],
    dtype=np.float64,
)


def engine(eps: float, k: int, seed: int = 7) -> object:
    e = _native.DecisionEngine(seed)
    e.epsilon = eps
    e.explore_top_k = k
    return e


def decide(e: object, q: np.ndarray) -> tuple[int, float]:
    action, _source, _chunks, _t, _conf, _state, _raw, _fault, propensity, _guard = e.decide_raw(  # type: ignore[attr-defined]
        RAW, True, q.astype(np.float32)
    )
    return int(action), float(propensity)


def reference_top_k(q: np.ndarray, k: int) -> list[int]:
    """The k best actions by Q, ties to the lower index (a slow, obvious reference)."""
    return sorted(range(len(q)), key=lambda a: (-float(q[a]), a))[:k]


def test_explored_actions_are_uniform_over_the_k_best() -> None:
    q = np.linspace(0.0, 1.4, NUM_ACTIONS)[::-1].copy()  # action 0 best, then 1, 2, ...
    q[[3, 9]] = q[[9, 3]]  # action 9 is now 4th best
    e = engine(1.0, 4)
    draws = [decide(e, q)[0] for _ in range(8000)]
    counts = np.bincount(draws, minlength=NUM_ACTIONS)
    top = reference_top_k(q, 4)
    assert set(np.flatnonzero(counts)) == set(top)
    assert stats.chisquare(counts[top]).pvalue > 1e-3  # uniform over the four


def test_epsilon_mixes_the_greedy_action_with_top_k_exploration() -> None:
    q = np.arange(NUM_ACTIONS, dtype=np.float64)  # action 14 best
    e = engine(0.3, 3)
    n = 20000
    draws = np.array([decide(e, q)[0] for _ in range(n)])
    want = epsilon_greedy_probabilities(q[None, :], 0.3, 3)[0]
    got = np.bincount(draws, minlength=NUM_ACTIONS) / n
    assert want[14] == pytest.approx(0.7 + 0.1) and want[13] == want[12] == pytest.approx(0.1)
    np.testing.assert_allclose(got, want, atol=0.015)


@settings(max_examples=300, deadline=None)
@given(
    q=st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 2.0]), min_size=NUM_ACTIONS, max_size=NUM_ACTIONS),
    eps=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    k=st.integers(1, NUM_ACTIONS),
    seed=st.integers(0, 2**32),
)
def test_propensity_is_the_gates_target_probability(q: list[float], eps: float, k: int, seed: int) -> None:
    """Ties included: the engine's executed action has positive probability under the Python target
    policy, and its logged propensity is exactly that probability (what the off-policy gate assumes)."""
    qa = np.array(q)
    probs = epsilon_greedy_probabilities(qa[None, :], eps, k)[0]
    e = engine(eps, k, seed)
    for _ in range(5):
        action, propensity = decide(e, qa)
        assert probs[action] > 0
        assert propensity == pytest.approx(probs[action], rel=1e-12)
        if eps < 1.0 or k == 1:
            assert action in reference_top_k(qa, k)
    assert probs.sum() == pytest.approx(1.0)
    assert set(np.flatnonzero(probs > 0)) <= set(reference_top_k(qa, k))


def test_k_15_draws_exactly_as_before() -> None:
    """The default is uniform over all 15 actions with the same random draws as an engine never told k."""
    q = np.random.default_rng(3).standard_normal(NUM_ACTIONS)
    plain = _native.DecisionEngine(11)
    plain.epsilon = 0.4
    assert plain.explore_top_k == NUM_ACTIONS
    explicit = engine(0.4, NUM_ACTIONS, seed=11)
    assert [decide(plain, q) for _ in range(500)] == [decide(explicit, q) for _ in range(500)]


def test_the_partitioner_explores_among_the_k_best_and_logs_it() -> None:
    p = itp.TaskPartitioner(epsilon=1.0, explore_top_k=2, seed=5)
    assert p.model is not None and p.explore_top_k == 2
    for i in range(4):
        p.update_stream(i, bandwidth_bps=1e8 * (i + 1), latency_s=0.02, congestion=0.1, success_rate=1.0)
    decisions = [p.partition_task(itp.Task(id=f"t{k}", size=50_000_000)) for k in range(400)]
    assert len({d.action for d in decisions}) == 2
    assert {d.propensity for d in decisions} == {0.5}
    p.explore_top_k = 15
    assert p.explore_top_k == 15


@pytest.mark.parametrize("bad", [0, 16, -1, 2.5, True, "3"])
def test_bad_top_k_names_the_field_and_changes_nothing(bad: object) -> None:
    p = itp.TaskPartitioner(None, explore_top_k=4)
    with pytest.raises(ValueError, match="explore_top_k"):
        p.explore_top_k = bad  # type: ignore[assignment]
    assert p.explore_top_k == 4
    with pytest.raises(ValueError, match="explore_top_k"):
        itp.TaskPartitioner(None, explore_top_k=bad)  # type: ignore[arg-type]
    e = _native.DecisionEngine(0)
    if isinstance(bad, int) and not isinstance(bad, bool):
        with pytest.raises(ValueError, match="explore_top_k"):
            e.explore_top_k = bad
        assert e.explore_top_k == NUM_ACTIONS


@pytest.mark.parametrize("bad", [0, 16, 2.5, True])
def test_target_probabilities_validate_top_k(bad: object) -> None:
    with pytest.raises(ValueError, match="top_k"):
        epsilon_greedy_probabilities(np.zeros((2, NUM_ACTIONS)), 0.1, bad)  # type: ignore[arg-type]
