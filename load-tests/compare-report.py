#!/usr/bin/env python3
"""Ratios and plots of one `load-tests/compare.sh` run (docs/BENCHMARKS.md).

Reads the run's results.jsonl (one poz-load JSON result per line, each
with its label), prints the goals of issue 15 (card #10) with their ratios, and
writes into OUT:
  - summary.json: the ratios and the maxima they come from;
  - throughput.svg: answered/s against offered load (open loop);
  - latency.svg: p50 and p99 against offered load (open loop);
  - maxima.svg: each server's closed-loop maximum.
Plots need matplotlib (compare.sh installs it in a cached venv); without
it the ratios are still printed and written.

    compare-report.py RESULTS.jsonl OUT
"""
import json
import sys
from collections import defaultdict

results_path, out = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(results_path) if line.strip()]

closed = defaultdict(list)
opened = defaultdict(list)
for r in rows:
    (opened if r["mode"] == "open" else closed)[r["label"]].append(r)


def best(label):
    """The better closed-loop run of a label (answers/s), or None."""
    runs = closed.get(label)
    return max(runs, key=lambda r: r["queries_per_second"]) if runs else None


def qps(label):
    r = best(label)
    return r["queries_per_second"] if r else float("nan")


def at_half(label):
    """The open-loop run at half of the label's maximum."""
    runs = sorted(opened.get(label, []), key=lambda r: r["offered_per_second"])
    m = qps(label)
    near = [r for r in runs if abs(r["offered_per_second"] - m / 2) <= 0.01 * m + 1]
    return near[0] if near else None


summary = {"goals": [], "maxima": {k: qps(k) for k in sorted(closed)}}


def goal(name, value, target, detail, higher_is_better=True):
    if value != value:  # NaN: this run did not measure one side
        return
    met = value >= target if higher_is_better else value <= target
    summary["goals"].append(
        {"goal": name, "value": value, "target": target, "met": met, "detail": detail}
    )
    cmp = ">=" if higher_is_better else "<="
    print(f"  {name:<46} {value:7.2f}  (goal {cmp} {target}; {'met' if met else 'NOT met'})  {detail}")


for side in ("pozd", "split"):
    p, k = qps(f"{side}-plain"), qps("knot")
    goal(f"P1 {side} plaintext / Knot", p / k, 1.0, f"{p:.0f}/s vs {k:.0f}/s")
for side in ("pozd", "split"):
    n, b = qps(f"{side}-noise"), qps("bare-nk")
    goal(f"P2 {side} Noise / bare NK", n / b, 0.9, f"{n:.0f}/s vs {b:.0f}/s")
for label in ("pozd-plain", "split-plain", "pozd-noise", "split-noise", "knot", "bare-nk"):
    r = at_half(label)
    if r:
        goal(
            f"p99 at half of max load, {label} (ms)",
            r["p99_ms"],
            2.0,
            f"at {r['offered_per_second']:.0f}/s offered",
            higher_is_better=False,
        )
alone, flooded = (
    next((r for r in rows if r["label"] == "honest-alone"), None),
    next((r for r in rows if r["label"] == "honest-in-flood"), None),
)
flood = next((r for r in rows if r["label"] == "flood"), None)
if alone and flooded and flood:
    sat = flood["errors"].get("client-saturated", 0)
    sent = (flood["attempts"] - sat) / flood["seconds"]
    goal(
        "flood: honest success in flood / alone",
        flooded["success_rate"] / alone["success_rate"] if alone["success_rate"] else 0.0,
        0.8,
        f"{100 * flooded['success_rate']:.1f}% vs {100 * alone['success_rate']:.1f}%; honest p99 "
        f"{flooded['p99_ms']:.1f} vs {alone['p99_ms']:.1f} ms; flood offered "
        f"{flood['offered_per_second']:.0f}/s, sent {sent:.0f}/s",
    )
for side in ("pozd", "split"):
    for sec in ("plain", "noise"):
        on, off = qps(f"{side}-{sec}-cache"), qps(f"{side}-{sec}")
        if on == on and off == off:
            print(f"  cache on / off, {side} {sec}: {on:.0f}/s vs {off:.0f}/s")

json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)

try:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt
except ImportError:
    print("(matplotlib missing: no plots)")
    sys.exit(0)

plt.rcParams["svg.hashsalt"] = "poz"  # the same run gives the same file
labels = [k for k in ("knot", "pozd-plain", "split-plain", "bare-nk", "pozd-noise", "split-noise") if k in opened]

fig, ax = plt.subplots(figsize=(7, 4.5))
for k in labels:
    runs = sorted(opened[k], key=lambda r: r["offered_per_second"])
    ax.plot([r["offered_per_second"] for r in runs], [r["queries_per_second"] for r in runs], marker="o", label=k)
top = max((r["offered_per_second"] for k in labels for r in opened[k]), default=1)
ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="answered = offered")
ax.set_xlabel("offered load (queries/s, open loop)")
ax.set_ylabel("answered (queries/s)")
ax.set_title("Throughput against offered load (new TCP connection per query)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(f"{out}/throughput.svg")
fig.savefig(f"{out}/throughput.png", dpi=80)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
for ax, (q, name) in zip(axes, (("p50_ms", "p50"), ("p99_ms", "p99"))):
    for k in labels:
        # A load nothing was answered at has no latency to plot.
        runs = sorted((r for r in opened[k] if r["queries"] > 0), key=lambda r: r["offered_per_second"])
        m = qps(k)
        ax.plot([r["offered_per_second"] / m for r in runs], [r[q] for r in runs], marker="o", label=k)
    ax.axhline(2.0, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("offered load / closed-loop maximum")
    ax.set_title(f"{name} latency (ms, from scheduled arrival)")
    ax.grid(alpha=0.3, which="both")
axes[0].set_ylabel("ms")
if labels:
    axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(f"{out}/latency.svg")
fig.savefig(f"{out}/latency.png", dpi=80)

fig, ax = plt.subplots(figsize=(8, 4))
names = list(summary["maxima"])
ax.barh(names, [summary["maxima"][n] for n in names])
ax.set_xlabel("answered/s, closed loop")
ax.set_title("Closed-loop maximum, each server")
ax.grid(alpha=0.3, axis="x")
fig.tight_layout()
fig.savefig(f"{out}/maxima.svg")
print(f"  plots: {out}/throughput.svg {out}/latency.svg {out}/maxima.svg")
