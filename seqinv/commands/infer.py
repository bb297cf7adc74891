"""`seqinv segment | denoise | embed`: thin CLI over seqinv.inference (heavy imports inside bodies)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from seqinv.errors import InputError, ParameterError

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example_t1w.nii.gz"
SEGMENT_TASKS = ("ixi", "arc")
NIFTI_OUT = (".nii.gz", ".nii")

_INPUTS = typer.Argument(
    None, help="Scans: files (.nii/.nii.gz/.nrrd/.mha), globs, folders or DICOM folders."
)
_OUTPUT = typer.Option(
    None, "-o", "--output", help="Output file (one input) or folder (many). Default: next to each input."
)
_MODEL = typer.Option(
    None, "--model", "-m", help="Registry name, local model folder or Hub repo id (default: the task's)."
)
_DEVICE = typer.Option("auto", help="auto | cpu | cuda | mps (unavailable accelerators fall back to CPU).")
_PRECISION = typer.Option(
    "auto", help="auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on GPU; bf16 on CPUs with AMX, else fp32)."
)
_OVERLAP = typer.Option(None, help="Window overlap fraction in [0, 1) (default 0.5; 0.25 with --fast).")
_SW_BATCH = typer.Option(2, "--sw-batch-size", help="Windows per forward pass.")
_TTA = typer.Option(False, "--tta", help="Average over flips (4 passes: slower, slightly smoother).")
_FAST = typer.Option(False, "--fast", help="Lower overlap (0.25) and no TTA.")
_THREADS = typer.Option(None, help="CPU threads (default: torch's).")
_SKIP = typer.Option(False, "--skip-existing", help="Skip inputs whose outputs (and sidecar) already exist.")
_EXAMPLE = typer.Option(False, "--example", help="Run on the bundled example T1w volume.")
_VOLUME = typer.Option(None, "--volume", help="4D inputs: the volume to process (0 is the first).")


def _settings(device, precision, overlap, sw_batch_size, tta, fast, threads):
    from seqinv.inference.sliding import InferenceSettings

    if fast and tta:
        raise ParameterError("--fast and --tta contradict each other; pick one")
    if overlap is None:
        overlap = 0.25 if fast else 0.5
    return InferenceSettings(
        device=device,
        precision=precision,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        tta=tta,
        threads=threads,
    )


def _inputs(inputs: list[str] | None, example: bool) -> list[Path]:
    from seqinv.inference.batch import expand_inputs

    if example:
        if not EXAMPLE.is_file():
            raise InputError(f"the example volume {EXAMPLE} is not in this install; pass a scan instead")
        return [EXAMPLE]
    if not inputs:
        raise InputError("no input scans given; pass files, globs or folders (or --example)")
    return expand_inputs(inputs)


def _default_output(output: str | None, example: bool) -> str | None:
    return output if output or not example else "."  # never write into the installed package


def _load(task: str, model: str | None):
    from seqinv.inference.core import load_task_model

    net, source = load_task_model(task, model)
    typer.echo(source.describe() if hasattr(source, "describe") else str(source), err=True)
    return net, source


def _brain_mask_model(task: str, name: str | None, off: bool):
    """(model, source) of the tissue model that bounds lesion calls, or (None, None)."""
    if task != "arc" or off:
        if name:
            why = "--no-brain-mask turns the mask off" if off else "it bounds lesion calls (--task arc)"
            raise ParameterError(f"--brain-model is not used here: {why}")
        return None, None
    return _load("ixi", name)


def _finish(summary, n_inputs: int) -> None:
    if summary.failed and n_inputs > 1:
        raise typer.Exit(code=1)


def _skip_fn(enabled: bool):
    from seqinv.inference.batch import sidecar_path

    def skip(source: Path, target: Path) -> bool:
        return enabled and target.exists() and sidecar_path(target).exists()

    return skip


def segment(
    inputs: list[str] = _INPUTS,
    task: str = typer.Option(
        "ixi", "--task", "-t", help="ixi (0 background, 1 CSF, 2 GM, 3 WM) | arc (lesion)."
    ),
    output: str = _OUTPUT,
    model: str = _MODEL,
    probs: bool = typer.Option(
        False, "--probs", help="Also write class probabilities (4D, *_probseg.nii.gz)."
    ),
    volumes: str = typer.Option(
        None,
        "--volumes",
        help="Cohort CSV of per-class volumes in mL (default: volumes.csv next to the outputs).",
    ),
    qc: str = typer.Option(
        None, "--qc", help="PNG montage with the labels overlaid (a folder for many inputs)."
    ),
    no_head_mask: bool = typer.Option(
        False,
        "--no-head-mask",
        help="Keep tissue labels outside the head (by default the air around it is background).",
    ),
    brain_model: str = typer.Option(
        None,
        "--brain-model",
        help="arc: tissue model whose brain (CSF, GM, WM) bounds the lesion calls (default: ixi).",
    ),
    no_brain_mask: bool = typer.Option(
        False, "--no-brain-mask", help="arc: keep lesion calls outside the brain (runs no tissue model)."
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    overlap: float = _OVERLAP,
    sw_batch_size: int = _SW_BATCH,
    tta: bool = _TTA,
    fast: bool = _FAST,
    threads: int = _THREADS,
    skip_existing: bool = _SKIP,
    example: bool = _EXAMPLE,
    volume_index: int = _VOLUME,
) -> None:
    """Segment brain tissue (ixi) or stroke lesions (arc); labels in the input's native space."""
    if task not in SEGMENT_TASKS:
        raise ParameterError(f"unknown task {task!r} for segment; expected one of {', '.join(SEGMENT_TASKS)}")
    settings = _settings(device, precision, overlap, sw_batch_size, tta, fast, threads)
    import time

    from seqinv.inference.batch import (
        model_metadata,
        plan_outputs,
        run_cases,
        sibling,
        sidecar,
        sidecar_path,
        update_csv,
        write_json,
    )
    from seqinv.inference.core import check_brain_model, segment_volume
    from seqinv.io import read_volume, write_volume

    paths = _inputs(inputs, example)
    targets = plan_outputs(paths, _default_output(output, example), "dseg", NIFTI_OUT)
    qc_targets = _qc_targets(qc, paths, targets)
    csv_path = Path(volumes) if volumes else targets[0].parent / "volumes.csv"
    brain_net, brain_source = _brain_mask_model(task, brain_model, no_brain_mask)  # checks options first
    net, source = _load(task, model)
    if brain_net is not None:
        check_brain_model(brain_net.config, net.config)  # once, not for every input
    rows: list[dict] = []

    def process(src: Path, dst: Path) -> None:
        start = time.perf_counter()
        volume = read_volume(src, volume=volume_index)
        read_s = time.perf_counter() - start
        head_mask = False if no_head_mask else None
        result = segment_volume(volume, net, settings, probs, head_mask, brain_model=brain_net)
        start = time.perf_counter()
        header = volume.header
        write_volume(dst, result.labels, volume.affine, header, dtype="uint8")
        extra_files = {}
        if probs:
            probs_path = sibling(dst, "_dseg", "_probseg")
            # NIfTI has no float16: uint8 with scl_slope 1/255 (0.002 precision) keeps files small
            write_volume(
                probs_path, result.probs.transpose(1, 2, 3, 0), volume.affine, header, "uint8", 1 / 255
            )
            extra_files["probseg"] = str(probs_path)
        if qc_targets is not None:
            from seqinv.qc import write_montage

            qc_path = qc_targets[src]
            write_montage(qc_path, result.model_image, result.model_labels)
            extra_files["qc"] = str(qc_path)
        timings = {"read": read_s, **result.info.timings_s, "write": time.perf_counter() - start}
        result.info.timings_s = timings | {"total": sum(timings.values())}
        meta = sidecar(
            "segment",
            src,
            source,
            result.info,
            {
                "task": task,
                "input_volume": volume_index,
                "labels": dict(enumerate(result.label_names)),
                "volumes_ml": result.volumes_ml,
                "outputs": {"dseg": str(dst), **extra_files},
                "preprocessing": _record_meta(result.record),
                "brain_mask_model": model_metadata(brain_source) if brain_source else None,
            },
        )
        write_json(sidecar_path(dst), meta)
        rows.append(_csv_row(src, dst, result.volumes_ml))

    def skip(src: Path, dst: Path) -> bool:
        if not _skip_fn(skip_existing)(src, dst):
            return False
        meta = json.loads(sidecar_path(dst).read_text(encoding="utf-8"))
        rows.append(_csv_row(src, dst, meta.get("volumes_ml", {})))
        return True

    try:
        summary = run_cases(paths, targets, process, skip, "segment")
    finally:  # interrupted too: the CSV holds every finished scan (a case cut short left no dseg)
        rows = [row for row in rows if Path(row["dseg"]).is_file()]
        if rows:
            update_csv(csv_path, rows)
    _finish(summary, len(paths))


def _csv_row(src: Path, dst: Path, volumes_ml: dict) -> dict:
    return {"input": str(src), "dseg": str(dst), **{f"{k}_ml": f"{v:.3f}" for k, v in volumes_ml.items()}}


def _record_meta(record) -> dict:
    return {
        "resampled": record.resampled,
        "grid_shape": list(record.grid_shape),
        "crop": [[s.start, s.stop] for s in record.crop],
        "intensity": record.intensity,
    }


def _qc_targets(qc: str | None, paths: list[Path], targets: list[Path]) -> dict[Path, Path] | None:
    from seqinv.inference.batch import check_writable
    from seqinv.io import strip_suffix

    if not qc:
        return None
    qc_path = Path(qc)
    if len(paths) == 1 and qc_path.suffix.lower() == ".png":
        check_writable(qc_path.parent)
        return {paths[0]: qc_path}
    if qc_path.suffix.lower() == ".png":
        raise InputError(f"--qc {qc} names one PNG but {len(paths)} inputs were given; give a folder")
    qc_path.mkdir(parents=True, exist_ok=True)
    check_writable(qc_path)
    return {
        p: qc_path / f"{strip_suffix(t).removesuffix('_dseg')}_qc.png"
        for p, t in zip(paths, targets, strict=True)
    }


def denoise(
    inputs: list[str] = _INPUTS,
    output: str = _OUTPUT,
    model: str = _MODEL,
    sigma: float = typer.Option(
        None, "--sigma", help="Noise std in the input's intensity units (default: estimated)."
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    overlap: float = _OVERLAP,
    sw_batch_size: int = _SW_BATCH,
    tta: bool = _TTA,
    fast: bool = _FAST,
    threads: int = _THREADS,
    skip_existing: bool = _SKIP,
    example: bool = _EXAMPLE,
    volume_index: int = _VOLUME,
) -> None:
    """Denoise scans; the result keeps the input's grid, header and intensity scale."""
    settings = _settings(device, precision, overlap, sw_batch_size, tta, fast, threads)
    if sigma is not None and not sigma > 0:
        raise ParameterError(f"--sigma {sigma} must be > 0 (noise std in the input's intensity units)")
    import time

    from seqinv.inference.batch import plan_outputs, run_cases, sidecar, sidecar_path, write_json
    from seqinv.inference.core import denoise_volume
    from seqinv.io import read_volume, write_volume

    paths = _inputs(inputs, example)
    targets = plan_outputs(paths, _default_output(output, example), "denoised", NIFTI_OUT)
    net, source = _load("denoise", model)

    def process(src: Path, dst: Path) -> None:
        start = time.perf_counter()
        volume = read_volume(src, volume=volume_index)
        read_s = time.perf_counter() - start
        result = denoise_volume(volume, net, settings, sigma=sigma)
        start = time.perf_counter()
        write_volume(dst, result.image, volume.affine, volume.header, dtype="float32")
        timings = {"read": read_s, **result.info.timings_s, "write": time.perf_counter() - start}
        result.info.timings_s = timings | {"total": sum(timings.values())}
        meta = sidecar(
            "denoise",
            src,
            source,
            result.info,
            {
                "input_volume": volume_index,
                "noise_sigma": result.sigma,
                "noise_sigma_source": result.sigma_source,
                "input_gain": result.gain,
                "outputs": {"denoised": str(dst)},
                "preprocessing": _record_meta(result.record),
            },
        )
        write_json(sidecar_path(dst), meta)

    summary = run_cases(paths, targets, process, _skip_fn(skip_existing), "denoise")
    _finish(summary, len(paths))


def embed(
    inputs: list[str] = _INPUTS,
    output: str = typer.Option(
        None, "-o", "--output", help="features.npz or features.nii.gz (one input), or a folder."
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Encoder or task model (default: the seqinv encoder)."
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    overlap: float = _OVERLAP,
    sw_batch_size: int = _SW_BATCH,
    threads: int = _THREADS,
    skip_existing: bool = _SKIP,
    volume_index: int = _VOLUME,
) -> None:
    """Encoder features: pooled vector and the dense deepest feature map (1/16 resolution, RAS)."""
    settings = _settings(device, precision, overlap, sw_batch_size, False, False, threads)
    import numpy as np

    from seqinv.inference.batch import (
        model_metadata,
        plan_outputs,
        run_cases,
        sidecar,
        sidecar_path,
        write_json,
    )
    from seqinv.inference.core import embed_volume
    from seqinv.io import atomic_path, read_volume, write_volume

    paths = _inputs(inputs, False)
    targets = plan_outputs(paths, output, "features", (".npz", ".nii.gz", ".nii"))
    net, source = _load("features", model)

    def process(src: Path, dst: Path) -> None:
        result = embed_volume(read_volume(src, volume=volume_index), net, settings)
        if dst.name.lower().endswith(NIFTI_OUT):
            write_volume(dst, result.dense.transpose(1, 2, 3, 0), result.dense_affine, None, "float32")
        else:
            with atomic_path(dst) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    pooled=result.pooled,
                    dense=result.dense,
                    dense_affine=result.dense_affine,
                    model=json.dumps(model_metadata(source)),
                )
        meta = sidecar(
            "embed",
            src,
            source,
            result.info,
            {
                "input_volume": volume_index,
                "pooled": result.pooled,
                "dense_shape": list(result.dense.shape),
                "dense_affine": result.dense_affine,
                "outputs": {"features": str(dst)},
            },
        )
        write_json(sidecar_path(dst), meta)

    summary = run_cases(paths, targets, process, _skip_fn(skip_existing), "embed")
    _finish(summary, len(paths))


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("denoise")(denoise)
    app.command("embed")(embed)
