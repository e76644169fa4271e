"""The plain-text table printed at the end of a run, rendered from the results dict alone."""

from __future__ import annotations

import math
from collections.abc import Callable

from benchmarks.settings import DISTURBED
from benchmarks.targets import _disturbed


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]

    def line(cells):
        return (
            indent
            + "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()
        )

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def _others(fraction: float | None) -> str:
    """Other processes' CPU share, flagged '!' when the figure beside it is disturbed."""
    return _pct(fraction) + (" !" if (fraction or 0) > DISTURBED else "")


def render(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    quick = "  (QUICK: smoke run, numbers not meaningful)" if s["quick"] else ""
    out = [
        f"catdog benchmark  {m['date']}{quick}",
        f"CPU: {m['cpu']} | {m['cores']} cores | bf16 native: {m['cpu_bf16']} | "
        f"TF {m['tensorflow']} | Keras {m['keras']} | load avg at start {m['loadavg_start']}, "
        f"at end {m.get('loadavg_end', '?')}",
        f"data: {res['data']} ({', '.join(f'{k} {v}' for k, v in res['splits'].items())})",
        f"total wall time {res['wall_seconds'] / 60:.1f} min",
        "'others' = share of the machine's CPU that other processes used during a measurement "
        f"(interference; 0% = the bench had the box to itself; '!' = over {DISTURBED:.0%}: "
        "treat that row's figures as disturbed)",
        "",
    ]

    def section(title: str, key: str, body: Callable[[dict], list[str]]) -> None:
        if key not in res:  # not run (--only)
            return
        out.append(title)
        item = res.get(key, {})
        if "error" in item:
            out.append(f"  FAILED: {item['error']}")
        else:
            out.extend(body(item))
        out.append("")

    def ceiling_body(c: dict) -> list[str]:
        rows = [
            [
                k,
                _f(c[k]["gflops"]),
                _f(c[k].get("gflops_mean")),
                _f(c[k].get("vs_float32", 1.0), ".2f") + "x",
                _others(c[k].get("others_cpu_share")),
                c[k].get("skipped", f"{c[k]['reps']} reps"),
            ]
            for k in ("float32", "bfloat16", "float16")
        ]
        lines = _table(["dtype", "GFLOP/s (best rep)", "mean", "vs fp32", "others", "note"], rows)
        end = res.get("ceiling_end", {})
        if "float32" in end:
            lines.append(
                "  again at the end: "
                + ", ".join(
                    f"{k} {end[k]['gflops']:.1f} ({end[k]['gflops'] / c[k]['gflops'] - 1:+.0%})"
                    for k in ("float32", "bfloat16", "float16")
                    if k in end
                )
                + " (machine drift)"
            )
        return lines

    def pipeline_body(p: dict) -> list[str]:
        rows = [
            [
                str(r["size"]),
                str(r["images"]),
                _f(r["first_pass_images_per_s"], ".0f"),
                _f(r["cached_images_per_s"], ".0f"),
                _f(r.get("notebook_images_per_s"), ".0f"),
                _f(r.get("cached_vs_notebook"), ".1f") + ("x" if "cached_vs_notebook" in r else ""),
                _f(r["cache_mb"], ".0f"),
                _others(
                    max(
                        r.get("cached_others_cpu_share") or 0,
                        r.get("notebook_others_cpu_share") or 0,
                    )
                ),
            ]
            for r in p["rows"]
        ]
        return _table(
            [
                "px",
                "images",
                "first pass (decode)",
                "cached (mean of 3)",
                "notebook (1 pass)",
                "cached/notebook",
                "cache MB",
                "others",
            ],
            rows,
        )

    def training_body(t: dict) -> list[str]:
        rows = []
        for r in t["rows"]:
            b = r.get("bf16", {})
            rows.append(
                [
                    r["arch"],
                    str(r["size"]),
                    _f(r["train_gflop"], ".2f"),
                    _f(r["fp32"]["images_per_s"]),
                    _f(r["fp32"]["gflops"], ".0f"),
                    _pct(r["fp32"]["ceiling_fraction"]),
                    _f(b.get("images_per_s")),
                    _f(b.get("gflops"), ".0f"),
                    _pct(b.get("ceiling_fraction")),
                    _f(r.get("bf16_speedup"), ".2f") + ("x" if b else ""),
                    _f(r["fp32"]["pipeline_ratio"], ".0f") + "x",
                    _others(
                        max(r["fp32"].get("others_cpu_share") or 0, b.get("others_cpu_share") or 0)
                    ),
                ]
            )
        f = t["fastest"]
        return _table(
            [
                "arch",
                "px",
                "train GFLOP/img",
                "fp32 img/s",
                "GFLOP/s",
                "% ceil",
                "bf16 img/s",
                "GFLOP/s",
                "% ceil",
                "bf16/fp32",
                "pipe/train fp32",
                "others",
            ],
            rows,
        ) + [
            "  img/s: the fastest of 3 equal runs of steps in a ~15 s window (JSON also has the "
            "window mean); GFLOP/img counts conv/dense layers, training = 3x forward",
            f"  fastest: {f['arch']} {f['precision']} {f['images_per_s']:.1f} img/s at "
            f"{f['size']}px; cached pipeline at {f['size']}px {f['pipeline_images_per_s']:.0f} "
            f"img/s -> {f['pipeline_ratio']:.1f}x  (batch {t['batch']}, augment 0 unless noted)",
        ]

    def notebook_body(n: dict) -> list[str]:
        rows = [
            [
                name,
                str(r["batch"]),
                " / ".join(_f(x) for x in r["epoch_seconds"]),
                _f(r["vs_notebook"], ".2f"),
                _f(r["val_accuracy"], ".4f"),
                _f(r["val_accuracy_delta"], "+.4f"),
                " / ".join(_others(x) for x in r["epoch_others_cpu_share"]),
            ]
            for name, r in n["runs"].items()
        ]
        lines = _table(
            [
                "run (bn_dropout model, no augmentation)",
                "batch",
                "epoch s (1 / 2)",
                f"epoch {n['epochs']} / notebook",
                f"val acc @{n['epochs']}",
                "val acc delta",
                "others (1 / 2)",
            ],
            rows,
        )
        lines.append(
            f"  levers, training throughput only (bn_dropout {n['size']}px, cached "
            "pipeline, no validation):"
        )
        lines += _table(
            ["precision", "batch", "img/s", "GFLOP/s", "vs fp32 b32", "others"],
            [
                [
                    lv["precision"],
                    str(lv["batch"]),
                    _f(lv["images_per_s"]),
                    _f(lv["gflops"], ".0f"),
                    _f(lv["speedup"], ".2f") + "x",
                    _others(lv.get("others_cpu_share")),
                ]
                for lv in n["levers"]
            ],
            indent="    ",
        )
        w = n["why"]
        share = w["compute_share_of_notebook_epoch"]
        lines.append(
            f"  why: training compute alone for {w['train_images']} images takes "
            + ", ".join(
                f"{w['compute_seconds'][p]:.0f}s in {p} ({share[p]:.0%} of the "
                "notebook's epoch" + _disturbed(w.get("compute_others_cpu_share", {}).get(p)) + ")"
                for p in w["compute_seconds"]
            )
            + "; the notebook's pipeline alone takes "
            f"{_f(w['notebook_pipeline_seconds'], '.0f')}s per epoch (train+val); "
            f"catdog decodes once, {_f(w['catdog_decode_seconds_once'], '.0f')}s, "
            "before epoch 1"
        )
        return lines

    def sweep_body(sw: dict) -> list[str]:
        rows = [
            [
                str(i + 1),
                t["arch"],
                t["trial_id"],
                _f(t["peak_rss_mb"], ".0f"),
                _f(t.get("rss_mb"), ".0f"),
                _f(t["fit_seconds"]),
                _f(t["overhead_seconds"]),
                _f(100 * t["overhead_fraction"], ".1f") + "%",
                _f(t["epoch_seconds"]),
                _f(100 * t["outside_epochs_fraction"], ".1f") + "%",
            ]
            for i, t in enumerate(sw["trials"])
        ]
        return _table(
            [
                "#",
                "arch",
                "trial",
                "peak RSS MB",
                "RSS after MB",
                "fit s",
                "outside fit s",
                "outside fit %",
                "sum epoch s",
                "outside epochs %",
            ],
            rows,
        ) + [
            "  fit s / outside fit s: the trial's logged metrics (fit s = model.fit alone; outside "
            "fit = build, compile, logging, evaluation); outside epochs % = 1 - sum(epoch_seconds)"
            " / trial time",
            f"  {len(sw['trials'])} trials ({sw['trials_per_arch']} per arch, {sw['epochs']} "
            f"epochs, {sw['size']}px) in {sw['sweep_seconds']:.0f}s; RSS growth trial 2 -> "
            f"last {_f(sw['rss_growth_pct'], '+.1f')}%"
            + "".join(
                f" ({a} alone {g:+.1f}%)"
                for a, g in sw.get("rss_growth_within_arch_pct", {}).items()
            )
            + "; mean time outside fit "
            f"{_f(100 * (sw['overhead_fraction_mean'] or 0), '.1f')}% (outside epochs "
            f"{_f(100 * (sw['outside_epochs_fraction_mean'] or 0), '.1f')}%); decodes per image "
            f"{sw['decodes_per_image']:.2f} ({sw['decodes']} / {sw['images']}); others "
            f"{_others(sw.get('others_cpu_share'))}",
        ]

    def scaling_body(sc: dict) -> list[str]:
        rows = [
            [
                str(r["size"]),
                f"{r['fraction']:g}",
                str(r["images"]),
                _f(r["epoch_seconds"]),
                _f(r["ms_per_image"], ".2f"),
                _f(r["cache_mb"]),
                _others(r.get("others_cpu_share")),
            ]
            for r in sc["rows"]
        ]
        return _table(
            ["px", "fraction", "images", "epoch s", "ms/image", "cache MB", "others"], rows
        )

    def accuracy_body(a: dict) -> list[str]:
        nb = a["notebook"]
        lines = [
            f"  notebook as written ({nb['size']}px, {nb['epochs']} epochs, train+val -> "
            f"test): val accuracy {nb['target']:.4f}, first reached at epoch "
            f"{nb['reached_epoch']}, {nb['seconds']:.0f}s after its fit started"
        ]
        for cd in a["sweeps"]:
            if cd["reached"]:
                r = cd["reached"]
                lines.append(
                    f"  catdog {' '.join(cd['args'])}: {r['val_accuracy']:.4f} at "
                    f"{cd['seconds']:.0f}s after its process started ({r['arch']} at "
                    f"{r['image_size']}px, trial {r['trial_id']}, epoch "
                    f"{r['epoch']}), stopped there: ratio {cd['ratio']:.2f}"
                )
            else:
                lines.append(
                    f"  catdog {' '.join(cd['args'])}: did not reach it; it ended "
                    f"with exit {cd['exit_code']} after {cd['process_seconds']:.0f}s"
                )
        return lines

    def serving_body(sv: dict) -> list[str]:
        from benchmarks.serving import model_ms

        f = sv["floor"]
        what = (
            f"{sv['arch']} {sv['size']}px, {sv['epochs']} epoch(s) here, logged without and "
            "with flip TTA"
            if sv["source"] == "trained here"
            else "given"
        )
        lines = [
            f"  model: {what}",
            f"  floor, one photo at {f['image_size']}px in this process: predict_on_batch "
            f"{_f(f['predict_on_batch_ms'])} ms (with its mirror image, TTA's request: "
            f"{_f(f['predict_on_batch_pair_ms'])} ms), direct call "
            f"{_f(f['direct_call_ms'])} ms, model.predict {_f(f['predict_ms'])} ms; "
            f"catdog's whole answer (check, decode, model) {_f(f['classify_ms'])} ms, "
            f"with TTA {_f(f['classify_tta_ms'])} ms; others "
            f"{_others(f.get('others_cpu_share'))}",
        ]
        rows = [
            [
                "on" if r["tta"] else "off",
                str(r["workers"])
                + (" (make serve)" if r["workers"] == sv["make_serve_workers"] else ""),
                str(r["requests"]),
                str(r["concurrency"]),
                _f(r["rps"]),
                _f(r["p50_ms"], ".0f"),
                _f(r["p99_ms"], ".0f"),
                _f(r["max_ms"], ".0f"),
                str(r["lost"]),
                _f(1000 / model_ms(f, r["tta"]), ".0f"),
                _others(r.get("others_cpu_share")),
            ]
            for r in sv["runs"]
        ]
        return (
            lines
            + _table(
                [
                    "TTA",
                    "workers",
                    "requests",
                    "concurrent",
                    "answers/s",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "lost",
                    "floor/s",
                    "others",
                ],
                rows,
            )
            + [
                "  floor/s = 1000 / the model's own ms per request (predict_on_batch of the photo, "
                "or "
                "of it and its mirror image with TTA) for one caller; the load's client threads "
                "share the cores with the server"
            ]
        )

    section(
        f"1. Matmul ceiling ({res.get('ceiling', {}).get('n', '?')}^2, tf.linalg.matmul)",
        "ceiling",
        ceiling_body,
    )
    section("2. Input pipeline alone (batch 32, images/s, train split)", "pipeline", pipeline_body)
    section(
        "3. Training throughput (batch 32, images/s after warm-up, from the cached pipeline)",
        "training",
        training_body,
    )
    section(
        "4. One epoch end to end vs the notebook (training + validation, same seed)",
        "notebook",
        notebook_body,
    )
    section("5. Sweep (random search, tracked in MLflow)", "sweep", sweep_body)
    section(
        "6. How cost grows (baseline fp32, batch 32, one epoch after warm-up)",
        "scaling",
        scaling_body,
    )
    section(
        "7. Time to the notebook's val accuracy (catdog's CPU sweep vs the notebook)",
        "time_to_accuracy",
        accuracy_body,
    )
    section(
        "8. Serving (mlflow models serve, one photo per request, vs the model's own floor)",
        "serving",
        serving_body,
    )
    out.append("Targets")
    out += _table(
        ["target", "goal", "measured", "result"],
        [[t["target"], t["goal"], t["shown"], t["result"]] for t in res["targets"]],
    )
    for t in res["targets"]:
        if t["why"]:
            out.append(f"  {t['result']} {t['target']}: {t['why']}")
    return "\n".join(out)
