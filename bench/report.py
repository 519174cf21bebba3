"""Turn a pytest-benchmark JSON file into the README table: per group, itp against its anchor.

Usage::

    pytest bench/ --benchmark-only --benchmark-json=bench-results.json
    python bench/report.py bench-results.json

For every group, each itp test (``extra_info["role"] == "itp"``) is compared with each anchor of the same
group: speed-up = anchor median / itp median (medians, as the machine may be shared; min and mean are in
the JSON). Where the issue sets a target (``extra_info["target_speedup"]``) the row says whether it is met;
ring throughput rows add records per second and the 20 M records/s target; the native decision-core row
adds ns per call and the 1 us target.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def fmt_time(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def short_name(bench: dict[str, Any]) -> str:
    name: str = bench["name"]
    return name.removeprefix("test_")


def table(results: dict[str, Any]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in results["benchmarks"]:
        groups[bench["group"] or "(no group)"].append(bench)
    lines = [
        "| operation | itp (median) | anchor (median) | speed-up | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for group in sorted(groups):
        entries = groups[group]
        itps = [b for b in entries if b.get("extra_info", {}).get("role") == "itp"]
        anchors = [b for b in entries if b.get("extra_info", {}).get("role") == "anchor"]
        for mine in itps:
            info = mine.get("extra_info", {})
            t_itp = mine["stats"]["median"]
            label = group if len(itps) == 1 else f"{group} [{short_name(mine)}]"
            if "ns_per_call_mean_median_round" in info:  # native decision-core loop
                ns = info["ns_per_call_mean_median_round"]
                goal_ns = info.get("issue_target_ns", 1000.0)
                met = "yes" if ns < goal_ns else "no"
                lines.append(
                    f"| {label} (native loop) | {ns:.0f} ns/call | - | - | < {goal_ns:.0f} ns | {met} |"
                )
                continue
            mine_txt = fmt_time(t_itp)
            rate = info.get("records_per_s")
            if rate is not None:
                mine_txt += f" ({rate / 1e6:.1f} M records/s)"
            anchor_txts, speedups = [], []
            for anchor in anchors:
                t_anchor = anchor["stats"]["median"]
                txt = f"{short_name(anchor)}: {fmt_time(t_anchor)}"
                a_rate = anchor.get("extra_info", {}).get("records_per_s")
                if a_rate is not None:
                    txt += f" ({a_rate / 1e6:.2f} M records/s)"
                anchor_txts.append(txt)
                speedups.append(t_anchor / t_itp)
            speedup_txt = ", ".join(f"{x:.1f}x" if x >= 1 else f"{x:.2f}x" for x in speedups) or "-"
            target, met = "-", "-"
            goal_rate = info.get("issue_target_records_per_s")
            goal_speedup = info.get("target_speedup")
            if goal_rate is not None and rate is not None:
                target = f"≥ {goal_rate / 1e6:.0f} M records/s"
                met = "yes" if rate >= goal_rate else "no"
            elif goal_speedup is not None and speedups:
                target = f"≥ {goal_speedup:g}x"
                met = "yes" if min(speedups) >= goal_speedup else "no"
            anchor_txt = "; ".join(anchor_txts) or "-"
            lines.append(f"| {label} | {mine_txt} | {anchor_txt} | {speedup_txt} | {target} | {met} |")
    return lines


def machine(results: dict[str, Any]) -> str:
    m = results.get("machine_info", {})
    cpu = m.get("cpu", {})
    brand = cpu.get("brand_raw") or m.get("processor") or "unknown CPU"
    cores = cpu.get("count", "?")
    return f"{brand}, {cores} logical CPUs, Python {m.get('python_version', '?')}, {m.get('system', '')}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bench/report.py RESULTS.json", file=sys.stderr)
        return 2
    results = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    print(f"Machine: {machine(results)}; {results.get('datetime', '')}")
    print()
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
