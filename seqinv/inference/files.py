"""Scans in, files out: what `seqinv segment | denoise | embed` write, as Python functions.

One function per job takes input and output paths: `segment_file` writes the labels (and probabilities,
QC montage) with a JSON sidecar, `denoise_file` and `embed_file` likewise; `segment_files`,
`denoise_files` and `embed_files` run many inputs (files, globs, folders) the way the CLI does, keep
going when one fails, and `segment_files` keeps the cohort volumes CSV.

    from seqinv.inference.files import segment_files
    segment_files(["sub-01_T1w.nii.gz"], "out/", task="ixi")   # out/sub-01_dseg.nii.gz, .json, volumes.csv

No output ever replaces an input; each task names its outputs apart (`Task.output_suffix`); each sidecar
records the input's sha256, the options and each output's sha256, which `skip_existing` checks.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seqinv.errors import InputError, ParameterError, SeqInvError
from seqinv.inference.batch import (
    BatchSummary,
    check_writable,
    expand_inputs,
    file_sha256,
    model_metadata,
    plan_outputs,
    refuse_overwriting,
    run_cases,
    sibling,
    sidecar,
    sidecar_path,
    trusted,
    update_csv,
    write_json,
    writing_into,
)
from seqinv.inference.core import DenoiseJob, EmbedJob, SegmentJob, check_tissue_model, load_task_model
from seqinv.inference.options import DenoiseOptions, EmbedOptions, SegmentOptions
from seqinv.inference.transaction import WriteTransaction
from seqinv.io import Volume, atomic_path, read_volume, strip_suffix, write_volume
from seqinv.tasks import BRAIN_TASK, SEGMENT_TASKS, get_task

NIFTI_OUT = (".nii.gz", ".nii")
FEATURE_OUT = (".npz", ".nii.gz", ".nii")
Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------ one scan
def write_labels(path: Path, labels, volume: Volume, affine=None) -> None:
    """uint8 labels with the input's header, on its grid (or on `affine`'s)."""
    header, affine = _grid_header(volume, affine)
    write_volume(path, labels, affine, header, dtype="uint8")


def write_probabilities(path: Path, probs, volume: Volume, affine=None) -> None:
    """(C, X, Y, Z) class probabilities as a 4D NIfTI on the input's grid (or on `affine`'s)."""
    # NIfTI has no float16: uint8 with scl_slope 1/255 (0.002 precision) keeps files small
    header, affine = _grid_header(volume, affine)
    write_volume(path, probs.transpose(1, 2, 3, 0), affine, header, "uint8", 1 / 255)


def _grid_header(volume: Volume, affine):
    """(header, affine) for an output on the input's grid, or on another one (`affine`): there the input's
    slice fields (which axis, which slices were acquired) no longer describe the voxels."""
    import numpy as np

    if affine is None or volume.header is None or np.allclose(affine, volume.affine):
        return volume.header, volume.affine if affine is None else affine
    header = volume.header.copy()
    for field in ("dim_info", "slice_code", "slice_start", "slice_end", "slice_duration"):
        header[field] = 0
    return header, affine


def write_qc(path: Path, result) -> None:
    """PNG montage of the model-space image with the labels overlaid."""
    from seqinv.qc import write_montage

    write_montage(path, result.model_image, result.model_labels)


def record_meta(record) -> dict:
    """The preprocessing a sidecar records (resampling, grid, crop, intensity scaling)."""
    return {
        "resampled": record.resampled,
        "grid_shape": list(record.grid_shape),
        "crop": [[s.start, s.stop] for s in record.crop],
        "intensity": record.intensity,
    }


def volumes_row(src: Path, dst: Path, volumes_ml: dict) -> dict:
    """One row of the cohort volumes CSV, keyed by the input's absolute path (however it was typed)."""
    volumes = {f"{k}_ml": f"{v:.3f}" for k, v in volumes_ml.items()}
    return {"input": str(src.resolve()), "dseg": str(dst.resolve()), **volumes}


def probs_path(dst: Path, task: str) -> Path:
    """The probabilities beside the labels: 'x_dseg' -> 'x_probseg', 'x_label-lesion_mask' ->
    'x_label-lesion_probseg'."""
    return sibling(dst, "_" + _labels_kind(task), "_probseg")


def segment_outputs(dst: Path, task: str, probs: bool, qc: str | Path | None) -> dict[str, Path]:
    """kind -> file of one segmentation case (the sidecar aside)."""
    files = {"dseg": dst}
    if probs:
        files["probseg"] = probs_path(dst, task)
    if qc:
        files["qc"] = Path(qc)
    return files


def _case_files(dst: Path, task: str, probs: bool, qc: str | Path | None) -> list[Path]:
    """Every file of one case, the sidecar last."""
    return [*segment_outputs(dst, task, probs, qc).values(), sidecar_path(dst)]


def _labels_kind(task: str) -> str:
    return get_task(task).output_suffix.rpartition("_")[2]  # "dseg", "mask"


def _timed_read(src: Path, volume_index: int | None) -> tuple[Volume, float]:
    start = time.perf_counter()
    volume = read_volume(src, volume=volume_index)
    return volume, time.perf_counter() - start


def _total(info, read_s: float, write_start: float) -> None:
    timings = {"read": read_s, **info.timings_s, "write": time.perf_counter() - write_start}
    info.timings_s = timings | {"total": sum(timings.values())}


@contextlib.contextmanager
def _case(writes: WriteTransaction | None):
    """The caller's transaction, or one of this file's own."""
    if writes is not None:
        yield writes
        return
    with WriteTransaction() as own:
        yield own


def segment_file(
    src: str | Path,
    dst: str | Path,
    job: SegmentJob,
    qc: str | Path | None = None,
    writes: WriteTransaction | None = None,
) -> dict:
    """Segment `src` into `dst` (labels), its `_probseg` sibling (`job.options.probs`), `qc` (PNG) and the
    sidecar; an output that would replace `src` is refused. Returns the sidecar's content.

    `job` holds the models and options (its task names the outputs); `writes` the transaction the files
    join (default: their own, so they are all written or none is).
    """
    src, dst, options = Path(src), Path(dst), job.options
    task = options.task
    refuse_overwriting([src], [*segment_outputs(dst, task, options.probs, qc).values(), sidecar_path(dst)])
    digest = file_sha256(src)  # before anything is written
    image, read_s = _timed_read(src, options.volume)
    result = job(image)
    with _case(writes) as writes:
        start = time.perf_counter()
        write_labels(writes.output(dst), result.labels, image, result.affine)
        extra_files = {}
        if options.probs:
            extra_files["probseg"] = str(probs_path(dst, task))
            write_probabilities(writes.output(probs_path(dst, task)), result.probs, image, result.affine)
        if qc is not None:
            extra_files["qc"] = str(qc)
            write_qc(writes.output(qc), result)
        _total(result.info, read_s, start)
        meta = _segment_sidecar(src, digest, job, result, {"dseg": str(dst), **extra_files})
        write_json(writes.output(sidecar_path(dst)), meta)
    return meta


def _segment_sidecar(src: Path, digest: str | None, job: SegmentJob, result, outputs: dict) -> dict:
    options = job.options
    grid = "input" if options.grid == "input" else "model (1 mm RAS, cropped to the head)"
    extra = {
        "task": options.task,
        "input_volume": options.volume,
        "output_grid": grid,
        "labels": dict(enumerate(result.label_names)),
        "volumes_ml": result.volumes_ml,
        "outputs": outputs,
        "preprocessing": record_meta(result.record),
        "brain_mask_model": model_metadata(job.brain_source) if job.brain_source else None,
        "intensity_refinement": result.refinement,
    }
    recorded = options.recorded(job.brain_source)
    return sidecar("segment", src, digest, job.source, result.info, extra, recorded)


def denoise_file(
    src: str | Path, dst: str | Path, job: DenoiseJob, writes: WriteTransaction | None = None
) -> dict:
    """Denoise `src` into `dst` (input grid, header and intensity scale) with its sidecar."""
    src, dst, options = Path(src), Path(dst), job.options
    refuse_overwriting([src], [dst, sidecar_path(dst)])
    digest = file_sha256(src)
    image, read_s = _timed_read(src, options.volume)
    result = job(image)
    with _case(writes) as writes:
        start = time.perf_counter()
        write_volume(writes.output(dst), result.image, image.affine, image.header, dtype="float32")
        _total(result.info, read_s, start)
        extra = {
            "input_volume": options.volume,
            "passes": result.info.settings.get("passes"),  # flipped copies averaged (None: 1 mm path)
            "noise_sigma": result.sigma,
            "noise_sigma_source": result.sigma_source,
            "noise_sigma_method": result.sigma_method,
            "nonlocal_stage": result.nonlocal_stage,  # None: the network's estimate alone
            "input_gain": result.gain,
            "outputs": {"denoised": str(dst)},
            "preprocessing": record_meta(result.record)
            if result.record is not None
            else {"resampled": False, "grid": "input"},
        }
        meta = sidecar("denoise", src, digest, job.source, result.info, extra, options.recorded())
        write_json(writes.output(sidecar_path(dst)), meta)
    return meta


def embed_file(
    src: str | Path, dst: str | Path, job: EmbedJob, writes: WriteTransaction | None = None
) -> dict:
    """Encoder features of `src` into `dst`: .npz (pooled, dense, affine) or a 4D .nii(.gz) dense map."""
    src, dst, options = Path(src), Path(dst), job.options
    refuse_overwriting([src], [dst, sidecar_path(dst)])
    digest = file_sha256(src)
    result = job(read_volume(src, volume=options.volume))
    with _case(writes) as writes:
        _write_features(writes.output(dst), result, job.source)
        extra = {
            "input_volume": options.volume,
            "pooled": result.pooled,
            "dense_shape": list(result.dense.shape),
            "dense_affine": result.dense_affine,
            "outputs": {"features": str(dst)},
        }
        meta = sidecar("embed", src, digest, job.source, result.info, extra, options.recorded())
        write_json(writes.output(sidecar_path(dst)), meta)
    return meta


def _write_features(dst: Path, result, source: Any) -> None:
    import numpy as np

    if dst.name.lower().endswith(NIFTI_OUT):
        write_volume(dst, result.dense.transpose(1, 2, 3, 0), result.dense_affine, None, "float32")
        return
    with atomic_path(dst) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            pooled=result.pooled,
            dense=result.dense,
            dense_affine=result.dense_affine,
            model=json.dumps(model_metadata(source)),
        )


# ------------------------------------------------------------------------------------------ many scans
def _paths(inputs: str | Path | Sequence, log: Log | None = None) -> list[Path]:
    """Strings are expanded (globs, folders, leaving out seqinv outputs); `Path`s are taken as they are."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if items and all(isinstance(i, Path) for i in items):
        return list(dict.fromkeys(items))
    return expand_inputs([str(i) for i in items], (lambda line: log(f"note: {line}")) if log else None)


def load_job_model(task: str, model: Any, log: Log | None = None, check_task: bool = True):
    """(net, source) from a name/folder/repo (or None: the task's default), or an already loaded model."""
    if model is not None and not isinstance(model, (str, Path)):
        return model, getattr(model, "source", None)
    net, source = load_task_model(task, None if model is None else str(model), check_task=check_task)
    if log:
        log(source.describe() if hasattr(source, "describe") else str(source))
    return net, source


def loaded_here(given: Any, net: Any) -> list:
    """[net] when it was loaded from `given` (a name, folder or None) for this job alone: the job may
    prepare it in place; [] for the caller's own model, which stays as it is."""
    return [net] if net is not None and (given is None or isinstance(given, (str, Path))) else []


def _skip(enabled: bool, source: Any, options: dict, files: Callable[[Path], dict[str, Path]]):
    """`--skip-existing`: skip a case only when `trusted` (its files and sidecar agree with this run)."""

    def skip(src: Path, dst: Path) -> bool:
        return enabled and trusted(src, dst, source, options, files(dst)) is not None

    return skip


def _seconds(meta: dict) -> str:
    timings = meta.get("timings_s", {})
    return f"{timings.get('total', sum(timings.values())):.1f} s"


def _wrote(dst: Path, meta: dict) -> str:
    others = [kind for kind in meta.get("outputs", {}) if Path(meta["outputs"][kind]) != dst]
    return f"wrote {dst} (+ {', '.join(['sidecar', *others])}) in {_seconds(meta)}"


def _wrote_labels(dst: Path, meta: dict) -> str:
    volumes = list(meta["volumes_ml"].items())[1:]  # not the background
    return f"{_wrote(dst, meta)}: " + ", ".join(f"{name} {ml:.3f} mL" for name, ml in volumes)


def _wrote_denoised(dst: Path, meta: dict) -> str:
    return f"{_wrote(dst, meta)}: noise sigma {meta['noise_sigma']:.4g} ({meta['noise_sigma_source']})"


def qc_targets(
    qc: str | Path | None, paths: list[Path], targets: list[Path], task: str = "ixi"
) -> dict[Path, Path] | None:
    """input -> QC PNG: `qc` names one PNG (one input) or a folder ('x_qc.png', 'x_label-lesion_qc.png')."""
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
    kind = "_" + _labels_kind(task)
    return {
        p: qc_path / f"{strip_suffix(t).removesuffix(kind)}_qc.png"
        for p, t in zip(paths, targets, strict=True)
    }


def brain_mask_model(task: str, brain_model: Any, log: Log | None = None):
    """(model, source) of the tissue model that bounds lesion calls, or (None, None).

    `brain_model` "auto" is the brain task's default model, None turns the mask off.
    """
    if not get_task(task).brain_mask or brain_model is None:
        return None, None
    name = None if brain_model == "auto" else brain_model
    net, source = load_job_model(BRAIN_TASK, name, log, check_task=False)
    check_tissue_model(net.config)
    return net, source


def _volumes_csv(volumes: str | Path | None, targets: list[Path], task: str) -> Path:
    """`--volumes`, or the task's CSV (volumes.csv, lesion_volumes.csv) beside the first output."""
    if not volumes:
        return targets[0].parent / get_task(task).volumes_csv
    path = Path(volumes)
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise InputError(f"--volumes {volumes}: folder {path.parent} does not exist; create it first")
    return path


def _save_volumes(path: Path, rows: list[dict], strict: bool = True) -> None:
    """Rows of the finished cases (a case cut short left no labels) into the CSV; not `strict` (the run is
    failing already), a failed write is dropped so that the first error is the one reported."""
    rows = [row for row in rows if Path(row["dseg"]).is_file()]
    if not rows:
        return
    try:
        update_csv(path, rows)
    except SeqInvError:
        if strict:
            raise


def segment_files(
    inputs: str | Path | Sequence,
    output: str | Path | None = None,
    task: str | None = None,
    model: Any = None,
    *,
    options: SegmentOptions | None = None,
    brain_model: Any = "auto",
    qc: str | Path | None = None,
    volumes: str | Path | None = None,
    skip_existing: bool = False,
    progress: bool = False,
    log: Log | None = None,
    **values,
) -> BatchSummary:
    """Segment scans as `seqinv segment` does: labels, sidecars, optional probabilities and QC, volumes CSV.

    `options` (a `SegmentOptions`; default: task ixi) says how; keywords `values` set its fields (`probs`,
    `head_mask`, `refine`, `grid`, `volume`), `settings` or settings fields (`device`, `threads`, ...) and
    `fast`, on top of it; `task` likewise. `output` is a file (one input) or a folder (default: next to
    each input); the labels are named by the task (`x_dseg.nii.gz`, `x_label-lesion_mask.nii.gz`);
    `volumes` the cohort CSV (default: the task's, volumes.csv or lesion_volumes.csv, beside the
    outputs); `model` a name, folder, Hub repo or loaded model (left as it is); `brain_model` (task arc)
    the tissue model bounding lesion calls ("auto": ixi, None: no mask). `log` receives the one-line model
    descriptions (and a note on seqinv outputs left out of folders); `progress` prints what each case
    wrote and draws a bar on a terminal; `qc` a PNG (one input) or a folder of them. `skip_existing` skips
    a case whose files and sidecar agree with this run (`seqinv.inference.batch.trusted`). Returns the
    `BatchSummary` (`results`: input -> sidecar).
    """
    options = SegmentOptions.build(options, task=task, **values)
    if options.task is None:
        raise ParameterError(f"segment_files needs a task; expected one of {', '.join(SEGMENT_TASKS)}")
    task, probs = options.task, options.probs
    paths = _paths(inputs, log)
    targets = plan_outputs(
        paths, None if output is None else str(output), get_task(task).output_suffix, NIFTI_OUT
    )
    qc_paths = qc_targets(qc, paths, targets, task) or {}
    csv_path = _volumes_csv(volumes, targets, task)
    pairs = list(zip(paths, targets, strict=True))
    outputs = [_case_files(t, task, probs, qc_paths.get(p)) for p, t in pairs]
    refuse_overwriting(paths, [f for files in outputs for f in files] + [csv_path])
    cases = [_case_files(t, task, True, qc_paths.get(p)) for p, t in pairs]  # a killed run's may have probs
    brain_net, _ = brain_mask_model(task, brain_model, log)  # options are checked first
    net, _ = load_job_model(task, model, log)
    owned = loaded_here(model, net) + loaded_here(brain_model, brain_net)
    job = SegmentJob(net, options, brain_net, owned)  # the brain model is checked once, not per input
    recorded = options.recorded(job.brain_source)
    rows: list[dict] = []

    def process(src: Path, dst: Path, writes: WriteTransaction) -> dict:
        meta = segment_file(src, dst, job, qc_paths.get(src), writes)
        rows.append(volumes_row(src, dst, meta["volumes_ml"]))
        return meta

    def skip(src: Path, dst: Path) -> bool:
        if not skip_existing:
            return False
        meta = trusted(src, dst, job.source, recorded, segment_outputs(dst, task, probs, qc_paths.get(src)))
        if meta is not None:
            rows.append(volumes_row(src, dst, meta.get("volumes_ml", {})))
            return True
        return False

    try:
        with writing_into(cases):
            summary = run_cases(paths, targets, process, skip, "segment", progress, _wrote_labels)
    except BaseException:  # interrupted too: the CSV holds every finished scan
        _save_volumes(csv_path, rows, strict=False)
        raise
    _save_volumes(csv_path, rows)
    return summary


def denoise_files(
    inputs: str | Path | Sequence,
    output: str | Path | None = None,
    model: Any = None,
    *,
    options: DenoiseOptions | None = None,
    skip_existing: bool = False,
    progress: bool = False,
    log: Log | None = None,
    **values,
) -> BatchSummary:
    """Denoise scans as `seqinv denoise` does. `options` (a `DenoiseOptions`) says how; keywords `values`
    set its fields (`sigma`: noise std in input units, estimated when None; `passes`: flipped copies the
    residual denoiser averages, default 2, 8 with `tta`; `nonlocal_stage`: the second stage, None as the
    model's config says, False off, True on; `volume`), `settings` or settings fields and `fast`."""
    options = DenoiseOptions.build(options, **values)
    paths = _paths(inputs, log)
    net, _ = load_job_model("denoise", model, log)
    # refuses --passes / --nonlocal for a model without them before any output folder exists
    job = DenoiseJob(net, options, loaded_here(model, net))
    targets = plan_outputs(paths, None if output is None else str(output), "denoised", NIFTI_OUT)
    cases = [[t, sidecar_path(t)] for t in targets]
    refuse_overwriting(paths, [f for files in cases for f in files])

    def process(src: Path, dst: Path, writes: WriteTransaction) -> dict:
        return denoise_file(src, dst, job, writes)

    skip = _skip(skip_existing, job.source, options.recorded(), lambda dst: {"denoised": dst})
    with writing_into(cases):
        return run_cases(paths, targets, process, skip, "denoise", progress, _wrote_denoised)


def embed_files(
    inputs: str | Path | Sequence,
    output: str | Path | None = None,
    model: Any = None,
    *,
    options: EmbedOptions | None = None,
    skip_existing: bool = False,
    progress: bool = False,
    log: Log | None = None,
    **values,
) -> BatchSummary:
    """Encoder features as `seqinv embed` writes them (.npz or .nii.gz per input, with sidecars);
    `options`/`values` as `denoise_files`' (`volume`, `settings` and its fields)."""
    options = EmbedOptions.build(options, **values)
    paths = _paths(inputs, log)
    targets = plan_outputs(paths, None if output is None else str(output), "features", FEATURE_OUT)
    cases = [[t, sidecar_path(t)] for t in targets]
    refuse_overwriting(paths, [f for files in cases for f in files])
    net, _ = load_job_model("features", model, log)
    job = EmbedJob(net, options, loaded_here(model, net))

    def process(src: Path, dst: Path, writes: WriteTransaction) -> dict:
        return embed_file(src, dst, job, writes)

    skip = _skip(skip_existing, job.source, options.recorded(), lambda dst: {"features": dst})
    with writing_into(cases):
        return run_cases(paths, targets, process, skip, "embed", progress, _wrote)
