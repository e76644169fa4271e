"""The bench's targets: each goal ratio, its measured value, PASS/MISS/n/a, and why it missed."""

from __future__ import annotations

from pathlib import Path

from benchmarks.settings import CONV_FAMILIES, DISTURBED


def targets(res: dict) -> list[dict]:
    """Each target ratio, its measured value, PASS/MISS, and what the numbers say about why."""
    out: list[dict] = []

    def add(
        name: str, goal: str, value: float | None, ok: bool | None, shown: str, why: str = ""
    ) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        out.append(
            {
                "target": name,
                "goal": goal,
                "value": None if value is None else float(value),
                "shown": shown,
                "result": verdict,
                "why": why if verdict == "MISS" else "",
            }
        )

    tr = res.get("training", {})
    if "fastest" in tr:
        f = tr["fastest"]
        add(
            "cached pipeline / fastest training",
            ">= 10x",
            f["pipeline_ratio"],
            f["pipeline_ratio"] >= 10,
            f"{f['pipeline_ratio']:.1f}x",
            f"cached pipeline {f['pipeline_images_per_s']:.0f} img/s at {f['size']}px vs "
            f"{f['arch']} {f['precision']} training {f['images_per_s']:.0f} img/s",
        )
    nb = res.get("notebook", {})
    for prec in ("fp32", "bf16"):
        run = nb.get("runs", {}).get(f"catdog {prec}")
        if run:
            add(
                f"catdog {prec} epoch / notebook epoch",
                "<= 0.5",
                run["vs_notebook"],
                run["vs_notebook"] <= 0.5,
                f"{run['vs_notebook']:.2f} (val acc {run['val_accuracy_delta']:+.3f})",
                _epoch_why(nb, prec),
            )
    rows = [r for r in tr.get("rows", []) if r["family"] in CONV_FAMILIES and "bf16" in r]
    by_arch = {r["arch"]: r for r in rows}
    for prec in ("fp32", "bf16"):
        fr = {
            r["arch"]: r[prec]["ceiling_fraction"]
            for r in rows
            if r[prec].get("ceiling_fraction") is not None
        }
        if fr:
            lo, hi = min(fr, key=fr.get), max(fr, key=fr.get)
            add(
                f"conv archs {prec} FLOP/s / {prec} ceiling (each)",
                ">= 50%",
                fr[lo],
                fr[lo] >= 0.5,
                f"{fr[lo]:.0%} ({lo}) .. {fr[hi]:.0%} ({hi})",
                _flops_why(by_arch, prec, hi),
            )
    sw = res.get("sweep", {})
    if "decodes_per_image" in sw:
        d = sw["decodes_per_image"]
        add(
            "decodes per image in a sweep",
            "= 1",
            d,
            abs(d - 1) < 1e-9,
            f"{d:.2f} ({sw['decodes']} for {sw['images']} images, {len(sw['trials'])} trials)",
            "the decoded cache was not shared by every trial",
        )
    if sw.get("rss_growth_pct") is not None:
        g = sw["rss_growth_pct"]
        rss = [t["peak_rss_mb"] for t in sw["trials"]]
        within = sw.get("rss_growth_within_arch_pct", {})
        why = f"peak RSS {rss[1]:.0f} -> {rss[-1]:.0f} MB over {len(rss) - 2} trials"
        if within:
            why += "; within each architecture (2nd trial -> last): " + ", ".join(
                f"{a} {x:+.1f}%" for a, x in within.items()
            )
            if max(within.values()) < g / 2:
                why += ", so most of it is the switch to a larger model, not a per-trial leak"
        add("peak RSS growth trial 2 -> last", "< 5%", g, g < 5, f"{g:+.1f}%", why)
    if sw.get("overhead_fraction_mean") is not None:
        o = sw["overhead_fraction_mean"]
        add(
            "time outside model.fit per trial",
            "< 10%",
            o,
            o < 0.1,
            f"{o:.1%}",
            f"{sw['overhead_seconds_mean']:.1f}s per trial outside fit (build, logging, "
            f"evaluation, model logging) vs {sw['fit_seconds_per_epoch_mean']:.1f}s per epoch "
            f"of fit: trials of >= {sw['epochs_for_10pct_overhead']} epochs at "
            f"{sw['size']}px would be under 10%",
        )
    acc = res.get("time_to_accuracy", {})
    for cd in acc.get("sweeps", []):
        nb, r = acc["notebook"], cd["ratio"]
        add(
            f"time to the notebook's val accuracy, {Path(cd['sweep_file']).name} / notebook",
            "<= 0.2",
            r,
            None if r is None else r <= 0.2,
            "not reached"
            if r is None
            else f"{r:.2f} ({cd['seconds']:.0f}s vs {nb['seconds']:.0f}s, val {nb['target']:.3f})",
            ""
            if r is None
            else "catdog's time counts its whole process: start-up, decoding and measuring "
            f"the plan "
            f"before the first trial; the first epoch at {nb['target']:.3f} came from "
            f"{cd['reached']['arch']} at {cd['reached']['image_size']}px, epoch "
            f"{cd['reached']['epoch']}",
        )
    _serving_targets(res.get("serving", {}), add)
    return out


SERVE_RPS, SERVE_P99_MS = 60.0, 300.0  # one-photo requests, 200 at 8 concurrent


def _serving_targets(sv: dict, add) -> None:
    """Served rate and p99 at 200/8 and nothing lost at 1,000/32, with `make serve`'s workers,
    for each TTA setting served."""
    from benchmarks.serving import model_ms

    floor = sv.get("floor", {})
    for tta in dict.fromkeys(r["tta"] for r in sv.get("runs", [])):
        runs = [
            r
            for r in sv["runs"]
            if r["workers"] == sv.get("make_serve_workers") and r["tta"] == tta
        ]
        by_load = {(r["requests"], r["concurrency"]): r for r in runs}
        flip = ", TTA on" if tta else ""
        why = (
            f"the model alone takes {model_ms(floor, tta):.1f} ms a request "
            f"({1000 / model_ms(floor, tta):.0f}/s for one caller) and catdog's whole answer "
            f"{floor['classify_tta_ms' if tta else 'classify_ms']:.1f} ms in process"
            + _disturbed(max((r.get("others_cpu_share") or 0) for r in runs) if runs else None)
        )
        small, large = by_load.get((200, 8)), by_load.get((1000, 32))
        if small:
            add(
                f"served one-photo answers/s, 200 at 8 concurrent{flip}",
                f">= {SERVE_RPS:.0f}",
                small["rps"],
                small["rps"] >= SERVE_RPS,
                f"{small['rps']:.1f}",
                why,
            )
            add(
                f"served p99 latency, 200 at 8 concurrent{flip}",
                f"<= {SERVE_P99_MS:.0f} ms",
                small["p99_ms"],
                small["p99_ms"] is not None and small["p99_ms"] <= SERVE_P99_MS,
                f"{_ms(small['p99_ms'])} ms",
                why,
            )
        if large:
            add(
                f"served requests lost, 1,000 at 32 concurrent{flip}",
                "0",
                large["lost"],
                large["lost"] == 0,
                f"{large['lost']} ({large['rps']:.1f}/s, p99 {_ms(large['p99_ms'])} ms)",
                "requests without a 200 and a label within 30 s",
            )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _epoch_why(nb: dict, prec: str) -> str:
    """What item 4 says about the gap to a 2x faster epoch."""
    w, epoch = nb["why"], nb["runs"]["notebook fp32"]["epoch_last_seconds"]
    parts = []
    if w.get("notebook_pipeline_seconds") is not None:
        pipe = w["notebook_pipeline_seconds"]
        parts.append(
            f"the notebook's own pipeline needs only {pipe:.1f}s "
            f"of its {epoch:.0f}s epoch ({pipe / epoch:.0%}), "
            "so a faster pipeline has almost nothing to remove"
        )
    if prec in w.get("compute_seconds", {}):
        parts.append(
            f"{prec} training compute alone (cached pipeline, no validation) takes "
            f"{w['compute_seconds'][prec]:.0f}s "
            f"({w['compute_share_of_notebook_epoch'][prec]:.0%} of that epoch)"
            + _disturbed(w.get("compute_others_cpu_share", {}).get(prec))
        )
    return "; ".join(parts)


def _disturbed(others: float | None) -> str:
    return (
        f" [disturbed: other processes took {others:.0%} of the CPU]"
        if (others or 0) > DISTURBED
        else ""
    )


def _flops_why(by_arch: dict, prec: str, best: str) -> str:
    """What the training rows say about the gap to the matmul ceiling."""
    why = (
        f"only {best} (the widest 3x3 convs, {by_arch[best]['train_gflop']:.2f} GFLOP/img) "
        "gets close; the others spend their time on uncounted memory-bound layers (BatchNorm, "
        "pooling, activations) and on shapes that use the cores poorly (3-channel first "
        "convs, depthwise convs)"
    )
    if "baseline" in by_arch and "bn_dropout" in by_arch:
        share = (
            by_arch["bn_dropout"][prec]["images_per_s"] / by_arch["baseline"][prec]["images_per_s"]
        )
        why += (
            f": bn_dropout has baseline's FLOPs but runs at {share:.0%} of its speed, "
            "the cost of its BatchNorm layers"
        )
    speedups = [r["bf16_speedup"] for r in by_arch.values() if "bf16_speedup" in r]
    if prec == "bf16" and speedups:
        why += (
            f"; bf16 trains at {min(speedups):.2f}-{max(speedups):.2f}x the fp32 speed "
            "although its matmul ceiling is higher, so the bf16 gain is lost outside the "
            "counted convolutions"
        )
    return why
