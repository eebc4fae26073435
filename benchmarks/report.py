#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turn the raw JSON of one scripts/bench.sh run into results.json, results.md
and PNG plots.

    python3 benchmarks/report.py RAW_DIR OUT_DIR

RAW_DIR holds what the benchmark programs wrote (fib.json, skynet.json,
nqueens.json, uts.json, cancel_latency.json, mass_cancel.json, memory.json,
micro.json from Google Benchmark, slow_mode.json when the suite was built with
libfork) and meta.json from scripts/bench.sh (machine,
load, compiler, commit).  A missing file leaves its section out.  Writes
OUT_DIR/results.json (everything, merged), OUT_DIR/results.md (medians and
ratios, and the performance targets against the measured figures; with
libfork's figures, its columns beside oneTBB's; the issue-17 targets: the
fork-join form, weft-fork, against libfork, spawn+join against the fork-join
form, and the fork-join form's memory) and
OUT_DIR/img/*.png (matplotlib, Agg backend: no display needed).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WEFT_COLOR = "#1f77b4"
TBB_COLOR = "#d62728"
SERIAL_COLOR = "#555555"
LIBFORK_COLOR = "#2ca02c"
COLORS = {"weft": WEFT_COLOR, "oneTBB": TBB_COLOR, "libfork": LIBFORK_COLOR}
# Other weft spellings (weft-extern, a fork-join form), in the order met.
EXTRA_COLORS = ["#9467bd", "#ff7f0e", "#17becf", "#8c564b"]


def load(raw, name):
    path = os.path.join(raw, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt_ms(v):
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt(v, digits=1):
    if v is None:
        return "—"
    return f"{v:.{digits}f}"


# ---------------------------------------------------------------- throughput


def throughput_groups(docs):
    """{(problem, instance): {(runtime, workers): result}} in the order seen."""
    groups = {}
    for doc in docs:
        if not doc:
            continue
        for r in doc["results"]:
            key = (r["problem"], r["instance"])
            groups.setdefault(key, {})[(r["runtime"], r["workers"])] = r
    return groups


def runtimes_of(g):
    """The runtimes of one group in the order of the tables and plots: weft,
    the other weft spellings, oneTBB, libfork (the optional peer)."""
    names = []
    for rt, _ in g:
        if rt not in names and rt != "serial":
            names.append(rt)
    rank = {"weft": 0, "oneTBB": 2, "libfork": 3}
    return sorted(names, key=lambda rt: (rank.get(rt, 1), rt))


def color_of(rt, extras):
    if rt in COLORS:
        return COLORS[rt]
    return EXTRA_COLORS[extras.index(rt) % len(EXTRA_COLORS)] if rt in extras else "black"


def throughput_table(groups):
    with_lf = any(rt == "libfork" for g in groups.values() for (rt, _) in g)
    head = ("| problem | instance | tasks | workers | serial ms | weft ms | oneTBB ms "
            "| oneTBB / weft | weft ns/task | oneTBB ns/task | weft / serial |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if with_lf:
        head += " libfork ms | weft / libfork | libfork ns/task |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    extras = []  # (problem, instance, workers, runtime, result, weft, libfork)
    for (problem, instance), g in groups.items():
        serial = g.get(("serial", 1))
        workers = sorted({w for (rt, w) in g if rt == "weft"})
        for k in workers:
            w, t = g.get(("weft", k)), g.get(("oneTBB", k))
            if not w or not t:
                continue
            tasks = w["tasks"]
            row = (f"| {problem} | {instance} | {tasks:,.0f} | {k} "
                   f"| {fmt_ms(serial['median_ms']) if serial else '—'} "
                   f"| {fmt_ms(w['median_ms'])} ({fmt_ms(w['min_ms'])}–{fmt_ms(w['max_ms'])}) "
                   f"| {fmt_ms(t['median_ms'])} ({fmt_ms(t['min_ms'])}–{fmt_ms(t['max_ms'])}) "
                   f"| **{t['median_ms'] / w['median_ms']:.2f}x** "
                   f"| {w['median_ms'] * 1e6 / tasks:.1f} | {t['median_ms'] * 1e6 / tasks:.1f} "
                   + (f"| {w['median_ms'] / serial['median_ms']:.1f}x |" if serial else "| — |"))
            lf = g.get(("libfork", k))
            if with_lf and lf:
                row += (f" {fmt_ms(lf['median_ms'])} ({fmt_ms(lf['min_ms'])}–"
                        f"{fmt_ms(lf['max_ms'])}) | **{w['median_ms'] / lf['median_ms']:.2f}x** "
                        f"| {lf['median_ms'] * 1e6 / tasks:.1f} |")
            elif with_lf:
                row += " — | — | — |"
            lines.append(row)
            for rt in runtimes_of(g):
                if rt not in ("weft", "oneTBB", "libfork") and (rt, k) in g:
                    extras.append((problem, instance, k, rt, g[(rt, k)], w, lf))
    if extras:
        lines += ["", "Other weft spellings of the same problems (the same runtime, interleaved "
                  "with the rest):", ""]
        lines.append("| problem | instance | workers | spelling | ms | ns/task | / weft "
                     + ("| / libfork |" if with_lf else "|"))
        lines.append("|---|---|---:|---|---:|---:|---:|" + ("---:|" if with_lf else ""))
        for problem, instance, k, rt, r, w, lf in extras:
            line = (f"| {problem} | {instance} | {k} | {rt} "
                    f"| {fmt_ms(r['median_ms'])} ({fmt_ms(r['min_ms'])}–{fmt_ms(r['max_ms'])}) "
                    f"| {r['median_ms'] * 1e6 / r['tasks']:.1f} "
                    f"| {r['median_ms'] / w['median_ms']:.2f}x |")
            if with_lf:
                line += f" **{r['median_ms'] / lf['median_ms']:.2f}x** |" if lf else " — |"
            lines.append(line)
    lines.append("")
    lines.append("Scaling from 1 to 2 workers (median 1-worker time / median 2-worker time):")
    lines.append("")
    scaled = []  # every runtime measured, in the tables' order
    for g in groups.values():
        for rt in runtimes_of(g):
            if rt not in scaled:
                scaled.append(rt)
    scaled.sort(key=lambda rt: ({"weft": 0, "oneTBB": 2, "libfork": 3}.get(rt, 1), rt))
    lines.append("| problem | instance | " + " | ".join(scaled) + " |")
    lines.append("|---|---|" + "---:|" * len(scaled))
    for (problem, instance), g in groups.items():
        if ("weft", 1) in g and ("weft", 2) in g:
            cells = []
            for rt in scaled:
                if (rt, 1) in g and (rt, 2) in g:
                    cells.append(f"{g[(rt, 1)]['median_ms'] / g[(rt, 2)]['median_ms']:.2f}x")
                else:
                    cells.append("—")
            lines.append(f"| {problem} | {instance} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slug(problem, instance):
    s = f"{problem}_{instance}".lower()
    out = "".join(c if c.isalnum() else "_" for c in s)
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")[:60]


def plot_throughput(groups, img_dir, subtitle):
    files = []
    for (problem, instance), g in groups.items():
        workers = sorted({w for (rt, w) in g if rt == "weft"})
        serial = g.get(("serial", 1))
        rts = [rt for rt in runtimes_of(g) if all((rt, k) in g for k in workers)]
        extras = [rt for rt in rts if rt not in COLORS]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
        width = 0.72 / len(rts)
        xs = list(range(len(workers)))
        for i, rt in enumerate(rts):
            med = [g[(rt, k)]["median_ms"] for k in workers]
            lo = [g[(rt, k)]["median_ms"] - g[(rt, k)]["min_ms"] for k in workers]
            hi = [g[(rt, k)]["max_ms"] - g[(rt, k)]["median_ms"] for k in workers]
            pos = [x + (i - (len(rts) - 1) / 2) * width for x in xs]
            bars = ax1.bar(pos, med, width, yerr=[lo, hi], capsize=4, color=color_of(rt, extras),
                           label=rt)
            for b, v in zip(bars, med):
                ax1.annotate(fmt_ms(v), (b.get_x() + b.get_width() / 2, v / 2), ha="center",
                             va="center", fontsize=8, color="white", fontweight="bold",
                             rotation=90)
        if serial:
            ax1.axhline(serial["median_ms"], color=SERIAL_COLOR, linestyle="--",
                        label=f"serial {fmt_ms(serial['median_ms'])} ms")
        ax1.set_xticks(xs)
        ax1.set_xticklabels([f"{k} worker{'s' if k > 1 else ''}" for k in workers])
        ax1.set_ylabel("wall time, ms (median; bars: min–max)")
        ax1.set_title("time")
        ax1.legend(fontsize=8)
        ax1.set_ylim(0, ax1.get_ylim()[1] * 1.08)

        top = 2.0
        for j, rt in enumerate(rts):
            color = color_of(rt, extras)
            base = g[(rt, workers[0])]["median_ms"]
            sp = [base / g[(rt, k)]["median_ms"] for k in workers]
            top = max(top, max(sp))
            label = f"{rt}"
            if serial:
                vs = ", ".join(f"{serial['median_ms'] / g[(rt, k)]['median_ms']:.3g}x"
                               for k in workers)
                label += f" (vs serial: {vs})"
            ax2.plot(workers, sp, "o-", color=color, label=label)
            for k, v in list(zip(workers, sp))[1:]:
                ax2.annotate(f"{v:.2f}x", (k, v), fontsize=8, color=color,
                             xytext=(6, 4 - 16 * (j % 2)), textcoords="offset points")
        ax2.plot(workers, [k / workers[0] for k in workers], color="#999999", linewidth=0.8,
                 linestyle="--", label="ideal")
        ax2.set_xticks(workers)
        ax2.set_xlim(workers[0] - 0.3, workers[-1] + 0.5)
        ax2.set_ylim(0, top * 1.15)
        ax2.set_xlabel("workers")
        ax2.set_ylabel(f"speedup over its own {workers[0]}-worker time")
        ax2.set_title("speedup (self-relative; vs serial in the legend)")
        ax2.legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{problem}, {instance}\n{subtitle}", fontsize=9)
        fig.tight_layout()
        name = f"throughput_{slug(problem, instance)}.png"
        fig.savefig(os.path.join(img_dir, name), dpi=110)
        plt.close(fig)
        files.append((f"{problem}, {instance}", name))
    return files


# ---------------------------------------------------------------- libfork (issue 17)


def is_fork(rt):
    """weft's fork-join form (weft::fork_task): "weft-fork", "weft-fork-extern"."""
    return rt.startswith("weft-fork")


# The spawn+join spelling each fork-join spelling is compared with.
SPAWN_OF = {"weft-fork": "weft", "weft-fork-extern": "weft-extern"}


def fork_memory(mem):
    """The fork-join form's memory figures in memory.json: ({(runtime, workers): fib
    peak record}, serial fib peak record, [suspended forked children records])."""
    if not mem:
        return {}, None, []
    peaks = {(r["runtime"], r["workers"]): r for r in mem["results"]
             if r["case"] == "fib_peak_rss"}
    serial = next((r for (rt, _), r in peaks.items() if rt == "serial"), None)
    forked = [r for r in mem["results"] if r["case"] == "suspended_forked_children"]
    return peaks, serial, forked


def peer_targets(groups, slow, mem=None):
    """The issue-17 targets: the fork-join form (weft-fork, weft-fork-extern)
    against libfork, spawn+join against the fork-join form, the fork-join
    form's scaling and memory, and the slow mode; the spawn-form spellings
    against libfork for reference.  None when there is nothing to show."""
    has_lf = any(rt == "libfork" for g in groups.values() for (rt, _) in g)
    has_fork = any(is_fork(rt) for g in groups.values() for (rt, _) in g)
    peaks, serial_peak, forked = fork_memory(mem)
    has_fork_mem = forked or any(is_fork(rt) for (rt, _) in peaks)
    if not (has_lf or has_fork or has_fork_mem or slow):
        return None
    lines = ["| target (issue 17) | workers | weft form, spelling | weft | compared with "
             "| ratio | oneTBB ms | result |", "|---|---:|---|---:|---:|---:|---:|---|"]

    def ok(b):
        return "met" if b else "**not met**"

    def form(rt):
        return f"fork-join, {rt}" if is_fork(rt) else f"spawn+join, {rt}"

    for (p, inst), g in groups.items():
        # The sizes are fib(35) and skynet 10^8; a run with smaller
        # ones (--quick, a busy machine) is shown with its own size.
        if p in ("fib", "skynet"):
            target = f"{p} ({inst}): at most 1.0x libfork's time"
        elif p in ("nqueens", "uts_geo", "uts_bin"):
            target = f"{p} ({inst}): at least as fast as libfork, faster than oneTBB"
        else:
            continue
        fork_here = any(is_fork(rt) for (rt, _) in g)
        for k in sorted({w for (rt, w) in g if rt == "libfork"}):
            lf, t = g[("libfork", k)], g.get(("oneTBB", k))
            # The fork-join form first: the targets are its; then spawn+join.
            for rt in sorted((rt for rt in runtimes_of(g) if rt.startswith("weft")),
                             key=lambda rt: (not is_fork(rt), rt)):
                if (rt, k) not in g:
                    continue
                w = g[(rt, k)]
                r = w["median_ms"] / lf["median_ms"]
                met = r <= 1.0 and (p not in ("nqueens", "uts_geo", "uts_bin") or not t
                                    or w["median_ms"] < t["median_ms"])
                result = ok(met) if is_fork(rt) or not fork_here else \
                    f"reference ({'at most 1.0x' if met else 'over 1.0x'})"
                lines.append(f"| {target} | {k} | {form(rt)} | {fmt_ms(w['median_ms'])} ms "
                             f"| libfork {fmt_ms(lf['median_ms'])} ms | **{r:.2f}x** "
                             f"| {fmt_ms(t['median_ms']) if t else '—'} | {result} |")
    for (p, inst), g in groups.items():
        if p != "fib":
            continue
        for k in sorted({w for (rt, w) in g}):
            for fork_rt, spawn_rt in SPAWN_OF.items():
                if (fork_rt, k) not in g or (spawn_rt, k) not in g:
                    continue
                f, s = g[(fork_rt, k)]["median_ms"], g[(spawn_rt, k)]["median_ms"]
                lines.append(f"| spawn+join / fork-join on fib ({inst}): within 1.5x | {k} "
                             f"| spawn+join, {spawn_rt} | {fmt_ms(s)} ms "
                             f"| {fork_rt} {fmt_ms(f)} ms | **{s / f:.2f}x** "
                             f"| {fmt_ms(g[('oneTBB', k)]['median_ms']) if ('oneTBB', k) in g else '—'} "
                             f"| {ok(s / f <= 1.5)} |")
    for (p, inst), g in groups.items():
        for rt in runtimes_of(g):
            if is_fork(rt) and (rt, 1) in g and (rt, 2) in g:
                one, two = g[(rt, 1)]["median_ms"], g[(rt, 2)]["median_ms"]
                lf = (f"libfork {g[('libfork', 1)]['median_ms'] / g[('libfork', 2)]['median_ms']:.2f}x"
                      if ("libfork", 1) in g and ("libfork", 2) in g else "—")
                lines.append(f"| {p} ({inst}): scaling 1 → 2 workers at least 1.9x | 1 → 2 "
                             f"| {form(rt)} | {fmt_ms(one)} → {fmt_ms(two)} ms | {lf} "
                             f"| **{one / two:.2f}x** | — | {ok(one / two >= 1.9)} |")
    if serial_peak:
        base = serial_peak["median_peak_mib"]
        for (rt, k), r in peaks.items():
            if not is_fork(rt):
                continue
            d = r["median_peak_mib"] - base
            lines.append(f"| peak RSS of fib({mem['fib_n']}) within 0.5 MiB of the serial "
                         f"process | {k} | {form(rt)} | {r['median_peak_mib']:.2f} MiB "
                         f"| serial {base:.2f} MiB | +{d:.2f} MiB | — | {ok(d <= 0.5)} |")
    for r in forked:
        lines.append(f"| {r['children']:,} suspended forked children: under 256 bytes each "
                     f"| {r['workers']} | fork-join, {r['runtime']} "
                     f"| {r['median_bytes_per_child']:.0f} B | frame block "
                     f"{r['leaf_block_bytes']:.0f} B | — | — "
                     f"| {ok(r['median_bytes_per_child'] < 256)} |")
    if slow:
        by = {r["runtime"]: r for r in slow["results"]}
        weft = next((r for rt, r in by.items() if rt.startswith("weft")), None)
        lf = by.get("libfork")
        if weft and lf:
            lines.append(
                f"| slow mode: in {slow['pairs']:,} alternating runs of fib({slow['n']}), weft "
                f"slow (over {slow['slow_factor']:g}x its best) no more often than libfork "
                f"| {slow['workers']} | {form(weft['runtime'])} | {weft['slow_runs']} slow, best "
                f"{fmt_ms(weft['best_ms'])} ms | libfork {lf['slow_runs']} slow, best "
                f"{fmt_ms(lf['best_ms'])} ms | — | — | {ok(weft['slow_runs'] <= lf['slow_runs'])} |")
    return "\n".join(lines)


def slow_table(doc):
    lines = [f"fib({doc['n']}) on {doc['workers']} workers, {doc['pairs']} pairs of runs "
             f"alternating in one process; slow = over {doc['slow_factor']:g}x the runtime's own "
             "best.", "",
             "| runtime | runs | best ms | median ms | max ms | slow runs |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        lines.append(f"| {r['runtime']} | {r['runs']} | {fmt_ms(r['best_ms'])} "
                     f"| {fmt_ms(r['median_ms'])} | {fmt_ms(r['max_ms'])} | **{r['slow_runs']}** |")
    return "\n".join(lines)


def plot_slow(doc, img_dir, subtitle):
    fig, ax = plt.subplots(figsize=(10, 4))
    for r in doc["results"]:
        color = COLORS.get(r["runtime"], EXTRA_COLORS[0])
        ax.plot(range(len(r["samples_ms"])), r["samples_ms"], ".", markersize=3, color=color,
                label=f"{r['runtime']}: best {fmt_ms(r['best_ms'])} ms, {r['slow_runs']} slow")
        ax.axhline(r["best_ms"] * doc["slow_factor"], color=color, linewidth=0.7, linestyle="--")
    ax.set_xlabel("run (each runtime's own sequence; the two alternate)")
    ax.set_ylabel("ms")
    ax.set_ylim(0, ax.get_ylim()[1])
    ax.set_title(f"slow mode: fib({doc['n']}), {doc['workers']} workers; dashed: "
                 f"{doc['slow_factor']:g}x best\n{subtitle}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "slow_mode.png"
    fig.savefig(os.path.join(img_dir, name), dpi=110)
    plt.close(fig)
    return name


def steals_table(groups):
    """Steals and parks per timed run of weft's spellings (runtime::stats(),
    read before and after each run), medians; "" when no result has them."""
    lines = ["| problem | instance | workers | spelling | steals per run | parks per run |",
             "|---|---|---:|---|---:|---:|"]
    for (problem, instance), g in groups.items():
        for rt in runtimes_of(g):
            for k in sorted(w for (r, w) in g if r == rt):
                r = g[(rt, k)]
                if "steals_median" not in r:
                    continue
                lines.append(f"| {problem} | {instance} | {k} | {rt} | {r['steals_median']:,.0f} "
                             f"| {r['parks_median']:,.0f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


# ---------------------------------------------------------------- cancellation


def latency_table(doc):
    lines = [
        "| workers | variant | measured to | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs "
        "| p50 of each fifth µs | samples |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    names = {"to_handler": "catch block / flag seen", "to_join": "join() / wait() returns",
             "rt_to_delivery": "runtime::stats(): request → delivered"}
    for r in doc["results"]:
        fifths = " ".join(f"{v:.1f}" for v in r["chunk_p50_us"])
        lines.append(
            f"| {r['workers']} | {r['variant']} | {names[r['metric']]} | {r['p50_us']:.2f} "
            f"| {r['p90_us']:.2f} | {r['p99_us']:.1f} | {r['p999_us']:.1f} | {r['max_us']:.0f} "
            f"| {fifths} | {r['count']} |"
        )
    return "\n".join(lines)


def plot_latency(doc, img_dir, subtitle):
    results = doc["results"]
    workers = sorted({r["workers"] for r in results})
    metrics = ("to_handler", "to_join")
    titles = {"to_handler": "cancel() → catch block (weft) / flag seen (oneTBB)",
              "to_join": "cancel() → join() (weft) / wait() (oneTBB) returns"}
    styles = {"weft_parked": (WEFT_COLOR, "-"), "weft_checkpoint": ("#2ca02c", "-"),
              "tbb_poll": (TBB_COLOR, "--")}
    labels = {"weft_parked": "weft, parked in sleep_for",
              "weft_checkpoint": "weft, checkpoint() loop",
              "tbb_poll": "oneTBB, polling loop"}
    fig, axes = plt.subplots(len(workers), 2, figsize=(11, 3.6 * len(workers)), squeeze=False)
    for i, k in enumerate(workers):
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            for r in results:
                if r["workers"] != k or r["metric"] != m:
                    continue
                s = sorted(r["samples_us"])
                n = len(s)
                ys = [(idx + 1) / n for idx in range(n)]
                color, ls = styles.get(r["variant"], ("black", "-"))
                ax.plot(s, ys, ls, color=color, linewidth=1.4,
                        label=f"{labels.get(r['variant'], r['variant'])}: p50 {r['p50_us']:.1f}, "
                              f"p99 {r['p99_us']:.0f} µs")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.0)
            ax.axhline(0.5, color="#bbbbbb", linewidth=0.6)
            ax.axhline(0.99, color="#bbbbbb", linewidth=0.6)
            ax.set_xlabel("latency, µs (log scale)")
            ax.set_ylabel("fraction of samples ≤ x")
            ax.set_title(f"{k} worker{'s' if k > 1 else ''}: {titles[m]}", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(True, which="both", alpha=0.25)
    fig.suptitle(f"cancellation latency, CDF of {results[0]['count']} samples per line\n{subtitle}",
                 fontsize=9)
    fig.tight_layout()
    name = "cancel_latency.png"
    fig.savefig(os.path.join(img_dir, name), dpi=110)
    plt.close(fig)
    return name


def mass_table(doc):
    lines = [
        "| workers | runtime | tasks | total ns/task | cancel calls ns/task | drain ns/task "
        "| total, each rep (ns/task) | bodies run |",
        "|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in doc["results"]:
        reps = " ".join(f"{v:.0f}" for v in r["total_ns_per_task"])
        lines.append(
            f"| {r['workers']} | {r['runtime']} | {r['tasks']:,} | **{r['median_total_ns_per_task']:.1f}** "
            f"| {r['median_cancel_ns_per_task']:.1f} | {r['median_drain_ns_per_task']:.1f} "
            f"| {reps} | {r['bodies_ran']} |"
        )
    return "\n".join(lines)


def plot_mass(doc, img_dir, subtitle):
    rs = doc["results"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    labels, cancel, drain, colors, totals = [], [], [], [], []
    for r in rs:
        labels.append(f"{r['runtime']}\n{r['workers']} worker{'s' if r['workers'] > 1 else ''}")
        cancel.append(r["median_cancel_ns_per_task"])
        drain.append(r["median_drain_ns_per_task"])
        totals.append(r["median_total_ns_per_task"])
        colors.append(WEFT_COLOR if r["runtime"] == "weft" else TBB_COLOR)
    xs = range(len(rs))
    ax.bar(xs, cancel, color=colors, alpha=0.45, label="cancel call(s)")
    ax.bar(xs, drain, bottom=cancel, color=colors, label="drain until all resolved")
    for x, c, d, t in zip(xs, cancel, drain, totals):
        ax.annotate(f"total {t:.0f}", (x, c + d), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("ns per task (medians of the reps)")
    ax.set_title(f"mass cancel of {rs[0]['tasks']:,} queued tasks\n{subtitle}", fontsize=9)
    ax.legend(fontsize=8)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
    fig.tight_layout()
    name = "mass_cancel.png"
    fig.savefig(os.path.join(img_dir, name), dpi=110)
    plt.close(fig)
    return name


def memory_table(doc):
    lines = [
        f"fib({doc['fib_n']}), peak RSS (VmHWM) of a fresh process per measurement:",
        "",
        "| runtime | workers | peak MiB (median) | peak − serial's, MiB | before fib MiB "
        "| each rep, MiB |",
        "|---|---:|---:|---:|---:|---|",
    ]
    _, serial, forked = fork_memory(doc)
    for r in doc["results"]:
        if r["case"] != "fib_peak_rss":
            continue
        reps = " ".join(f"{v:.2f}" for v in r["peak_mib"])
        w = "—" if r["runtime"] == "serial" else r["workers"]
        d = (f"{r['median_peak_mib'] - serial['median_peak_mib']:+.2f}"
             if serial and r is not serial else "—")
        lines.append(f"| {r['runtime']} | {w} | **{r['median_peak_mib']:.2f}** | {d} "
                     f"| {r['median_before_mib']:.2f} | {reps} |")
    lines += [
        "",
        f"{doc['sleeping_tasks']:,} weft tasks suspended in `sleep_for(1h)`:",
        "",
        "| workers | bytes per task (median) | each rep | RSS before → after, MiB "
        "| then cancel all: ns/task (median) |",
        "|---:|---:|---|---|---:|",
    ]
    for r in doc["results"]:
        if r["case"] != "suspended_tasks":
            continue
        reps = " ".join(f"{v:.0f}" for v in r["bytes_per_task"])
        b = sorted(r["rss_before_mib"])[len(r["rss_before_mib"]) // 2]
        a = sorted(r["rss_after_mib"])[len(r["rss_after_mib"]) // 2]
        lines.append(f"| {r['workers']} | **{r['median_bytes_per_task']:.0f}** | {reps} "
                     f"| {b:.1f} → {a:.1f} | {r['median_cancel_ns_per_task']:.0f} |")
    if forked:
        lines += [
            "",
            f"{forked[0]['children']:,} forked children suspended at once (the fork-join form: "
            f"leaves waiting in `yield()`, {forked[0]['children_per_group']:,} per group frame; "
            "VmRSS growth divided by the count):",
            "",
            "| workers | bytes per child (median) | each rep | RSS before → after, MiB "
            "| leaf frame block | group frame block | sizeof promise<long> |",
            "|---:|---:|---|---|---:|---:|---:|",
        ]
        for r in forked:
            reps = " ".join(f"{v:.0f}" for v in r["bytes_per_child"])
            b = sorted(r["rss_before_mib"])[len(r["rss_before_mib"]) // 2]
            a = sorted(r["rss_after_mib"])[len(r["rss_after_mib"]) // 2]
            lines.append(f"| {r['workers']} | **{r['median_bytes_per_child']:.0f}** | {reps} "
                         f"| {b:.1f} → {a:.1f} | {r['leaf_block_bytes']:.0f} B "
                         f"| {r['group_block_bytes']:.0f} B | {r.get('promise_bytes', 0):.0f} B |")
    return "\n".join(lines)


# ---------------------------------------------------------------- micro


def micro_rows(doc):
    rows = []
    for b in doc.get("benchmarks", []):
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"] if "run_name" in b else b["name"]
        per_op = b.get("per_op")
        rows.append((name, per_op, b))
    return rows


def micro_table(doc):
    lines = ["| benchmark | per operation (median of the repetitions) |", "|---|---:|"]
    for name, per_op, b in micro_rows(doc):
        if per_op is None:
            continue
        v = per_op * 1e9
        shown = f"{v:.2f} ns" if v < 1000 else f"{v / 1000:.2f} µs"
        lines.append(f"| {name} | {shown} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- targets


def targets(groups, lat, mass, mem, micro, meta=None):
    rows = []
    meta = meta or {}
    idle_note = (f"the target asks for an idle machine; load average before the run "
                 f"{meta.get('load_before', '?').split()[0]}, after {meta.get('load_after', '?').split()[0]}")

    def add(target, weft, tbb, met, note=""):
        rows.append((target, weft, tbb, met, note))

    def ok(b):
        return "met" if b else "**not met**"

    fib = next((g for (p, i), g in groups.items() if p == "fib"), None)
    fib_inst = next((i for (p, i) in groups if p == "fib"), "")
    if fib and ("weft", 2) in fib:
        w2, t2 = fib[("weft", 2)]["median_ms"], fib[("oneTBB", 2)]["median_ms"]
        add(f"fib({fib_inst[2:]}), 2 workers: weft ≥ 3.5x faster than oneTBB",
            f"{fmt_ms(w2)} ms ({t2 / w2:.2f}x)", f"{fmt_ms(t2)} ms", ok(t2 / w2 >= 3.5))
        s = fib[("serial", 1)]["median_ms"]
        w1, t1 = fib[("weft", 1)]["median_ms"], fib[("oneTBB", 1)]["median_ms"]
        add("fib, 1 worker within 12x of the serial function",
            f"{w1 / s:.1f}x ({fmt_ms(w1)} vs {fmt_ms(s)} ms)", f"{t1 / s:.1f}x", ok(w1 / s <= 12))
        add("fib, scaling from 1 to 2 workers ≥ 1.9x", f"{w1 / w2:.2f}x", f"{t1 / t2:.2f}x",
            ok(w1 / w2 >= 1.9))
    for (p, inst), g in groups.items():
        if ("weft", 2) not in g:
            continue
        w2, t2 = g[("weft", 2)]["median_ms"], g[("oneTBB", 2)]["median_ms"]
        if p == "skynet" and inst.startswith("10^8"):
            add("skynet 10^8, 2 workers: ≥ 2.5x faster than oneTBB",
                f"{fmt_ms(w2)} ms ({t2 / w2:.2f}x)", f"{fmt_ms(t2)} ms", ok(t2 / w2 >= 2.5))
        elif p in ("nqueens", "uts_geo", "uts_bin"):
            add(f"{p} ({inst}), 2 workers: faster than oneTBB",
                f"{fmt_ms(w2)} ms ({t2 / w2:.2f}x)", f"{fmt_ms(t2)} ms", ok(w2 < t2))
    if mem:
        peaks = {(r["runtime"], r["workers"]): r for r in mem["results"]
                 if r["case"] == "fib_peak_rss"}
        if ("weft", 2) in peaks:
            w, t = peaks[("weft", 2)]["median_peak_mib"], peaks[("oneTBB", 2)]["median_peak_mib"]
            add(f"peak RSS for fib({mem['fib_n']}) under 8 MiB (2 workers)", f"{w:.2f} MiB",
                f"{t:.2f} MiB", ok(w < 8))
        for r in mem["results"]:
            if r["case"] == "suspended_tasks" and r["workers"] == 2:
                add(f"under 256 bytes per suspended task at {r['tasks']:,} tasks (2 workers)",
                    f"{r['median_bytes_per_task']:.0f} B", "n/a (a oneTBB task cannot suspend)",
                    ok(r["median_bytes_per_task"] < 256))
    if lat:
        by = {(r["variant"], r["metric"], r["workers"]): r for r in lat["results"]}
        for k in (2, 1):
            p = by.get(("weft_parked", "to_handler", k))
            pj = by.get(("weft_parked", "to_join", k))
            t = by.get(("tbb_poll", "to_join", k))
            if p and t:
                add(f"parked task, {k} worker{'s' if k > 1 else ''}: cancel() → catch, median < 5 µs",
                    f"{p['p50_us']:.1f} µs (to join(): {pj['p50_us']:.1f})",
                    f"{t['p50_us']:.1f} µs (cancel() → wait() returns)", ok(p["p50_us"] < 5),
                    idle_note)
                add(f"parked task, {k} worker{'s' if k > 1 else ''}: p99 < 50 µs",
                    f"{p['p99_us']:.1f} µs (to join(): {pj['p99_us']:.1f})",
                    f"{t['p99_us']:.1f} µs", ok(p["p99_us"] < 50), idle_note)
            c = by.get(("weft_checkpoint", "to_handler", k))
            if c and t:
                lim = lat.get("time_slice_us", 2000) + 50
                add(f"checkpoint() loop, {k} worker{'s' if k > 1 else ''}: p99 within one time "
                    f"slice + 50 µs ({lim} µs)",
                    f"{c['p99_us']:.1f} µs (p50 {c['p50_us']:.1f})",
                    f"{t['p99_us']:.1f} µs (p50 {t['p50_us']:.1f})", ok(c["p99_us"] <= lim))
    if mass:
        by = {(r["runtime"], r["workers"]): r for r in mass["results"]}
        for k in (2, 1):
            w, t = by.get(("weft", k)), by.get(("oneTBB", k))
            if w and t:
                add(f"mass cancel of {w['tasks']:,} queued tasks, {k} worker{'s' if k > 1 else ''}: "
                    f"< 50 ns per task, 0 bodies run" if k == 2 else
                    f"mass cancel, 1 worker (no target; for reference)",
                    f"{w['median_total_ns_per_task']:.1f} ns, {w['bodies_ran']} bodies",
                    f"{t['median_total_ns_per_task']:.1f} ns, {t['bodies_ran']} bodies",
                    ok(w["median_total_ns_per_task"] < 50 and w["bodies_ran"] == 0)
                    if k == 2 else "—")
    if micro:
        for name, per_op, b in micro_rows(micro):
            if name.startswith("BM_Checkpoint") and per_op is not None:
                v = per_op * 1e9
                add(f"checkpoint() with nothing pending < 5 ns ({name})", f"{v:.2f} ns",
                    "n/a", ok(v < 5))
    if fib and ("weft-fork", 2) in fib:
        s2, f2 = fib[("weft", 2)]["median_ms"], fib[("weft-fork", 2)]["median_ms"]
        add("plain spawn+join within 1.5x of a dedicated fork-join form (fib, 2 workers)",
            f"spawn+join {fmt_ms(s2)} ms, fork-join {fmt_ms(f2)} ms: {s2 / f2:.2f}x", "—",
            ok(s2 / f2 <= 1.5), "every spelling and worker count: the issue-17 table")
    else:
        add("plain spawn+join within 1.5x of a dedicated fork-join form",
            "n/a: no fork-join figures in this run", "—", "—")
    lines = ["| target (issue 4) | weft | oneTBB | result |", "|---|---|---|---|"]
    for target, w, t, m, note in rows:
        lines.append(f"| {target} | {w} | {t} | {m}{' (' + note + ')' if note else ''} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    raw, out = sys.argv[1], sys.argv[2]
    img_dir = os.path.join(out, "img")
    os.makedirs(img_dir, exist_ok=True)

    meta = load(raw, "meta.json") or {}
    fib, skynet, nq, uts = (load(raw, f) for f in ("fib.json", "skynet.json", "nqueens.json",
                                                  "uts.json"))
    lat, mass, mem, micro = (load(raw, f) for f in ("cancel_latency.json", "mass_cancel.json",
                                                   "memory.json", "micro.json"))
    slow = load(raw, "slow_mode.json")
    docs = [d for d in (fib, skynet, nq, uts, lat, mass, mem, slow) if d]
    compiler = meta.get("compiler") or (docs[0]["compiler"] if docs else "?")
    for d in docs:
        if d.get("compiler") != compiler:
            print(f"warning: {d['benchmark']} was built by {d.get('compiler')}, not {compiler}")
    subtitle = (f"{compiler}, {docs[0]['build'] if docs else ''}; {meta.get('cpu', '?')} x "
                f"{meta.get('nproc', '?')}; load avg {meta.get('load_before', '?')} → "
                f"{meta.get('load_after', '?')}; weft {meta.get('commit', '?')}"
                f"{' (quick)' if meta.get('quick') else ''}")

    merged = {"meta": meta, "fib": fib, "skynet": skynet, "nqueens": nq, "uts": uts,
              "cancel_latency": lat, "mass_cancel": mass, "memory": mem, "micro": micro}
    if slow:
        merged["slow_mode"] = slow
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(merged, f, indent=1)

    groups = throughput_groups([fib, skynet, nq, uts])
    md = ["# weft benchmark results", ""]
    libfork = next((d["libfork"] for d in docs if d.get("libfork")), None)
    md.append(f"- compiler: **{compiler}**; {docs[0]['build'] if docs else ''}; "
              f"{docs[0]['tbb'] if docs else ''}"
              f"{'; ' + libfork + ' (lazy_pool, C++23)' if libfork else ''}")
    if meta.get("libfork_dir"):
        md.append(f"- libfork: `{meta['libfork_dir']}`, commit {meta.get('libfork_commit', '?')}")
    md.append(f"- machine: {meta.get('cpu', '?')}, nproc {meta.get('nproc', '?')}")
    changed = meta.get("changed_files") or []
    md.append(f"- weft commit: `{meta.get('commit', '?')}`"
              f"{' plus uncommitted changes in: ' + ', '.join(changed) if changed else ''}; "
              f"run {meta.get('started', '?')} to {meta.get('date', '?')}"
              f"{'; --quick' if meta.get('quick') else ''}")
    md.append(f"- load average (1, 5, 15 min) before: {meta.get('load_before', '?')}; "
              f"after: {meta.get('load_after', '?')}")
    if meta.get("busy_before") or meta.get("busy_after"):
        md.append(f"- other processes using CPU at the start: {meta.get('busy_before') or 'none seen'}; "
                  f"at the end: {meta.get('busy_after') or 'none seen'}")
    md.append("")
    md.append("## Issue 4 targets vs measured")
    md.append("")
    md.append(targets(groups, lat, mass, mem, micro, meta))
    md.append("")
    peer = peer_targets(groups, slow, mem)
    if peer:
        md.append("## Issue 17 targets: the fork-join form against libfork")
        md.append("")
        md.append("`weft-fork` and `weft-fork-extern` are the fork-join form (`weft::fork_task`, "
                  "inline in a header and in its own .cpp); `weft` and `weft-extern` are "
                  "spawn+join, shown against libfork for reference. Ratios are of medians from "
                  "the same interleaved run.")
        md.append("")
        md.append(peer)
        md.append("")
    if groups:
        md.append("## Throughput (medians; min–max in parentheses)")
        md.append("")
        md.append(throughput_table(groups))
        md.append("")
        steals = steals_table(groups)
        if steals:
            md.append("weft's steals and parks per run (`runtime::stats()`, medians):")
            md.append("")
            md.append(steals)
            md.append("")
        for title, name in plot_throughput(groups, img_dir, subtitle):
            md.append(f"![{title}](img/{name})")
            md.append("")
    def section(title, table, image=None):
        md.extend([f"## {title}", "", table, ""])
        if image:
            md.extend([f"![{title.lower()}](img/{image()})", ""])

    if lat:
        section("Cancellation latency", latency_table(lat),
                lambda: plot_latency(lat, img_dir, subtitle))
    if mass:
        section("Mass cancel", mass_table(mass), lambda: plot_mass(mass, img_dir, subtitle))
    if mem:
        section("Memory", memory_table(mem))
    if slow:
        section("Slow mode: weft and libfork alternating", slow_table(slow),
                lambda: plot_slow(slow, img_dir, subtitle))
    if micro:
        section("Runtime micro-benchmarks (Google Benchmark, weft only)", micro_table(micro))
    failed = [d["benchmark"] for d in docs if not d.get("verified", False)]
    md.append("Every result was checked against its reference: "
              + ("all passed." if not failed else f"**FAILED in {', '.join(failed)}**."))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"report: wrote {out}/results.json, {out}/results.md, {img_dir}/*.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
