"""``itp train`` and ``training/train_dqn.py``: end to end in subprocesses on tiny budgets (train, resume,
evaluate), and the user errors in process (one stderr line, exit status, no traceback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from itp.cli import main
from itp.model_loading import load_model
from itp.model_metadata import metadata_path_for, read_metadata
from itp.replay import PrioritizedReplay
from itp.sim.traces import shipped_traces_dir
from itp.training import dqn

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train_dqn.py"
# Learning starts within the first episode so that two episodes also take gradient steps.
TINY = {"learning_starts": 32, "buffer_capacity": 4096, "val_episodes": 1, "epsilon_decay_episodes": 2}


Done = subprocess.CompletedProcess[str]


def start(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    """``python argv...`` with one torch thread (the networks are tiny and the machine is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> Done:
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the six shipped traces (4 train / 2 eval files)."""
    folder = tmp_path_factory.mktemp("traces")
    for f in shipped_traces_dir().glob("trace_*"):
        shutil.copy2(f, folder / f.name)
    return folder


def newest_resumable(out: Path) -> tuple[Path, int]:
    """The newest ``dqn_checkpoint_<k>`` stem that has its replay beside it, and k."""
    found = sorted((int(p.name.split("_")[-1].split(".")[0]), p)
                   for p in out.glob("dqn_checkpoint_*.replay.npz"))
    assert found, sorted(p.name for p in out.iterdir())
    k, replay = found[-1]
    return replay.with_name(f"dqn_checkpoint_{k}"), k


@pytest.fixture(scope="module")
def cli(traces: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Done]]:
    """Every subprocess run of this module, two at a time (both cores when they are free):

    1. ``python training/train_dqn.py --episodes 2 ...`` (progress bar on), beside ``itp train
       --episodes 500 --checkpoint-every 1 --no-progress``, which is SIGKILLed as soon as its second
       checkpoint file appears (a real crash, somewhere inside a checkpoint write);
    2. ``itp train --load-model <the killed run's newest checkpoint with a replay> --episodes 1
       --no-progress`` (resume), beside ``itp train --load-model <the script's model> --evaluate``.
    """
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY), "utf-8")
    script_out, killed_out = root / "script", root / "killed"
    script = start(str(SCRIPT), "--episodes", "2", "--batch-size", "16", "--lr", "0.002", "--seed", "3",
                   "--traces", str(traces), "--output", str(script_out), "--config", str(config),
                   "--checkpoint-every", "1", "--val-every", "1", "--eval-episodes", "1", cwd=root)
    killed = start("-m", "itp", "train", "--episodes", "500", "--batch-size", "16", "--seed", "4",
                   "--traces", str(traces), "--output", str(killed_out), "--config", str(config),
                   "--checkpoint-every", "1", "--val-every", "0", "--eval-episodes", "0", "--no-progress",
                   cwd=root)
    deadline = time.monotonic() + 240
    while (not (killed_out / "dqn_checkpoint_2.pt").exists() and killed.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    runs = {"script": (script_out, finish(script)), "killed": (killed_out, finish(killed))}

    resume_dir, eval_dir = root / "resume", root / "evaluate"
    resume_dir.mkdir()
    eval_dir.mkdir()
    stem, _ = newest_resumable(killed_out)
    resume = start("-m", "itp", "train", "--load-model", str(stem), "--episodes", "1",
                   "--output", str(resume_dir / "resumed"), "--eval-episodes", "0", "--no-progress",
                   cwd=resume_dir)
    evaluation = start("-m", "itp", "train", "--load-model", str(script_out / "dqn_final.pt"), "--evaluate",
                       "--traces", str(traces), "--eval-episodes", "1", cwd=eval_dir)
    runs["resume"] = (resume_dir, finish(resume))
    runs["evaluate"] = (eval_dir, finish(evaluation))
    return runs


@pytest.fixture(scope="module")
def script_run(cli: dict[str, tuple[Path, Done]]) -> tuple[Path, Done]:
    return cli["script"]


@pytest.mark.slow
def test_script_trains_exports_and_evaluates(script_run: tuple[Path, Done]
                                             ) -> None:
    out, proc = script_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "DQN ep 1-2" in proc.stderr  # the tqdm bar (stderr)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"model: {out / 'dqn_final.onnx'}"
    assert lines[1] == f"best validation model: {out / 'dqn_best.onnx'}"
    assert lines[2].startswith("episodes: 2, steps: 128, wall time: ")
    assert "Evaluation on held-out trace files:" in proc.stdout
    assert "| dqn_final |" in proc.stdout and "| oracle |" in proc.stdout
    for name in ("dqn_checkpoint_1.pt", "dqn_checkpoint_2.onnx", "dqn_final.pt", "dqn_final.onnx",
                 "dqn_final.metadata.json", "dqn_final.replay.npz", "dqn_best.onnx",
                 "training_history.json", "training_history.png"):
        assert (out / name).is_file(), name
    meta = read_metadata(metadata_path_for(out / "dqn_final.onnx"))
    cfg = meta.training["config"]
    # Flags and --config file both reached the TrainConfig.
    assert (cfg["episodes"], cfg["batch_size"], cfg["lr"], cfg["seed"]) == (2, 16, 0.002, 3)
    assert (cfg["learning_starts"], cfg["buffer_capacity"]) == (32, 4096)
    assert meta.training["gradient_steps"] == 128 - 32 + 1
    assert meta.evaluation["command"].startswith("train_dqn.py --episodes 2 --batch-size 16")


@pytest.mark.slow
def test_killed_training_leaves_only_complete_files(cli: dict[str, tuple[Path, Done]]) -> None:
    """Every file at its final name is whole: checkpoints load, models verify against their metadata's
    sha256, replays load (writes go to a temporary name first and are renamed)."""
    out, proc = cli["killed"]
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    checkpoints = sorted(out.glob("dqn_checkpoint_*.pt"))
    assert len(checkpoints) >= 2
    for path in checkpoints:
        k = int(path.stem.split("_")[-1])
        assert dqn.load_checkpoint(path)["episode"] == k
    for path in out.glob("*.onnx"):
        assert load_model(path).backend == "native"  # metadata present, sha256 matches
    replays = sorted(out.glob("*.replay.npz"))
    assert 1 <= len(replays) <= 2  # the newest, and its predecessor if killed before the clean-up
    for path in replays:
        k = int(path.name.split("_")[-1].split(".")[0])
        assert len(PrioritizedReplay.load(path)) == 64 * k


@pytest.mark.slow
def test_itp_train_resumes_the_killed_run(cli: dict[str, tuple[Path, Done]]) -> None:
    killed_out, _ = cli["killed"]
    stem, k = newest_resumable(killed_out)
    work, proc = cli["resume"]
    resumed = work / "resumed"
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar, no warning: the replay was beside the checkpoint
    assert f"episodes: {k + 1}, steps: {64 * (k + 1)}" in proc.stdout
    assert "Evaluation on held-out" not in proc.stdout
    history = json.loads((resumed / "training_history.json").read_text("utf-8"))
    assert [e["episode"] for e in history["episodes"]] == list(range(1, k + 2))
    meta = read_metadata(metadata_path_for(resumed / "dqn_final.onnx"))
    # The checkpoint's configuration carries over (seed, batch, --config fields); --episodes is "more".
    cfg = meta.training["config"]
    assert (cfg["seed"], cfg["batch_size"], cfg["learning_starts"], cfg["episodes"]) == (4, 16, 32, 1)
    assert meta.training["episodes_run"] == k + 1 and meta.training["resumed_from"] == str(stem)


@pytest.mark.slow
def test_itp_train_evaluates_a_saved_model(cli: dict[str, tuple[Path, Done]]) -> None:
    work, proc = cli["evaluate"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:] if line and not line[0].isdigit()]
    assert rows[:2] == ["dqn_final", "round-robin"] and "oracle" in rows
    assert "1 episodes x 64 tasks" in proc.stdout or "1 episode x 64 tasks" in proc.stdout
    assert not list(work.iterdir())  # evaluation writes nothing


# ----------------------------------------------------------------------------- user errors, in process


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 1) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("itp train: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("content", [b"", b"garbage" * 50, b"PK\x03\x04truncated zip"])
def test_corrupt_load_model_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              content: bytes) -> None:
    bad = tmp_path / "dqn_checkpoint_9.pt"
    bad.write_bytes(content)
    line = one_error_line(capsys, ["train", "--load-model", str(bad), "--episodes", "1",
                                   "--output", str(tmp_path / "out"), "--no-progress"])
    assert str(bad) in line and "corrupt or truncated" in line


def test_truncated_real_checkpoint_is_one_error_line(
    script_run: tuple[Path, Done], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, first = script_run
    assert first.returncode == 0, first.stderr
    data = (out / "dqn_final.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    line = one_error_line(capsys, ["train", "--load-model", str(cut), "--no-progress"])
    assert str(cut) in line and "corrupt or truncated" in line


def test_missing_load_model_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(capsys, ["train", "--load-model", str(tmp_path / "nope"), "--no-progress"])
    assert "checkpoint not found" in line and str(tmp_path / "nope.pt") in line


def test_evaluate_needs_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(capsys, ["train", "--evaluate"], status=2)
    assert "--evaluate needs --load-model" in line
    line = one_error_line(capsys, ["train", "--evaluate", "--load-model", str(tmp_path / "m")])
    assert "model not found" in line and str(tmp_path / "m.onnx") in line


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--gamma", "1.5"], "TrainConfig.gamma"),
        (["--model-version", "v2"], "TrainConfig.model_version"),
        (["--model-name", "dqn_best"], "TrainConfig.model_name"),
        (["--batch-size", "64", "--config", "{cfg}"], "TrainConfig.batch_size"),
    ],
)
def test_bad_configuration_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], field: str
) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"buffer_capacity": 32}), "utf-8")
    out = tmp_path / "out"
    argv = ["train", "--episodes", "1", "--output", str(out), "--no-progress",
            *[f.replace("{cfg}", str(cfg)) for f in flags]]
    line = one_error_line(capsys, argv)
    assert field in line
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"episodes": 1, "epsilon_decay": 5}', "no field(s) ['epsilon_decay']"),
        ('{"counterfactual": "false"}', "TrainConfig.counterfactual must be a bool"),
        ("[1, 2]", "must hold a JSON object"),
        ("{not json", "cannot read --config"),
    ],
)
def test_bad_config_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           content: str, expected: str) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(content, "utf-8")
    line = one_error_line(capsys, ["train", "--config", str(cfg), "--no-progress",
                                   "--output", str(tmp_path / "o")])
    assert expected in line


def test_missing_trace_folder_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(capsys, ["train", "--episodes", "1", "--traces", str(tmp_path / "none"),
                                   "--output", str(tmp_path / "o"), "--no-progress"])
    assert "trace directory not found" in line


@pytest.mark.parametrize("flags", [["--episodes", "0"], ["--batch-size", "x"], ["--lr", "-1"],
                                   ["--seed", "-2"], ["--threads", "0"]])
def test_bad_flag_values_are_usage_errors(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "Traceback" not in err


def test_help_documents_the_issue_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--episodes", "--batch-size", "--load-model", "--evaluate", "--traces", "--seed",
                 "--output", "--lr", "--no-progress", "--counterfactual", "--config"):
        assert flag in text, flag


def test_evaluate_holds_out_what_the_model_was_trained_on(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--evaluate`` recomputes the split with the model's own split settings (from its metadata), uses
    its evaluation seed, and never evaluates on a file listed as trained on."""
    from itp.sim.traces import discover_trace_files, split_trace_files
    from itp.training.export import export_model
    from itp.training.network import QNetwork

    train_files, eval_files = split_trace_files(discover_trace_files(traces), eval_fraction=0.5, seed=7)
    assert len(eval_files) == 3  # not the default split's 2 files
    model = tmp_path / "m.onnx"
    config = {"eval_fraction": 0.5, "split_seed": 7, "eval_seed": 11}
    export_model(QNetwork().eval(), model, version="1.0.0", training={
        "config": config, "train_trace_files": [f.name for f in [*train_files, eval_files[0]]]})
    argv = ["train", "--load-model", str(model), "--evaluate", "--traces", str(traces),
            "--eval-episodes", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 episodes x 64 tasks, seed 11, trace mode: 2 trace files" in out  # 3 held out - 1 trained on
    export_model(QNetwork().eval(), model, version="1.0.0", training={
        "config": config, "train_trace_files": [f.name for f in [*train_files, *eval_files]]})
    line = one_error_line(capsys, argv)
    assert "every evaluation trace file was used to train" in line
