"""Off-policy estimators: a slow reference, known-better / known-worse candidates on logged bandit data,
interval coverage, support, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itp.learning.offpolicy import (
    RidgeRewardModel,
    behaviour_support,
    compare_policies,
    cross_fitted_reward_predictions,
    epsilon_greedy_probabilities,
    estimate_value,
)

K = 4  # actions
D = 3  # context features


def true_means(x: np.ndarray) -> np.ndarray:
    """Mean reward of every action in every context (rows x K), linear in the context."""
    beta = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.3, 0.3]])
    return x @ beta.T + np.array([0.0, 0.1, -0.1, 0.2])


def logged(n: int, seed: int, epsilon: float = 0.3, noise: float = 0.3) -> dict[str, np.ndarray]:
    """Decisions logged by epsilon-greedy over a mediocre fixed policy (greedy = action 3)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, D))
    scores = np.zeros((n, K))
    scores[:, 3] = 1.0
    mu_all = epsilon_greedy_probabilities(scores, epsilon)
    actions = np.array([rng.choice(K, p=p) for p in mu_all], dtype=np.int64)
    means = true_means(x)
    rewards = means[np.arange(n), actions] + noise * rng.standard_normal(n)
    return {
        "x": x, "actions": actions, "rewards": rewards,
        "propensities": mu_all[np.arange(n), actions], "behaviour": mu_all, "means": means,
    }


def one_hot(actions: np.ndarray) -> np.ndarray:
    out = np.zeros((actions.shape[0], K))
    out[np.arange(actions.shape[0]), actions] = 1.0
    return out


def true_value(probs: np.ndarray, means: np.ndarray) -> float:
    return float(np.mean(np.sum(probs * means, axis=1)))


# ------------------------------------------------------------------------------------ reference


def reference_snips(probs, actions, rewards, mu) -> float:  # type: ignore[no-untyped-def]
    num = den = 0.0
    for p, a, r, m in zip(probs, actions, rewards, mu, strict=True):
        w = p[a] / m
        num += w * r
        den += w
    return num / den


def reference_dr(probs, actions, rewards, mu, pred) -> float:  # type: ignore[no-untyped-def]
    total = 0.0
    for p, a, r, m, q in zip(probs, actions, rewards, mu, pred, strict=True):
        direct = sum(p[b] * q[b] for b in range(len(p)))
        total += direct + p[a] / m * (r - q[a])
    return total / len(actions)


@st.composite
def bandit_logs(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(2, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(K), size=n)
    mu_all = rng.dirichlet(np.ones(K), size=n) * 0.9 + 0.1 / K
    actions = np.array([rng.choice(K, p=p) for p in mu_all], dtype=np.int64)
    rewards = rng.normal(size=n) * draw(st.floats(0.01, 100.0))
    pred = rng.normal(size=(n, K))
    return probs, actions, rewards, mu_all[np.arange(n), actions], pred


@given(bandit_logs())
@settings(max_examples=60, deadline=None)
def test_estimates_match_the_slow_reference(logs: tuple[np.ndarray, ...]) -> None:
    probs, actions, rewards, mu, pred = logs
    snips = estimate_value(probs, actions, rewards, mu, method="snips")
    dr = estimate_value(probs, actions, rewards, mu, method="dr", reward_predictions=pred)
    assert snips.value == pytest.approx(reference_snips(probs, actions, rewards, mu), rel=1e-9, abs=1e-9)
    assert dr.value == pytest.approx(reference_dr(probs, actions, rewards, mu, pred), rel=1e-9, abs=1e-9)
    for est in (snips, dr):
        assert est.lower <= est.value <= est.upper
        assert 0.0 < est.effective_sample_size <= len(actions) + 1e-9


def test_snips_is_invariant_to_a_reward_shift() -> None:
    logs = logged(500, seed=3)
    probs = one_hot(np.argmax(logs["means"], axis=1))
    a = estimate_value(probs, logs["actions"], logs["rewards"], logs["propensities"])
    b = estimate_value(probs, logs["actions"], logs["rewards"] + 10.0, logs["propensities"])
    assert b.value == pytest.approx(a.value + 10.0)
    assert b.std_error == pytest.approx(a.std_error)


def test_the_behaviour_policy_evaluates_to_the_mean_logged_reward() -> None:
    logs = logged(400, seed=4)
    est = estimate_value(logs["behaviour"], logs["actions"], logs["rewards"], logs["propensities"])
    assert est.value == pytest.approx(float(np.mean(logs["rewards"])))
    assert est.effective_sample_size == pytest.approx(400.0)


# ------------------------------------------------------------------------------------ known answers


@pytest.mark.parametrize("method", ["snips", "dr"])
def test_known_better_candidate_passes_and_known_worse_is_rejected(method: str) -> None:
    logs = logged(4000, seed=11)
    best = one_hot(np.argmax(logs["means"], axis=1))  # the optimal policy: truly better
    worst = one_hot(np.argmin(logs["means"], axis=1))  # truly worse
    current = one_hot(np.full(4000, 3))
    assert true_value(best, logs["means"]) > true_value(current, logs["means"]) + 0.1
    assert true_value(worst, logs["means"]) < true_value(current, logs["means"]) - 0.1
    pred = None
    if method == "dr":
        pred = cross_fitted_reward_predictions(logs["x"], logs["actions"], logs["rewards"], K, seed=1)
    args = (logs["actions"], logs["rewards"], logs["propensities"])
    better = compare_policies(best, current, *args, method=method, reward_predictions=pred)
    worse = compare_policies(worst, current, *args, method=method, reward_predictions=pred)
    assert better.passed, better.reason
    assert better.lower > 0.0  # significantly better, not just non-inferior
    assert not worse.passed, worse.reason
    assert worse.upper < 0.0
    truth = true_value(best, logs["means"]) - true_value(current, logs["means"])
    assert better.lower <= truth <= better.upper


@pytest.mark.statistical
@pytest.mark.parametrize("method", ["snips", "dr"])
def test_interval_coverage(method: str) -> None:
    # 95% intervals over 200 independent logs: coverage is Binomial(200, ~0.95). Accepting >= 176/200
    # (88%) has a false-alarm rate below 1e-4 for a truly 95% interval; a broken interval (e.g. without
    # the 1/sqrt(n)) fails it by far.
    covered = 0
    for seed in range(200):
        logs = logged(600, seed=1000 + seed)
        best = one_hot(np.argmax(logs["means"], axis=1))
        pred = None
        if method == "dr":
            pred = cross_fitted_reward_predictions(logs["x"], logs["actions"], logs["rewards"], K, seed=seed)
        est = estimate_value(
            best, logs["actions"], logs["rewards"], logs["propensities"], method=method,
            reward_predictions=pred,
        )
        covered += est.lower <= true_value(best, logs["means"]) <= est.upper
    assert covered >= 176, covered


def test_dr_with_a_good_reward_model_is_tighter_than_snips() -> None:
    logs = logged(3000, seed=21)
    best = one_hot(np.argmax(logs["means"], axis=1))
    pred = cross_fitted_reward_predictions(logs["x"], logs["actions"], logs["rewards"], K, seed=2)
    args = (logs["actions"], logs["rewards"], logs["propensities"])
    snips = estimate_value(best, *args, method="snips")
    dr = estimate_value(best, *args, method="dr", reward_predictions=pred)
    assert dr.std_error < snips.std_error


def test_a_candidate_without_logged_support_is_refused() -> None:
    # Nearly deterministic logging (epsilon 0.01): a candidate that always takes another action rests on
    # a handful of rows, whatever its estimated value.
    logs = logged(2000, seed=5, epsilon=0.01)
    best = one_hot(np.argmax(logs["means"], axis=1))
    current = one_hot(np.full(2000, 3))
    cmp = compare_policies(best, current, logs["actions"], logs["rewards"], logs["propensities"])
    assert not cmp.passed
    assert "support" in cmp.reason
    assert cmp.candidate.effective_sample_size < 100


def test_dr_resting_on_the_reward_models_extrapolation_is_unsupported() -> None:
    """A candidate whose choices include an action the logs never show: there the DR value is the reward
    model's guess, and neither the ESS nor the interval sees it (no row carries a large weight).

    The behaviour policy explored action 0 with probability 0.005 and the logs happen to hold none of it
    (the rows that did are dropped: a few hundred rows at epsilon 0.02 over 15 actions look like this).
    The reward model is deliberately wrong on action 0 (+5 where the truth is ~0.5).
    """
    full = logged(4000, seed=9, epsilon=0.02)
    keep = full["actions"] != 0
    logs = {k: v[keep] for k, v in full.items()}
    n = int(keep.sum())
    pred = np.array(logs["means"], copy=True)
    pred[:, 0] = 5.0
    cand = np.zeros((n, K))
    cand[:, 0] = cand[:, 3] = 0.5
    cur = one_hot(np.full(n, 3))
    args = (cand, cur, logs["actions"], logs["rewards"], logs["propensities"])
    fooled = compare_policies(*args, method="dr", reward_predictions=pred, min_effective_samples=50)
    assert fooled.passed and fooled.supported and fooled.difference > 1.0  # without the check: a false pass
    assert fooled.candidate.effective_sample_size > 1000
    checked = compare_policies(
        *args, method="dr", reward_predictions=pred, min_effective_samples=50,
        min_action_rows=30, max_extrapolated_share=0.1,
    )
    assert not checked.passed and not checked.supported
    assert "reward model would extrapolate" in checked.reason
    # SNIPS does not extrapolate: the check is DR's only.
    snips = compare_policies(*args, method="snips", min_action_rows=30, max_extrapolated_share=0.1)
    assert "extrapolate" not in snips.reason
    # Logs that explored action 0 enough: the same candidate is supported again.
    rich = logged(4000, seed=9, epsilon=0.5)
    cand_rich = np.zeros((4000, K))
    cand_rich[:, 0] = cand_rich[:, 3] = 0.5
    ok = compare_policies(
        cand_rich, one_hot(np.full(4000, 3)), rich["actions"], rich["rewards"], rich["propensities"],
        method="dr", reward_predictions=rich["means"], min_effective_samples=50, min_action_rows=30,
        max_extrapolated_share=0.1,
    )
    assert ok.supported
    with pytest.raises(ValueError, match="min_action_rows"):
        compare_policies(*args, method="dr", reward_predictions=pred, min_action_rows=-1)
    with pytest.raises(ValueError, match="max_extrapolated_share"):
        compare_policies(*args, method="dr", reward_predictions=pred, max_extrapolated_share=1.5)


def test_identical_policies_pass_with_zero_difference() -> None:
    logs = logged(300, seed=6)
    cur = one_hot(np.full(300, 3))
    cmp = compare_policies(cur, cur, logs["actions"], logs["rewards"], logs["propensities"])
    assert cmp.difference == 0.0 and cmp.lower == 0.0 and cmp.passed


def test_no_overlap_at_all_is_not_a_pass() -> None:
    actions = np.zeros(50, dtype=np.int64)
    rewards = np.ones(50)
    mu = np.ones(50)
    never = one_hot(np.ones(50, dtype=np.int64))
    est = estimate_value(never, actions, rewards, mu)
    assert math.isnan(est.value) and est.effective_sample_size == 0.0
    cmp = compare_policies(never, one_hot(actions), actions, rewards, mu, min_effective_samples=0)
    assert not cmp.passed and "support" in cmp.reason


# ------------------------------------------------------------------------------------ reward model


def test_ridge_recovers_known_linear_rewards() -> None:
    logs = logged(5000, seed=8, noise=0.05, epsilon=1.0)
    model = RidgeRewardModel(K, ridge=1e-3).fit(logs["x"], logs["actions"], logs["rewards"])
    x_new = np.random.default_rng(9).random((100, D))
    np.testing.assert_allclose(model.predict(x_new), true_means(x_new), atol=0.02)


def test_ridge_pools_actions_it_has_too_few_rows_for() -> None:
    x = np.random.default_rng(0).random((40, D))
    actions = np.zeros(40, dtype=np.int64)
    rewards = x[:, 0]
    model = RidgeRewardModel(K, min_rows=5).fit(x, actions, rewards)
    pred = model.predict(x)
    assert np.all(np.isfinite(pred))
    np.testing.assert_allclose(pred[:, 1], pred[:, 2])


def test_epsilon_greedy_probabilities() -> None:
    q = np.array([[0.0, 2.0, 1.0], [5.0, 5.0, 0.0]])
    p = epsilon_greedy_probabilities(q, 0.3)
    np.testing.assert_allclose(p, [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("propensities", {"propensities": np.array([0.5, 0.0])}, "propensities must be in (0, 1]"),
        ("propensities", {"propensities": np.array([0.5, 1.5])}, "propensities must be in (0, 1]"),
        ("rewards", {"rewards": np.array([1.0, math.nan])}, "rewards must be finite"),
        ("actions", {"actions": np.array([0, 7])}, "actions must be in 0..3"),
        ("target", {"target_probabilities": np.full((2, K), 0.5)}, "rows must sum to 1"),
        ("method", {"method": "ips"}, "method must be one of"),
        ("confidence", {"confidence": 1.0}, "confidence must be in (0, 1)"),
        ("dr", {"method": "dr"}, "needs reward_predictions"),
    ],
)
def test_bad_input_names_the_field(field: str, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "target_probabilities": np.full((2, K), 0.25),
        "actions": np.array([0, 1]),
        "rewards": np.array([1.0, 2.0]),
        "propensities": np.array([0.5, 0.5]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate_value(**args)  # type: ignore[arg-type]


def reference_unsupported_share(cand, cur, actions, mu) -> float:  # type: ignore[no-untyped-def]
    """Row by row: the candidate's mass on actions the behaviour policy could not take (only the logged
    one on a deterministic row, else the current policy's positive-probability actions and the logged
    one)."""
    total = 0.0
    for p, c, a, m in zip(cand, cur, actions, mu, strict=True):
        allowed = {int(a)} if m >= 1.0 - 1e-6 else {b for b in range(len(c)) if c[b] > 0} | {int(a)}
        total += sum(p[b] for b in range(len(p)) if b not in allowed)
    return total / len(actions)


@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
@settings(max_examples=80, deadline=None)
def test_unsupported_share_matches_the_slow_reference(n: int, seed: int, det_share: float) -> None:
    rng = np.random.default_rng(seed)
    q_cur, q_cand = rng.normal(size=(n, K)), rng.normal(size=(n, K))
    k = int(rng.integers(1, K + 1))
    cur = epsilon_greedy_probabilities(q_cur, 0.2, k)
    cand = epsilon_greedy_probabilities(q_cand, float(rng.random()), int(rng.integers(1, K + 1)))
    actions = np.array([rng.choice(K, p=p) for p in cur], dtype=np.int64)
    mu = cur[np.arange(n), actions]
    deterministic = rng.random(n) < det_share
    actions = np.where(deterministic, rng.integers(0, K, n), actions)  # e.g. a fallback's choice
    mu = np.where(deterministic, 1.0, mu)
    support = behaviour_support(cur, actions, mu)
    assert support.dtype == np.bool_ and support.shape == (n, K)
    assert np.all(support[np.arange(n), actions])
    rewards = rng.normal(size=n)
    result = compare_policies(cand, cur, actions, rewards, mu, behaviour_support=support)
    expected = reference_unsupported_share(cand, cur, actions, mu)
    assert result.unsupported_share == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= result.unsupported_share <= 1.0 + 1e-12
    # The current policy is always supported by its own logs.
    own = compare_policies(cur, cur, actions, rewards, mu, behaviour_support=support)
    assert own.unsupported_share == pytest.approx(
        reference_unsupported_share(cur, cur, actions, mu), abs=1e-12
    )
    assert own.unsupported_share == pytest.approx(float(np.mean(np.where(deterministic, 1.0 - cur[
        np.arange(n), actions], 0.0))), abs=1e-12)


def test_the_support_check_makes_a_comparison_unsupported_not_negative() -> None:
    logs = logged(3000, seed=4, epsilon=0.3)
    n = logs["actions"].shape[0]
    cur = logs["behaviour"]
    cand = one_hot(np.zeros(n, dtype=np.int64))  # action 0: explored, so inside the support
    args = (cand, cur, logs["actions"], logs["rewards"], logs["propensities"])
    support = behaviour_support(cur, logs["actions"], logs["propensities"])
    inside = compare_policies(*args, behaviour_support=support, max_unsupported_share=0.1)
    assert inside.unsupported_share == 0.0 and inside.supported
    assert "0% of its choices outside the behaviour policy's support" in inside.reason
    # The same logs, but the behaviour policy never explored action 0 on the first half of the rows.
    narrowed = support.copy()
    narrowed[: n // 2, 0] = False
    narrowed[np.arange(n), logs["actions"]] = True  # the logged action always counts
    share = float(np.mean(~narrowed[:, 0]))
    outside = compare_policies(*args, behaviour_support=narrowed, max_unsupported_share=0.1)
    assert outside.unsupported_share == pytest.approx(share) and share > 0.1
    assert not outside.passed and not outside.supported
    assert "could not take on the same row" in outside.reason
    # Off (1.0) or not given: the verdict is the estimate's alone.
    assert compare_policies(*args, behaviour_support=narrowed).supported
    unknown = compare_policies(*args)
    assert math.isnan(unknown.unsupported_share) and "outside the behaviour" not in unknown.reason


def test_behaviour_support_and_the_share_check_their_arguments() -> None:
    cur = np.full((3, K), 1.0 / K)
    actions, mu = np.array([0, 1, 2]), np.full(3, 0.25)
    with pytest.raises(ValueError, match="actions and propensities"):
        behaviour_support(cur, actions[:2], mu)
    with pytest.raises(ValueError, match="actions must be integers"):
        behaviour_support(cur, np.array([0, 1, K]), mu)
    with pytest.raises(ValueError, match="deterministic_at"):
        behaviour_support(cur, actions, mu, deterministic_at=0.0)
    with pytest.raises(ValueError, match="current_probabilities"):
        behaviour_support(cur[0], actions, mu)
    args = (cur, cur, actions, np.ones(3), mu)
    with pytest.raises(ValueError, match="behaviour_support must be a bool array"):
        compare_policies(*args, behaviour_support=np.ones((3, K)))
    with pytest.raises(ValueError, match="behaviour_support must be a bool array"):
        compare_policies(*args, behaviour_support=np.ones((2, K), dtype=bool))
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="max_unsupported_share"):
            compare_policies(*args, max_unsupported_share=bad)  # type: ignore[arg-type]


def test_float_actions_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="actions must be integers"):
        estimate_value(np.full((2, K), 0.25), np.array([0.0, 1.0]), np.ones(2), np.full(2, 0.5))


def test_compare_checks_its_arguments() -> None:
    logs = logged(20, seed=1)
    cur = one_hot(np.full(20, 3))
    args = (logs["actions"], logs["rewards"], logs["propensities"])
    with pytest.raises(ValueError, match="margin must be"):
        compare_policies(cur, cur, *args, margin=-1.0)
    with pytest.raises(ValueError, match="shape"):
        compare_policies(cur, np.full((20, K + 1), 1.0 / (K + 1)), *args)
