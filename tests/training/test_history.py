"""Training history: exact JSON round trip (NaN losses as null), foreign or damaged files rejected by
name, atomic save, and the PNG plot rendered for histories with and without validation points."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from itp.training.history import EpisodeRecord, TrainingHistory, _moving_average, plot_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_history(episodes: int = 6, validate_every: int = 2) -> TrainingHistory:
    history = TrainingHistory()
    for e in range(1, episodes + 1):
        history.add_episode(
            EpisodeRecord(
                episode=e,
                reward=10.0 + 0.5 * e,
                mean_loss=math.nan if e == 1 else 1.0 / e,  # no gradient step in the first episode
                epsilon=1.0 - 0.1 * e,
                beta=0.4 + 0.05 * e,
                steps=64 * e,
                mean_goodput_bps=2e8 + 1e6 * e,
                mean_completion_time_s=3.0 - 0.1 * e,
            )
        )
        if validate_every and e % validate_every == 0:
            history.add_validation(
                e,
                {"mean_goodput_bps": 3e8 + e, "p95_completion_time_s": 9.5},
                {"heuristic": {"mean_goodput_bps": 4e8, "p95_completion_time_s": 8.0},
                 "round-robin": {"mean_goodput_bps": 2e8, "p95_completion_time_s": 20.0}},
            )
    return history


def records_equal(a: EpisodeRecord, b: EpisodeRecord) -> bool:
    """Field-wise equality where NaN equals NaN."""
    for name, x in vars(a).items():
        y = getattr(b, name)
        if not (x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))):
            return False
    return True


def test_round_trip_through_json_is_exact(tmp_path: Path) -> None:
    history = make_history()
    path = history.save(tmp_path / "training_history.json")
    assert path == tmp_path / "training_history.json"
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no leftover
    text = path.read_text("utf-8")
    data = json.loads(text)  # strict JSON: NaN would not even be valid here
    assert "NaN" not in text and data["episodes"][0]["mean_loss"] is None
    assert data["format"] == "itp-training-history" and data["format_version"] == 1
    loaded = TrainingHistory.load(path)
    assert len(loaded.episodes) == 6
    assert all(records_equal(a, b) for a, b in zip(history.episodes, loaded.episodes, strict=True))
    assert loaded.validation == history.validation
    assert [v["episode"] for v in loaded.validation] == [2, 4, 6]


def test_validation_values_are_stored_as_plain_floats() -> None:
    import numpy as np

    history = TrainingHistory()
    history.add_validation(np.int64(5), {"mean_goodput_bps": np.float32(1.5)},  # type: ignore[arg-type]
                           {"heuristic": {"mean_goodput_bps": np.float64(2.5)}})
    point = history.validation[0]
    assert type(point["episode"]) is int and type(point["policy"]["mean_goodput_bps"]) is float
    json.dumps(history.to_dict(), allow_nan=False)


def test_foreign_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"format": "something-else", "episodes": []}), "utf-8")
    with pytest.raises(ValueError, match="not a training history"):
        TrainingHistory.load(path)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["episodes"][1].pop("reward"), r"episodes\[1\] must have the fields"),
        (lambda d: d["episodes"][0].update(extra=1), r"episodes\[0\] must have the fields"),
        (lambda d: d["episodes"][2].update(steps="64"), r"episodes\[2\]\.steps"),
        (lambda d: d["episodes"][2].update(reward=[1.0]), r"episodes\[2\]\.reward"),
        (lambda d: d["episodes"].append(3), r"episodes\[6\]"),
        (lambda d: d["validation"][0].pop("policy"), r"validation\[0\]"),
    ],
)
def test_damaged_records_raise_value_error_naming_the_entry(mutate: object, match: str) -> None:
    data = make_history().to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=match):
        TrainingHistory.from_dict(data)


def test_moving_average_matches_the_windowed_mean() -> None:
    values = [3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 6.0]
    for window in (1, 3, 50):
        expected = [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
                    for i in range(len(values))]
        assert _moving_average(values, window) == pytest.approx(expected, rel=1e-12)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    history = make_history(validate_every=2)
    path = plot_history(history, tmp_path / "training_history.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_plot_of_an_empty_history_still_renders(tmp_path: Path) -> None:
    # Zero completed episodes and no validation (e.g. a run resumed with 0 new episodes, or val_every=0)
    # must not crash the trainer's save.
    path = plot_history(TrainingHistory(), tmp_path / "empty.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_truncated_keeps_the_prefix_and_leaves_the_original() -> None:
    history = make_history(6, validate_every=2)
    head = history.truncated(3)
    assert [r.episode for r in head.episodes] == [1, 2, 3]
    assert [v["episode"] for v in head.validation] == [2]
    assert len(history.episodes) == 6 and len(history.validation) == 3
    head.validation[0]["episode"] = 99
    assert history.validation[0]["episode"] == 2
