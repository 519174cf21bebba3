"""The adaptation table of the README: ``itp.sim.adapt`` on each network, one markdown row per network.

Usage::

    python bench/adapt_table.py                                   # warm ss-restart lossy collapse, K=5000
    python bench/adapt_table.py --networks warm sim --outcomes 2000 --out adapt-results

Per network it runs ``run_adaptation`` (the same as ``itp evaluate --adapt NETWORK``: the bundled model
learning online on the held-out traces, against rate-proportional, the heuristic and the best fixed
stream subset chosen with hindsight, every policy on the same tasks), writes ``adapt-<network>.json`` and
(with matplotlib) ``adapt-<network>.png`` into ``--out``, and prints the markdown table:

* final-window goodput: itp (learning) / the best baseline of that window (the issue's target: >= 1.05);
* final-window p95 completion time: itp / the best baseline (target: <= 1);
* worst window after 1 000 outcomes: itp goodput / the heuristic's (target: >= 0.98);
* final-window goodput: itp (learning) / the same bundled model served greedily without learning;
* goodput and p95 over every outcome from 1 000 on: itp / the best baseline over that span (eight
  windows' tasks: a steadier reading of the first two figures, whose p95 moves by +-10% between seeds);
* the learner's retrains, gate rejections, promotions and rollbacks; the best fixed subset; wall time;
* then, when a candidate reached a canary, one row per canary: its tasks against the current model's
  inside its span, by mean goodput and by the reward the canary judges (``AdaptResult.canaries``).

The figures are whatever the run measures: nothing is tuned per network. A run of the four default
networks takes a few minutes per network on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from itp.cli import guard_margin_arg
from itp.sim.adapt import AdaptConfig, AdaptResult, adaptation_trace_files, run_adaptation
from itp.sim.networks import NETWORK_NAMES

DEFAULT_NETWORKS = ("warm", "ss-restart", "lossy", "collapse")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def table(results: list[AdaptResult]) -> str:
    """The markdown table of the README (one row per network)."""
    head = (
        "| network | outcomes | goodput itp / best baseline (final window) | p95 itp / best baseline "
        "(final window) | worst goodput itp / heuristic after 1 000 | goodput itp / bundled (final "
        "window) | goodput / p95 itp / best baseline (outcomes 1 000 to the end) | retrains / gate "
        "rejections / promotions / rollbacks | best fixed subset (hindsight) | wall |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
    )
    rows = []
    for r in results:
        s, lr = r.summary(), r.learner
        rows.append(
            f"| {r.config.network} | {r.outcomes}{' (truncated)' if r.truncated else ''} | "
            f"{_fmt(s['final_goodput_vs_best'])} | {_fmt(s['final_p95_vs_best'])} | "
            f"{_fmt(s['worst_goodput_vs_heuristic_after_1000'])} | {_fmt(s['final_goodput_vs_bundled'])} | "
            f"{_fmt(s['late_goodput_vs_best'])} / {_fmt(s['late_p95_vs_best'])} | "
            f"{lr['update_count']} / {lr['gate_rejections']} / {lr['promotions']} / {lr['rollbacks']} | "
            f"{r.best_fixed} | {r.wall_s:.0f} s |"
        )
    return head + "\n".join(rows) + "\n"


def canary_table(results: list[AdaptResult]) -> str:
    """Markdown: every canary of the runs, the candidate's tasks against the current model's inside its
    span (outcome indices), by goodput and by the reward the canary judged; empty without a canary."""
    from itp.learning.canary_arms import canary_rows
    from itp.testbed.runner import render_table

    rows = []
    for r in results:
        for row in canary_rows(r.canaries, session="network", span_unit="outcomes")[1]:
            rows.append([r.config.network, *row[1:]])
    if not rows:
        return ""
    header = canary_rows([], session="network", span_unit="outcomes")[0]
    return render_table(header, rows, markdown=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the networks, write JSON/PNG per network, print the markdown table; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", choices=NETWORK_NAMES, default=list(DEFAULT_NETWORKS))
    p.add_argument("--outcomes", type=int, default=5000)
    p.add_argument("--checkpoint", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=AdaptConfig.epsilon,
                   help="exploration rate of the learning partitioner (default %(default)s)")
    p.add_argument("--top-k", type=int, default=AdaptConfig.explore_top_k,
                   help="exploration among the k best actions by Q (default %(default)s: any action)")
    p.add_argument("--guard-margin", type=guard_margin_arg, default=AdaptConfig.guard_margin,
                   help="the learning partitioner's decision guard, >= 0 or off (default %(default)s)")
    p.add_argument("--guard-exploration", action=argparse.BooleanOptionalAction,
                   default=AdaptConfig.guard_exploration,
                   help="exploration only among the splits the guard lets through (default off)")
    p.add_argument("--explore-max-bytes", type=int, default=None, metavar="N",
                   help="never explore on a task larger than N bytes (default: no limit)")
    p.add_argument("--model-failures", action=argparse.BooleanOptionalAction, default=False,
                   help="fit each stream's failure model from the chunks' retries and score splits with it")
    p.add_argument("--holdout-fraction", type=float, default=None,
                   help="share of logged rows the gate holds back (default: FinetuneJob's)")
    p.add_argument("--retrain-every", type=int, default=AdaptConfig.retrain_every, metavar="N",
                   help=f"outcomes between retrain requests (default {AdaptConfig.retrain_every}); N >= "
                   "--outcomes: never retrain (calibration, guard and exploration only)")
    p.add_argument("--out", type=Path, default=Path("adapt-results"), help="folder for JSON and PNG files")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    files, learner_files, description = adaptation_trace_files()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.networks:
        t0 = time.monotonic()
        finetune = dict(AdaptConfig(network=name).finetune)
        if args.holdout_fraction is not None:
            finetune["holdout_fraction"] = args.holdout_fraction
        cfg = AdaptConfig(network=name, outcomes=args.outcomes, checkpoint=args.checkpoint, seed=args.seed,
                          epsilon=args.epsilon, explore_top_k=args.top_k, finetune=finetune,
                          guard_margin=args.guard_margin, guard_exploration=args.guard_exploration,
                          explore_max_bytes=args.explore_max_bytes, model_failures=args.model_failures,
                          retrain_every=args.retrain_every, trace_files=files,
                          learner_trace_files=learner_files)
        r = run_adaptation(cfg)
        (args.out / f"adapt-{name}.json").write_text(r.to_json() + "\n")
        try:
            r.plot(args.out / f"adapt-{name}.png")
        except ImportError as exc:
            print(f"{name}: no plot ({exc})", file=sys.stderr)
        print(f"{name}: done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        print(r.to_text(), file=sys.stderr)
        results.append(r)
    print(table(results))
    canaries = canary_table(results)
    if canaries:
        print(canaries)
    print(f"{args.outcomes} outcomes per network, checkpoint {args.checkpoint}, seed {args.seed}; network "
          f"traces: {description}; `python bench/adapt_table.py "
          f"--networks {' '.join(args.networks)} --outcomes {args.outcomes} --epsilon {args.epsilon} "
          f"--top-k {args.top_k} --guard-margin {'off' if args.guard_margin is None else args.guard_margin} "
          + (" --guard-exploration" if args.guard_exploration else "")
          + (f" --explore-max-bytes {args.explore_max_bytes}" if args.explore_max_bytes is not None else "")
          + (" --model-failures" if args.model_failures else "")
          + (f" --holdout-fraction {args.holdout_fraction}" if args.holdout_fraction is not None else "")
          + "`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
