"""``itp testbed``: real TCP over emulated, trace-driven network paths (see docs/testbed.md).

Examples::

    itp testbed setup                    # root: packages, Mahimahi (built from source), the itptb user
    itp testbed check                    # what is missing; exit 0 when ready
    itp testbed run --tasks 12 --repeats 3 --json run.json
    itp testbed run --policies itp,heuristic --paths 2 --tasks 4 --repeats 1 --no-progress
    itp testbed calibrate run.json       # simulator vs measured per size class, and the fitted transport
    itp testbed progress fwd.json rev.json   # learning runs' gain per repeat, apart from their paths
    itp testbed iperf --size-mib 1024    # engine vs iperf3 over 4 x 100 Mbit/s
    itp testbed clean                    # remove what a crashed run left

All the logic lives in ``itp.testbed``; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from itp.cli import CLIError, int_at_least, progress

__all__ = ["add_parser", "run"]

DEFAULT_POLICIES = "itp,heuristic,rate-proportional,round-robin,best-single,equal-split"


def _float_in(lo: float, hi: float) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {v:g}")
        return v

    parse.__name__ = f"number in [{lo:g}, {hi:g}]"
    return parse


def _repeat_order(text: str) -> tuple[int, ...]:
    """``--repeat-order``: comma-separated distinct repeat indices >= 0, e.g. ``7,6,5``."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    try:
        order = tuple(int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected repeat indices like 2,1,0, got {text!r}") from None
    if not order or min(order) < 0:
        raise argparse.ArgumentTypeError(f"expected repeat indices >= 0 like 2,1,0, got {text!r}")
    if len(set(order)) != len(order):
        raise argparse.ArgumentTypeError(f"repeat indices must be distinct, got {text!r}")
    return order


def _queue(text: str) -> Any:
    from itp.testbed.rates import QueueSpec

    try:
        return QueueSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _transport_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cc",
        choices=("bbr", "cubic", "reno"),
        default="bbr",
        help="congestion control inside the paths' namespaces (default bbr, the kernel's default)",
    )
    p.add_argument(
        "--no-slow-start-after-idle",
        action="store_true",
        help="set net.ipv4.tcp_slow_start_after_idle=0 inside the paths (default: 1, Linux's "
        "default: an idle connection restarts from the initial window)",
    )
    p.add_argument(
        "--queue",
        type=_queue,
        default=None,
        metavar="Np|Nms",
        help="bottleneck queue per path, packets ('100p') or time at the current rate ('50ms'); default 50ms",
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``testbed`` and its subcommands on the subparsers action ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "testbed",
        help="real TCP over emulated trace-driven paths (root; Mahimahi)",
        description="Emulated network paths on this machine (Mahimahi delay/loss shells, a kernel tbf "
        "replaying throughput traces), real transfers with the itp engine, and the simulator's "
        "calibration against them. Needs root; run `itp testbed setup` once. See docs/testbed.md.",
    )
    tsub = p.add_subparsers(dest="testbed_command", metavar="SUBCOMMAND", required=True)

    s = tsub.add_parser(
        "setup",
        help="install what the testbed needs (root; idempotent)",
        description="Install the Debian packages, build and install Mahimahi from a source "
        "tree, create the unprivileged user, enable IPv4 forwarding. Skips what is present.",
    )
    s.add_argument(
        "--mahimahi-src",
        type=Path,
        metavar="DIR",
        help="Mahimahi source tree (default: <repo>/../shared/third_party/mahimahi)",
    )
    s.add_argument("--no-apt", action="store_true", help="do not install Debian packages, only report them")
    s.add_argument(
        "--rebuild-mahimahi", action="store_true", help="build and install Mahimahi even if present"
    )

    c = tsub.add_parser(
        "check",
        help="say what is missing (exit 0 when ready)",
        description="Check every requirement of a run; exit 0 when all are met, 1 otherwise.",
    )
    c.add_argument(
        "--cc",
        action="append",
        choices=("bbr", "cubic", "reno"),
        default=None,
        help="also check this congestion control (repeatable)",
    )

    k = tsub.add_parser(
        "clean",
        help="remove what a crashed run left behind",
        description="Find the testbed user's processes, processes of run directories, "
        "run directories and itptb-* namespaces; end and remove them.",
    )
    k.add_argument("--dry-run", action="store_true", help="list only")

    r = tsub.add_parser(
        "run",
        help="every policy over the same emulated paths, repeated; table with 95%% CIs",
        description="For each repeat draw a schedule (paths: trace, offset, mean rate, RTT, loss; tasks: "
        "sizes, arrival gaps), bring up the paths and move the tasks with each policy in turn over the same "
        "schedule; print mean and p95 completion time, mean per-task goodput, aggregate goodput and success "
        "with 95%% confidence intervals over repeats, then the simulator's calibration.",
    )
    r.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        help=f"comma-separated policies (default {DEFAULT_POLICIES}; aliases: equal, rate, rr, best). "
        "'bundled' is itp serving the bundled model as it is, never learning: with --learn, the control "
        "that says what learning added on the same schedules",
    )
    r.add_argument(
        "--traces",
        metavar="DIR",
        help="trace folder (Mahimahi or 'seconds Mbit/s' files); default: the held-out split of "
        "$ITP_TRACES_DIR or <repo>/../shared/traces, else the shipped traces",
    )
    r.add_argument(
        "--split",
        choices=("auto", "all", "train", "eval"),
        default="auto",
        help="part of the trace folder (default auto: eval for the default corpus, all for --traces)",
    )
    r.add_argument(
        "--paths", type=int_at_least(1), default=4, help="emulated paths = streams, 1..4 (default 4)"
    )
    r.add_argument("--tasks", type=int_at_least(1), default=12, help="tasks per repeat (default 12)")
    r.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=None,
        help="independent schedules (default 3, or as many as --repeat-order names)",
    )
    r.add_argument("--seed", type=int_at_least(0), default=0, help="schedule seed (default 0)")
    r.add_argument(
        "--repeat-order",
        type=_repeat_order,
        default=None,
        metavar="R,R,...",
        help="run these repeats' schedules, in this order (e.g. 7,6,5,4,3,2,1,0: a learning run's "
        "schedules reversed, to tell what it learned from which paths each repeat drew; default "
        "0,1,...)",
    )
    r.add_argument(
        "--rate-mbps",
        type=float,
        nargs=2,
        default=(5.0, 100.0),
        metavar=("MIN", "MAX"),
        help="log-uniform range of each path's mean rate, Mbit/s (default 5 100)",
    )
    r.add_argument(
        "--rtt-ms",
        type=float,
        nargs=2,
        default=(10.0, 150.0),
        metavar=("MIN", "MAX"),
        help="log-uniform range of each path's RTT, ms (default 10 150)",
    )
    r.add_argument(
        "--size-kib",
        type=float,
        nargs=2,
        default=(16.0, 65536.0),
        metavar=("MIN", "MAX"),
        help="log-uniform range of task sizes, KiB (default 16 65536)",
    )
    r.add_argument(
        "--gap-s",
        type=_float_in(0.0, 3600.0),
        default=2.0,
        help="mean gap between task arrivals, seconds (default 2)",
    )
    r.add_argument(
        "--loss",
        type=_float_in(0.0, 0.5),
        default=0.0,
        help="each path's random loss is uniform on [0, LOSS] (mm-loss uplink; default 0)",
    )
    r.add_argument(
        "--window",
        type=int_at_least(1),
        default=1,
        help="tasks in flight in the sender (default 1: one at a time, as the simulator)",
    )
    r.add_argument(
        "--timeout-s",
        type=_float_in(1.0, 86400.0),
        default=None,
        help="deadline of one policy's session (default: generous, from the schedule)",
    )
    _transport_args(r)
    r.add_argument(
        "--json", metavar="OUT", type=Path, help="write everything (schedules, tasks, table) as JSON"
    )
    r.add_argument(
        "--learn", action="store_true",
        help="the itp policy learns across the repeats (as itp send --learn); prints the table by repeat",
    )
    r.add_argument("--learn-dir", metavar="DIR", help="with --learn: the learning folder, kept; a relative "
                   "one is relative to where this command runs (default: inside the run directory)")
    r.add_argument("--retrain-every", type=int_at_least(1), default=300, metavar="N",
                   help="with --learn: outcomes between retrains (default 300)")
    r.add_argument("--epsilon", type=_float_in(0.0, 1.0), default=0.1,
                   help="with --learn: exploration rate (default 0.1)")
    r.add_argument("--explore-top-k", type=int_at_least(1), default=3, metavar="K",
                   help="with --learn: explore among the K best actions (default 3)")
    r.add_argument("--guard-exploration", action=argparse.BooleanOptionalAction, default=False,
                   help="with --learn: explore only among the splits the decision guard lets through "
                   "(default off)")
    r.add_argument("--explore-max-bytes", type=int_at_least(1), default=None, metavar="N",
                   help="with --learn: never explore on a task larger than N bytes (default: no limit)")
    r.add_argument("--model-failures", action=argparse.BooleanOptionalAction, default=False,
                   help="with --learn: fit each stream's failure model from the chunks' retries and score "
                   "splits with it (default off)")
    r.add_argument("--markdown", action="store_true", help="print the table as markdown")
    r.add_argument("--no-calibration", action="store_true", help="skip the simulator calibration report")
    r.add_argument("--keep-files", action="store_true", help="keep the run directory (reports, logs)")
    pg = r.add_mutually_exclusive_group()
    pg.add_argument("--progress", dest="progress", action="store_true", default=None, help="progress bar")
    pg.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    cal = tsub.add_parser(
        "calibrate",
        help="simulator vs a saved run, per size class; fit its transport",
        description="Predict every delivered task of a run (its JSON) with the simulator on "
        "the rates the paths applied, report median and p90 relative errors per size "
        "class, and fit the simulator's transport parameters (set-up RTTs, initial window, "
        "slow start, efficiency) to the measurements.",
    )
    cal.add_argument("run_json", type=Path, help="the JSON written by `itp testbed run --json`")
    cal.add_argument("--json", action="store_true", help="print the report as JSON")

    tb = tsub.add_parser(
        "table",
        help="print the table of a saved run",
        description="Re-tabulate a run's JSON: means over repeats with 95%% intervals and the paired "
        "ratios to the heuristic.",
    )
    tb.add_argument("run_json", type=Path, help="the JSON written by `itp testbed run --json`")
    tb.add_argument("--markdown", action="store_true", help="print a markdown table")
    by = tb.add_mutually_exclusive_group()
    by.add_argument("--by-repeat", action="store_true",
                    help="one row per repeat (a learning run's curve) instead of the summary")
    by.add_argument("--canaries", action="store_true",
                    help="a learning run's canaries: each candidate's arm against the current arm inside "
                    "its span, by goodput and by the reward the canary judged")

    pr = tsub.add_parser(
        "progress",
        help="what learning runs gained per repeat, apart from which paths each repeat drew",
        description="Over learning runs of the same schedules in different orders (--repeat-order), "
        "fit log(itp / bundled mean goodput) = schedule effect + position effect: the gain per repeat "
        "the deployment has run, with 95%% intervals (itp.testbed.progress). Runs all in one order "
        "cannot separate the two, and say so.",
    )
    pr.add_argument("run_json", type=Path, nargs="+", help="JSONs of `itp testbed run --learn --json` "
                    "with the policies itp and bundled")
    pr.add_argument("--markdown", action="store_true", help="print markdown tables")

    ip = tsub.add_parser(
        "iperf",
        help="the engine against iperf3 over constant-rate paths",
        description="iperf3, then the engine, then iperf3 again over the same paths at a "
        "constant rate; prints the aggregate goodputs and engine / iperf3.",
    )
    ip.add_argument("--paths", type=int_at_least(1), default=4, help="paths (default 4)")
    ip.add_argument(
        "--rate-mbps", type=_float_in(0.1, 10000.0), default=100.0, help="rate per path (default 100)"
    )
    ip.add_argument("--rtt-ms", type=_float_in(2.0, 2000.0), default=20.0, help="RTT per path (default 20)")
    ip.add_argument("--size-mib", type=int_at_least(1), default=1024, help="task size, MiB (default 1024)")
    ip.add_argument("--tasks", type=int_at_least(1), default=1, help="tasks back to back (default 1)")
    ip.add_argument("--iperf-s", type=_float_in(1.0, 600.0), default=10.0, help="iperf3 seconds (default 10)")
    ip.add_argument("--parallel", type=int_at_least(1), default=1, help="iperf3 -P per path (default 1)")
    ip.add_argument("--policy", default="itp", help="engine policy (default itp)")
    _transport_args(ip)
    ip.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)
    return p


def _require_root() -> None:
    import os

    if os.geteuid() != 0:
        raise CLIError("needs root (network namespaces, tc, setuid Mahimahi); run it with sudo")


def _require_ready(ccs: list[str]) -> None:
    from itp.testbed.host import check_host

    missing = [r for r in check_host(ccs) if not r.ok]
    if missing:
        raise CLIError(
            "not ready: "
            + "; ".join(f"{r.name}: {r.detail}" for r in missing)
            + " (run `itp testbed setup`, then `itp testbed check`)"
        )


def _transport(args: argparse.Namespace) -> Any:
    from itp.testbed.paths import TransportSettings

    return TransportSettings(args.cc, not args.no_slow_start_after_idle)


def _run_setup(args: argparse.Namespace) -> int:
    from itp.testbed.host import setup_host

    _require_root()
    try:
        for line in setup_host(
            mahimahi_src=args.mahimahi_src,
            install_packages=not args.no_apt,
            rebuild_mahimahi=args.rebuild_mahimahi,
        ):
            print(line)
    except (FileNotFoundError, RuntimeError, PermissionError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from itp.testbed.host import check_host

    reqs = check_host(args.cc or ["bbr", "cubic", "reno"])
    for r in reqs:
        print(f"[{'ok' if r.ok else 'MISSING'}] {r.name}: {r.detail}")
    bad = [r for r in reqs if not r.ok]
    print("ready" if not bad else f"not ready: {len(bad)} missing (itp testbed setup installs most of it)")
    return 0 if not bad else 1


def _run_clean(args: argparse.Namespace) -> int:
    import os

    from itp.testbed.host import clean_leftovers, find_leftovers

    found = find_leftovers(exclude_pids=(os.getppid(),))
    if found.empty:
        print("nothing to clean")
        return 0
    for line in found.describe():
        print(line)
    if args.dry_run:
        return 0
    _require_root()
    for line in clean_leftovers(found):
        print(line)
    return 0


def _run_run(args: argparse.Namespace) -> int:
    from itp.sim.traces import select_trace_files
    from itp.testbed.canary import canary_comparisons, canary_rows
    from itp.testbed.rates import QueueSpec
    from itp.testbed.runner import (
        RunConfig,
        calibration_report,
        render_table,
        repeat_rows,
        resolve_policy,
        run_testbed,
        table_rows,
    )
    from itp.testbed.schedule import ScheduleConfig

    try:
        policies = tuple(resolve_policy(x.strip()) for x in args.policies.split(",") if x.strip())
        selection = select_trace_files(args.traces, split=args.split)
        schedule = ScheduleConfig(
            paths=args.paths,
            tasks=args.tasks,
            rate_min_bps=args.rate_mbps[0] * 1e6,
            rate_max_bps=args.rate_mbps[1] * 1e6,
            rtt_min_s=args.rtt_ms[0] / 1e3,
            rtt_max_s=args.rtt_ms[1] / 1e3,
            size_min_bytes=round(args.size_kib[0] * 1024),
            size_max_bytes=round(args.size_kib[1] * 1024),
            mean_interarrival_s=args.gap_s,
            loss_max=args.loss,
        )
        if args.repeats is None:
            args.repeats = len(args.repeat_order) if args.repeat_order is not None else 3
        config = RunConfig(
            policies=policies,
            trace_files=tuple(str(f) for f in selection.files),
            schedule=schedule,
            repeats=args.repeats,
            seed=args.seed,
            repeat_order=args.repeat_order,
            queue=args.queue or QueueSpec(delay_s=0.05),
            transport=_transport(args),
            window=args.window,
            timeout_s=args.timeout_s,
            keep_files=args.keep_files,
            learn=args.learn,
            learn_dir=args.learn_dir,
            retrain_every=args.retrain_every,
            learn_epsilon=args.epsilon,
            learn_top_k=args.explore_top_k,
            learn_guard_exploration=args.guard_exploration,
            learn_explore_max_bytes=args.explore_max_bytes,
            learn_model_failures=args.model_failures,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc), status=2) from None
    _require_root()
    _require_ready([args.cc])
    update, close = progress(args.progress, args.repeats * len(policies), desc="testbed", unit="session")
    try:
        result = run_testbed(config, progress=update)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    finally:
        close()
    data = result.to_dict()
    canaries = canary_comparisons(result.runs)
    if canaries:
        data["canaries"] = [c.to_dict() for c in canaries]
    if args.json is not None:  # now, so the run survives an interrupted calibration; again with it below
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    header, rows = table_rows(result.summaries())
    s = config.schedule
    print(
        f"itp testbed: {len(policies)} policies x {args.repeats} repeats x {args.tasks} tasks over "
        f"{args.paths} paths ({selection.description}); "
        f"rates {s.rate_min_bps / 1e6:g}-{s.rate_max_bps / 1e6:g} Mbit/s, "
        f"RTT {s.rtt_min_s * 1e3:g}-{s.rtt_max_s * 1e3:g} ms, queue {config.queue.describe()}, "
        f"{config.transport.congestion_control}, slow start after idle "
        f"{'on' if config.transport.slow_start_after_idle else 'off'}; wall {result.wall_s:.0f} s; "
        "± = 95% CI over repeats"
    )
    print(render_table(header, rows, markdown=args.markdown))
    if config.learn:
        print()
        print(f"by repeat (itp learning across repeats, a retrain every {config.retrain_every} outcomes; "
              "goodput in Mbit/s):")
        print(render_table(*repeat_rows(result.runs, policies), markdown=args.markdown))
    if canaries:
        print()
        print(_CANARY_TITLE)
        print(render_table(*canary_rows(canaries, session="repeat"), markdown=args.markdown))
    if not args.no_calibration:
        try:
            report = calibration_report(data)
        except ValueError as exc:
            print(f"calibration: {exc}")
        else:
            data["calibration"] = report.to_dict()
            print()
            print(report.to_text())
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from itp.testbed.runner import calibration_report

    try:
        data = json.loads(args.run_json.read_text())
        report = calibration_report(data)
    except FileNotFoundError:
        raise CLIError(f"run file not found: {args.run_json}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"{args.run_json}: not a testbed run JSON or nothing to calibrate ({exc})") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.to_text())
    return 0


_CANARY_TITLE = (
    "canaries (each candidate's tasks against the current model's, dispatched inside the candidate's span; "
    "goodput in Mbit/s; ratio and difference compared within task-size strata, the arms' means pooled; "
    "[ ] and ± are 95% intervals):"
)


def _run_table(args: argparse.Namespace) -> int:
    from itp.testbed.canary import canary_comparisons, canary_rows
    from itp.testbed.runner import render_table, repeat_rows, runs_from_dict, summarise, table_rows

    try:
        data = json.loads(args.run_json.read_text())
        policies = data["config"]["policies"]
        runs = runs_from_dict(data)
        summaries = summarise(runs, policies)
    except FileNotFoundError:
        raise CLIError(f"run file not found: {args.run_json}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"{args.run_json}: not a testbed run JSON ({exc})") from None
    if args.canaries:
        canaries = canary_comparisons(runs)
        if not canaries:
            print("no canary decided tasks in this run (or the run predates per-task arms)")
            return 0
        print(_CANARY_TITLE)
        print(render_table(*canary_rows(canaries, session="repeat"), markdown=args.markdown))
        return 0
    header, rows = repeat_rows(runs, policies) if args.by_repeat else table_rows(summaries)
    print(render_table(header, rows, markdown=args.markdown))
    return 0


def _run_progress(args: argparse.Namespace) -> int:
    from itp.testbed.progress import check_same_schedules, fit_progress, progress_rows, run_ratios
    from itp.testbed.runner import render_table

    datas, names = [], []
    for path in args.run_json:
        try:
            datas.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CLIError(f"run file not found: {path}") from None
        except ValueError as exc:
            raise CLIError(f"{path}: not a testbed run JSON ({exc})") from None
        names.append(path.parent.name if path.name == "run.json" and path.parent.name else path.name)
    try:
        check_same_schedules(datas, names)
        ratios = [run_ratios(d, n) for d, n in zip(datas, names, strict=True)]
        fit = fit_progress(ratios)
    except (ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"not comparable learning runs: {exc}") from None
    by_schedule, by_position = progress_rows(ratios, fit)
    print("itp / bundled mean per-task goodput by schedule (its position in each run):")
    print(render_table(by_schedule[0], by_schedule[1:], markdown=args.markdown))
    print()
    s = fit.slope
    if s.identified():
        half = f" [{s.ratio_low:.3f}, {s.ratio_high:.3f}]" if math.isfinite(s.half_width) else ""
        print(
            f"per repeat run (linear): {s.ratio:.4f}x{half}; residual sd {fit.slope_residual_sd:.3f} "
            f"(log), {fit.observations} observations, {fit.df_slope} df"
        )
    else:
        print("per repeat run: not identified (every schedule ran at the same position: run the same "
              "schedules in another order, --repeat-order)")
    print()
    print(f"by position (one level each; residual sd {fit.level_residual_sd:.3f}, {fit.df_levels} df):")
    print(render_table(by_position[0], by_position[1:], markdown=args.markdown))
    return 0


def _run_iperf(args: argparse.Namespace) -> int:
    from itp.testbed.ceiling import measure_ceiling
    from itp.testbed.runner import engine_policy, resolve_policy

    try:
        policy = engine_policy(resolve_policy(args.policy))
    except ValueError as exc:
        raise CLIError(str(exc), status=2) from None
    if args.paths > 4:
        raise CLIError(f"--paths must be 1..4, got {args.paths}", status=2)
    _require_root()
    _require_ready([args.cc])
    try:
        result = measure_ceiling(
            paths=args.paths,
            rate_bps=args.rate_mbps * 1e6,
            rtt_s=args.rtt_ms / 1e3,
            size_bytes=args.size_mib * 2**20,
            tasks=args.tasks,
            iperf_s=args.iperf_s,
            parallel=args.parallel,
            policy=policy,
            queue=args.queue,
            transport=_transport(args),
        )
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.to_text())
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the subcommand; returns the exit status."""
    handlers = {
        "setup": _run_setup,
        "check": _run_check,
        "clean": _run_clean,
        "run": _run_run,
        "calibrate": _run_calibrate,
        "table": _run_table,
        "progress": _run_progress,
        "iperf": _run_iperf,
    }
    status: int = handlers[args.testbed_command](args)
    sys.stdout.flush()
    return status
