"""How often the canary promotes or rolls back a candidate of known quality: pooled against stratified.

Why: a canary routes each decision to an arm by an independent draw, and a task's reward and goodput
depend on its size far more than on the model; with a hundred tasks per arm the arms' size mixes differ
by chance (``itp.learning.strata``). This script measures what that does to the verdicts, on synthetic
outcomes shaped like the testbed's real-TCP canaries, for these canaries:

* ``pooled``: the previous release's canary (pooled means, no goodput veto, a verdict after every
  outcome);
* ``strata``: within task-size strata, no goodput veto, every outcome;
* ``strata+veto``: strata, and a goodput confidently 5% lower rolls back, every outcome;
* ``doubling, Bonferroni``: strata, the veto, and verdicts when the smaller arm reaches 100, 200, 400,
  800 outcomes and at 1 000 candidate outcomes, each at the Bonferroni quantile (the previous release's
  default: ``CanaryConfig(looks="doubling", boundary="bonferroni")``);
* ``doubling, exact``: the same looks at the exact constant group-sequential boundary
  (``itp.learning.sequential``);
* ``x1.5, exact``: looks growing by 1.5 (100, 150, 225, 338, 506, 759 and 1 000) at the exact boundary
  (``CanaryConfig.looks="geometric"``, ``look_growth``), no futility stop;
* ``default``: this release's canary: those looks, and a stage rolled back at a look where its chance to
  advance by its last look, were the measured difference the true one, is under 1%
  (``CanaryConfig.futility``).

Outcomes (measured on the testbed's canaries, ``docs/lifecycle.md``): task sizes log-uniform in 16 KiB
- 16 MiB (``itp testbed run --size-kib 16 16384``); with ``u`` the size's position on that log scale in
[0, 1], the current model's reward is ``0.3 + 1.6 u`` plus normal noise of sd 0.7, its goodput
``6 Mbit/s * exp(2.6 u)`` times lognormal noise (sigma 0.5). A candidate adds ``delta`` to every reward
and multiplies every goodput by ``factor``. The canary is the one ``itp send --learn`` runs (50% then
100%, 100 to 1 000 outcomes per stage, margin 0.05, one-sided 95%), stepped every outcome, with its
evidence carried to the end (as across sessions).

Run: ``python bench/canary_power.py [--trials 400] [--seed 0]``; prints a markdown table: per scenario
and canary, the share of trials that promoted and that rolled back, and the median number of outcomes to
the verdict. A few seconds per 100 trials on one core.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from itp.learning.rollout import CanaryConfig, CanaryRollout
from itp.learning.strata import DEFAULT_SIZE_STRATA_BYTES
from itp.partitioner import OutcomeRecord

MIN_SIZE, MAX_SIZE = 16 << 10, 16 << 20

#: (name, reward delta, goodput factor)
SCENARIOS: tuple[tuple[str, float, float], ...] = (
    ("equal", 0.0, 1.0),
    ("better: +0.15 reward, 1.05x goodput", 0.15, 1.05),
    ("worse: -0.10 reward, 0.95x goodput", -0.10, 0.95),
    ("worse: -0.20 reward, 0.90x goodput", -0.20, 0.90),
    ("reward +0.10 but goodput 0.85x", 0.10, 0.85),
)

CANARIES: dict[str, dict[str, Any]] = {
    "pooled": {"size_strata_bytes": (), "goodput_margin": None, "looks": "every"},
    "strata": {"size_strata_bytes": DEFAULT_SIZE_STRATA_BYTES, "goodput_margin": None, "looks": "every"},
    "strata+veto": {"looks": "every"},
    "doubling, Bonferroni": {"looks": "doubling", "boundary": "bonferroni", "futility": None},
    "doubling, exact": {"looks": "doubling", "futility": None},
    "x1.5, exact": {"futility": None},
    "default": {},
}


class _Partitioner:
    """What a canary asks of a partitioner: route a share to the candidate, promote it."""

    def __init__(self) -> None:
        self.candidate: Any = None
        self.share = 0.0

    def set_candidate(self, candidate: Any, share: float = 0.0) -> None:
        self.candidate, self.share = candidate, (share if candidate is not None else 0.0)

    def promote_candidate(self) -> None:
        self.candidate, self.share = None, 0.0


@dataclass(frozen=True)
class _Candidate:
    version: str = "cand"


def trial(
    rng: np.random.Generator, delta: float, factor: float, overrides: dict[str, Any]
) -> tuple[str, int]:
    """One canary to its verdict: (final state, outcomes it took)."""
    config = CanaryConfig(shares=(0.5, 1.0), min_outcomes_per_stage=100, max_outcomes_per_stage=1000,
                          **overrides)
    p = _Partitioner()
    canary = CanaryRollout(p, _Candidate(), config)
    n = 0
    while canary.state == "running":
        n += 1
        u = rng.random()
        size = int(MIN_SIZE * (MAX_SIZE / MIN_SIZE) ** u)
        reward = 0.3 + 1.6 * u + rng.normal(0.0, 0.7)
        goodput = 6e6 * math.exp(2.6 * u) * math.exp(rng.normal(0.0, 0.5))
        if rng.random() < p.share:
            arm, version = "candidate", "cand"
            reward, goodput = reward + delta, goodput * factor
        else:
            arm, version = "current", "cur"
        canary.on_outcome(OutcomeRecord(arm, version, "model", reward, True, 1.0, goodput, 1.0,
                                        size_bytes=size))
        canary.step()
    return canary.state, n


def main(argv: list[str] | None = None) -> int:
    """Run every scenario against every canary; print the markdown table; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=400, help="canaries per scenario and kind (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.getLogger("itp").setLevel(logging.ERROR)  # thousands of verdicts: not one log line each
    if args.trials < 1:
        ap.error(f"--trials must be >= 1, got {args.trials}")
    t0 = time.monotonic()
    print("| candidate | canary | promoted | rolled back | median outcomes to the verdict |")
    print("|---|---|---:|---:|---:|")
    for s, (name, delta, factor) in enumerate(SCENARIOS):
        for kind, overrides in CANARIES.items():
            # Trial k draws the same outcomes for every canary (until their shares part).
            results = [
                trial(np.random.default_rng([args.seed, s, k]), delta, factor, overrides)
                for k in range(args.trials)
            ]
            promoted = sum(state == "promoted" for state, _ in results) / args.trials
            median = float(np.median([n for _, n in results]))
            print(f"| {name} | {kind} | {promoted:.1%} | {1 - promoted:.1%} | {median:.0f} |")
    print(f"\n{args.trials} trials per row, seed {args.seed}, {time.monotonic() - t0:.0f} s; "
          f"`python bench/canary_power.py --trials {args.trials} --seed {args.seed}`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
