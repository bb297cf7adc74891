"""`seqinv segment | denoise | embed`: parse options, call seqinv.inference.files (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import typer

from seqinv.errors import InputError, ParameterError
from seqinv.tasks import SEGMENT_TASKS, TASKS

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example_t1w.nii.gz"

_INPUTS = typer.Argument(
    None, help="Scans: files (.nii/.nii.gz/.nrrd/.mha), globs, folders or DICOM folders."
)
_OUTPUT = typer.Option(
    None,
    "-o",
    "--output",
    help="Output file (one input) or folder (many). Default: next to each input. Never an input.",
)
_MODEL = typer.Option(
    None,
    "--model",
    "-m",
    help="Published name (ixi, ixi@1.0), model folder or Hub repo id (default: the task's).",
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
_SKIP = typer.Option(
    False,
    "--skip-existing",
    help="Skip inputs whose outputs exist and match their sidecar (same model, input bytes and options).",
)
_EXAMPLE = typer.Option(False, "--example", help="Run on the bundled example T1w volume.")
_VOLUME = typer.Option(None, "--volume", help="4D inputs: the volume to process (0 is the first).")


def _tuning(device, precision, overlap, sw_batch_size, tta, threads) -> dict:
    """The `InferenceSettings` fields the flags give (overlap None: the default, or --fast's)."""
    return {
        "device": device,
        "precision": precision,
        "overlap": overlap,
        "sw_batch_size": sw_batch_size,
        "tta": tta,
        "threads": threads,
    }


def _inputs(inputs: list[str] | None, example: bool) -> list[Path]:
    from seqinv.inference.batch import expand_inputs

    if example:
        if not EXAMPLE.is_file():
            raise InputError(f"the example volume {EXAMPLE} is not in this install; pass a scan instead")
        return [EXAMPLE]
    if not inputs:
        raise InputError("no input scans given; pass files, globs or folders (or --example)")
    return expand_inputs(inputs, lambda line: _log(f"note: {line}"))


def _default_output(output: str | None, example: bool) -> str | None:
    return output if output or not example else "."  # never write into the installed package


def _log(line: str) -> None:
    typer.echo(line, err=True)


def _finish(summary, n_inputs: int) -> None:
    if summary.failed and n_inputs > 1:
        raise typer.Exit(code=1)


def segment(
    inputs: list[str] = _INPUTS,
    task: str = typer.Option(
        "ixi", "--task", "-t", help=" | ".join(f"{n}: {TASKS[n].description}" for n in SEGMENT_TASKS)
    ),
    output: str = _OUTPUT,
    model: str = _MODEL,
    probs: bool = typer.Option(
        False, "--probs", help="Also write class probabilities (4D, *_probseg.nii.gz)."
    ),
    volumes: str = typer.Option(
        None,
        "--volumes",
        help="Cohort CSV of per-class volumes in mL (default next to the outputs: volumes.csv, arc: "
        "lesion_volumes.csv).",
    ),
    qc: str = typer.Option(
        None, "--qc", help="PNG montage with the labels overlaid (a folder for many inputs)."
    ),
    no_head_mask: bool = typer.Option(
        False,
        "--no-head-mask",
        help="Keep tissue labels outside the head and apart from the brain (by default the air around the "
        "head is background, and so is tissue not connected to the brain).",
    ),
    no_refine: bool = typer.Option(
        False,
        "--no-refine",
        help="ixi: the network's labels as they are (by default they are refined by the scan's own "
        "intensities: a mixture of two Gaussians per tissue fitted to this scan, and a smooth bias field).",
    ),
    grid: str = typer.Option(
        "input",
        "--grid",
        help="input: labels on the scan's own grid; model: on the model's 1 mm grid (finer than thick "
        "slices; the header's affine places it, cropped to the head).",
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
    from seqinv.inference.options import SegmentOptions

    options = SegmentOptions.build(
        task=task,
        probs=probs,
        head_mask=False if no_head_mask else None,
        refine=False if no_refine else None,
        grid=grid,
        volume=volume_index,
        fast=fast,
        **_tuning(device, precision, overlap, sw_batch_size, tta, threads),
    )
    _check_brain_options(task, brain_model, no_brain_mask)
    from seqinv.inference.files import segment_files

    paths = _inputs(inputs, example)
    summary = segment_files(
        paths,
        _default_output(output, example),
        model=model,
        options=options,
        qc=qc,
        volumes=volumes,
        brain_model=None if no_brain_mask else (brain_model or "auto"),
        skip_existing=skip_existing,
        progress=True,
        log=_log,
    )
    _finish(summary, len(paths))


def _check_brain_options(task: str, name: str | None, off: bool) -> None:
    if name and (off or not TASKS[task].brain_mask):
        why = "--no-brain-mask turns the mask off" if off else "it bounds lesion calls (--task arc)"
        raise ParameterError(f"--brain-model is not used here: {why}")


def denoise(
    inputs: list[str] = _INPUTS,
    output: str = _OUTPUT,
    model: str = _MODEL,
    sigma: float = typer.Option(
        None, "--sigma", help="Noise std in the input's intensity units (default: estimated)."
    ),
    passes: int = typer.Option(
        None,
        "--passes",
        help="Flipped copies the denoiser averages: 1, 2, 4 or 8 (default 2; --tta 8, --fast 1).",
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    overlap: float = _OVERLAP,
    sw_batch_size: int = _SW_BATCH,
    tta: bool = typer.Option(False, "--tta", help="Average over all 8 flips (--passes 8): slower."),
    fast: bool = typer.Option(False, "--fast", help="One pass, no flips (--passes 1)."),
    nonlocal_stage: bool = typer.Option(
        None,
        "--nonlocal/--no-nonlocal",
        help="Second stage: non-local averaging guided by the network's estimate (default: as the model "
        "defines; --no-nonlocal gives the network alone).",
    ),
    threads: int = _THREADS,
    skip_existing: bool = _SKIP,
    example: bool = _EXAMPLE,
    volume_index: int = _VOLUME,
) -> None:
    """Denoise scans; the result keeps the input's grid, header and intensity scale."""
    from seqinv.inference.options import DenoiseOptions

    options = DenoiseOptions.build(
        sigma=sigma,
        passes=passes,
        nonlocal_stage=nonlocal_stage,
        volume=volume_index,
        fast=fast,
        **_tuning(device, precision, overlap, sw_batch_size, tta, threads),
    )
    from seqinv.inference.files import denoise_files

    paths = _inputs(inputs, example)
    summary = denoise_files(
        paths,
        _default_output(output, example),
        model,
        options=options,
        skip_existing=skip_existing,
        progress=True,
        log=_log,
    )
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
    from seqinv.inference.options import EmbedOptions

    tuning = _tuning(device, precision, overlap, sw_batch_size, False, threads)
    options = EmbedOptions.build(volume=volume_index, **tuning)
    from seqinv.inference.files import embed_files

    paths = _inputs(inputs, False)
    summary = embed_files(
        paths, output, model, options=options, skip_existing=skip_existing, progress=True, log=_log
    )
    _finish(summary, len(paths))


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("denoise")(denoise)
    app.command("embed")(embed)
