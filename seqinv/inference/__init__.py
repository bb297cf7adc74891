"""Inference on real scans: segment, denoise and embed, with results in the input's native space.

from seqinv.inference import segment, segment_files
result = segment("sub-01_T1w.nii.gz", task="ixi")   # SegmentResult in memory: .labels, .volumes_ml, ...
                                                    # (.probs with probs=True, else None)
segment_files("sub-01_T1w.nii.gz", "out/")           # the files `seqinv segment` writes
segment("t2.nii.gz", grid="model", refine=False)     # every option of `seqinv segment` (SegmentOptions)

A call leaves its caller's process and models as they were (thread count, mode, device, layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqinv.inference.core import (
    DenoiseJob,
    EmbedJob,
    SegmentJob,
    denoise_volume,
    embed_volume,
    estimate_noise_sigma,
    load_task_model,
    segment_volume,
)
from seqinv.inference.files import (
    brain_mask_model,
    denoise_file,
    denoise_files,
    embed_file,
    embed_files,
    load_job_model,
    loaded_here,
    segment_file,
    segment_files,
)
from seqinv.inference.options import DenoiseOptions, EmbedOptions, SegmentOptions
from seqinv.inference.results import DenoiseResult, EmbedResult, SegmentResult
from seqinv.inference.sliding import InferenceSettings, sliding_window

__all__ = [
    "DenoiseJob",
    "DenoiseOptions",
    "DenoiseResult",
    "EmbedJob",
    "EmbedOptions",
    "EmbedResult",
    "InferenceSettings",
    "SegmentJob",
    "SegmentOptions",
    "SegmentResult",
    "denoise",
    "denoise_file",
    "denoise_files",
    "denoise_volume",
    "embed",
    "embed_file",
    "embed_files",
    "embed_volume",
    "estimate_noise_sigma",
    "load_task_model",
    "segment",
    "segment_file",
    "segment_files",
    "segment_volume",
    "sliding_window",
]


def _volumes(inputs: Any, volume: int | None = None) -> tuple[list, bool]:
    from seqinv.io import Volume, read_volume

    single = isinstance(inputs, (str, Path, Volume))
    items = [inputs] if single else list(inputs)
    return [v if isinstance(v, Volume) else read_volume(v, volume=volume) for v in items], single


def _model(task: str, model: Any) -> tuple[Any, list]:
    """(the model, [it] when loaded here: the job may prepare it in place)."""
    net = load_job_model(task, model)[0]
    return net, loaded_here(model, net)


def segment(
    inputs: str | Path | Sequence,
    task: str | None = None,
    model: Any = None,
    probs: bool | None = None,
    brain_model: Any = "auto",
    volume: int | None = None,
    *,
    options: SegmentOptions | None = None,
    **values,
) -> SegmentResult | list[SegmentResult]:
    """Segment one scan (path or `Volume`) or a list; `model` is a name, folder, or a loaded model (left as
    it is).

    The result holds labels and volumes; class probabilities (`.probs`) only with `probs=True`.

    Every option of `seqinv segment` is here: `options` (a `SegmentOptions`; default: task ixi), and on
    top of it `task`, `probs`, `volume` (one volume, 0-based, of 4D inputs) and the keywords `values`:
    `head_mask`, `refine`, `grid` ("input" or "model"), `settings` (an `InferenceSettings` or a dict) or
    its fields (device, precision, overlap, sw_batch_size, tta, threads, patch_size), and `fast`.
    `brain_model` (task arc): the tissue model whose brain (CSF, GM, WM) bounds the lesion calls;
    "auto" is `ixi`, None turns the mask off.
    """
    options = SegmentOptions.build(options, task=task, probs=probs, volume=volume, **values)
    net, owned = _model(options.task, model)
    brain, _ = brain_mask_model(options.task, brain_model)
    job = SegmentJob(net, options, brain, owned + loaded_here(brain_model, brain))
    volumes, single = _volumes(inputs, options.volume)
    results = [job(v) for v in volumes]
    return results[0] if single else results


def denoise(
    inputs: str | Path | Sequence,
    model: Any = None,
    sigma: float | None = None,
    volume: int | None = None,
    passes: int | None = None,
    nonlocal_stage: bool | None = None,
    *,
    options: DenoiseOptions | None = None,
    **values,
) -> DenoiseResult | list[DenoiseResult]:
    """Denoise one scan or a list; `sigma` is the noise std in input units (estimated when None);
    `volume` picks one volume (0-based) of 4D inputs; `passes` and `nonlocal_stage` as `denoise_volume`'s.

    Every option of `seqinv denoise` is here: `options` (a `DenoiseOptions`), the arguments above on top
    of it, and the keywords `values`: `settings` or its fields, and `fast` (one pass, overlap 0.25)."""
    options = DenoiseOptions.build(
        options, sigma=sigma, volume=volume, passes=passes, nonlocal_stage=nonlocal_stage, **values
    )
    net, owned = _model("denoise", model)
    job = DenoiseJob(net, options, owned)
    volumes, single = _volumes(inputs, options.volume)
    results = [job(v) for v in volumes]
    return results[0] if single else results


def embed(
    inputs: str | Path | Sequence,
    model: Any = None,
    volume: int | None = None,
    *,
    options: EmbedOptions | None = None,
    **values,
) -> EmbedResult | list[EmbedResult]:
    """Pooled and dense encoder features of one scan or a list (`volume`: one volume of 4D inputs;
    `options`/`values` as `denoise`'s)."""
    options = EmbedOptions.build(options, volume=volume, **values)
    net, owned = _model("features", model)
    job = EmbedJob(net, options, owned)
    volumes, single = _volumes(inputs, options.volume)
    results = [job(v) for v in volumes]
    return results[0] if single else results
