"""Draws the speed-up of joblib-rs over joblib per workload from ``run.py --json`` results.

    python benchmarks/chart.py results.json [-o docs/benchmarks.png] [--markdown]

A horizontal bar per workload (joblib time / joblib-rs time, log scale, a line at 1x: bars
to the right of it are faster than joblib). ``--markdown`` also prints the results as a
Markdown table. Needs matplotlib (``pip install '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import pathlib

from _common import fmt_seconds


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| benchmark | workload | joblib | joblib-rs | speed-up |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['workload']} | {fmt_seconds(r['joblib_s'])} | "
            f"{fmt_seconds(r['joblib_rs_s'])} | {r['ratio']:.1f}x |"
        )
    return "\n".join(lines)


def draw(results: dict, output: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"][::-1]  # first row on top
    labels = [f"{r['benchmark']}: {r['workload']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    colours = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.6))
    ax.barh(range(len(rows)), ratios, color=colours, height=0.7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    for i, x in enumerate(ratios):
        ax.annotate(
            f"{x:.1f}x", (x, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
        )
    m = results["machine"]
    ax.set_xlabel("speed-up over joblib (joblib time / joblib-rs time, log scale)")
    ax.set_title(
        f"joblib-rs {m['joblib_rs']} vs joblib {m['joblib']}, side by side in one "
        f"process, {m['cpus']} cores ({m['date']})",
        fontsize=9,
    )
    ax.set_xlim(min(0.5, min(ratios) / 1.5), max(ratios) * 3)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    print(f"wrote {output}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="JSON written by benchmarks/run.py --json")
    p.add_argument("-o", "--output", default="docs/benchmarks.png")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = p.parse_args()
    results = json.loads(pathlib.Path(args.results).read_text())
    draw(results, pathlib.Path(args.output))
    if args.markdown:
        print(markdown_table(results["rows"]))


if __name__ == "__main__":
    main()
