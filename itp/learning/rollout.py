"""Gated, gradual rollout of a retrained model: offline gate, canary with statistics, rollback.

**Offline gate** (:func:`offline_gate`, run by the trainer before a candidate is ever served). Its
``mode`` (:class:`GateConfig`) picks the evidence:

* ``"offpolicy"`` (default): judged by the deployment's own data. On the *held-back* logged rows (the
  newest fraction of the logs, never used to train the candidate) that carry a behaviour propensity, both
  policies are evaluated off-policy (:func:`itp.learning.offpolicy.compare_policies`: doubly robust with a
  cross-fitted ridge reward model by default, SNIPS available), each decision a contextual-bandit round
  with its task's reward. The target policies are the models *as the deployment runs them*: epsilon-greedy
  over their Q-values at the deployed exploration rate (``target_epsilon``; the learner passes the
  partitioner's), since that is what a promoted model would earn. The candidate passes iff the lower end of
  the two-sided ``confidence`` interval of ``V_candidate - V_current`` is ``>= -margin`` and its effective
  sample size is ``>= min_effective_samples`` and (DR) at most ``max_extrapolated_share`` of its choices
  are actions logged fewer than ``min_action_rows`` times (else the DR value is the reward model's
  extrapolation) and at most ``max_unsupported_share`` of its choices are actions the behaviour policy
  could not have taken on the same row (:func:`itp.learning.offpolicy.behaviour_support`: the deployed
  model's exploration set, or the logged action alone where the row was decided deterministically; there
  no importance weight can correct the estimate). When fewer than ``min_offpolicy_rows`` held-back rows
  carry a propensity (a producer that does not log them, old rows), or there is no current model to
  compare with, the off-policy verdict is not possible: the gate falls back to the simulator check below
  and says so in its reason. When the rows are there but do not *support* the candidate (any of the
  three support checks fails), the comparison is inconclusive rather than negative; ``unsupported=
  "reject"`` (default) discards the candidate, ``"simulator"`` lets the simulator check on the fitted
  physics decide. Why reject by default (measured on the adaptation benchmark, ``docs/lifecycle.md``):
  before fine-tuning kept candidates inside the exploration set (``itp.training.finetune``'s support
  penalty), every retrained candidate put 18-40 % of its choices outside the behaviour policy's support,
  where the DR estimate is the reward model's extrapolation; of the candidates the old default passed on
  15 runs, the canary on live traffic rolled back 1 of 3 passed off-policy and 7 of 9 passed by the
  simulator fallback, each after serving half the traffic for 500-2 500 outcomes. Rejecting them moved
  goodput by -0.7 % to +1.4 % and removed those canaries. ``"simulator"`` remains for a deployment that
  would rather try a candidate the logs cannot judge (the canary still measures it before it serves
  everything).
* ``"simulator"``: the check below only.
* ``"both"``: both must pass (the simulator alone when the off-policy verdict is not possible).

The **simulator check** (on the physics the learner fitted to the deployment, ``sim_config``:
:mod:`itp.learning.fitted_physics`):

1. candidate and current model play the same ``episodes`` (equal seeds, so differences come from decisions
   only; :func:`itp.agent.evaluate_model`). With mean per-task rewards ``R_c`` and ``R_0``, the candidate
   passes if ``R_c >= R_0 - sim_margin``;
2. *held-back TD error*: for each model the one-step TD error
   ``delta = r + gamma * max_a' Q(s', a') - Q(s, a)`` over the held-back rows (``a`` the action executed);
   with mean squared errors ``L_c`` and ``L_0`` the candidate passes if ``L_c <= L_0 * (1 + td_margin) +
   1e-9``: it must explain real outcomes at least as well. This belongs to the simulator check (it guards
   a candidate the simulator alone would pass); the off-policy verdict already rests on real outcomes, and
   a better policy need not have better-calibrated Q-values.

Without a current model (heuristic only) the simulator check compares against the heuristic and the
logged checks are skipped. A failed gate discards the candidate; the reason is recorded.

**Canary** (:class:`CanaryRollout`): the candidate answers a share ``s_k`` of live decisions, stage by
stage (default 10% -> 50% -> 100%, where 100% means promotion). Per stage, rewards and goodputs of the
two arms are accumulated (Welford), overall and per task-size stratum (``size_strata_bytes``); with
``n`` outcomes per arm, means ``m``, variances ``v``::

    d  = m_cand - m_cur            se = sqrt(v_cand / n_cand + v_cur / n_cur)
    z  = Phi^-1(1 - (1 - confidence) / K)   (one-sided; K looks per stage, below; 0.95, K = 1 -> 1.645)

where, with strata, ``d`` and ``se`` are the post-stratified difference and its standard error
(:mod:`itp.learning.strata`: the arms compared within size strata, the strata weighted by their share of
both arms' tasks; the same quantity without the noise of each arm's chance size mix, which dominated the
pooled difference on real TCP). The goodput ratio ``g`` (candidate's mean goodput over the current's,
stratified likewise) has the log-scale standard error ``se_g``.

* **advance** (or promote at the last stage) when ``d - z se > -margin``: not worse than ``margin`` with
  the given confidence (a one-sided non-inferiority test), and the goodput is not confidently worse
  (below);
* **roll back** when ``d + z se < -margin``: worse by more than ``margin`` with that confidence; or,
  with ``goodput_margin``, when ``log g + z se_g < log(1 - goodput_margin)``: a goodput lower than the
  current's by more than ``goodput_margin`` with that confidence, whatever the reward says (the reward is
  not goodput: ``docs/reward.md``);
* otherwise keep collecting; after ``max_outcomes_per_stage`` outcomes on the candidate arm without a
  verdict, roll back (inconclusive is not good enough to ship).

A stage is judged at K looks (``looks="geometric"``, default): when the smaller arm first reaches
``min_outcomes_per_stage``, 1.5 times that, 2.25 times ... (``look_growth``), and at
``max_outcomes_per_stage`` candidate outcomes; every look uses one quantile, the constant
group-sequential boundary for those looks (``boundary="exact"``, :mod:`itp.learning.sequential`), so
that the chance that any look passes a candidate exactly at the margin is ``1 - confidence``;
``boundary="bonferroni"`` bounds it by splitting the error evenly between the looks, which overpays
because the looks share their data. Judging after every outcome at the plain quantile
(``looks="every"``) promoted a candidate worse by twice the margin 6-8% of the time
(``bench/canary_power.py``).

Any model fault of the candidate (NaN/inf output, inference error) rolls back at once. Each stage needs
at least ``min_outcomes_per_stage`` outcomes on *both* arms before a verdict. Rollback and promotion
are atomic for new decisions (:meth:`itp.agent.Agent.set_candidate`, ``promote_candidate``).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from itp.agent import EvaluationReport, evaluate_model
from itp.learning.offpolicy import (
    METHODS,
    OffPolicyComparison,
    behaviour_support,
    compare_policies,
    cross_fitted_reward_predictions,
    epsilon_greedy_probabilities,
    exploring_rows,
)
from itp.learning.sequential import bonferroni_quantile, constant_boundary
from itp.learning.strata import (
    DEFAULT_SIZE_STRATA_BYTES,
    Moments,
    check_size_strata,
    compare_arms,
    pooled_moments,
    size_stratum,
)
from itp.model_loading import LoadedModel
from itp.ring import TransitionBatch

__all__ = [
    "FUTILITY_FROM",
    "GATE_MODES",
    "MAX_LOOKS",
    "ArmStats",
    "CanaryConfig",
    "CanaryRollout",
    "CanaryVerdict",
    "GateConfig",
    "GateResult",
    "holdout_newest",
    "offline_gate",
    "offpolicy_comparison",
    "td_error_mse",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ gate


GATE_MODES: Final = ("offpolicy", "simulator", "both")


@dataclass(frozen=True)
class GateConfig:
    """Offline gate settings (see the module docstring).

    Attributes:
        mode: ``"offpolicy"`` (default; falls back to the simulator without enough propensity-carrying
            held-back rows), ``"simulator"`` or ``"both"``.
        estimator: off-policy estimator, ``"dr"`` (doubly robust, default) or ``"snips"``.
        confidence: two-sided confidence of the off-policy interval, in (0.5, 1) (0.9: the lower bound is
            one-sided 95 %).
        margin: tolerated off-policy loss of mean reward per decision (reward units, >= 0).
        min_effective_samples: the candidate's importance weights must rest on at least this many effective
            rows (>= 1).
        min_offpolicy_rows: held-back rows with a propensity needed for an off-policy verdict (>= 2).
        min_action_rows, max_extrapolated_share: the DR support check
            (:func:`itp.learning.offpolicy.compare_policies`): at most ``max_extrapolated_share`` (in
            [0, 1]) of the candidate's choices may be actions logged fewer than ``min_action_rows`` (>= 0)
            times among the held-back rows.
        max_unsupported_share: the per-row support check, in [0, 1]: at most this share of the
            candidate's choices (as deployed: epsilon-greedy, guarded) may be actions the behaviour policy
            could not take on the same row (:func:`itp.learning.offpolicy.behaviour_support`); 1 turns it
            off.
        target_epsilon: exploration rate of both target policies, in [0, 1]; None: the deployed one (the
            learner fills in the partitioner's epsilon; called directly, None is greedy).
        target_top_k: the target policies explore among their k best actions, 1..15; None: the deployed
            ``explore_top_k`` (the learner fills it in; called directly, None is all 15).
        target_guard: score the target policies as the decision guard would have let them act, on the
            held-back rows that carry the guard's verdicts (:func:`itp.learning.offpolicy.
            epsilon_greedy_probabilities`); None: the learner fills in whether the partitioner explores
            guarded (guard on and ``guard_exploration``; see ``docs/lifecycle.md`` for why not whenever
            the guard is on); called directly, None is True.
        target_guard_exploration: with ``target_guard``, the target policies' exploration keeps to the
            actions the guard let through; None: as deployed (the learner fills in the partitioner's
            ``guard_exploration``; called directly, None is False).
        target_explore_max_bytes: the target policies explore only on rows whose task is at most this
            many bytes (:func:`itp.learning.offpolicy.exploring_rows`), greedy elsewhere; None: as
            deployed (the learner fills in the partitioner's ``explore_max_bytes``; called directly, or
            when the partitioner has none, None is no limit).
        episodes: simulated episodes per model (>= 1).
        seed: evaluation seed (both models see the same episodes; also seeds the DR cross-fitting).
        sim_margin: tolerated loss of mean per-task reward on the simulator (reward units, >= 0).
        td_margin: tolerated relative increase of the held-back TD mean squared error (>= 0).
        gamma: discount of the TD error (the trainer's).
        sim_config: an ``itp.sim.SimConfig`` (None: default); trace_files: trace-driven episodes.
        unsupported: what an inconclusive off-policy comparison (a support check failed: the
            candidate's ESS below ``min_effective_samples``, or too many of its choices extrapolated or
            outside the behaviour policy's support) leads to: ``"reject"`` (default: the candidate is
            discarded) or ``"simulator"`` (the simulator check on the fitted physics decides).
    """

    mode: str = "offpolicy"
    estimator: str = "dr"
    confidence: float = 0.9
    margin: float = 0.02
    min_effective_samples: float = 50.0
    min_offpolicy_rows: int = 300
    min_action_rows: int = 10
    max_extrapolated_share: float = 0.1
    max_unsupported_share: float = 0.1
    target_epsilon: float | None = None
    target_top_k: int | None = None
    target_guard: bool | None = None
    target_guard_exploration: bool | None = None
    target_explore_max_bytes: int | None = None
    episodes: int = 20
    seed: int = 12345
    sim_margin: float = 0.0
    td_margin: float = 0.05
    gamma: float = 0.2
    sim_config: Any = None
    trace_files: tuple[str, ...] = ()
    unsupported: str = "reject"

    def __post_init__(self) -> None:
        if self.unsupported not in ("simulator", "reject"):
            raise ValueError(
                f"GateConfig.unsupported must be 'simulator' or 'reject', got {self.unsupported!r}"
            )
        if self.mode not in GATE_MODES:
            raise ValueError(f"GateConfig.mode must be one of {', '.join(GATE_MODES)}, got {self.mode!r}")
        if self.estimator not in METHODS:
            raise ValueError(
                f"GateConfig.estimator must be one of {', '.join(METHODS)}, got {self.estimator!r}"
            )
        if isinstance(self.episodes, bool) or not isinstance(self.episodes, int) or self.episodes < 1:
            raise ValueError(f"GateConfig.episodes must be an int >= 1, got {self.episodes!r}")
        for name in ("sim_margin", "td_margin", "margin"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"GateConfig.{name} must be a finite number >= 0, got {v!r}")
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 < c < 1.0:
            raise ValueError(f"GateConfig.confidence must be in (0.5, 1), got {c!r}")
        m = self.min_effective_samples
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (math.isfinite(m) and m >= 1):
            raise ValueError(f"GateConfig.min_effective_samples must be a finite number >= 1, got {m!r}")
        a = self.min_action_rows
        if isinstance(a, bool) or not isinstance(a, int) or a < 0:
            raise ValueError(f"GateConfig.min_action_rows must be an int >= 0, got {a!r}")
        for name in ("max_extrapolated_share", "max_unsupported_share"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                raise ValueError(f"GateConfig.{name} must be in [0, 1], got {x!r}")
        r = self.min_offpolicy_rows
        if isinstance(r, bool) or not isinstance(r, int) or r < 2:
            raise ValueError(f"GateConfig.min_offpolicy_rows must be an int >= 2, got {r!r}")
        e = self.target_epsilon
        if e is not None and (isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= e <= 1.0):
            raise ValueError(f"GateConfig.target_epsilon must be None or in [0, 1], got {e!r}")
        k = self.target_top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 15):
            raise ValueError(f"GateConfig.target_top_k must be None or an int in 1..15, got {k!r}")
        b = self.target_explore_max_bytes
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 1 <= b < 2**64 - 1):
            raise ValueError(
                f"GateConfig.target_explore_max_bytes must be None or an int in 1..2**64 - 2, got {b!r}"
            )
        for name in ("target_guard", "target_guard_exploration"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                raise TypeError(f"GateConfig.{name} must be None or a bool, got {type(v).__name__}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"GateConfig.gamma must be in [0, 1), got {self.gamma!r}")


@dataclass(frozen=True)
class GateResult:
    """Verdict of :func:`offline_gate` (JSON-ready via :meth:`as_dict`).

    Attributes:
        passed, reason: the verdict and one line saying why (including any fallback).
        mode: the configured mode; evidence: what the verdict rests on (``"offpolicy"``, ``"simulator"``,
            ``"both"``).
        sim_reward_candidate, sim_reward_current: simulator mean per-task rewards (None: not run).
        td_mse_candidate, td_mse_current: held-back TD mean squared errors (None: not run).
        holdout_rows: held-back rows given; offpolicy_rows: those with a propensity.
        offpolicy: :meth:`itp.learning.offpolicy.OffPolicyComparison.as_dict` (estimates, interval, ESS,
            rows), None when the off-policy verdict was not made.
        target_epsilon: exploration rate of the off-policy target policies.
        guarded_rows: off-policy rows on which the target policies were scored as the decision guard
            let them act (rows carrying the guard's verdicts, ``target_guard`` on).
        sim_physics: the simulator's transport settings when it ran (setup_rtts, initial_window_bytes,
            slow_start, stream_efficiency, path_efficiency, and the sender's transport parameters the
            models split and predict with, ``sender_transport_params``: one dict per stream, or None
            for the defaults), else None.
        episodes, seed: of the simulator check.
    """

    passed: bool
    reason: str
    sim_reward_candidate: float | None
    sim_reward_current: float | None
    td_mse_candidate: float | None
    td_mse_current: float | None
    holdout_rows: int
    episodes: int
    seed: int
    mode: str = "simulator"
    evidence: str = "simulator"
    offpolicy_rows: int = 0
    offpolicy: dict[str, Any] | None = None
    target_epsilon: float = 0.0
    guarded_rows: int = 0
    sim_physics: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def td_error_mse(model: LoadedModel, batch: TransitionBatch, gamma: float) -> float:
    """Mean of ``(r + gamma (1 - done) max_a' Q(s', a') - Q(s, a))**2`` over ``batch`` (float64)."""
    if len(batch) == 0:
        raise ValueError("td_error_mse needs at least one transition")
    q = model.q_values_batch(np.ascontiguousarray(batch.states, dtype=np.float32)).astype(np.float64)
    q_next = model.q_values_batch(np.ascontiguousarray(batch.next_states, dtype=np.float32)).astype(
        np.float64
    )
    target = batch.rewards.astype(np.float64) + gamma * (1.0 - batch.dones.astype(np.float64)) * q_next.max(
        axis=1
    )
    delta = target - q[np.arange(len(batch)), batch.actions]
    return float(np.mean(delta * delta))


def _usable_offpolicy_rows(
    current: LoadedModel | None, holdout: TransitionBatch | None, config: GateConfig
) -> tuple[TransitionBatch | None, int, str]:
    """(held-back rows with a propensity, their count, why not possible when the first is None)."""
    if holdout is None or len(holdout) == 0:
        return None, 0, "no held-back logged rows"
    mu = holdout.propensities
    if mu is None:
        return None, 0, f"none of the {len(holdout)} held-back rows carries a behaviour propensity"
    keep = np.flatnonzero(np.isfinite(mu))
    n = int(keep.shape[0])
    if n < config.min_offpolicy_rows:
        return None, n, (
            f"only {n} of {len(holdout)} held-back rows carry a behaviour propensity "
            f"(min_offpolicy_rows {config.min_offpolicy_rows})"
        )
    if current is None:
        return None, n, "no current model to compare with (the heuristic serves)"
    return take(holdout, keep), n, ""


def _target_guard_verdicts(logged: TransitionBatch, config: GateConfig) -> npt.NDArray[np.int32] | None:
    """The verdicts the target policies are scored under (None: unguarded; ``GateConfig.target_guard``)."""
    return logged.guard_verdicts if config.target_guard is not False else None


def offpolicy_comparison(
    candidate: LoadedModel, current: LoadedModel, logged: TransitionBatch, config: GateConfig
) -> OffPolicyComparison:
    """Paired off-policy comparison of ``candidate`` with ``current`` on ``logged`` rows (all with a
    propensity), the policies epsilon-greedy at ``config.target_epsilon`` (None: greedy) on the rows
    ``config.target_explore_max_bytes`` lets explore (greedy on the others), guarded as
    ``config.target_guard`` / ``target_guard_exploration`` say where the rows carry the guard's verdicts.

    Raises:
        ValueError: a row without a propensity, or a model with non-finite Q-values on the logged states.
    """
    if logged.propensities is None or not np.all(np.isfinite(logged.propensities)):
        raise ValueError("offpolicy_comparison needs a propensity on every logged row")
    eps = 0.0 if config.target_epsilon is None else float(config.target_epsilon)
    states = np.ascontiguousarray(logged.states, dtype=np.float32)
    guards = _target_guard_verdicts(logged, config)
    explore_rows = exploring_rows(states, config.target_explore_max_bytes)
    probs = {}
    for name, model in (("candidate", candidate), ("current", current)):
        q = model.q_values_batch(states)
        if not np.all(np.isfinite(q)):
            raise ValueError(f"the {name} model has non-finite Q-values on the held-back states")
        probs[name] = epsilon_greedy_probabilities(
            q, eps, config.target_top_k, guard_verdicts=guards,
            guard_exploration=bool(config.target_guard_exploration), explore_rows=explore_rows,
        )
    support = behaviour_support(probs["current"], logged.actions, logged.propensities)
    predictions = None
    if config.estimator == "dr":
        predictions = cross_fitted_reward_predictions(
            states, logged.actions, logged.rewards, probs["candidate"].shape[1], seed=config.seed
        )
    return compare_policies(
        probs["candidate"],
        probs["current"],
        logged.actions,
        logged.rewards,
        logged.propensities,
        method=config.estimator,
        reward_predictions=predictions,
        confidence=config.confidence,
        margin=config.margin,
        min_effective_samples=config.min_effective_samples,
        min_action_rows=config.min_action_rows,
        max_extrapolated_share=config.max_extrapolated_share,
        behaviour_support=support,
        max_unsupported_share=config.max_unsupported_share,
    )


def _sim_physics(sim_config: Any) -> dict[str, Any]:
    from itp.sim.physics import SimConfig

    cfg = sim_config if sim_config is not None else SimConfig()
    out: dict[str, Any] = {
        k: getattr(cfg, k) for k in ("setup_rtts", "initial_window_bytes", "slow_start", "stream_efficiency")
    }
    out["path_efficiency"] = list(cfg.path_efficiency)
    sender = cfg.sender_transport_params
    out["sender_transport_params"] = [x.as_dict() for x in sender] if sender is not None else None
    return out


def _simulator_check(
    candidate: LoadedModel,
    current: LoadedModel | None,
    holdout: TransitionBatch | None,
    config: GateConfig,
) -> tuple[bool, str, float, float, float | None, float | None]:
    """(passed, reason, R_c, R_0, L_c, L_0) of the simulator check (module docstring)."""
    trace_files = list(config.trace_files) or None
    sim: dict[str, EvaluationReport] = {}
    for name, model in (("candidate", candidate), ("current", current)):
        sim[name] = evaluate_model(
            model, config.episodes, seed=config.seed, trace_files=trace_files, config=config.sim_config
        )
    r_c, r_0 = sim["candidate"].mean_reward, sim["current"].mean_reward
    reasons = []
    passed = True
    if not math.isfinite(r_c) or r_c < r_0 - config.sim_margin:
        passed = False
        reasons.append(f"simulator mean reward {r_c:.4f} < current {r_0:.4f} - margin {config.sim_margin}")
    if sim["candidate"].fallback_decisions:
        passed = False
        reasons.append(f"{sim['candidate'].fallback_decisions} model faults on the simulator")
    td_c = td_0 = None
    rows = len(holdout) if holdout is not None else 0
    if current is not None and holdout is not None and rows:
        td_c = td_error_mse(candidate, holdout, config.gamma)
        td_0 = td_error_mse(current, holdout, config.gamma)
        if not math.isfinite(td_c) or td_c > td_0 * (1.0 + config.td_margin) + 1e-9:
            passed = False
            reasons.append(
                f"held-back TD error {td_c:.4g} > current {td_0:.4g} x (1 + {config.td_margin}) "
                f"on {rows} rows"
            )
    if passed:
        held = (
            f"; held-back TD error {td_c:.4g} vs {td_0:.4g}" if td_c is not None else "; no held-back check"
        )
        reason = f"simulator mean reward {r_c:.4f} vs current {r_0:.4f}{held}"
    else:
        reason = "; ".join(reasons)
    return passed, reason, r_c, r_0, td_c, td_0


def offline_gate(
    candidate: LoadedModel,
    current: LoadedModel | None,
    holdout: TransitionBatch | None,
    config: GateConfig = GateConfig(),
) -> GateResult:
    """Compare ``candidate`` with ``current`` (None: the heuristic); see the module docstring.

    Args:
        candidate, current: the models (already verified).
        holdout: held-back logged rows (never used to train the candidate), or None; rows whose
            ``propensities`` are NaN (or all rows, when it is None) cannot serve the off-policy verdict.
        config: the gate's settings.

    Never raises for missing propensities or too few rows: the verdict then falls back to the simulator
    and its reason says so.
    """
    rows = len(holdout) if holdout is not None else 0
    eps = 0.0 if config.target_epsilon is None else float(config.target_epsilon)
    op: OffPolicyComparison | None = None
    op_rows = 0
    notes: list[str] = []
    run_sim = config.mode in ("simulator", "both")
    op_passed = True
    inconclusive = False
    guarded_rows = 0
    if config.mode in ("offpolicy", "both"):
        logged, op_rows, why_not = _usable_offpolicy_rows(current, holdout, config)
        guards = _target_guard_verdicts(logged, config) if logged is not None else None
        guarded_rows = int(np.count_nonzero(guards >= 0)) if guards is not None else 0
        if logged is None:
            notes.append(f"off-policy verdict not possible ({why_not}): simulator gate used")
            run_sim = True
        else:
            assert current is not None
            try:
                op = offpolicy_comparison(candidate, current, logged, config)
                if not op.supported and config.unsupported == "simulator":
                    inconclusive = True
                    notes.append(f"off-policy verdict inconclusive ({op.reason}): simulator gate used")
                    run_sim = True
                else:
                    op_passed = op.passed
                    notes.append(f"off-policy {op.reason}")
            except ValueError as exc:  # a candidate with non-finite Q-values is a model fault
                op_passed = False
                notes.append(f"off-policy verdict failed: {exc}")
    sim_passed = True
    r_c = r_0 = None
    td_c = td_0 = None
    if run_sim:
        sim_passed, sim_reason, r_c, r_0, td_c, td_0 = _simulator_check(candidate, current, holdout, config)
        notes.append(sim_reason)
    passed = op_passed and sim_passed
    conclusive = op is not None and not inconclusive
    evidence = "both" if (conclusive and run_sim) else ("offpolicy" if conclusive else "simulator")
    return GateResult(
        passed=passed,
        reason="; ".join(notes),
        sim_reward_candidate=r_c,
        sim_reward_current=r_0,
        td_mse_candidate=td_c,
        td_mse_current=td_0,
        holdout_rows=rows,
        episodes=config.episodes,
        seed=config.seed,
        mode=config.mode,
        evidence=evidence,
        offpolicy_rows=op_rows,
        offpolicy=op.as_dict() if op is not None else None,
        target_epsilon=eps,
        guarded_rows=guarded_rows,
        sim_physics=_sim_physics(config.sim_config) if run_sim else None,
    )


def gate_from_files(
    candidate_path: str | Path,
    current_path: str | Path | None,
    holdout: TransitionBatch | None,
    config: GateConfig,
) -> GateResult:
    """:func:`offline_gate` on model files (each verified at load)."""
    from itp.model_loading import load_model

    cand = load_model(candidate_path)
    cur = load_model(current_path) if current_path is not None else None
    return offline_gate(cand, cur, holdout, config)


# ---------------------------------------------------------------------------------- canary


#: the most looks a canary stage may be judged at (``CanaryConfig.look_growth``)
MAX_LOOKS = 32
#: the share of a stage's last look's information in before the futility rule acts
#: (``CanaryConfig.futility``): earlier looks' differences are too noisy to give up on (at 0, a clearly
#: better candidate was lost 3.5% of the time in ``bench/canary_power.py``; from 0.2 on, 3 in 400)
FUTILITY_FROM = 0.2


@dataclass(frozen=True)
class CanaryConfig:
    """Canary settings.

    Attributes:
        shares: candidate share of live decisions per stage, ascending in (0, 1]; a final 1.0 means
            promotion when the previous stage passes.
        confidence: one-sided confidence of the verdicts, in (0.5, 1).
        margin: tolerated loss of mean reward per task (reward units, >= 0).
        min_outcomes_per_stage: outcomes needed on each arm before a verdict (>= 2).
        max_outcomes_per_stage: candidate outcomes after which an undecided stage rolls back.
        size_strata_bytes: upper bounds of the task-size strata the arms are compared within, bytes,
            strictly ascending (default < 256 KiB, 256 KiB - 4 MiB, 4 - 64 MiB, >= 64 MiB); ``()``
            compares the pooled means. Why: :mod:`itp.learning.strata`.
        goodput_margin: tolerated relative loss of mean goodput (in [0, 1)), or None to judge the reward
            alone. The reward is not goodput (``docs/reward.md``): a candidate whose goodput is lower than
            the current's by more than this with the verdict's confidence is rolled back and never
            advances, whatever its reward.
        looks: when a stage is judged. ``"geometric"`` (default): when the smaller arm first reaches
            ``min_outcomes_per_stage``, then ``look_growth`` times that, its square ... (rounded, below
            ``max_outcomes_per_stage``), and when the candidate arm reaches ``max_outcomes_per_stage``;
            all K looks together spend ``1 - confidence`` per stage (``boundary``). ``"doubling"``: the
            same with growth 2 (the previous release's default). ``"every"``: after every outcome at
            ``confidence`` (``bench/canary_power.py`` measured it promoting a candidate worse by twice
            the margin 6-8% of the time).
        look_growth: the ratio between successive ``"geometric"`` looks, > 1, giving at most
            ``MAX_LOOKS`` looks. Why 1.5: with the exact boundary more looks cost little (2.24 for
            ``itp send --learn``'s seven looks, 2.17 for its five at growth 2), and a clearly better
            candidate is promoted after a median 308 outcomes instead of 403 at growth 2
            (``bench/canary_power.py``).
        boundary: the quantile of the looks. ``"exact"`` (default): the constant group-sequential
            boundary for looks at those counts (:mod:`itp.learning.sequential`; 2.46 for the default
            thirteen looks at 95%), which spends exactly ``1 - confidence`` when the statistic moves as a
            Brownian motion in the outcome count. ``"bonferroni"``: ``z(1 - (1 - confidence) / K)``
            (2.67), which holds whatever the looks' correlation.
        futility: roll a stage back at a look (not with ``looks="every"``; from the look where
            ``FUTILITY_FROM`` of the last look's information is in) when its chance to advance by its
            last look, were the candidate's true reward difference the one measured so far, is below
            this (conditional power; default 0.01; None waits for the last look). Why: an equal
            candidate cannot be shown within the margin in ``max_outcomes_per_stage`` outcomes at a
            real deployment's reward variance, and while it holds the canary the learner does not
            retrain (on the testbed one held it for seven sessions). Stopping for futility only
            removes promotions, so it never raises the chance of passing a worse candidate.
    """

    shares: tuple[float, ...] = (0.1, 0.5, 1.0)
    confidence: float = 0.95
    margin: float = 0.05
    min_outcomes_per_stage: int = 200
    max_outcomes_per_stage: int = 20_000
    size_strata_bytes: tuple[int, ...] = DEFAULT_SIZE_STRATA_BYTES
    goodput_margin: float | None = 0.05
    looks: str = "geometric"
    look_growth: float = 1.5
    boundary: str = "exact"
    futility: float | None = 0.01

    def __post_init__(self) -> None:
        s = tuple(self.shares)
        if not s or any(not (0.0 < x <= 1.0) for x in s) or list(s) != sorted(s) or len(set(s)) != len(s):
            raise ValueError(f"CanaryConfig.shares must be strictly ascending in (0, 1], got {self.shares!r}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"CanaryConfig.confidence must be in (0.5, 1), got {self.confidence!r}")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"CanaryConfig.margin must be a finite number >= 0, got {self.margin!r}")
        if self.min_outcomes_per_stage < 2 or self.max_outcomes_per_stage < self.min_outcomes_per_stage:
            raise ValueError(
                "CanaryConfig needs 2 <= min_outcomes_per_stage <= max_outcomes_per_stage, got "
                f"{self.min_outcomes_per_stage}, {self.max_outcomes_per_stage}"
            )
        strata = check_size_strata(self.size_strata_bytes, "CanaryConfig.size_strata_bytes")
        object.__setattr__(self, "size_strata_bytes", strata)
        g = self.goodput_margin
        if g is not None and (
            isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0 <= g < 1
        ):
            raise ValueError(f"CanaryConfig.goodput_margin must be None or a number in [0, 1), got {g!r}")
        if self.looks not in ("geometric", "doubling", "every"):
            raise ValueError(
                f"CanaryConfig.looks must be 'geometric', 'doubling' or 'every', got {self.looks!r}"
            )
        r = self.look_growth
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 1.0:
            raise ValueError(f"CanaryConfig.look_growth must be a finite number > 1, got {r!r}")
        if self.looks != "every" and len(self.look_thresholds) + 1 > MAX_LOOKS:
            raise ValueError(
                f"CanaryConfig.look_growth {r!r} gives {len(self.look_thresholds) + 1} looks between "
                f"{self.min_outcomes_per_stage} and {self.max_outcomes_per_stage} outcomes; at most "
                f"{MAX_LOOKS} (each look costs power and its boundary costs time to compute)"
            )
        if self.boundary not in ("exact", "bonferroni"):
            raise ValueError(f"CanaryConfig.boundary must be 'exact' or 'bonferroni', got {self.boundary!r}")
        f = self.futility
        if f is not None and (
            isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f < 0.5
        ):
            raise ValueError(f"CanaryConfig.futility must be None or a number in (0, 0.5), got {f!r}")

    @functools.cached_property
    def look_thresholds(self) -> tuple[int, ...]:
        """Outcomes on the smaller arm at which a stage is judged, ascending (``looks`` ``"geometric"``
        or ``"doubling"``; the last look, at ``max_outcomes_per_stage`` candidate outcomes, comes on
        top). Rounded to whole outcomes; a growth that would repeat a count skips it. Computed once per
        config (every verdict reads it)."""
        growth = 2.0 if self.looks == "doubling" else float(self.look_growth)
        out: list[int] = []
        t = float(self.min_outcomes_per_stage)
        while round(t) < self.max_outcomes_per_stage:
            if not out or round(t) > out[-1]:
                out.append(round(t))
            t *= growth
        return tuple(out)

    @property
    def quantile(self) -> float:
        """The one-sided normal quantile every verdict of a stage uses (``looks`` and ``boundary``): the
        smaller arm's count at each look stands for its information, the last look's at most
        ``max_outcomes_per_stage`` (a later look only raises the boundary: conservative)."""
        alpha = 1.0 - self.confidence
        if self.looks == "every":
            return NormalDist().inv_cdf(1.0 - alpha)
        information = (*self.look_thresholds, self.max_outcomes_per_stage)
        if self.boundary == "bonferroni":
            return bonferroni_quantile(len(information), alpha)
        return constant_boundary(information, alpha)


@dataclass
class ArmStats:
    """Running count, mean and variance of one arm's rewards (Welford), and of its goodput.

    The verdicts use the reward only. The goodput (bit/s, as reported) is kept beside it so that the
    canary's record in the registry's history says whether what it judged followed what the transfer
    measured (``docs/lifecycle.md``, "What the canary judges").
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    successes: int = 0
    goodput_n: int = 0
    goodput_mean: float = 0.0
    goodput_m2: float = 0.0

    def add(self, reward: float, success: bool, goodput_bps: float | None = None) -> None:
        """Add one outcome (``goodput_bps``: its reported goodput, if known and finite)."""
        self.n += 1
        d = reward - self.mean
        self.mean += d / self.n
        self.m2 += d * (reward - self.mean)
        self.successes += 1 if success else 0
        if goodput_bps is not None and math.isfinite(goodput_bps):
            self.goodput_n += 1
            g = goodput_bps - self.goodput_mean
            self.goodput_mean += g / self.goodput_n
            self.goodput_m2 += g * (goodput_bps - self.goodput_mean)

    @property
    def variance(self) -> float:
        """Sample variance of the rewards (0 for fewer than 2 outcomes)."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def goodput_variance(self) -> float:
        """Sample variance of the goodputs, (bit/s)^2 (0 for fewer than 2)."""
        return self.goodput_m2 / (self.goodput_n - 1) if self.goodput_n > 1 else 0.0

    def state(self) -> list[float]:
        """The running sums, to carry an interrupted canary's evidence to the next process
        (:meth:`from_state`): n, mean, m2, successes, goodput_n, goodput_mean, goodput_m2."""
        return [
            self.n, self.mean, self.m2, self.successes, self.goodput_n, self.goodput_mean, self.goodput_m2
        ]

    @classmethod
    def merged(cls, parts: Sequence[ArmStats]) -> ArmStats:
        """The statistics of all the parts' outcomes together (the parallel merge of
        :func:`itp.learning.strata.pooled_moments`, for the rewards and for the goodputs)."""
        r = pooled_moments([Moments(p.n, p.mean, p.variance) for p in parts])
        g = pooled_moments([Moments(p.goodput_n, p.goodput_mean, p.goodput_variance) for p in parts])
        return cls(r.n, r.mean, r.variance * max(r.n - 1, 0), sum(p.successes for p in parts),
                   g.n, g.mean, g.variance * max(g.n - 1, 0))

    @classmethod
    def from_state(cls, values: Any, name: str) -> ArmStats:
        """The inverse of :meth:`state`.

        Raises:
            ValueError: naming ``name`` (the field), where ``values`` is not 7 finite numbers with
                counts that are ints >= 0, successes <= n and sums of squares >= 0.
        """
        try:
            v = [float(x) for x in values]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be 7 numbers, got {values!r}") from None
        counts = (v[0], v[3], v[4]) if len(v) == 7 else ()
        if (
            len(v) != 7 or not all(math.isfinite(x) for x in v)
            or any(c < 0 or c != int(c) for c in counts) or v[3] > v[0] or v[2] < 0 or v[6] < 0
        ):
            raise ValueError(f"{name} must be 7 finite running sums (counts ints >= 0), got {values!r}")
        return cls(int(v[0]), v[1], v[2], int(v[3]), int(v[4]), v[5], v[6])

    def as_dict(self) -> dict[str, float | None]:
        """n, mean reward, variance, success rate, mean goodput (bit/s; None without one) and its
        variance."""
        return {
            "n": self.n,
            "mean_reward": self.mean,
            "variance": self.variance,
            "success_rate": self.successes / self.n if self.n else 0.0,
            "mean_goodput_bps": self.goodput_mean if self.goodput_n else None,
            "goodput_variance": self.goodput_variance if self.goodput_n else None,
        }


_ARMS: Final = ("current", "candidate")


@dataclass
class _Stage:
    """One stage's outcomes, per arm and task-size stratum; an arm's totals are their merge."""

    index: int
    share: float
    strata: int = 1
    by_stratum: dict[str, list[ArmStats]] = field(default_factory=dict)
    looks_done: int = 0

    def __post_init__(self) -> None:
        self.by_stratum = {arm: [ArmStats() for _ in range(self.strata)] for arm in _ARMS}

    def count(self, arm: str) -> int:
        """Outcomes counted on ``arm``."""
        return sum(s.n for s in self.by_stratum[arm])

    def totals(self, arm: str) -> ArmStats:
        """``arm``'s statistics over all strata."""
        return ArmStats.merged(self.by_stratum[arm])


@dataclass(frozen=True)
class CanaryVerdict:
    """A stage's verdict and the estimates behind it (:meth:`CanaryRollout.judge`).

    Attributes:
        action: ``"advance"``, ``"rollback"`` or ``"wait"``.
        reward_difference: candidate's mean reward minus the current's (stratified where the config
            has strata and some stratum qualifies), NaN before a verdict is possible; reward_se: its
            standard error.
        goodput_ratio: candidate's mean goodput over the current's (stratified likewise), NaN where
            unknown or not judged; goodput_log_se: the standard error of its logarithm.
        estimator: ``"stratified"`` or ``"pooled"`` (the reward's).
        why: what decided a rollback (``"reward"``, ``"goodput"``, ``"futility"``,
            ``"inconclusive"``), else ``""``.
        look: with looks at counts (``"geometric"``, ``"doubling"``), the look this verdict was taken
            at (1..K; 0: none was due).
        pass_chance: the chance to advance by the stage's last look were the true difference the
            measured one (``CanaryConfig.futility``); NaN where not computed.
    """

    action: str
    reward_difference: float = math.nan
    reward_se: float = math.nan
    goodput_ratio: float = math.nan
    goodput_log_se: float = math.nan
    estimator: str = "pooled"
    why: str = ""
    look: int = 0
    pass_chance: float = math.nan


class CanaryRollout:
    """One candidate's canary on a live partitioner (see the module docstring).

    Feed it outcomes (:meth:`on_outcome`, an outcome listener) and faults (:meth:`on_fault`); call
    :meth:`step` periodically (the learner thread does) to act on the statistics. Thread-safe.

    Args:
        partitioner: the live ``TaskPartitioner``.
        candidate: the candidate model (already verified).
        config: canary settings.
        evidence: what an interrupted canary of this candidate had gathered (:meth:`evidence`), to
            continue from its stage and counts instead of starting over; None starts at the first stage.

    Raises:
        ValueError: ``evidence`` is malformed or was counted under other shares or size strata (naming
            the field); nothing is routed to the candidate then.
    """

    def __init__(
        self, partitioner: Any, candidate: LoadedModel, config: CanaryConfig = CanaryConfig(),
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        self._p = partitioner
        self.candidate = candidate
        self.config = config
        #: the one-sided quantile of every verdict (``CanaryConfig.quantile``: over the stage's looks)
        self._z = config.quantile
        self._lock = threading.Lock()
        self._stage = self._new_stage(0)
        self._fault: str | None = None
        self.state = "running"  # running | promoted | rolled_back
        self.reason = ""
        self.stages_passed: list[dict[str, Any]] = []
        #: candidate outcomes this object counted (not restored ones): did this process add evidence?
        self.candidate_outcomes_counted = 0
        #: the last stage's statistics and the verdict's estimates, once a verdict ended the canary
        self.final_stats: dict[str, Any] | None = None
        if evidence is not None:
            self._restore(evidence)
        partitioner.set_candidate(candidate, self._stage.share)

    def evidence(self) -> dict[str, Any]:
        """What this canary has gathered, JSON-ready, for a later :class:`CanaryRollout` of the same
        candidate (``evidence=``): the stage, its arms' running sums overall and per size stratum, the
        stages passed, and the shares and strata they were counted under.

        Why: a deployment that runs one process per batch (``itp send --learn``) ends its learner before
        a canary has the outcomes for a verdict; starting over in the next process throws that evidence
        away, so a canary could be cut by every session end and never decide. Carried over, the counts
        accumulate until a verdict (bounded by ``max_outcomes_per_stage``). Both arms are counted in
        every session, so what they are compared on stays paired.
        """
        with self._lock:
            return {
                "candidate_version": self.candidate.version,
                "shares": list(self.config.shares),
                "size_strata_bytes": list(self.config.size_strata_bytes),
                "stage": self._stage.index,
                "looks_done": self._stage.looks_done,
                "arms": {arm: self._stage.totals(arm).state() for arm in _ARMS},
                "by_stratum": {arm: [s.state() for s in v] for arm, v in self._stage.by_stratum.items()},
                "stages_passed": list(self.stages_passed),
            }

    def _restore(self, evidence: Mapping[str, Any]) -> None:
        cfg = self.config
        if not isinstance(evidence, Mapping):
            raise ValueError(f"evidence must be a mapping, got {type(evidence).__name__}")
        if evidence.get("candidate_version") != self.candidate.version:
            raise ValueError(
                f"evidence.candidate_version {evidence.get('candidate_version')!r} is not the candidate "
                f"{self.candidate.version!r}"
            )
        for key, want in (("shares", list(cfg.shares)), ("size_strata_bytes", list(cfg.size_strata_bytes))):
            if evidence.get(key) != want:
                raise ValueError(f"evidence.{key} {evidence.get(key)!r} differs from the config's {want!r}")
        index = evidence.get("stage")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cfg.shares):
            raise ValueError(f"evidence.stage must be a stage index of the config, got {index!r}")
        stage = self._new_stage(index)
        arms, by_stratum = evidence.get("arms"), evidence.get("by_stratum")
        if not isinstance(arms, Mapping) or not isinstance(by_stratum, Mapping):
            raise ValueError("evidence.arms and evidence.by_stratum must be mappings")
        for arm in _ARMS:
            total = ArmStats.from_state(arms.get(arm), f"evidence.arms.{arm}")
            per = by_stratum.get(arm)
            if not isinstance(per, Sequence) or len(per) != stage.strata:
                raise ValueError(f"evidence.by_stratum.{arm} must hold {stage.strata} strata, got {per!r}")
            stage.by_stratum[arm] = [
                ArmStats.from_state(v, f"evidence.by_stratum.{arm}[{k}]") for k, v in enumerate(per)
            ]
            if stage.count(arm) != total.n:
                raise ValueError(f"evidence.by_stratum.{arm} does not add up to evidence.arms.{arm}")
        looks_done = evidence.get("looks_done", 0)
        if isinstance(looks_done, bool) or not isinstance(looks_done, int) or not (
            0 <= looks_done <= len(cfg.look_thresholds) + 1
        ):
            raise ValueError(f"evidence.looks_done must be a look count of the config, got {looks_done!r}")
        stage.looks_done = looks_done
        passed = evidence.get("stages_passed", [])
        if not isinstance(passed, list) or len(passed) != index:
            raise ValueError(f"evidence.stages_passed must list the {index} stages passed, got {passed!r}")
        self._stage = stage
        self.stages_passed = list(passed)

    @property
    def candidate_outcomes(self) -> int:
        """Outcomes counted on the candidate arm in the current stage."""
        with self._lock:
            return self._stage.count("candidate")

    # ------------------------------------------------------------------------------- feeding
    def on_outcome(self, record: Any) -> None:
        """Outcome listener: counts rewards (and goodputs) per arm for decisions made under this canary."""
        if self.state != "running":
            return
        arm = record.arm
        if arm == "candidate" and record.model_version != self.candidate.version:
            return
        goodput = float(record.throughput_bps)
        reward, success = float(record.reward), bool(record.success)
        k = size_stratum(int(getattr(record, "size_bytes", 0)), self.config.size_strata_bytes)
        with self._lock:
            self._stage.by_stratum[arm][k].add(reward, success, goodput)
            if arm == "candidate":
                self.candidate_outcomes_counted += 1

    def on_fault(self, arm: str, cause: str, version: str | None) -> None:
        """Fault listener: a candidate fault rolls back at the next :meth:`step` (and stops routing now)."""
        if arm != "candidate" or self.state != "running" or version != self.candidate.version:
            return
        with self._lock:
            if self._fault is None:
                self._fault = cause
        # Stop sending traffic to a faulty model at once; step() records the rollback.
        self._p.set_candidate(None)

    # ------------------------------------------------------------------------------- verdicts
    def verdict(self) -> tuple[str, float, float]:
        """(``"advance"``/``"rollback"``/``"wait"``, reward difference, its se): :meth:`judge`, short."""
        v = self.judge()
        return v.action, v.reward_difference, v.reward_se

    def judge(self) -> CanaryVerdict:
        """The current stage's verdict (module docstring): the reward's non-inferiority decides, and a
        goodput confidently worse than ``1 - goodput_margin`` times the current's rolls back."""
        cfg = self.config
        with self._lock:
            cur, cand = self._stage.count("current"), self._stage.count("candidate")
            if min(cur, cand) < cfg.min_outcomes_per_stage:
                if cand >= cfg.max_outcomes_per_stage:
                    return CanaryVerdict("rollback", why="inconclusive")
                return CanaryVerdict("wait")
            look = 0
            if cfg.looks != "every":
                thresholds = cfg.look_thresholds
                look = sum(t <= min(cur, cand) for t in thresholds)
                if cand >= cfg.max_outcomes_per_stage:
                    look = len(thresholds) + 1
                if look <= self._stage.looks_done:
                    return CanaryVerdict("wait")
            rewards = {
                a: [Moments(s.n, s.mean, s.variance) for s in v] for a, v in self._stage.by_stratum.items()
            }
            goodputs = {
                a: [Moments(s.goodput_n, s.goodput_mean, s.goodput_variance) for s in v]
                for a, v in self._stage.by_stratum.items()
            }
        reward, estimator = compare_arms(rewards["candidate"], rewards["current"])
        d, se = reward.value, reward.se
        ratio = log_se = math.nan
        goodput_worse = False
        if cfg.goodput_margin is not None:
            g, _ = compare_arms(goodputs["candidate"], goodputs["current"], ratio=True)
            ratio, log_se = g.value, g.se
            if math.isfinite(ratio) and math.isfinite(log_se):
                goodput_worse = math.log(ratio) + self._z * log_se < math.log(1.0 - cfg.goodput_margin)
        zse = self._z * se
        if d - zse > -cfg.margin and not goodput_worse:
            action, why = "advance", ""
        elif d + zse < -cfg.margin:
            action, why = "rollback", "reward"
        elif goodput_worse:
            action, why = "rollback", "goodput"
        elif cand >= cfg.max_outcomes_per_stage:
            action, why = "rollback", "inconclusive"
        else:
            action, why = "wait", ""
        chance = math.nan
        if action == "wait" and cfg.futility is not None and cfg.looks != "every":
            chance = self._pass_chance(d, se, cur, cand)
            if chance < cfg.futility:
                action, why = "rollback", "futility"
        return CanaryVerdict(action, d, se, ratio, log_se, estimator, why, look, chance)

    def _pass_chance(self, d: float, se: float, current: int, candidate: int) -> float:
        """Conditional power: the chance that the stage advances at its last look (``max_outcomes_per_
        stage`` candidate outcomes, the current arm at the stage's share) if the true difference is
        ``d``. The information grows as ``1 / (1 / n_candidate + 1 / n_current)``; with a fraction ``f``
        of the last look's already seen, the last estimate is normal with mean ``d`` and variance
        ``se_end^2 (1 - f)``. NaN before ``FUTILITY_FROM`` of it is in, at the last look, or where it
        cannot be computed (then nothing is stopped)."""
        cfg = self.config
        share = self._stage.share
        if not (math.isfinite(d) and math.isfinite(se) and se > 0 and 0 < share < 1):
            return math.nan
        if current < 1 or candidate < 1:
            return math.nan
        info_now = 1.0 / (1.0 / candidate + 1.0 / current)
        info_end = (1.0 - share) * cfg.max_outcomes_per_stage  # 1 / (1/max + share / ((1 - share) max))
        f = info_now / info_end
        if not FUTILITY_FROM <= f < 1.0:
            return math.nan
        se_end = se * math.sqrt(f)
        needed = -cfg.margin + self._z * se_end
        return 1.0 - NormalDist().cdf((needed - d) / (se_end * math.sqrt(1.0 - f)))

    def step(self) -> str:
        """Act on the statistics: advance, promote or roll back. Returns the state afterwards."""
        if self.state != "running":
            return self.state
        with self._lock:
            fault = self._fault
        if fault is not None:
            self._finish("rolled_back", f"candidate {self.candidate.version} faulted ({fault})")
            return self.state
        v = self.judge()
        if v.action == "wait":
            if v.look:
                with self._lock:
                    self._stage.looks_done = max(self._stage.looks_done, v.look)
            return self.state
        d, se = v.reward_difference, v.reward_se
        def finite(x: float) -> float | None:  # the history is JSON: no NaN (an inconclusive rollback)
            return x if math.isfinite(x) else None

        stats = {**self.stats(), "d": finite(d), "se": finite(se), "estimator": v.estimator,
                 "goodput_ratio": finite(v.goodput_ratio), "goodput_log_se": finite(v.goodput_log_se)}
        share = f"at share {self._stage.share:.0%}"
        if v.action == "rollback":
            if v.why == "reward":
                why = (f"candidate worse than current {share}: reward difference {d:.4f} "
                       f"+- {self._z * se:.4f} < -{self.config.margin} ({v.estimator})")
            elif v.why == "goodput":
                why = (f"candidate's goodput worse than current's {share}: ratio {v.goodput_ratio:.3f}, "
                       f"upper bound {v.goodput_ratio * math.exp(self._z * v.goodput_log_se):.3f} < "
                       f"{1.0 - (self.config.goodput_margin or 0.0):.3f}")
            elif v.why == "futility":
                why = (f"candidate cannot pass {share}: reward difference {d:.4f} (se {se:.4f}, "
                       f"{v.estimator}) leaves a {v.pass_chance:.1%} chance to advance by "
                       f"{self.config.max_outcomes_per_stage} outcomes < {self.config.futility:.0%}")
            else:
                why = f"no verdict after {self.config.max_outcomes_per_stage} outcomes"
            self._finish("rolled_back", why, stats)
            return self.state
        self.stages_passed.append(stats)
        nxt = self._stage.index + 1
        if nxt >= len(self.config.shares) or self.config.shares[nxt] >= 1.0:
            goodput = f", goodput x{v.goodput_ratio:.3f}" if math.isfinite(v.goodput_ratio) else ""
            reason = f"not worse at every stage (last: d={d:.4f}, se={se:.4f}{goodput})"
            self._finish("promoted", reason, stats)
            return self.state
        with self._lock:
            self._stage = self._new_stage(nxt)
        self._p.set_candidate(self.candidate, self._stage.share)
        logger.info(
            "canary: candidate %s advances to share %.0f%%", self.candidate.version, 100 * self._stage.share,
            extra={
                "event": "canary_advanced",
                "model_version": self.candidate.version,
                "share": self._stage.share,
            },
        )
        return self.state

    def abort(self, reason: str) -> None:
        """End the canary without promotion (e.g. a manual rollback)."""
        if self.state == "running":
            self._finish("rolled_back", reason)

    def _finish(self, state: str, reason: str, stats: dict[str, Any] | None = None) -> None:
        self.state = state
        self.reason = reason
        self.final_stats = stats
        if state == "promoted":
            self._p.promote_candidate()
            logger.info(
                "canary: candidate %s promoted: %s", self.candidate.version, reason,
                extra={"event": "canary_promoted", "model_version": self.candidate.version, "reason": reason},
            )
        else:
            if self._p.candidate is self.candidate:
                self._p.set_candidate(None)
            logger.warning(
                "canary: candidate %s rolled back: %s", self.candidate.version, reason,
                extra={
                    "event": "canary_rolled_back", "model_version": self.candidate.version, "reason": reason
                },
            )

    def _new_stage(self, index: int) -> _Stage:
        return _Stage(index, self.config.shares[index], len(self.config.size_strata_bytes) + 1)

    # ---------------------------------------------------------------------------------- views
    @property
    def share(self) -> float:
        """The current stage's candidate share (0 once finished)."""
        return self._stage.share if self.state == "running" else 0.0

    def stats(self) -> dict[str, Any]:
        """Per-arm statistics of the current stage."""
        bounds = self.config.size_strata_bytes
        with self._lock:
            out: dict[str, Any] = {
                "stage": self._stage.index,
                "share": self._stage.share,
                "arms": {arm: self._stage.totals(arm).as_dict() for arm in _ARMS},
            }
            if bounds:
                out["strata"] = [
                    {
                        "below_bytes": bounds[k] if k < len(bounds) else None,
                        **{arm: self._stage.by_stratum[arm][k].as_dict() for arm in _ARMS},
                    }
                    for k in range(len(bounds) + 1)
                ]
            return out


def holdout_split(n: int, fraction: float, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices (train, held back) of ``n`` rows: a seeded random ``fraction`` is held back."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    k = round(n * fraction)
    return np.sort(idx[k:]), np.sort(idx[:k])


def holdout_newest(n: int, fraction: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices (train, held back) of ``n`` rows in time order: the newest ``round(n * fraction)`` are held
    back. Why the newest: the gate should judge a candidate on the network as it is now, and rows that
    follow every training row cannot leak their neighbours' outcomes into training."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    k = round(n * fraction)
    idx = np.arange(n, dtype=np.int64)
    return idx[: n - k], idx[n - k :]


def take(batch: TransitionBatch, rows: Sequence[int] | npt.NDArray[np.int64]) -> TransitionBatch:
    """The rows ``rows`` of ``batch`` (copies, propensities and guard verdicts included)."""
    r = np.asarray(rows, dtype=np.int64)
    return TransitionBatch(
        states=batch.states[r],
        actions=batch.actions[r],
        rewards=batch.rewards[r],
        next_states=batch.next_states[r],
        dones=batch.dones[r],
        propensities=batch.propensities[r] if batch.propensities is not None else None,
        guard_verdicts=batch.guard_verdicts[r] if batch.guard_verdicts is not None else None,
    )
