#!/usr/bin/env python3
"""Draws the Grafana dashboard (deploy/grafana/dashboards/erp-saga.json) as a PNG from a
real Prometheus: every panel's own PromQL, run as a range query over a window, laid out
on the dashboard's grid. Grafana itself cannot be installed on this project's machines
(not in Debian, no Docker); this keeps the dashboard's queries, titles, units and
legends and only replaces Grafana's renderer.

    render.py --prometheus http://127.0.0.1:9095 --start 1700000000 --end 1700000300 \\
              --out docs/dashboard.png
"""

import argparse
import datetime
import json
import pathlib
import re
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]
UNITS = {
    "reqps": (1, "records/s"),
    "s": (1000, "ms"),
    "bytes": (1 / 2**20, "MiB"),
    "short": (1, ""),
}


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode(dict(query=expr, start=start, end=end, step=step))
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()
    return text.replace("dash-", "").split("erp-", 1)[-1] if "erp-" in text else text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dashboard", default=str(ROOT / "deploy/grafana/dashboards/erp-saga.json"))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    dash = json.loads(pathlib.Path(args.dashboard).read_text())
    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) // 8
    plt.style.use("dark_background")
    fig, axes = plt.subplots(rows, 2, figsize=(16, 3.4 * rows + 1), squeeze=False)
    fig.patch.set_facecolor("#111217")
    step = max(2, int((args.end - args.start) / 300))
    empty = []
    for p in panels:
        ax = axes[p["gridPos"]["y"] // 8][p["gridPos"]["x"] // 12]
        ax.set_facecolor("#181b1f")
        scale, unit = UNITS.get(p["fieldConfig"]["defaults"].get("unit", "short"), (1, ""))
        drawn = 0
        for t in p["targets"]:
            for i, series in enumerate(query_range(args.prometheus, t["expr"], args.start, args.end, step)):
                xs = [datetime.datetime.fromtimestamp(float(ts), datetime.timezone.utc) for ts, _ in series["values"]]
                ys = [float(v) * scale if v not in ("NaN", "+Inf", "-Inf") else float("nan") for _, v in series["values"]]
                ax.plot(xs, ys, color=COLORS[(drawn + i) % len(COLORS)], linewidth=1.6,
                        label=legend(t.get("legendFormat", ""), series["metric"]))
            drawn += 1
        if not ax.lines:
            empty.append(p["title"])
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#8e8e8e")
        ax.set_xlim(datetime.datetime.fromtimestamp(args.start, datetime.timezone.utc),
                    datetime.datetime.fromtimestamp(args.end, datetime.timezone.utc))
        ax.set_title(p["title"], loc="left", fontsize=11, color="#ccccdc")
        ax.set_ylabel(unit, color="#8e8e8e")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        ax.grid(color="#2c3235", linewidth=0.6)
        for side in ax.spines.values():
            side.set_color("#2c3235")
        if ax.lines:
            ax.legend(loc="upper left", fontsize=7, ncol=3, frameon=False)
            ax.set_ylim(bottom=0)
    start = datetime.datetime.fromtimestamp(args.start, datetime.timezone.utc)
    fig.suptitle(f"{dash['title']} — {start:%Y-%m-%d %H:%M} UTC, {int(args.end - args.start)} s", x=0.01, ha="left",
                 fontsize=14, color="#ccccdc")
    fig.text(0.01, 0.005, "Panels: the queries of deploy/grafana/dashboards/erp-saga.json over a real run's Prometheus "
             f"data, drawn by deploy/grafana/render.py (Grafana is not installable here). {args.note}",
             fontsize=8, color="#8e8e8e")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(args.out, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {args.out}" + (f"; panels without data: {empty}" if empty else ""))


if __name__ == "__main__":
    main()
