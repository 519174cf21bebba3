"""The adaptation benchmark at a small K, one pytest-benchmark entry per network (group ``adapt``).

Run: ``pytest bench/bench_adapt.py --benchmark-only`` (15-20 s per network on 2 cores). Each entry
runs ``itp.sim.adapt.run_adaptation`` once (``pedantic``, 1 round: the run is a measurement, not a
micro-benchmark; its wall time is what the timing column shows) with K = ``BENCH_OUTCOMES`` outcomes,
a window every 250 and a retrain every 500 on the shipped traces, asserts the result (every policy
played identical tasks, every window present, the summary computable) and records the target figures
in ``extra_info``: final-window goodput and p95 of itp over the best baseline, the worst window after
1 000 outcomes vs the heuristic, the learner's retrains / gate rejections / promotions. The README table
comes from ``python bench/adapt_table.py`` (K = 5 000 on the held-out corpus); this file keeps a small,
repeatable version in the benchmark suite. No entry has an anchor, so ``bench/report.py`` skips the group.
"""

from __future__ import annotations

from typing import Any

import pytest

from itp.sim.adapt import ADAPTIVE, AdaptConfig, AdaptResult, run_adaptation
from itp.sim.traces import discover_trace_files, shipped_traces_dir

BENCH_OUTCOMES = 1500
NETWORKS = ("warm", "ss-restart", "lossy", "collapse")


@pytest.mark.parametrize("network", NETWORKS)
def test_adaptation(benchmark: Any, network: str) -> None:
    files = tuple(str(f) for f in discover_trace_files(shipped_traces_dir()))
    # The README's settings: exploration among the 3 best actions at 0.1, 30% of the logs held back.
    cfg = AdaptConfig(network=network, outcomes=BENCH_OUTCOMES, checkpoint=250, retrain_every=500,
                      epsilon=0.1, explore_top_k=3,
                      finetune={**AdaptConfig(network=network).finetune, "holdout_fraction": 0.3},
                      trace_files=files, learner_trace_files=files)
    benchmark.group = "adapt"
    result: AdaptResult = benchmark.pedantic(run_adaptation, args=(cfg,), rounds=1, iterations=1)
    assert result.tasks_identical and result.outcomes == BENCH_OUTCOMES and not result.truncated
    assert len(result.windows) == BENCH_OUTCOMES // 250
    assert all(len(v) == len(result.windows) for v in result.per_policy.values())
    assert result.whole_run[ADAPTIVE].tasks == BENCH_OUTCOMES
    summary = result.summary()
    assert summary["final_goodput_vs_best"] is not None and summary["final_goodput_vs_best"] > 0
    info = benchmark.extra_info
    info["role"] = "measurement"
    info.update({k: v for k, v in summary.items()})
    info["best_fixed"] = result.best_fixed
    for key in ("update_count", "gate_rejections", "promotions", "rollbacks"):
        info[key] = result.learner[key]
