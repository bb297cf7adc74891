"""Tables of the real-scan benchmark: real_scans.md (every figure), real_scans.csv (segmentation, long
format) and real_scans_denoise.csv."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from training.realbench.references import MASK_RECIPES

DENOISE_NOTE = (
    "Each scan is its own clean image; every method sees the same region: a {slab_mm:g} mm axial slab "
    "through the brain's centre, cut in-plane to the reference brain mask's box + 10 mm (BM4D took 80-300 "
    "us per voxel on one shared core: whole heads, six scans, three protocols would take 3-10 hours). "
    "`gaussian-0.2`: z-scored + N(0, 0.2^2), PSNR with L = 1 (the paper's); "
    "`rician-3%` / `rician-8%`: scan / its 99th percentile in the head, Rician noise of std 0.03 / 0.08, "
    "L = 1. PSNR over the region and over the head only; SSIM: 3D, window 7, sigma 1.5. Denoisers get the "
    "true sigma. Times: wall, one thread; the baselines' times are from the run that computed them (cached)."
)
CLASS_ORDER = ("CSF", "GM", "WM", "mean")
SEG_COLUMNS = ("section", "scan", "model", "reference", "metric", "class", "value")
DEN_COLUMNS = ("scan", "protocol", "region", "method", "psnr_db", "psnr_head_db", "ssim", "time_s")
HEADER = (
    "# seqinv on real scans (the yardstick)\n\n"
    "These six real scans (niivue demo images, BSD-2-Clause) are the yardstick: no seqinv model is trained "
    "or tuned on them. References come from other tools (deepbet, ANTs Atropos, SimpleITK registration); "
    "they are references, not ground truth.\n"
)


def value(rows, **match) -> float | None:
    for r in rows:
        if all(r[k] == v for k, v in match.items()):
            return r["value"]
    return None


def fmt(v, scale=1.0, digits=1) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def brain_table(rows, scans, model) -> list[str]:
    lines = [
        "| scan | contrast | voxel mm | reference mask | brain Dice % | labelled > 5 mm outside % "
        "| labelled brain mL | reference mL |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, scan in scans.items():
        voxel = "x".join(f"{v:.2g}" for v in scan.volume.voxel_mm)
        ref = MASK_RECIPES[scan.spec.mask] if scan.mask is not None else "none"

        def get(metric, who=model, name=name):
            return value(rows, section="brain", scan=name, model=who, metric=metric)

        lines.append(
            f"| {name} | {scan.spec.contrast} | {voxel} | {ref} | {fmt(get('dice'), 100)} | "
            f"{fmt(get('outside_5mm_pct'))} | {fmt(get('brain_ml'), digits=0)} | "
            f"{fmt(get('brain_ml', 'reference'), digits=0)} |"
        )
    return lines


def dice_table(rows, section, first_col, keys) -> list[str]:
    lines = [f"| {first_col} | CSF | GM | WM | mean |", "|---|---:|---:|---:|---:|"]
    for label, match in keys:
        cells = [
            fmt(value(rows, section=section, metric="dice", **{"class": c}, **match), 100)
            for c in CLASS_ORDER
        ]
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def volume_table(rows, scans, model) -> list[str]:
    lines = [
        f"| scan | {model} CSF | GM | WM | Atropos CSF | GM | WM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = list(scans) + sorted({r["scan"] for r in rows if "@" in r["scan"]})
    for name in names:
        mine = [
            fmt(value(rows, section="volume", scan=name, model=model, **{"class": c}), digits=0)
            for c in CLASS_ORDER[:3]
        ]
        ref = [
            fmt(value(rows, section="volume", scan=name, model="atropos", **{"class": c}), digits=0)
            for c in CLASS_ORDER[:3]
        ]
        lines.append(f"| {name} | " + " | ".join(mine + ref) + " |")
    return lines


def denoise_table(rows) -> list[str]:
    lines = [
        "| protocol | scan | region (voxels) | method | PSNR dB | PSNR head dB | SSIM | time s |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = "-" if r["method"] == "input" else f"{r['time_s']:.1f}"
        lines.append(
            f"| {r['protocol']} | {r['scan']} | {r['region']} | {r['method']} | {r['psnr_db']:.2f} | "
            f"{r['psnr_head_db']:.2f} | {r['ssim']:.3f} | {t} |"
        )
    return lines


def denoise_means(rows) -> list[str]:
    """Per protocol and method: the mean over scans."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["protocol"], r["method"]), []).append(r)
    lines = [
        "| protocol | method | mean PSNR dB | mean PSNR head dB | mean SSIM | total time s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (protocol, method), members in groups.items():

        def mean(k, members=members):
            return sum(m[k] for m in members) / len(members)

        total = sum(m["time_s"] for m in members)
        lines.append(
            f"| {protocol} | {method} | {mean('psnr_db'):.2f} | {mean('psnr_head_db'):.2f} | "
            f"{mean('ssim'):.3f} | {'-' if method == 'input' else f'{total:.0f}'} |"
        )
    return lines


def markdown(seg_rows, den_rows, context) -> str:
    scans, options = context["scans"], context["options"]
    model = options.seg_model
    parts = [HEADER]
    for kind, described in context["models"].items():
        parts.append(f"- {kind} model: {described}")
    root, hits, misses = context["cache"]
    times = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in context["times"].items())
    parts.append(
        f"- run time on {context.get('machine', '?')} ({options.threads} thread(s)): {times}; cached "
        f"references and baselines: {hits} reused, {misses} computed"
    )
    parts.append("- scans (sha256): " + ", ".join(f"{n} {s.sha256[:12]}" for n, s in scans.items()))
    if seg_rows:
        parts += ["", "## Brain: labelled brain (CSF + GM + WM) against the reference brain mask", ""]
        parts += brain_table(seg_rows, scans, model)
        parts += [
            "",
            "## Tissue Dice % against ANTs Atropos (sharp T1w scans, inside the reference mask)",
            "",
        ]
        parts += [
            f"`{model}`: its labels on the whole grid (labels outside the mask count against it); "
            f"`{model} in mask`: both restricted to the mask; `kmeans`: 3-class k-means inside the mask "
            "(the floor; Atropos starts from a k-means too, so the two agree by construction more than "
            "either agrees with the truth).",
            "",
        ]
        keys = [
            (f"{n} {who}", {"scan": n, "model": who})
            for n, s in scans.items()
            if s.tissue is not None
            for who in (model, f"{model} in mask", "kmeans")
        ]
        parts += dice_table(seg_rows, "tissue", "scan, labels", keys)
        parts += [
            "",
            "## Cross-contrast: chris_PD's labels against chris_t1's (rigid registration, T1w grid)",
            "",
        ]
        parts += [
            "chris_PD's probabilities resampled onto the T1w grid; scored inside chris_PD's field of view.",
            "",
        ]
        parts += dice_table(
            seg_rows, "cross_contrast", "pair", [("chris_PD vs chris_t1", {"scan": "chris_PD"})]
        )
        agree = value(seg_rows, section="cross_contrast", metric="agree_in_mask_pct")
        parts += ["", f"Same label inside chris_t1's brain mask: {fmt(agree)} % of voxels."]
        parts += [
            "",
            f"## Resolution: chris_t1 degraded ({options.profile} slice profile, then linear sampling)",
            "",
        ]
        parts += [
            "Dice % against the labels of the sharp scan (the degraded scan's probabilities resampled",
            "linearly onto the sharp grid). `/1mm`: labelled on the model's 1 mm grid (`--grid model`)",
            "instead of the degraded scan's own.",
            "",
        ]
        keys = [
            (s, {"scan": s}) for s in sorted({r["scan"] for r in seg_rows if r["section"] == "resolution"})
        ]
        parts += dice_table(seg_rows, "resolution", "input", keys)
        parts += ["", "## Volumes (mL)", ""]
        parts += volume_table(seg_rows, scans, model)
        parts += [
            "",
            "QC montages (labels over the image, model grid): "
            + ", ".join(f"`real_scans/{n}.png`" for n in scans),
        ]
    if den_rows:
        parts += ["", "## Denoising", ""]
        parts += [DENOISE_NOTE.format(slab_mm=options.slab_mm), ""]
        parts += denoise_means(den_rows) + [""] + denoise_table(den_rows)
        protocols = sorted({r["protocol"] for r in den_rows})
        parts += [
            "",
            "Montages (one row per scan, the slab's middle axial slice; columns: noisy, then each method "
            "run, then clean): " + ", ".join(f"`real_scans/denoise_{p}.png`" for p in protocols),
        ]
    parts += ["", "Recipes of the references: `training/realbench/references.py`."]
    return "\n".join(parts) + "\n"


def write_csv(rows, columns, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r[c] for c in columns} for r in rows)
    os.replace(tmp, path)


def write_report(seg_rows, den_rows, context, output: Path) -> dict[str, str]:
    paths = {"table": output / "real_scans.md"}
    if seg_rows:
        paths["csv"] = output / "real_scans.csv"
        write_csv(seg_rows, SEG_COLUMNS, paths["csv"])
    if den_rows:
        paths["denoise_csv"] = output / "real_scans_denoise.csv"
        write_csv(den_rows, DEN_COLUMNS, paths["denoise_csv"])
    text = markdown(seg_rows, den_rows, context)
    tmp = paths["table"].with_name("real_scans.md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, paths["table"])
    return {k: str(v) for k, v in paths.items()}
