"""Plots the main panels of deploy/grafana/carapace.json from the JSON that the e2e test
render_dashboard_data writes: render.py DATA.json OUT.png (run by render.sh)."""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

# The panels shown, in reading order; every other panel is in the dashboard only.
MAIN = [
    "Pods by state",
    "Containers by state",
    "CRI calls by method",
    "CRI errors by method and code",
    "CRI latency p99 by method",
    "Pod start latency",
    "Container start latency",
    "CNI ADD/DEL latency",
    "Image pull bytes",
    "Memory",
    "Open file descriptors",
    "CPU",
]
# A panel with many series (one per RPC) keeps its busiest ones, so the legend stays readable.
MAX_SERIES = 6


def human(unit):
    def fmt(v, _pos=None):
        if unit == "s":
            if v == 0:
                return "0"
            if abs(v) < 1e-3:
                return f"{v * 1e6:.0f}µs"
            if abs(v) < 1:
                return f"{v * 1e3:.0f}ms"
            return f"{v:.1f}s"
        if unit in ("bytes", "Bps"):
            suffix = "/s" if unit == "Bps" else ""
            for p, name in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
                if abs(v) >= 1024**p:
                    return f"{v / 1024 ** p:.1f}{name}{suffix}"
            return f"{v:.0f}B{suffix}"
        suffix = "/s" if unit in ("reqps", "ops") else ""
        return f"{v:.3g}{suffix}"

    return FuncFormatter(fmt)


def main(data_path, out_path):
    with open(data_path) as f:
        data = json.load(f)
    start = data["start"]
    by_panel = {}
    for t in data["panels"]:
        p = by_panel.setdefault(t["panel"], {"unit": t["unit"], "series": []})
        p["series"].extend(t["series"])
    missing = [m for m in MAIN if m not in by_panel]
    if missing:
        sys.exit(f"render.py: panels not in the data: {missing}")

    cols = 3
    rows = math.ceil(len(MAIN) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.2 * rows), dpi=72)
    fig.suptitle("carapace — one node, %.0f s of a busy kubelet (Prometheus, 1 s scrapes)"
                 % (data["end"] - start), fontsize=13)
    for ax, title in zip(axes.flat, MAIN):
        panel = by_panel[title]
        series = []
        for s in panel["series"]:
            pts = [(float(t) - start, float(v)) for t, v in s["values"]]
            pts = [(t, v) for t, v in pts if math.isfinite(v)]
            if pts:
                series.append((s["legend"] or title, pts))
        series.sort(key=lambda s: -max(v for _, v in s[1]))
        for legend, pts in series[:MAX_SERIES]:
            ax.plot([t for t, _ in pts], [v for _, v in pts], label=legend, linewidth=1.2)
        ax.set_title(title, fontsize=10, loc="left")
        ax.yaxis.set_major_formatter(human(panel["unit"]))
        ax.set_xlabel("seconds", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if series:
            ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_path, dpi=72)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
