"""Prediction error of the partitioner's own ``expected_time`` as outcomes arrive, calibration on vs off.

Three simulated networks whose physics differ from the fresh-connection model the split assumes
(``itp.sim.physics.SimConfig``; losses off so the error is the transport model's): warm persistent streams
without slow start (``slow_start=False, setup_rtts=0.5``), persistent streams with slow-start restart and
80 % rate efficiency (``setup_rtts=0.5, stream_efficiency=0.8``), and the default fresh connections (where
the defaults are already right). Each run is ``itp.sim.prediction.prediction_errors`` (four synthetic
streams, heuristic decisions, per-chunk outcomes reported; with calibration on, ``recalibrate()`` every
``--refit-every`` outcomes, synchronously: a fit over 4 x 512 observations takes about 2 s on a busy
2-core VM, and the simulated clock runs far faster than real transfers).

Prints, every ``--every`` outcomes, the median and p90 of ``|measured / expected_time - 1|`` over that
window. Run: ``python bench/calibration_curve.py`` (a few minutes).
"""

from __future__ import annotations

import argparse

import numpy as np

from itp.sim import SimConfig
from itp.sim.prediction import prediction_errors

_NO_LOSS = dict(loss_base=0.0, loss_congestion=0.0, hazard_base_per_s=0.0, hazard_congestion_per_s=0.0)
NETWORKS = {
    "warm, no slow start": SimConfig(slow_start=False, setup_rtts=0.5, **_NO_LOSS),  # type: ignore[arg-type]
    "restart + eff 0.8": SimConfig(setup_rtts=0.5, stream_efficiency=0.8, **_NO_LOSS),  # type: ignore[arg-type]
    "fresh (sim default)": SimConfig(**_NO_LOSS),  # type: ignore[arg-type]
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--refit-every", type=int, default=50, help="outcomes between refits")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    print("| network | calibration | " + " | ".join(
        f"{k + args.every} outcomes" for k in range(0, args.tasks, args.every)) + " |")
    print("|---|---|" + "---|" * len(range(0, args.tasks, args.every)))
    for name, config in NETWORKS.items():
        for calibrate in (False, True):
            err = prediction_errors(config, calibrate=calibrate, n_tasks=args.tasks, seed=args.seed,
                                    refit_every=args.refit_every)
            cells = []
            for k in range(0, args.tasks, args.every):
                w = np.asarray(err[k:k + args.every])
                cells.append(f"{np.median(w):.3f} / {np.percentile(w, 90):.3f}")
            print(f"| {name} | {'on' if calibrate else 'off'} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
