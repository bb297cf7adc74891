"""Inference on real scans: segment, denoise and embed, with results in the input's native space.

from seqinv.inference import segment, segment_files
result = segment("sub-01_T1w.nii.gz", task="ixi")   # SegmentResult in memory: .labels, .volumes_ml, ...
                                                    # (.probs with probs=True, else None)
segment_files("sub-01_T1w.nii.gz", "out/")           # the files `seqinv segment` writes
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqinv.inference.core import (
    DenoiseResult,
    EmbedResult,
    SegmentResult,
    denoise_volume,
    embed_volume,
    estimate_noise_sigma,
    load_task_model,
    segment_volume,
)
from seqinv.inference.files import (
    denoise_file,
    denoise_files,
    embed_file,
    embed_files,
    segment_file,
    segment_files,
)
from seqinv.inference.sliding import InferenceSettings, sliding_window

__all__ = [
    "DenoiseResult",
    "EmbedResult",
    "InferenceSettings",
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


def _model(task: str, model: Any):
    if model is None or isinstance(model, (str, Path)):
        return load_task_model(task, None if model is None else str(model))[0]
    return model


def segment(
    inputs: str | Path | Sequence,
    task: str = "ixi",
    model: Any = None,
    probs: bool = False,
    brain_model: Any = "auto",
    volume: int | None = None,
    **settings,
) -> SegmentResult | list[SegmentResult]:
    """Segment one scan (path or `Volume`) or a list; `model` is a name, folder, or a loaded model.

    The result holds labels and volumes; class probabilities (`.probs`) only with `probs=True`.

    `brain_model` (task arc): the tissue model whose brain (CSF, GM, WM) bounds the lesion calls;
    "auto" is `ixi`, None turns the mask off. `volume` picks one volume (0-based) of 4D inputs.
    `settings` are `InferenceSettings` fields (device, precision, overlap, sw_batch_size, tta).
    """
    from seqinv.tasks import BRAIN_TASK, get_task

    net = _model(task, model)
    brain = None
    if get_task(task).brain_mask and brain_model is not None:
        brain = _model(BRAIN_TASK, None if brain_model == "auto" else brain_model)
    volumes, single = _volumes(inputs, volume)
    settings = InferenceSettings(**settings)
    results = [segment_volume(v, net, settings, probs=probs, brain_model=brain, task=task) for v in volumes]
    return results[0] if single else results


def denoise(
    inputs: str | Path | Sequence,
    model: Any = None,
    sigma: float | None = None,
    volume: int | None = None,
    passes: int | None = None,
    nonlocal_stage: bool | None = None,
    **settings,
) -> DenoiseResult | list[DenoiseResult]:
    """Denoise one scan or a list; `sigma` is the noise std in input units (estimated when None);
    `volume` picks one volume (0-based) of 4D inputs; `passes` and `nonlocal_stage` as `denoise_volume`'s."""
    net = _model("denoise", model)
    volumes, single = _volumes(inputs, volume)
    settings_ = InferenceSettings(**settings)
    results = [denoise_volume(v, net, settings_, sigma, passes, nonlocal_stage) for v in volumes]
    return results[0] if single else results


def embed(
    inputs: str | Path | Sequence, model: Any = None, volume: int | None = None, **settings
) -> EmbedResult | list[EmbedResult]:
    """Pooled and dense encoder features of one scan or a list (`volume`: one volume of 4D inputs)."""
    net = _model("features", model)
    volumes, single = _volumes(inputs, volume)
    results = [embed_volume(v, net, InferenceSettings(**settings)) for v in volumes]
    return results[0] if single else results
