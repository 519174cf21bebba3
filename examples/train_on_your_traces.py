"""Train itp's Q-network on your own throughput traces, evaluate it, and serve it.

Point it at a folder of traces recorded on your links (Mahimahi files: one delivery timestamp in ms per
line; or Pensieve/FCC files: ``seconds Mbit/s`` per line). The folder is split by file into training and
held-out evaluation traces (``itp.sim.traces.split_trace_files``), the Double DQN trains on simulated
episodes whose 4 streams replay the training files, and the exported model is compared with every
baseline on the held-out files, on identical episodes. Finally the model is loaded the way production
loads it (``itp.TaskPartitioner(path)``: sha256 and layout verified) and makes one decision.

Needs the ``train`` extra (``pip install '.[train]'``). The defaults are small (a few minutes on 2
cores); real training wants ``--episodes 1000`` or more (see ``itp train --help``).

Run it::

    python examples/train_on_your_traces.py my_traces/ --output runs/mine
    python examples/train_on_your_traces.py my_traces/ --episodes 300 --eval-episodes 50
    itp plot runs/mine                      # training curves and the evaluation chart as PNG

Without traces of your own, try the ones shipped with itp::

    TRACES=$(python -c 'import itp.sim; print(itp.sim.shipped_traces_dir())')
    python examples/train_on_your_traces.py "$TRACES" --episodes 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import itp
from itp.sim.baselines import BASELINE_NAMES
from itp.sim.evaluate import evaluate
from itp.sim.policy import OnnxPolicy
from itp.sim.traces import discover_trace_files, split_trace_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", type=Path, help="folder of your trace files")
    parser.add_argument("--output", type=Path, default=Path("runs/my_traces"), help="where the model goes")
    parser.add_argument("--episodes", type=int, default=100, help="training episodes of 64 tasks each")
    parser.add_argument("--eval-episodes", type=int, default=20, help="evaluation episodes per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        from itp.training.config import TrainConfig
        from itp.training.dqn import train
    except ImportError as exc:
        print(f"training needs the train extra: pip install '.[train]' ({exc})", file=sys.stderr)
        return 1

    # 1. Your traces, split by file: the model never trains on the files it is evaluated on.
    files = discover_trace_files(args.traces)
    if not files:
        print(f"no trace files in {args.traces}", file=sys.stderr)
        return 1
    train_files, eval_files = split_trace_files(files)
    print(f"{len(files)} trace files: {len(train_files)} for training, {len(eval_files)} held out")
    if not eval_files:  # one file (or one recording): nothing can be held out
        print("  too few files to hold any out: evaluating on the training traces (optimistic)")
        eval_files = train_files

    # 2. Train. The trainer writes <output>/dqn_final.onnx + .metadata.json, a checkpoint (.pt) to
    #    resume from, and training_history.json/.png; it validates every val_every episodes and keeps
    #    the best validated network as dqn_best.onnx.
    args.output.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        episodes=args.episodes,
        seed=args.seed,
        traces_dir=str(args.traces),
        output_dir=str(args.output),
        learning_starts=min(1000, 16 * args.episodes),  # short runs start learning early
        epsilon_decay_episodes=max(1, args.episodes // 2),
        val_every=max(1, args.episodes // 5),
        eval_episodes=0,  # evaluated below, against every baseline
        progress=not args.no_progress,
    )
    result = train(config, command=" ".join(["python", *sys.argv]))
    print(f"trained {result.episodes_run} episodes ({result.steps} decisions) in {result.wall_time_s:.1f} s")
    print(f"model: {result.model_path}")

    # 3. Evaluate on the held-out files: every policy plays the same episodes.
    model = result.best_model_path or result.model_path
    table = evaluate(
        [OnnxPolicy(model, name="your model"), *BASELINE_NAMES],
        episodes=args.eval_episodes,
        seed=args.seed,
        trace_files=eval_files,
    )
    print()
    print(table.to_text())

    # 4. Serve it exactly as production does, and make one decision.
    p = itp.TaskPartitioner(model)
    if p.model is None:
        print("the model did not load (see the warning above)", file=sys.stderr)
        return 1
    for i, (rate_bps, rtt_s) in enumerate([(800e6, 0.012), (400e6, 0.030), (150e6, 0.050), (600e6, 0.020)]):
        p.update_stream(i, bandwidth_bps=rate_bps, latency_s=rtt_s, congestion=0.1, success_rate=0.99)
    d = p.partition_task(itp.Task(id="example", size=256 * 1024 * 1024, priority=0.5))
    print(f"serving {model} (version {p.model.version}, {p.model.backend} backend)")
    print(f"256 MiB task -> streams {d.stream_ids}, bytes {d.chunk_sizes}, expected {d.expected_time:.3f} s "
          f"({d.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
