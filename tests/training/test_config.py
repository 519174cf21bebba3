"""TrainConfig: every bad field is rejected by name, the schedules follow the documented formulas, and
the dict round trip is exact and JSON-safe."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any

import pytest

pytest.importorskip("torch")

from itp.training.config import TrainConfig

# (field, bad value) pairs: each must raise ValueError/TypeError whose message names the field and the
# value. Ints reject bools and floats; floats reject bools, NaN and infinity; strings are checked.
BAD_VALUES: list[tuple[str, Any]] = [
    *[(name, value)
      for name in ("episodes", "batch_size", "buffer_capacity", "train_frequency", "target_update_steps",
                   "beta_anneal_episodes", "epsilon_decay_episodes", "val_episodes", "num_threads")
      for value in (0, -3, 2.5, True, "4")],
    *[(name, value)
      for name in ("seed", "learning_starts", "checkpoint_every", "val_every", "eval_episodes",
                   "eval_seed", "split_seed")
      for value in (-1, 1.0, False, None)],
    ("gamma", 1.0), ("gamma", -0.1), ("gamma", math.nan), ("gamma", True),
    ("per_alpha", 1.01), ("per_alpha", -0.5), ("per_alpha", math.inf),
    ("per_beta_start", -0.1), ("per_beta_start", 1.5),
    ("per_beta_end", 1.2), ("per_beta_end", math.nan),
    ("epsilon_start", 1.1), ("epsilon_end", -0.01), ("epsilon_start", "1"),
    ("tau", 1.5), ("tau", -0.1),
    ("eval_fraction", 1.0), ("eval_fraction", -0.2),
    *[(name, value) for name in ("lr", "max_grad_norm", "huber_delta")
      for value in (0.0, -1e-3, math.inf, math.nan, True, "0.1")],
    ("target_update", "soft"), ("target_update", ""),
    ("model_name", ""), ("model_name", "a/b"), ("model_name", ".hidden"),
    ("model_version", "1.0"), ("model_version", "v1.0.0"), ("model_version", ""),
    *[(name, value)
      for name in ("prioritized", "counterfactual", "progress")
      for value in ("false", 1, None)],
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_every_bad_field_is_named(name: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        TrainConfig(**{name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message or str(value) in message


def test_epsilon_above_start_is_rejected_naming_both() -> None:
    with pytest.raises(ValueError, match=r"epsilon_end .*epsilon_start"):
        TrainConfig(epsilon_start=0.5, epsilon_end=0.6)


def test_batch_larger_than_the_buffer_is_rejected() -> None:
    # Such a run would never take a gradient step (the buffer never holds a batch).
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=64, buffer_capacity=32)


@pytest.mark.parametrize("name", ["dqn_best", "training_history", "dqn_checkpoint_10"])
def test_model_name_that_collides_with_another_output_file_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="model_name"):
        TrainConfig(model_name=name)


def test_defaults_are_valid_and_the_issue_schedules() -> None:
    cfg = TrainConfig()
    assert (cfg.epsilon_start, cfg.epsilon_end) == (1.0, 0.01)
    assert (cfg.per_beta_start, cfg.per_beta_end) == (0.4, 1.0)
    assert cfg.batch_size == 32 and cfg.seed == 0 and cfg.prioritized


def test_epsilon_schedule_decays_linearly_from_one_to_the_floor() -> None:
    cfg = TrainConfig(epsilon_decay_episodes=100)
    assert cfg.epsilon(0) == 1.0
    assert cfg.epsilon(50) == pytest.approx(0.505)
    assert cfg.epsilon(100) == pytest.approx(0.01)
    assert cfg.epsilon(10_000) == pytest.approx(0.01)  # the floor holds forever
    values = [cfg.epsilon(e) for e in range(150)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    steps = [a - b for a, b in itertools.pairwise(values[:101])]
    assert max(steps) - min(steps) < 1e-12  # linear


def test_beta_schedule_anneals_from_start_to_one() -> None:
    cfg = TrainConfig(beta_anneal_episodes=200)
    assert cfg.beta(0) == 0.4
    assert cfg.beta(100) == pytest.approx(0.7)
    assert cfg.beta(200) == 1.0
    assert cfg.beta(5_000) == 1.0
    values = [cfg.beta(e) for e in range(300)]
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_schedules_depend_on_the_global_episode_only() -> None:
    # A resumed run asks for a different number of episodes; its schedule must be the same curve.
    a, b = TrainConfig(episodes=10), TrainConfig(episodes=990)
    assert [a.epsilon(e) for e in range(0, 1200, 7)] == [b.epsilon(e) for e in range(0, 1200, 7)]
    assert [a.beta(e) for e in range(0, 1200, 7)] == [b.beta(e) for e in range(0, 1200, 7)]


def test_dict_round_trip_is_exact_and_json_safe() -> None:
    cfg = TrainConfig(episodes=7, lr=3e-4, traces_dir="/x/y", counterfactual=True, target_update="hard")
    data = json.loads(json.dumps(cfg.to_dict(), allow_nan=False))
    assert TrainConfig.from_dict(data) == cfg
    assert set(data) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_from_dict_names_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"\['bogus', 'epsilons'\]"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "epsilons": 1, "bogus": 2})


def test_replace_validates_and_leaves_the_original_untouched() -> None:
    cfg = TrainConfig(episodes=5)
    assert cfg.replace(episodes=9).episodes == 9 and cfg.episodes == 5
    with pytest.raises(ValueError, match="episodes"):
        cfg.replace(episodes=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.episodes = 6  # type: ignore[misc]


def test_learning_rate_schedule_is_a_cosine_to_lr_end() -> None:
    constant = TrainConfig(lr=1e-3)
    assert constant.learning_rate(0) == constant.learning_rate(10**6) == 1e-3
    cfg = TrainConfig(lr=1e-3, lr_end=1e-5, lr_decay_episodes=100)
    assert cfg.learning_rate(0) == pytest.approx(1e-3)
    assert cfg.learning_rate(50) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cfg.learning_rate(100) == cfg.learning_rate(500) == pytest.approx(1e-5)
    lrs = [cfg.learning_rate(e) for e in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    for bad in (-1.0, 2e-3, math.nan):
        with pytest.raises(ValueError, match="lr_end must be None or in"):
            TrainConfig(lr=1e-3, lr_end=bad)
