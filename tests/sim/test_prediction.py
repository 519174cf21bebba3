"""itp.sim.prediction: the prediction-error measurement shared by the calibration bench and tests."""

from __future__ import annotations

import pytest

from itp.sim import SimConfig
from itp.sim.prediction import prediction_errors

_NO_LOSS = SimConfig(loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0)


def test_same_seed_same_errors_and_one_per_task() -> None:
    a = prediction_errors(_NO_LOSS, calibrate=False, n_tasks=20, seed=5)
    b = prediction_errors(_NO_LOSS, calibrate=False, n_tasks=20, seed=5)
    c = prediction_errors(_NO_LOSS, calibrate=False, n_tasks=20, seed=6)
    assert len(a) == 20 and a == b and a != c
    assert all(e >= 0.0 for e in a)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n_tasks": 0}, "n_tasks"), ({"n_tasks": True}, "n_tasks"), ({"refit_every": 0}, "refit_every"),
     ({"refit_every": 2.5}, "refit_every")],
)
def test_bad_counts_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"calibrate": True, "n_tasks": 5, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=field):
        prediction_errors(_NO_LOSS, **args)  # type: ignore[arg-type]
