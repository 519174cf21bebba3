"""Fine-tuning a deployed Q-network on logged production experience plus simulator rollouts.

The online learner (:mod:`itp.learning.learner`) runs one :class:`FinetuneJob` per retrain, by default in
a separate, niced process (``python -m itp.training.finetune JOB.json RESULT.json``) with one torch
thread, so the decision path never waits for it. A job:

1. **Starts from the current model.** The deployed ONNX graph is the BatchNorm-folded chain
   ``Gemm -> Relu -> Gemm -> Relu -> Gemm -> Relu -> Gemm`` (:mod:`itp.training.export`), so the network is
   rebuilt as a :class:`~itp.training.network.QNetwork` whose Linear layers take the folded weights and
   whose BatchNorm layers are exact identities (gamma 1, beta 0, running mean 0, running variance
   ``1 - eps``) and stay frozen (eval mode) while training, as does Dropout: the rebuilt network computes
   exactly the deployed function, the losses below are those of the function that will be served, and
   fine-tuning moves only the dense weights. Why Dropout too: trained through dropout noise, the
   adaptation benchmark's first retrain on the lossy path (seed 0) moved the served Q-values by 0.33 on
   average where the same job without it moved them by 0.18, and the support penalty below kept the
   candidate's greedy action in the exploration set on 73-77 % of the states with it, 98-99 % without.
   Without a current model a fresh network (seeded) is trained.
2. **Fills a prioritized replay** (:class:`itp.replay.PrioritizedReplay`) with the logged transitions
   (the newest ``holdout_fraction`` held back for the gate) and ``sim_episodes`` simulator episodes played
   epsilon-greedily by the network being tuned (``itp/Partition-v0``), so rare production states are
   complemented by broad coverage. The simulator runs on **physics fitted to the deployment** when the job
   carries ``transport_params`` (the calibrator's pooled fit; :mod:`itp.learning.fitted_physics`), so the
   rollouts do not pull the model back to the built-in fresh-connection physics.
3. **Takes ``steps`` Double-DQN gradient steps** with the training pipeline's own update
   (``itp.training.dqn``: Huber TD loss weighted by PER importance weights, gradient clipping, Polyak
   target), from the same hyper-parameters (:class:`~itp.training.config.TrainConfig`), plus an **anchor
   penalty** that keeps what the deployed model knew::

       loss = TD loss + anchor_weight * mean_i v_i * mean_{a != a_i} (Q(s_i, a) - Q_anchor(s_i, a))^2

   ``Q_anchor`` the deployed (base) model, frozen; ``v_i`` the row's PER importance weight (as in its TD
   term, so both stay on one scale); the logged action ``a_i`` is left to the TD term. Why: the logs hold
   a few thousand rows of one network and mostly one action per state; unregularised steps on them move
   Q-values of states and actions the logs say nothing about (function approximation), so the greedy
   policy drifts where nothing was learned. The penalty is an L2 trust region in function space (as in
   distillation / policy-regularised fine-tuning): where the data carry information the TD term wins,
   elsewhere the model stays near what it was. The weight trades keeping against learning (a strong
   anchor also blocks what exploration found; measured in ``docs/lifecycle.md``); ``anchor_weight = 0``
   disables it; without a base model there is no anchor.

   A second penalty keeps the candidate inside the deployed model's exploration set, the actions on which
   the off-policy gate can judge it. With ``S(s)`` the base model's ``k`` best actions at ``s`` (``k`` the
   gate's ``target_top_k``, the deployment's ``explore_top_k``)::

       support_weight * mean_i v_i * sum_{a not in S(s_i)} relu(Q(s_i, a) - min_{b in S} Q(s_i, b) + 0.01)

   An action outside the set may not climb to within 0.01 of the set's lowest Q-value, so the candidate's
   own ``k`` best stay those ``k`` actions, reordered only by what the logs show about them. Both sides
   of the hinge carry gradients (with the set's floor held constant, pushing the outside actions down
   dragged the whole network down with them: Q-values moved by 26 on average). Why: the gate rejects a
   candidate that puts more than ``max_unsupported_share`` of its choices outside the behaviour policy's
   support, and fine-tunes without this penalty put 18-40 % there (``docs/lifecycle.md``). Off with
   ``support_weight = 0``, without a base model, or when ``k`` is None or 15.
4. **Exports** the candidate with :func:`itp.training.export.export_model` (folded, verified against
   torch) and runs the **offline gate** (:func:`itp.learning.rollout.offline_gate`) against the current
   model on the held-back logged rows (off-policy when they carry propensities) and, when used, the
   simulator on the same fitted physics.

Determinism: a job is repeatable for its seed (torch seeded, deterministic algorithms, one thread,
episode seeds derived with ``numpy.random.SeedSequence``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from itp.actions import NUM_ACTIONS
from itp.replay import PrioritizedReplay, SampleBatch
from itp.ring import TransitionBatch
from itp.state import NUM_FEATURES
from itp.training.config import TrainConfig
from itp.training.dqn import LearnerState, batch_tensors, gradient_step, torch_settings
from itp.training.export import export_model
from itp.training.network import QNetwork

__all__ = [
    "FinetuneCancelled",
    "FinetuneJob",
    "load_batch",
    "main",
    "network_from_onnx",
    "run_finetune",
    "save_batch",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneJob:
    """One retrain (JSON-serialisable: paths are strings).

    Attributes:
        output: the candidate ``.onnx`` to write (metadata beside it).
        version: semantic version of the candidate.
        base_model: the current model's ``.onnx`` (None: train a fresh network).
        store: the experience store (SQLite) to read logged transitions from (None: simulator only).
        upto_id: use store rows with ``id <= upto_id`` (what was committed when the job was made).
        logged_rows: newest logged rows to use (train + held back).
        holdout_fraction: share of those rows held back for the gate (seeded split), in [0, 1).
        steps: gradient steps (>= 1).
        batch_size: transitions per step.
        lr: Adam learning rate (smaller than from scratch: the network is already trained).
        gamma: discount (the pipeline's).
        sim_episodes: simulator episodes added to the replay (>= 0).
        sim_tasks_per_episode: tasks per simulator episode.
        sim_epsilon: exploration rate of the simulator rollouts.
        seed: seed of everything.
        num_threads: torch threads (1: bounded CPU).
        trace_files: trace-driven rollouts and gate episodes from these files (empty: synthetic).
        gate: :class:`itp.learning.rollout.GateConfig` fields (``sim_config`` excluded).
        anchor_weight: weight of the penalty toward the base model's Q-values (>= 0; 0: none).
        support_weight: weight of the penalty that keeps the candidate's ``k`` best actions those of the
            base model (``k``: ``gate["target_top_k"]``; >= 0; 0: none; module docstring).
        transport_params: fitted :class:`itp.calibration.TransportParams` fields (None: the built-in
            physics) for the simulator rollouts and the simulator gate.
        stream_efficiencies: each stream's fitted efficiency (one per stream, each > 0; None: every
            stream alike), used with ``transport_params`` (``itp.learning.fitted_physics``).
        sender_transport_params: the transport parameters the deployment's partitioner splits and
            predicts with, one :class:`itp.transport.TransportParams`'s fields per stream (4; None: the
            defaults): the simulator's sender (``SimConfig.sender_transport_params``) in the rollouts and
            the simulator gate, so the rollouts' chunks and rewards and the gate's episodes are those of
            the policy as deployed (the learner fills in the partitioner's).
    """

    output: str
    version: str
    base_model: str | None = None
    store: str | None = None
    upto_id: int = 0
    logged_rows: int = 50_000
    holdout_fraction: float = 0.1
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-4
    gamma: float = 0.2
    sim_episodes: int = 20
    sim_tasks_per_episode: int = 64
    sim_epsilon: float = 0.1
    seed: int = 0
    num_threads: int = 1
    trace_files: tuple[str, ...] = ()
    gate: dict[str, Any] = field(default_factory=dict)
    anchor_weight: float = 0.3
    support_weight: float = 1.0
    transport_params: dict[str, float] | None = None
    stream_efficiencies: tuple[float, ...] | None = None
    sender_transport_params: tuple[dict[str, float], ...] | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "sim_tasks_per_episode", "num_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FinetuneJob.{name} must be an int >= 1, got {v!r}")
        if (
            isinstance(self.sim_episodes, bool)
            or not isinstance(self.sim_episodes, int)
            or self.sim_episodes < 0
        ):
            raise ValueError(f"FinetuneJob.sim_episodes must be an int >= 0, got {self.sim_episodes!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"FinetuneJob.lr must be a finite number > 0, got {self.lr!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"FinetuneJob.holdout_fraction must be in [0, 1), got {self.holdout_fraction!r}")
        if not 0.0 <= self.sim_epsilon <= 1.0:
            raise ValueError(f"FinetuneJob.sim_epsilon must be in [0, 1], got {self.sim_epsilon!r}")
        for name in ("anchor_weight", "support_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
                raise ValueError(f"FinetuneJob.{name} must be a finite number >= 0, got {w!r}")
        k = self.gate.get("target_top_k") if isinstance(self.gate, dict) else None
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= NUM_ACTIONS):
            raise ValueError(f"FinetuneJob.gate['target_top_k'] must be None or an int in 1..15, got {k!r}")
        if self.transport_params is not None:
            from itp.calibration import TransportParams

            try:
                TransportParams(**self.transport_params)
            except TypeError as exc:
                raise ValueError(f"FinetuneJob.transport_params {self.transport_params!r}: {exc}") from exc
        self._sender_params()
        if self.stream_efficiencies is not None:
            try:
                self.sim_config()
            except ValueError as exc:
                raise ValueError(f"FinetuneJob.{exc}") from exc

    def _sender_params(self) -> tuple[Any, ...] | None:
        """``sender_transport_params`` as 4 TransportParams (None when unset).

        Raises:
            ValueError: not 4 mappings of TransportParams fields, or a bad field (named).
        """
        rows = self.sender_transport_params
        if rows is None:
            return None
        from itp.transport import TransportParams

        shaped = isinstance(rows, (tuple, list)) and len(rows) == 4
        if not shaped or not all(isinstance(r, dict) for r in rows):
            raise ValueError(
                f"FinetuneJob.sender_transport_params must be None or 4 mappings of TransportParams "
                f"fields, got {rows!r}"
            )
        try:
            return tuple(TransportParams(**r) for r in rows)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"FinetuneJob.sender_transport_params {rows!r}: {exc}") from exc

    def sim_config(self) -> Any:
        """The ``itp.sim.SimConfig`` of the rollouts and the simulator gate (fitted physics if given,
        with the deployment's sender)."""
        config = self._physics_config()
        sender = self._sender_params()
        return config if sender is None else dataclasses.replace(config, sender_transport_params=sender)

    def _physics_config(self) -> Any:
        """The simulator's physics: fitted to the deployment when the job carries its parameters."""
        from itp.sim.physics import SimConfig

        base = SimConfig(tasks_per_episode=self.sim_tasks_per_episode)
        if self.transport_params is None and self.stream_efficiencies is None:
            return base
        from itp.calibration import DEFAULT_TRANSPORT_PARAMS, TransportParams
        from itp.learning.fitted_physics import sim_config_from_params

        params = (
            TransportParams(**self.transport_params) if self.transport_params is not None
            else DEFAULT_TRANSPORT_PARAMS
        )
        return sim_config_from_params(params, base, self.stream_efficiencies)

    def to_json(self) -> str:
        """The job as JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FinetuneJob:
        """Inverse of :meth:`to_json` (validated)."""
        data = json.loads(text)
        data["trace_files"] = tuple(data.get("trace_files", ()))
        if data.get("stream_efficiencies") is not None:
            data["stream_efficiencies"] = tuple(data["stream_efficiencies"])
        if data.get("sender_transport_params") is not None:
            data["sender_transport_params"] = tuple(data["sender_transport_params"])
        return cls(**data)


def save_batch(path: str | Path, batch: TransitionBatch) -> None:
    """Write transitions as an uncompressed ``.npz`` (plain arrays; never pickled; propensities and
    guard verdicts when the batch has them)."""
    arrays: dict[str, Any] = {
        "states": batch.states,
        "actions": batch.actions,
        "rewards": batch.rewards,
        "next_states": batch.next_states,
        "dones": batch.dones,
    }
    if batch.propensities is not None:
        arrays["propensities"] = batch.propensities
    if batch.guard_verdicts is not None:
        arrays["guard_verdicts"] = batch.guard_verdicts
    np.savez(Path(path), **arrays)


def load_batch(path: str | Path) -> TransitionBatch:
    """Read :func:`save_batch`'s file (``allow_pickle=False``)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return TransitionBatch(
            states=z["states"].astype(np.float32),
            actions=z["actions"].astype(np.int64),
            rewards=z["rewards"].astype(np.float32),
            next_states=z["next_states"].astype(np.float32),
            dones=z["dones"].astype(np.float32),
            propensities=z["propensities"].astype(np.float32) if "propensities" in z.files else None,
            guard_verdicts=z["guard_verdicts"].astype(np.int32) if "guard_verdicts" in z.files else None,
        )


class _FrozenNormQNetwork(QNetwork):
    """A QNetwork whose BatchNorm and Dropout layers stay in eval mode (identities) even in ``train()``:
    training sees the function that is served (module docstring)."""

    def train(self, mode: bool = True) -> _FrozenNormQNetwork:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.Dropout)):
                m.eval()
        return self


def network_from_onnx(path: str | Path) -> QNetwork:
    """Rebuild the deployed (folded) network as a trainable QNetwork computing the same function.

    Raises:
        ValueError: the graph is not the exported 4-layer chain of the QNetwork's shapes.
    """
    from itp.model_loading import _dense_chain

    chain = _dense_chain(Path(path))
    if chain is None:
        raise ValueError(f"cannot fine-tune {path}: it is not the exported Gemm/Relu chain")
    weights, biases = chain
    net = _FrozenNormQNetwork()
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    norms = [m for m in net.layers if isinstance(m, nn.BatchNorm1d)]
    if len(weights) != len(linears) or any(
        tuple(w.shape) != tuple(lin.weight.shape) for w, lin in zip(weights, linears, strict=True)
    ):
        shapes = [tuple(w.shape) for w in weights]
        raise ValueError(f"cannot fine-tune {path}: layer shapes {shapes} are not the QNetwork's")
    with torch.no_grad():
        for lin, w, b in zip(linears, weights, biases, strict=True):
            lin.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
            lin.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32)))
        for bn in norms:
            bn.weight.fill_(1.0)
            bn.bias.fill_(0.0)
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) == 1: an exact identity
    net.eval()
    return net


def _episode_seed(seed: int, k: int) -> int:
    state = np.random.SeedSequence([seed, 77, k]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _simulator_rollouts(net: QNetwork, replay: PrioritizedReplay, job: FinetuneJob) -> int:
    from itp.sim.env import PartitionEnv
    from itp.sim.physics import SimConfig

    config: SimConfig = job.sim_config()
    env = PartitionEnv(config, trace_files=list(job.trace_files))
    rng = np.random.default_rng(_episode_seed(job.seed, 2**31))
    x = torch.empty((1, NUM_FEATURES), dtype=torch.float32)
    added = 0
    net.eval()
    for k in range(job.sim_episodes):
        obs, _ = env.reset(seed=_episode_seed(job.seed, k))
        while True:
            if rng.random() < job.sim_epsilon:
                action = int(rng.integers(NUM_ACTIONS))
            else:
                with torch.no_grad():
                    x[0] = torch.from_numpy(obs)
                    action = int(net(x)[0].argmax())
            nxt, reward, terminated, truncated, _ = env.step(action)
            replay.add(obs, action, float(reward), nxt, bool(terminated))
            added += 1
            obs = nxt
            if terminated or truncated:
                break
    return added


def _frozen_copy(net: QNetwork) -> QNetwork:
    """A frozen copy of ``net`` as it is now (the deployed model), for the penalties."""
    anchor = copy.deepcopy(net)
    anchor.eval()
    for p in anchor.parameters():
        p.requires_grad_(False)
    return anchor


def _anchor_penalty(
    anchor: QNetwork, weight: float, tensors: dict[str, torch.Tensor]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The anchor penalty (module docstring) toward ``Q_anchor`` = ``anchor`` (:func:`_frozen_copy`);
    None for ``weight == 0``.

    Per sampled row ``i`` (PER importance weight ``v_i``, logged action ``a_i``)::

        weight * mean_i v_i * mean_{a != a_i} (Q(s_i, a) - Q_anchor(s_i, a))^2

    The logged action is left to the TD term (the data speak for it), and each row carries the same
    importance weight as its TD term, so the two stay on one scale whatever the replay's priorities (with
    unweighted rows the penalty outweighs importance-weighted TD terms and nothing is learned).
    ``tensors`` are the zero-copy views of the sample batch (:func:`itp.training.dqn.batch_tensors`), read
    at each call.
    """
    if weight == 0.0:
        return None
    actions, is_weights = tensors["actions"], tensors["weights"]

    def penalty(states: torch.Tensor, q_all: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q_anchor = anchor(states)
            others = torch.ones_like(q_all)
            others.scatter_(1, actions.unsqueeze(1), 0.0)
        per_row = ((q_all - q_anchor) ** 2 * others).sum(dim=1) / (q_all.shape[1] - 1)
        return weight * torch.mean(is_weights * per_row)

    return penalty


#: How far (Q units) an action outside the exploration set is kept below the set's lowest Q-value.
SUPPORT_GAP = 0.01


def _support_penalty(
    anchor: QNetwork, weight: float, top_k: int | None, tensors: dict[str, torch.Tensor]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The support penalty (module docstring): the ``anchor``'s ``top_k`` best actions at each replayed
    state stay the candidate's ``top_k`` best. None when off (``weight == 0``, or ``top_k`` None or 15).
    """
    if weight == 0.0 or top_k is None or top_k >= NUM_ACTIONS:
        return None
    is_weights = tensors["weights"]

    def penalty(states: torch.Tensor, q_all: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            best = torch.topk(anchor(states), top_k, dim=1).indices
            inside = torch.zeros_like(q_all, dtype=torch.bool)
            inside.scatter_(1, best, True)
        floor = q_all.masked_fill(~inside, float("inf")).min(dim=1, keepdim=True).values
        excess = torch.relu(q_all - floor + SUPPORT_GAP).masked_fill(inside, 0.0)
        return weight * torch.mean(is_weights * excess.sum(dim=1))

    return penalty


def _combined(
    *penalties: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The sum of the penalties that are on (None when none is)."""
    on = [p for p in penalties if p is not None]
    if len(on) <= 1:
        return on[0] if on else None

    def penalty(states: torch.Tensor, q_all: torch.Tensor) -> torch.Tensor:
        total = on[0](states, q_all)
        for p in on[1:]:
            total = total + p(states, q_all)
        return total

    return penalty


class FinetuneCancelled(RuntimeError):
    """The job was cancelled through its ``should_stop`` callback."""


def run_finetune(job: FinetuneJob, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run a job (see the module docstring); returns a JSON-ready result with the gate verdict.

    Args:
        job: what to do.
        should_stop: polled between gradient steps; when it returns True the job stops
            (:class:`FinetuneCancelled`). Lets a learner running the job in a thread cancel it.

    Raises:
        ValueError: the base model cannot be rebuilt, or there is nothing to train on.
        FinetuneCancelled: ``should_stop()`` returned True.
    """
    t0 = time.perf_counter()
    with torch_settings(job.num_threads):
        torch.manual_seed(job.seed)
        net = network_from_onnx(job.base_model) if job.base_model else _FrozenNormQNetwork()
        if not job.base_model:
            net.eval()
        target = _FrozenNormQNetwork()
        target.load_state_dict(net.state_dict())
        target.eval()
        config = TrainConfig(
            batch_size=job.batch_size,
            lr=job.lr,
            gamma=job.gamma,
            seed=job.seed,
            num_threads=job.num_threads,
            buffer_capacity=max(1, 1 << 17),
            progress=False,
        )
        logged, holdout = _logged_experience(job)
        n_logged = len(logged) if logged is not None else 0
        capacity = max(1, n_logged + job.sim_episodes * job.sim_tasks_per_episode)
        replay = PrioritizedReplay(capacity, alpha=config.per_alpha, seed=job.seed)
        if logged is not None and n_logged:
            replay.add_batch(logged.states, logged.actions, logged.rewards, logged.next_states, logged.dones)
        n_sim = _simulator_rollouts(net, replay, job)
        if len(replay) < job.batch_size:
            raise ValueError(
                f"only {len(replay)} transitions to fine-tune on, batch_size is {job.batch_size}"
            )
        optimizer = torch.optim.Adam(net.parameters(), lr=job.lr)
        state = LearnerState(online=net, target=target, optimizer=optimizer)
        batch = SampleBatch.allocate(job.batch_size)
        tensors = batch_tensors(batch)
        penalty = None
        if job.base_model:
            anchor = _frozen_copy(net)
            penalty = _combined(
                _anchor_penalty(anchor, job.anchor_weight, tensors),
                _support_penalty(anchor, job.support_weight, job.gate.get("target_top_k"), tensors),
            )
        losses = []
        for step in range(job.steps):
            if should_stop is not None and step % 16 == 0 and should_stop():
                raise FinetuneCancelled(f"fine-tuning cancelled after {step} of {job.steps} steps")
            beta = config.per_beta_start + (config.per_beta_end - config.per_beta_start) * step / job.steps
            losses.append(gradient_step(state, config, replay, batch, tensors, beta, penalty=penalty))
        net.eval()
        training = {
            "kind": "finetune",
            "base_model": job.base_model,
            "logged_transitions": n_logged,
            "simulator_transitions": n_sim,
            "steps": job.steps,
            "final_loss": float(np.mean(losses[-max(1, job.steps // 10) :])),
            "anchor_weight": job.anchor_weight if job.base_model else 0.0,
            "support_weight": job.support_weight if job.base_model else 0.0,
            "transport_params": job.transport_params,
            "stream_efficiencies": list(job.stream_efficiencies) if job.stream_efficiencies else None,
            "job": dataclasses.asdict(job),
            "torch_version": torch.__version__,
        }
        out = Path(job.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        export_model(net, out, version=job.version, training=training, seed=job.seed)
    gate = _run_gate(job, holdout)
    return {
        "output": str(out),
        "version": job.version,
        "logged_transitions": n_logged,
        "simulator_transitions": n_sim,
        "steps": job.steps,
        "final_loss": training["final_loss"],
        "anchor_weight": training["anchor_weight"],
        "support_weight": training["support_weight"],
        "transport_params": job.transport_params,
        "stream_efficiencies": training["stream_efficiencies"],
        "wall_time_s": time.perf_counter() - t0,
        "gate": gate,
    }


def _logged_experience(job: FinetuneJob) -> tuple[TransitionBatch | None, TransitionBatch | None]:
    """(training rows, held-back rows) from the store: the newest ``holdout_fraction`` is held back (the
    network as it is now; no training row follows a held-back one)."""
    if not job.store:
        return None, None
    from itp.learning.rollout import holdout_newest, take
    from itp.learning.store import ExperienceStore

    with ExperienceStore(job.store) as store:
        rows = store.upto(job.upto_id, job.logged_rows)
    if len(rows) == 0:
        return None, None
    train_idx, held_idx = holdout_newest(len(rows), job.holdout_fraction)
    return take(rows, train_idx), (take(rows, held_idx) if len(held_idx) else None)


def _run_gate(job: FinetuneJob, holdout: TransitionBatch | None) -> dict[str, Any]:
    from itp.learning.rollout import GateConfig, gate_from_files

    cfg = GateConfig(**{**job.gate, "trace_files": tuple(job.trace_files)})
    cfg = dataclasses.replace(cfg, sim_config=job.sim_config())
    return gate_from_files(job.output, job.base_model, holdout, cfg).as_dict()


def main(argv: list[str] | None = None, should_stop: Callable[[], bool] | None = None) -> int:
    """``python -m itp.training.finetune JOB.json RESULT.json``: run a job, write its result atomically.

    Exit status 0 on success, 1 on failure (the result file then holds ``{"error": ...}``).
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m itp.training.finetune JOB.json RESULT.json\n")
        return 2
    job_path, result_path = Path(args[0]), Path(args[1])
    try:
        result = run_finetune(FinetuneJob.from_json(job_path.read_text("utf-8")), should_stop)
        status = 0
    except FinetuneCancelled as exc:
        logger.info("%s", exc)
        result = {"error": str(exc), "cancelled": True}
        status = 1
    except Exception as exc:
        logger.exception("fine-tuning failed")
        result = {"error": f"{type(exc).__name__}: {exc}"}
        status = 1
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str), "utf-8")
    os.replace(tmp, result_path)
    return status


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s finetune %(levelname)s %(message)s")
    raise SystemExit(main())
