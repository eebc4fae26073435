#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Draw a weft trace (Chrome trace-event JSON, runtime_options::trace or
WEFT_TRACE) as a PNG: one row per thread, a bar per resume segment (coloured by
task), arrows for spawn -> first run and steal flows, marks for cancel requests
and deliveries.  For the docs' screenshot; open the file in ui.perfetto.dev to
explore it.

    python3 scripts/trace_png.py trace.json out.png [--from US] [--to US]
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("png")
    ap.add_argument("--from", dest="t0", type=float, default=None, help="window start (us)")
    ap.add_argument("--to", dest="t1", type=float, default=None, help="window end (us)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()

    with open(args.trace) as f:
        trace = json.load(f)
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    t0 = args.t0 if args.t0 is not None else 0.0
    t1 = args.t1 if args.t1 is not None else max(
        [e["ts"] + e.get("dur", 0) for e in events if e["ph"] != "M"] or [1.0])

    def visible(ts, dur=0.0):
        return ts + dur >= t0 and ts <= t1

    tids = sorted(tid for tid in names
                  if any(e.get("tid") == tid and e["ph"] != "M" and visible(e["ts"], e.get("dur", 0))
                         for e in events))
    if not tids:
        sys.exit("trace_png: no events in the window")
    row = {tid: i for i, tid in enumerate(tids)}
    fig, ax = plt.subplots(figsize=(12, 0.9 * len(tids) + 1.6), dpi=110)
    cmap = plt.get_cmap("tab20")
    colour = {}
    labelled = set()
    for e in events:
        if e["ph"] != "X" or e["tid"] not in row or not visible(e["ts"], e["dur"]):
            continue
        c = colour.setdefault(e["name"], cmap(len(colour) % 20))
        label = e["name"] if e["name"] not in labelled and len(labelled) < 12 else None
        labelled.add(e["name"])
        ax.broken_barh([(e["ts"], max(e["dur"], (t1 - t0) / 2000))], (row[e["tid"]] - 0.35, 0.7),
                       facecolors=c, edgecolor="white", linewidth=0.4, label=label)
    starts = {}
    for e in events:
        if e["ph"] == "s":
            starts[(e["cat"], e["id"])] = e
    for e in events:
        if e["ph"] != "f":
            continue
        s = starts.get((e["cat"], e["id"]))
        if s is None or s["tid"] not in row or e["tid"] not in row:
            continue
        if not (visible(s["ts"]) or visible(e["ts"])) or s["tid"] == e["tid"]:
            continue
        ax.annotate("", xy=(e["ts"], row[e["tid"]]), xytext=(s["ts"], row[s["tid"]]),
                    arrowprops=dict(arrowstyle="->", lw=0.6,
                                    color="tab:red" if e["cat"] == "steal" else "0.35",
                                    alpha=0.7))
    for e in events:
        if e["ph"] != "i" or e["tid"] not in row or not visible(e["ts"]):
            continue
        request = e["name"] == "cancel request"
        # Requests above the thread's row pointing down, deliveries below
        # pointing up (the y axis grows downwards).
        y = row[e["tid"]] + (-0.45 if request else 0.45)
        ax.plot(e["ts"], y, marker="v" if request else "^",
                color="black" if request else "tab:purple", markersize=7, linestyle="none")
        what = e["args"].get("reason") or e["args"].get("kind", "")
        ax.annotate(("request: " if request else "delivered: ") + what,
                    (e["ts"], y), xytext=(4, 0), textcoords="offset points", fontsize=7,
                    ha="left", va="center")
    ax.set_yticks(range(len(tids)))
    ax.set_yticklabels([names[t] for t in tids])
    ax.set_ylim(len(tids) - 0.3, -0.9)
    ax.set_xlim(t0, t1)
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.set_xlabel("time (us since the first event)")
    other = trace.get("otherData", {})
    ax.set_title(args.title or "weft trace: %s clock, %s event(s) dropped; grey arrows: spawn -> "
                 "first run, red: steals; v cancel request, ^ delivered"
                 % (other.get("clock", "?"), other.get("dropped_events", "?")), fontsize=9)
    if labelled:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=7,
                  frameon=False)
    fig.tight_layout()
    fig.savefig(args.png)


if __name__ == "__main__":
    main()
