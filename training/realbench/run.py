"""The real-scan benchmark: references (cached), the models' labels and denoised images, all figures.

`run_real(RealOptions(...))` is what `benchmarks/eval_real.py` and `seqinv evaluate --real DIR` call.
The scans are the yardstick: no seqinv model is trained or tuned on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqinv.metrics import dice
from seqinv.tasks import TASKS, TISSUE_TASK
from training.realbench import denoising as dn
from training.realbench.grids import carry_mask, degrade, resample_probs
from training.realbench.metrics import kmeans_labels, outside_percent, tissue_dice, volumes_ml
from training.realbench.references import (
    MASK_RECIPES,
    Cache,
    atropos_labels,
    carried_mask,
    deepbet_mask,
    default_cache_dir,
    file_sha256,
    nonzero_mask,
)


@dataclass(frozen=True)
class ScanSpec:
    """A known scan: file stem, short name, contrast, how its reference mask is made, whether it is a
    sharp T1w that gets an Atropos tissue reference."""

    stem: str
    name: str
    contrast: str
    mask: str  # "deepbet" | "nonzero" | "rigid:<name>" | "affine:<name>"
    tissue: bool


SCANS = (
    ScanSpec("chris_t1", "chris_t1", "T1w", "deepbet", True),
    ScanSpec("chris_PD", "chris_PD", "PDw", "rigid:chris_t1", False),
    ScanSpec("T2w", "T2w", "T2w", "affine:MNI152_T1_2mm", False),
    ScanSpec("spm152", "spm152", "T1w", "deepbet", True),
    ScanSpec("MNI152_T1_2mm", "MNI152_T1_2mm", "T1w", "deepbet", False),
    ScanSpec("CIT168toMNI152-2009c_T1w_brain", "CIT168", "T1w", "nonzero", True),
)
DEGRADED = {"1x1x5mm": (1.0, 1.0, 5.0), "3mm-iso": (3.0, 3.0, 3.0)}


@dataclass
class RealOptions:
    real_dir: str
    output: str
    seg_model: str | None = TASKS[TISSUE_TASK].default_model
    denoise_model: str | None = "denoise"
    cache_dir: str | None = None
    threads: int = 1
    methods: tuple[str, ...] = dn.METHODS
    protocols: tuple[str, ...] = tuple(dn.PROTOCOLS)
    slab_mm: float = dn.SLAB_MM
    seed: int = 0
    profile: str = "gaussian"
    denoise_passes: int | None = None  # flipped passes of the residual denoiser (None: its default)


@dataclass
class Scan:
    spec: ScanSpec
    volume: object  # seqinv.io.Volume
    sha256: str
    cache: Cache
    mask: np.ndarray | None = None
    tissue: np.ndarray | None = None
    kmeans: np.ndarray | None = None
    labels: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ scans
def find_scans(real_dir: Path, cache_root: Path) -> dict[str, Scan]:
    from seqinv.errors import InputError
    from seqinv.io import read_volume

    scans = {}
    for spec in SCANS:
        path = real_dir / f"{spec.stem}.nii.gz"
        if path.is_file():
            sha = file_sha256(path)
            scans[spec.name] = Scan(spec, read_volume(path), sha, Cache(cache_root, sha))
    if not scans:
        known = ", ".join(f"{s.stem}.nii.gz" for s in SCANS)
        raise InputError(f"{real_dir} holds none of the benchmark's scans ({known})")
    return scans


def build_references(scans: dict[str, Scan]) -> None:
    """Masks first (chris_PD and T2w borrow another scan's), then tissue references."""
    for scan in sorted(scans.values(), key=lambda s: ":" in s.spec.mask):
        spec, volume = scan.spec, scan.volume
        log(f"  reference mask {spec.name}: {MASK_RECIPES[spec.mask]}")
        if spec.mask == "deepbet":
            scan.mask = scan.cache.array("mask_deepbet", lambda v=volume: deepbet_mask(v.path, v.shape)) > 0
        elif spec.mask == "nonzero":
            scan.mask = scan.cache.array("mask_nonzero", lambda v=volume: nonzero_mask(v.data)) > 0
        else:
            kind, _, source_name = spec.mask.partition(":")
            source = scans.get(source_name)
            if source is None or source.mask is None:
                scan.notes.append(f"no reference mask: {source_name} is not in the folder")
                continue
            scan.mask = carry_reference(scan, source, kind)
    for scan in scans.values():
        if scan.spec.tissue and scan.mask is not None:
            v, m = scan.volume, scan.mask
            log(f"  tissue reference {scan.spec.name}: Atropos")
            scan.tissue = scan.cache.array("atropos", lambda v=v, m=m: atropos_labels(v.data, v.affine, m))
            scan.kmeans = kmeans_labels(v.data, m)


def carry_reference(scan: Scan, source: Scan, kind: str) -> np.ndarray:
    """`source`'s mask on `scan`'s grid via a registration of source onto scan (cached transform)."""
    key = f"{kind}_from_{source.sha256[:16]}"

    def compute():
        return carried_mask(scan.volume, source.volume, source.mask, kind)[1]

    transform = scan.cache.transform(key, compute)
    v, s = scan.volume, source.volume
    return scan.cache.array(
        f"mask_{key}", lambda: carry_mask(source.mask, s.affine, v.shape, v.affine, transform)
    )


# ------------------------------------------------------------------------------------------------ segment
def seg_rows(
    scans: dict[str, Scan], model, settings, model_name: str, output: Path
) -> tuple[list[dict], dict]:
    from seqinv.inference import segment_volume
    from seqinv.qc import write_montage

    rows, results = [], {}
    for name, scan in scans.items():
        start = time.perf_counter()
        result = segment_volume(scan.volume, model, settings, probs=name in ("chris_PD", "chris_t1"))
        log(f"  segment {name}: {time.perf_counter() - start:.1f} s")
        scan.labels, results[name] = result.labels, result
        write_montage(output / "real_scans" / f"{name}.png", *small(result.model_image, result.model_labels))
        rows += scan_rows(scan, model_name)
    return rows, results


def small(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every other voxel of a large head (the PNG stays small), the whole grid of a small one."""
    if max(image.shape) > 160:
        return image[::2, ::2, ::2], labels[::2, ::2, ::2]
    return image, labels


def row(section, scan, model, reference, metric, cls, value) -> dict:
    return {
        "section": section,
        "scan": scan,
        "model": model,
        "reference": reference,
        "metric": metric,
        "class": cls,
        "value": float(value),
    }


def scan_rows(scan: Scan, model_name: str) -> list[dict]:
    name, volume, labels = scan.spec.name, scan.volume, scan.labels
    out = []
    for cls, ml in volumes_ml(labels, volume.voxel_ml).items():
        out.append(row("volume", name, model_name, "-", "ml", cls, ml))
    if scan.mask is not None:
        ref = MASK_RECIPES[scan.spec.mask]
        brain = labels > 0
        out.append(row("brain", name, model_name, ref, "dice", "brain", dice(brain, scan.mask)))
        pct = outside_percent(brain, scan.mask, volume.voxel_mm, 5.0)
        out.append(row("brain", name, model_name, ref, "outside_5mm_pct", "brain", pct))
        out.append(row("brain", name, model_name, ref, "brain_ml", "brain", brain.sum() * volume.voxel_ml))
        out.append(
            row("brain", name, "reference", ref, "brain_ml", "brain", scan.mask.sum() * volume.voxel_ml)
        )
    if scan.tissue is not None:
        for who, labels_of, within in (
            (model_name, labels, None),
            (f"{model_name} in mask", labels, scan.mask),
            ("kmeans", scan.kmeans, None),
        ):
            for cls, value in tissue_dice(labels_of, scan.tissue, within).items():
                out.append(row("tissue", name, who, "atropos", "dice", cls, value))
        for cls, ml in volumes_ml(scan.tissue, volume.voxel_ml).items():
            out.append(row("volume", name, "atropos", "-", "ml", cls, ml))
    return out


def cross_contrast_rows(scans, results, model_name: str) -> list[dict]:
    """chris_PD's labels on chris_t1's grid (probabilities resampled through the rigid transform)."""
    if "chris_PD" not in scans or "chris_t1" not in scans:
        return []
    t1, pd = scans["chris_t1"], scans["chris_PD"]
    transform = pd.cache.transform(f"rigid_from_{t1.sha256[:16]}", lambda: None)
    # the cached transform maps PD points to T1 points (T1 was registered onto PD): invert it
    inverse = transform.GetInverse()
    on_t1 = resample_probs(
        results["chris_PD"].probs, pd.volume.affine, t1.volume.shape, t1.volume.affine, inverse
    )
    covered = carry_mask(
        np.ones(pd.volume.shape, bool), pd.volume.affine, t1.volume.shape, t1.volume.affine, inverse
    )
    out = []
    for cls, value in tissue_dice(on_t1, t1.labels, covered).items():
        out.append(row("cross_contrast", "chris_PD", model_name, "chris_t1 labels", "dice", cls, value))
    if t1.mask is not None:
        both = covered & t1.mask
        agree = 100.0 * float((on_t1[both] == t1.labels[both]).mean())
        out.append(
            row(
                "cross_contrast", "chris_PD", model_name, "chris_t1 labels", "agree_in_mask_pct", "all", agree
            )
        )
    return out


def resolution_rows(scans, model, settings, model_name: str, profile: str) -> list[dict]:
    """chris_t1 degraded (slice profile + sampling), segmented, its probabilities back on the sharp grid:
    labels on the degraded scan's own grid, and on the model's 1 mm grid (`--grid model`, tag `/1mm`)."""
    from seqinv.inference import segment_volume
    from seqinv.io import Volume

    if "chris_t1" not in scans:
        return []
    t1 = scans["chris_t1"].volume
    sharp = scans["chris_t1"].labels
    out = []
    for tag, voxel_mm in DEGRADED.items():
        data, affine = degrade(t1.data, t1.affine, voxel_mm, profile)
        for grid, suffix in (("input", ""), ("model", "/1mm")):
            result = segment_volume(
                Volume(data=data.astype(np.float32), affine=affine), model, settings, probs=True, grid=grid
            )
            labels = resample_probs(result.probs, result.affine, t1.shape, t1.affine)
            scan = f"chris_t1@{tag}{suffix}"
            for cls, value in tissue_dice(labels, sharp).items():
                out.append(row("resolution", scan, model_name, "sharp chris_t1 labels", "dice", cls, value))
            voxel_ml = float(abs(np.linalg.det(result.affine[:3, :3]))) / 1000
            for cls, ml in volumes_ml(result.labels, voxel_ml).items():
                out.append(row("volume", scan, model_name, "-", "ml", cls, ml))
    return out


# ------------------------------------------------------------------------------------------------ denoise
#: Columns of the denoising montage (`real_scans/denoise_<protocol>.png`), one row per scan.
PANELS = ("input", "seqinv", "nlmeans", "bm4d", "clean")


def panel(case: dn.DenoiseCase, volume: np.ndarray) -> np.ndarray:
    """The slab's middle axial slice of `volume`, windowed on the clean slice (0.5-99.5 percentiles)."""
    axis = dn.axial_axis(case.affine)
    take = lambda v: np.rot90(np.take(v, v.shape[axis] // 2, axis=axis))  # noqa: E731
    lo, hi = np.percentile(take(case.clean), [0.5, 99.5])
    return (take(volume) - lo) / max(float(hi - lo), 1e-6)


def denoise_rows(scans, model, options: RealOptions) -> tuple[list[dict], dict[str, list]]:
    """Scores of every method on every scan and protocol, and the montage rows per protocol."""
    from seqinv.preprocess import head_region

    makers = {
        "seqinv": lambda: dn.seqinv_denoiser(model, options.threads, options.denoise_passes),
        "nlmeans": lambda: dn.nlmeans_denoiser(options.threads),
        "bm4d": dn.bm4d_denoiser,
    }
    methods = {m: makers[m]() for m in options.methods if m != "seqinv" or model is not None}
    rows, warm, panels = [], False, {}
    for k, (name, scan) in enumerate(scans.items()):
        data = scan.volume.data
        head = head_region(data)
        brain = scan.mask if scan.mask is not None else head
        box = dn.denoise_region(scan.volume.affine, brain, options.slab_mm)
        box_key = "-".join(f"{s.start}_{s.stop}" for s in box)
        shape = "x".join(str(s.stop - s.start) for s in box)
        for protocol in options.protocols:
            noise, sigma = dn.PROTOCOLS[protocol]
            clean_full, data_range = dn.clean_image(data, head, noise)
            clean = np.ascontiguousarray(clean_full[box])
            key = f"{protocol}-s{options.seed}-{box_key}"
            noisy = scan.cache.array(
                f"noisy-{key}", lambda c=clean, n=noise, s=sigma, r=options.seed + k: dn.add_noise(c, n, s, r)
            )
            case = dn.DenoiseCase(
                name,
                protocol,
                noise,
                sigma,
                clean,
                noisy,
                dn.region_affine(scan.volume.affine, box),
                head[box],
                data_range,
            )
            base = {"scan": name, "protocol": protocol, "region": shape}
            rows.append({**base, "method": "input", **dn.scores(case, noisy), "time_s": 0.0})
            shown = {"input": noisy, "clean": clean}
            for method, fn in methods.items():
                if method == "seqinv":
                    if not warm:  # one-off kernel set-up, untimed
                        fn(case)
                        warm = True
                    estimate, seconds = dn.timed(fn, case)
                else:
                    estimate, seconds = cached_baseline(scan.cache, f"{method}-{key}", fn, case)
                rows.append({**base, "method": method, **dn.scores(case, estimate), "time_s": seconds})
                log(f"  denoise {name} {protocol} {method}: {rows[-1]['psnr_db']:.2f} dB {seconds:.1f} s")
                shown[method] = estimate
            panels.setdefault(protocol, []).append([panel(case, shown[m]) for m in PANELS if m in shown])
    return rows, panels


def cached_baseline(cache: Cache, key: str, fn, case) -> tuple[np.ndarray, float]:
    record = {}

    def compute():
        out, seconds = dn.timed(fn, case)
        record["time_s"] = seconds
        return out

    estimate = cache.array(key, compute)
    seconds = cache.record(f"{key}-time", lambda: record)["time_s"]
    return estimate, seconds


# ------------------------------------------------------------------------------------------------ main
def describe(source) -> str:
    """Which weights ran (name, where from, weight hash), without the Hub's availability note."""
    return f"`{source.name}` ({source.kind}, sha256 {source.sha256[:12]})"


def machine() -> str:
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores"


def run_real(options: RealOptions) -> dict:
    import torch

    from seqinv.inference import InferenceSettings, load_task_model
    from seqinv.qc import write_grid
    from training.realbench.report import write_report

    torch.set_num_threads(options.threads)
    cache_root = Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_dir()
    output = Path(options.output)
    (output / "real_scans").mkdir(parents=True, exist_ok=True)
    times = {}
    start = time.perf_counter()
    scans = find_scans(Path(options.real_dir), cache_root)
    build_references(scans)
    times["references_s"] = time.perf_counter() - start
    settings = InferenceSettings(device="cpu", threads=options.threads)
    seg_rows_, den_rows, models = [], [], {}
    if options.seg_model:
        model, source = load_task_model(TISSUE_TASK, options.seg_model)
        models["segment"] = describe(source)
        t = time.perf_counter()
        rows, results = seg_rows(scans, model, settings, options.seg_model, output)
        rows += cross_contrast_rows(scans, results, options.seg_model)
        rows += resolution_rows(scans, model, settings, options.seg_model, options.profile)
        seg_rows_ = rows
        times["segmentation_s"] = time.perf_counter() - t
    if options.protocols and options.methods:
        t = time.perf_counter()
        model = None
        if options.denoise_model and "seqinv" in options.methods:
            model, source = load_task_model("denoise", options.denoise_model)
            models["denoise"] = describe(source)
            if options.denoise_passes is not None:
                models["denoise"] += f", {options.denoise_passes} flipped passes"
        den_rows, panels = denoise_rows(scans, model, options)
        for protocol, grid in panels.items():
            write_grid(output / "real_scans" / f"denoise_{protocol}.png", grid)
        times["denoising_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - start
    hits = sum(s.cache.hits for s in scans.values())
    misses = sum(s.cache.misses for s in scans.values())
    context = {"scans": scans, "models": models, "times": times, "cache": (str(cache_root), hits, misses)}
    context["options"] = options
    context["machine"] = machine()
    paths = write_report(seg_rows_, den_rows, context, output)
    table = Path(paths["table"]).read_text(encoding="utf-8")
    return {"rows": seg_rows_, "denoise_rows": den_rows, "paths": paths, "times": times, "table": table}


def options_from(
    real_dir: str,
    output: str,
    seg_model: str | None = TASKS[TISSUE_TASK].default_model,
    denoise_model: str | None = "denoise",
    methods: str = ",".join(dn.METHODS),
    protocols: str = ",".join(dn.PROTOCOLS),
    threads: int = 1,
    slab_mm: float = dn.SLAB_MM,
    **kwargs,
) -> RealOptions:
    """Checked options from command-line values (comma lists, 'none' to skip a model)."""
    from seqinv.errors import InputError, ParameterError

    if not Path(real_dir).is_dir():
        raise InputError(f"--real {real_dir}: no such folder; give the folder of the real scans")
    picked = {}
    for option, text, valid in (("--methods", methods, dn.METHODS), ("--protocols", protocols, dn.PROTOCOLS)):
        items = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in items if v not in valid]
        if bad:
            raise ParameterError(f"{option} {text!r}: unknown {bad}; expected a subset of {','.join(valid)}")
        picked[option] = items
    if threads < 1 or not slab_mm > 0:
        raise ParameterError(f"--threads {threads} must be >= 1 and --slab-mm {slab_mm} > 0")
    if kwargs.get("denoise_passes") is not None:
        from seqinv.inference.denoising import check_passes

        check_passes(kwargs["denoise_passes"])
    none = lambda name: None if name in (None, "", "none") else name  # noqa: E731
    return RealOptions(
        real_dir=real_dir,
        output=output,
        seg_model=none(seg_model),
        denoise_model=none(denoise_model),
        methods=picked["--methods"],
        protocols=picked["--protocols"],
        threads=threads,
        slab_mm=slab_mm,
        **kwargs,
    )


def run_real_models(real_dir: str, output: str, models: list[str], cache_dir: str | None = None) -> dict:
    """`seqinv evaluate --real`: each --model (LABEL=NAME or NAME) is used by its task (a tissue model for
    the segmentation figures, a denoising model for seqinv's denoising rows); none given: ixi and denoise."""
    from seqinv.errors import ParameterError
    from seqinv.models import load_model
    from seqinv.tasks import trained_task
    from training.evaluate import parse_models

    tasks = (TISSUE_TASK, "denoise")
    chosen = dict.fromkeys(tasks) if models else {t: TASKS[t].default_model for t in tasks}
    for _, path in parse_models(models):
        task = trained_task(load_model(path)[0].config)
        if task not in chosen:
            raise ParameterError(
                f"--real scores tissue ({TISSUE_TASK}) and denoising models; {path} is a {task} model"
            )
        chosen[task] = path
    options = options_from(real_dir, output, chosen[TISSUE_TASK], chosen["denoise"], cache_dir=cache_dir)
    return run_real(options)
