"""Evaluation as in arXiv 2501.12057: Dice, HD95 (mm), PSNR per contrast and site; CSV and a Markdown table
with the models (e.g. Base / SeqAug / SeqInv) side by side. The metrics are seqinv/metrics.py's.

PSNR is reported twice: `psnr_l1_db` = 20·log10(1/RMSE) on z-scored images (the paper's, so the noisy input
scores about 14 dB at σ = 0.2) and `psnr_range_db` with L = the clean image's intensity range.

What a case is measured against is its task's `target` (seqinv/tasks.py); the test sets (`HELD_OUT_SEED`,
`TEST_MAPS`) are the defaults, the development sets (`DEVELOPMENT_SEED`, `DEVELOPMENT_MAPS`) what choosing
code passes instead (seqinv/physics/sets.py).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqinv.metrics import (
    dice_per_class,
    hd95_per_class,
    mean_tissue_dice,  # noqa: F401 (imported from here by older callers)
    psnr_pair,
)
from seqinv.tasks import BRAIN_TASK, TASKS, get_task, trained_task
from training.augment import percentile_rescale, zscore

EVAL_SIGMA = 0.2  # the paper's denoising noise level (z-scored units)


def phantom_protocols() -> dict[str, object]:
    """Fixed typical protocols of the phantom evaluation: contrast name → sequence."""
    from seqinv.physics import make_sequence

    return {
        "T1w": make_sequence("mprage"),
        "T2w": make_sequence("fse", tr_s=5.0, te_s=0.1),
        "PDw": make_sequence("fse", tr_s=5.0, te_s=0.015),
        "FLAIR": make_sequence("flair"),
    }


# --- running models -------------------------------------------------------------------------------------


@dataclass
class EvalCase:
    """One evaluation image (normalised to [0, 1]) with its reference on the same grid.

    `affine` is voxel → RAS mm (identity: 1 mm voxels); it sets the HD95 spacing and lets the inference
    preprocessing reorient/resample exactly as for a user's scan.
    """

    subject: str
    contrast: str
    site: str
    image: torch.Tensor
    labels: torch.Tensor | None = None
    affine: np.ndarray | None = None

    def volume(self, data: torch.Tensor):
        from seqinv.io import Volume

        affine = np.eye(4) if self.affine is None else np.asarray(self.affine, dtype=float)
        return Volume(np.ascontiguousarray(data.float().numpy()), affine)


def phantom_cases(task: str, crop: int = 0, seed: int | None = None) -> list[EvalCase]:
    """The phantom of `seed` (default the test seed `HELD_OUT_SEED`, deformed, never used for training)
    simulated with the four fixed protocols; `crop` > 0 keeps a central crop³ around the brain's centre
    (quick checks) instead of the whole head."""
    from seqinv.physics import simulate
    from seqinv.physics.phantom import HELD_OUT_SEED, make_phantom

    seed = HELD_OUT_SEED if seed is None else seed
    lesion = get_task(task).lesion
    phantom = make_phantom(seed, deform=True, lesion=lesion, head=True)
    labels = torch.as_tensor(np.asarray(phantom.labels))
    reference = torch.as_tensor(np.asarray(phantom.lesion)) if lesion else labels
    maps, affine = phantom.maps, np.asarray(phantom.affine, dtype=float)
    if crop > 0:
        centre = (labels > 0).nonzero().float().mean(0).round().long().tolist()
        box = tuple(slice(max(0, c - crop // 2), max(0, c - crop // 2) + crop) for c in centre)
        maps, reference = maps.crop(box), reference[box]
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        affine = affine @ shift
    cases = []
    for contrast, sequence in phantom_protocols().items():
        image = percentile_rescale(torch.nan_to_num(simulate(maps, sequence).float()))
        cases.append(EvalCase(f"phantom-{seed}", contrast, "phantom", image, reference, affine))
    return cases


def load_cases(folder: str | Path, task: str) -> list[EvalCase]:
    """Evaluation cases (whole volumes rescaled to [0, 1]) from a test folder in the task's layout."""
    from training.task_ops import load_folder

    lesion = get_task(task).lesion
    cases = []
    for s in load_folder(folder, task):
        reference = s.lesion if lesion else s.labels
        cases.append(EvalCase(s.name, s.contrast, s.site, percentile_rescale(s.image), reference))
    return cases


def _head_cases(task: str, crop: int, label_maps: str) -> list[EvalCase]:
    """The held-out whole-head phantoms when a label-map folder is known."""
    import os

    from seqinv.physics.anatomy import LABEL_MAPS_ENV

    if not (label_maps or os.environ.get(LABEL_MAPS_ENV)):
        return []
    return head_phantom_cases(task, crop, label_maps)


def held_out_protocols() -> list[tuple[str, object, object]]:
    """(contrast name, sequence or None for random contrast, acquisition or None) of the held-out heads:
    the four protocols of the ICBM phantom evaluation at 1 mm, thick-slice T2w and FLAIR, random contrast."""
    from seqinv.physics.acquisition import thick_slices

    protocols = [(name, seq, None) for name, seq in phantom_protocols().items()]
    protocols.append(("T2w-5mm-axial", phantom_protocols()["T2w"], thick_slices(5.0, 2, 1.0, 0.9)))
    protocols.append(("FLAIR-6mm-coronal", phantom_protocols()["FLAIR"], thick_slices(6.0, 1, 0.0, 1.0)))
    protocols.append(("random", None, None))
    return protocols


def head_phantom_cases(
    task: str, crop: int = 0, folder: str = "", cache_dir=None, *, maps=None, seed: int | None = None
) -> list:
    """Evaluation cases from label maps `maps` (default the test maps `TEST_MAPS`) as they are (no
    deformation or atrophy; tissue values, texture and partial volume from `seed`, default `HELD_OUT_SEED`):
    every protocol of `held_out_protocols`. For a lesion task each head holds one stroke-like lesion
    (`seqinv.physics.anatomy.add_lesion`), the labels are its mask and a crop is centred on it."""
    from seqinv.physics.anatomy import TEST_MAPS, make_head_phantom
    from seqinv.physics.phantom import HELD_OUT_SEED
    from training.head_phantoms import whole_head_image

    maps = TEST_MAPS if maps is None else maps
    seed = HELD_OUT_SEED if seed is None else seed
    lesion = get_task(task).lesion
    cases = []
    for number in maps:
        phantom = make_head_phantom(
            number, seed, folder=folder or None, cache_dir=cache_dir, deform=False, lesion=lesion
        )
        affine = np.asarray(phantom.affine, dtype=float)
        box = None
        if crop > 0:
            target = phantom.lesion if lesion else phantom.labels
            centre = np.argwhere(target > 0).mean(0).round().astype(int)
            box = tuple(slice(max(0, c - crop // 2), max(0, c - crop // 2) + crop) for c in centre)
            shift = np.eye(4)
            shift[:3, 3] = [b.start for b in box]
            affine = affine @ shift
        for i, (name, sequence, acq) in enumerate(held_out_protocols()):
            image, labels = whole_head_image(
                phantom, seed + i, sequence=sequence, acquisition=acq, lesion=lesion
            )
            if box is not None:
                image, labels = image[box], labels[box]
            cases.append(EvalCase(f"synthseg-{number:02d}", name, "head-phantom", image, labels, affine))
    return cases


def evaluate_model(
    model,
    cases: Iterable[EvalCase],
    sigma: float = EVAL_SIGMA,
    seed: int = 0,
    brain_model=None,
    refine: bool | None = None,
) -> list[dict]:
    """Rows of (subject, contrast, site, metric, class, value) for one model (`brain_model`: a tissue
    model bounding a lesion model's calls; `refine`: the intensity refinement, default the task's; see
    `segment_volume`).

    Whole volumes go through `seqinv.inference` (`segment_volume` / `denoise_volume`: the preprocessing,
    Gaussian-blended sliding window with overlap 0.5 and the model's patch size, and the mapping back to
    the case's grid) so the scores are those of the code users run.
    """
    from seqinv.inference import InferenceSettings, denoise_volume, segment_volume
    from seqinv.io import voxel_sizes

    config = model.config
    settings = InferenceSettings(overlap=0.5)
    rows = []
    for case in cases:
        base = {"subject": case.subject, "contrast": case.contrast, "site": case.site}
        if config.output_kind == "denoise":
            # the paper's convention: Gaussian noise of std sigma on the z-scored image
            image = zscore(case.image)
            g = torch.Generator().manual_seed(seed)
            noisy = image + sigma * torch.randn(image.shape, generator=g)
            result = denoise_volume(case.volume(noisy), model, settings, sigma=sigma)
            denoised = torch.from_numpy(result.image)
            for name, value in psnr_pair(image, noisy).items():
                rows.append({**base, "metric": f"input_{name}", "class": "", "value": value})
            for name, value in psnr_pair(image, denoised).items():
                rows.append({**base, "metric": name, "class": "", "value": value})
            continue
        volume = case.volume(case.image)
        labels = segment_volume(volume, model, settings, brain_model=brain_model, refine=refine).labels
        pred = torch.from_numpy(labels.astype(np.int64))
        truth = case.labels.long()
        for name, value in dice_per_class(pred, truth, config.labels).items():
            rows.append({**base, "metric": "dice", "class": name, "value": value})
        spacing_mm = voxel_sizes(volume.affine).tolist()
        for name, value in hd95_per_class(pred, truth, config.labels, spacing_mm).items():
            rows.append({**base, "metric": "hd95_mm", "class": name, "value": value})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over subjects and classes per (model, task, contrast, site, metric)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        key = (r["model"], r["task"], r["contrast"], r["site"], r["metric"])
        groups.setdefault(key, []).append(float(r["value"]))
    return [
        {
            "model": k[0],
            "task": k[1],
            "contrast": k[2],
            "site": k[3],
            "metric": k[4],
            "value": float(np.mean([v for v in vals if math.isfinite(v)] or [math.nan])),
            "n": len(vals),
        }
        for k, vals in sorted(groups.items())
    ]


CONTRAST_ORDER = ("T1w", "T2w", "PDw", "FLAIR")
METRIC_ORDER = ("dice", "hd95_mm", "psnr_l1_db", "psnr_range_db", "input_psnr_l1_db", "input_psnr_range_db")


def _row_order(key: tuple[str, str, str, str]) -> tuple:
    task, contrast, site, metric = key
    rank = lambda order, v: (order.index(v), "") if v in order else (len(order), v)  # noqa: E731
    return (task, rank(CONTRAST_ORDER, contrast), site, rank(METRIC_ORDER, metric))


def markdown_table(summary: list[dict], model_order: list[str]) -> str:
    """The paper's shape: one row per (task, contrast, site, metric), contrasts in protocol order
    (T1w, T2w, PDw, FLAIR, then others), one column per model in the given order (Base / SeqAug / SeqInv)."""
    keys = sorted({(s["task"], s["contrast"], s["site"], s["metric"]) for s in summary}, key=_row_order)
    value = {(s["model"], s["task"], s["contrast"], s["site"], s["metric"]): s["value"] for s in summary}
    lines = [
        "| task | contrast | site | metric | " + " | ".join(model_order) + " |",
        "|---|---|---|---|" + "---:|" * len(model_order),
    ]
    for key in keys:
        cells = []
        for m in model_order:
            v = value.get((m, *key))
            scale = 100 if key[3] == "dice" else 1  # Dice in percent, as the paper
            cells.append("-" if v is None or not math.isfinite(v) else f"{v * scale:.1f}")
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], summary: list[dict], model_order: list[str], output: Path) -> dict:
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "rows": output / "metrics.csv",
        "summary": output / "summary.csv",
        "table": output / "results.md",
    }
    for key, data in (("rows", rows), ("summary", summary)):
        tmp = paths[key].with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]) if data else ["model"])
            writer.writeheader()
            writer.writerows(data)
        tmp.replace(paths[key])
    paths["table"].write_text(markdown_table(summary, model_order), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def parse_models(specs: list[str]) -> list[tuple[str, str]]:
    """`LABEL=PATH` (or just PATH, labelled by its folder name)."""
    out = []
    for spec in specs:
        label, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
        out.append((label, path))
    return out


def run_evaluate(
    models: list[str],
    output: str,
    phantom: bool = True,
    data: str = "",
    sigma: float = EVAL_SIGMA,
    crop: int = 0,
    brain_model: str = TASKS[BRAIN_TASK].default_model,
    label_maps: str = "",
) -> dict:
    """Evaluate each model on the phantom protocols (or a test folder) and write CSV + Markdown.

    Models of tasks with `brain_mask` (lesions) run with the tissue model `brain_model` bounding their
    calls, as `seqinv segment --task arc` does ("none": no mask).
    """
    from seqinv.errors import ParameterError
    from seqinv.models import SeqInvUNet

    if not models:
        raise ParameterError("no model given; use --model LABEL=FOLDER, e.g. --model seqinv=runs/ixi")
    if phantom == bool(data):
        raise ParameterError("give exactly one test source: --phantom or --data FOLDER")
    rows, order, brain = [], [], None
    for label, path in parse_models(models):
        model = SeqInvUNet.from_pretrained(path)
        task = trained_task(model.config)
        if phantom:
            cases = phantom_cases(task, crop) + _head_cases(task, crop, label_maps)
        else:
            cases = load_cases(data, task)
        bounded = TASKS[task].brain_mask
        if bounded and brain_model != "none" and brain is None:  # loaded once for all lesion models
            from seqinv.inference import load_task_model

            brain = load_task_model(BRAIN_TASK, brain_model)[0]
        bound = brain if bounded else None
        for row in evaluate_model(model, cases, sigma, brain_model=bound):
            rows.append({"model": label, "task": task, **row})
        order.append(label)
    summary = summarise(rows)
    paths = write_results(rows, summary, order, Path(output))
    return {"rows": rows, "summary": summary, "paths": paths, "table": markdown_table(summary, order)}
