"""The testbed's canaries: each candidate's arm against the current arm, by goodput and by reward.

A learning run's ``itp`` tasks carry the arm and the model that decided them and their reward
(``itp.transfer.TaskReport``); :func:`canary_comparisons` compares the arms inside each candidate's span
in each repeat (:mod:`itp.learning.canary_arms`, which says why and how). ``itp testbed run --learn``
prints the table and ``itp testbed table RUN.json --canaries`` re-tabulates a saved run.
"""

from __future__ import annotations

from collections.abc import Sequence

from itp.learning.canary_arms import ArmOutcome, CanaryComparison, canary_rows, compare_canaries
from itp.testbed.runner import PolicyRun, run_order

__all__ = ["canary_comparisons", "canary_rows"]


def canary_comparisons(runs: Sequence[PolicyRun]) -> list[CanaryComparison]:
    """Every candidate that decided tasks in ``runs``, by repeat in the order they ran, then by its first
    dispatch.

    Runs recorded before tasks carried their arm (or without a canary) give none.
    """
    out: list[CanaryComparison] = []
    position = {rep: i for i, rep in enumerate(run_order(runs))}
    for run in sorted(runs, key=lambda r: (position[r.repeat], r.policy)):
        tasks = [
            ArmOutcome(
                t.dispatched_s, t.arm, t.model_version, t.goodput_bps, t.seconds, t.reward, t.size_bytes
            )
            for t in run.tasks
        ]
        out += compare_canaries(tasks, session=run.repeat)
    return out
