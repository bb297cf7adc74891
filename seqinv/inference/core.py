"""Segment, denoise and embed one volume: preprocess, predict as the model does, map results back.

A job (`SegmentJob`, `DenoiseJob`, `EmbedJob`) pairs models with one options object
(seqinv/inference/options.py): it checks what depends on the model and prepares the models once (the
caller's left as they were: `seqinv.inference.runtime.prepared`), then runs each volume with torch's
thread count scoped to the call. How a model predicts (sliding windows, the stored grid in slabs, a
second stage) is its own (seqinv/inference/predictions.py). `segment_volume`, `denoise_volume` and
`embed_volume` run a one-volume job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seqinv.errors import ParameterError, WeightsError
from seqinv.inference.options import DenoiseOptions, EmbedOptions, SegmentOptions
from seqinv.inference.predictions import prediction_of
from seqinv.inference.refine import refine_probabilities
from seqinv.inference.results import DenoiseResult, EmbedResult, RunInfo, SegmentResult, Timer
from seqinv.inference.runtime import Runtime, prepared, torch_threads
from seqinv.inference.sliding import InferenceSettings
from seqinv.io import Volume
from seqinv.preprocess import Preprocessor, head_region
from seqinv.tasks import BRAIN_TASK, TASKS, get_task, task_of


# ------------------------------------------------------------------------------------------------ models
def load_task_model(
    task: str, model: str | None = None, check_task: bool = True, **kwargs
) -> tuple[Any, Any]:
    """(model, ModelSource) for a task of seqinv/tasks.py; `model` overrides the task's default model
    (a published name such as `ixi@1.0`, a folder or a Hub repo id). `check_task=False` leaves the
    check of the task the model records to the caller."""
    spec = get_task(task)
    from seqinv.models.factory import load_model

    name = model or spec.default_model
    expected = spec.config_task
    if expected == "features":
        from seqinv.models import SeqInvEncoder

        kwargs.setdefault("model_class", SeqInvEncoder)
    try:
        net, source = load_model(name, **kwargs)
    except WeightsError as err:
        if model is None:
            raise WeightsError(
                f"the weights of task {task!r} are not available ({err}); pass a trained model with --model"
            ) from None
        raise
    found = getattr(net.config, "output_kind", None)
    if expected != "features" and found != expected:
        raise WeightsError(
            f"model {name!r} is a {found!r} model; task {task!r} needs a {expected!r} model; "
            "choose another --model"
        )
    serves = task_of(net.config)
    if check_task and expected != "features" and serves and serves != task:
        raise WeightsError(
            f"model {name!r} is a model of task {serves!r}; task {task!r} needs one of its own; "
            "choose another --model"
        )
    return net, source


def _owns(owned: Sequence[Any], model: Any) -> bool:
    return any(m is model for m in owned)


# ------------------------------------------------------------------------------------------------ segment
class SegmentJob:
    """Segment volumes with `model` as `options` say; `brain_model` (a tissue model, e.g. `ixi`) labels
    as background everything it calls background, so a lesion model's calls stay inside the brain.

    `owned`: models the caller loaded for this job alone, prepared in place rather than copied.
    """

    def __init__(
        self,
        model: Any,
        options: SegmentOptions | None = None,
        brain_model: Any = None,
        owned: Sequence[Any] = (),
    ):
        self.options = options or SegmentOptions()
        if brain_model is not None:
            check_brain_model(brain_model.config, model.config)
        spec = TASKS.get(self.options.task or task_of(model.config))
        self.head_mask = _or(self.options.head_mask, spec and spec.head_mask)
        self.one_brain = bool(spec and spec.one_brain)
        self.refine = _or(self.options.refine, spec and spec.refine)
        self.source = getattr(model, "source", None)
        self.brain_source = getattr(brain_model, "source", None)
        self.runtime = Runtime.of(self.options.settings)
        self.net = prepared(model, self.runtime.device, _owns(owned, model))
        self.brain = None
        if brain_model is not None:
            self.brain = prepared(brain_model, self.runtime.device, _owns(owned, brain_model))

    def __call__(self, volume: Volume) -> SegmentResult:
        with torch_threads(self.options.settings.threads):
            return self._segment(volume)

    def _segment(self, volume: Volume) -> SegmentResult:
        timer, net = Timer(), self.net
        with timer.stage("preprocess"):
            image, record = Preprocessor(net.config).apply(volume)
        with timer.stage("inference"):
            model_probs = prediction_of(net).probabilities(net, image, self.runtime)
        brain = None
        if self.brain is not None:
            with timer.stage("brain_mask"):
                brain = brain_region(image, self.brain, self.runtime)
        with timer.stage("postprocess"):
            self._mask(model_probs, image, brain)
            on_grid = self._on_grid(model_probs, image, volume, record)
            labels, out_probs, refinement, model_labels, affine = on_grid
            names = _label_names(net.config, model_probs.shape[0])
        return SegmentResult(
            labels=labels,
            probs=out_probs,
            label_names=names,
            volumes_ml=_volumes_ml(labels, names, affine),
            record=record,
            model_image=image[0, 0].numpy(),
            model_labels=model_labels.astype(np.uint8),
            info=_run_info(self.runtime, timer),
            refinement=refinement.to_dict() if refinement else None,
            grid=self.options.grid,
            affine=np.asarray(affine, dtype=np.float64),
        )

    def _on_grid(self, model_probs: np.ndarray, image: Any, volume: Volume, record: Any) -> tuple:
        """(labels, probs or None, refinement or None, the QC's model-grid labels, the labels' affine)."""
        refine, probs = self.refine, self.options.probs
        if self.options.grid == "model":
            labels, out_probs, refinement = _on_model_grid(model_probs, image, refine, probs)
            return labels, out_probs, refinement, labels, record.crop_affine
        labels, out_probs, refinement = _on_input_grid(model_probs, volume, record, refine, probs)
        model_labels = record.labels_to_model(labels) if refine else np.argmax(model_probs, axis=0)
        return labels, out_probs, refinement, model_labels, volume.affine

    def _mask(self, model_probs: np.ndarray, image: Any, brain: np.ndarray | None) -> None:
        """Background outside the head (and apart from the one brain) and outside the brain mask."""
        if self.head_mask:
            _background_outside(model_probs, head_region(image[0, 0].numpy()))
            if self.one_brain:
                keep_one_brain(model_probs)
        if brain is not None:
            _background_outside(model_probs, brain)


def segment_volume(
    volume: Volume,
    model: Any,
    settings: InferenceSettings | None = None,
    probs: bool = False,
    head_mask: bool | None = None,
    brain_model: Any = None,
    task: str | None = None,
    refine: bool | None = None,
    grid: str = "input",
) -> SegmentResult:
    """Tissue/lesion labels (uint8) on the input's grid, per-class volumes in mL, optional probabilities.

    `task` (default: the one the model's config records) sets the masking rules of seqinv/tasks.py.
    `head_mask` (default: the task's; on for `ixi`, off for `arc`) labels as background everything
    outside the head (`head_region`): tissue labels in the noisy air of a scan are not anatomy; for a
    task with `one_brain` (ixi) it also keeps only the brain's largest connected piece (`keep_one_brain`).
    `brain_model` (a tissue model, e.g. `ixi`) labels as background everything it calls background, so a
    lesion model's calls stay inside the brain (CSF, GM, WM).
    `refine` (default: the task's; on for `ixi`) refines the tissue probabilities by the scan's own
    intensities (`seqinv.inference.refine`); the brain/background decision stays the network's.
    `grid="model"` returns labels and probabilities on the model's 1 mm RAS grid (cropped to the head)
    instead: finer than a thick-slice input's own grid, and refined on that grid's resampled intensities.
    The models are left as they were (`SegmentJob` runs many volumes with one preparation).
    """
    options = SegmentOptions(
        task=task,
        probs=probs,
        head_mask=head_mask,
        refine=refine,
        grid=grid,
        settings=settings or InferenceSettings(),
    )
    return SegmentJob(model, options, brain_model)(volume)


def _or(value: bool | None, default: Any) -> bool:
    return bool(default) if value is None else value


def _volumes_ml(labels: np.ndarray, names: list[str], affine: np.ndarray) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=len(names))
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    return {name: float(counts[i]) * voxel_ml for i, name in enumerate(names)}


def _run_info(runtime: Runtime, timer: Timer) -> RunInfo:
    return RunInfo(str(runtime.device), runtime.precision, runtime.settings.to_dict(), timer.stages_s)


def _on_input_grid(model_probs, volume, record, refine: bool, probs: bool):
    """(labels, probs or None, refinement or None) on the input's grid."""
    fills = [1.0] + [0.0] * (model_probs.shape[0] - 1)
    native = record.invert(model_probs, fill=fills, order=1) if refine or probs else None
    if not refine:
        return record.invert_labels(model_probs), native, None
    # on the input's own grid: its voxels hold the detail the refinement is for
    refinement = refine_probabilities(volume.data, native)
    labels = np.argmax(native, axis=0).astype(np.uint8)
    return labels, native if probs else None, refinement


def _on_model_grid(model_probs, image, refine: bool, probs: bool):
    """(labels, probs or None, refinement or None) on the model's 1 mm grid."""
    refinement = refine_probabilities(image[0, 0].numpy(), model_probs) if refine else None
    labels = np.argmax(model_probs, axis=0).astype(np.uint8)
    return labels, model_probs if probs else None, refinement


def _background_outside(model_probs: np.ndarray, inside: np.ndarray) -> None:
    """Make every voxel outside `inside` background, in place."""
    model_probs[1:] *= inside  # broadcast, not boolean indexing: 4x faster on a whole head
    np.maximum(model_probs[0], ~inside, out=model_probs[0])


def brain_component(labelled: np.ndarray) -> np.ndarray:
    """The largest face-connected piece of a brain mask, its holes filled (as SynthSeg's and brainchop's
    clean-up): tissue called in the neck, tongue or orbits apart from the brain goes."""
    from scipy import ndimage

    pieces, count = ndimage.label(labelled)
    if count <= 1:
        return ndimage.binary_fill_holes(labelled)
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(pieces == int(np.argmax(sizes)))


def keep_one_brain(model_probs: np.ndarray) -> None:
    """Background outside the brain's largest piece; inside its filled holes, the likeliest brain class."""
    labelled = np.argmax(model_probs, axis=0) > 0
    if not labelled.any():
        return
    brain = brain_component(labelled)
    _background_outside(model_probs, brain)
    hole = brain & ~labelled
    if hole.any():  # a hole: the net's own likeliest tissue class
        model_probs[0][hole] = 0.0
        model_probs[:, hole] /= np.maximum(model_probs[:, hole].sum(0), 1e-12)


def check_brain_model(tissue_config: Any, config: Any) -> None:
    """A brain mask model must be a tissue model that preprocesses scans as the lesion model does."""
    model = check_tissue_model(tissue_config)
    same = ("spacing_mm", "normalization")
    if any(getattr(tissue_config, k, None) != getattr(config, k, None) for k in same):
        raise ParameterError(f"{model} preprocesses scans unlike the lesion model")


def check_tissue_model(tissue_config: Any) -> str:
    """Raise unless the config is of the brain-mask task; returns how errors name the model."""
    name = getattr(tissue_config, "name", None)
    model = f"the brain mask model {name!r}" if name else "the brain mask model"
    if task_of(tissue_config) != BRAIN_TASK:
        raise ParameterError(f"{model} is not a tissue ({BRAIN_TASK}) model")
    return model


def brain_region(image: Any, tissue_net: Any, runtime: Runtime) -> np.ndarray:
    """Voxels a (prepared) tissue model labels CSF, GM or WM (inside the head) on a preprocessed
    model-grid image."""
    tissue = prediction_of(tissue_net).probabilities(tissue_net, image, runtime)
    inside = (np.argmax(tissue, axis=0) > 0) & head_region(image[0, 0].numpy())
    return brain_component(inside) if inside.any() else inside


def _label_names(config: Any, channels: int) -> list[str]:
    names = list(getattr(config, "labels", []) or [])
    return names if len(names) == channels else [f"label{i}" for i in range(channels)]


# ------------------------------------------------------------------------------------------------ denoise
def estimate_noise_sigma(data: np.ndarray) -> float:
    """Noise std in input units (Rician-aware; `seqinv.inference.denoising.estimate_noise` says how)."""
    from seqinv.inference.denoising import estimate_noise

    return estimate_noise(data)[0]


class DenoiseJob:
    """Denoise volumes with `model` as `options` say: the options this model has no use for (`--passes`,
    `--nonlocal` for a model without them) are refused here, once. `owned` as `SegmentJob`'s."""

    def __init__(self, model: Any, options: DenoiseOptions | None = None, owned: Sequence[Any] = ()):
        self.options = options or DenoiseOptions()
        self.prediction = prediction_of(model)
        self.stage = self.prediction.denoise_stage(model.config, self.options)
        self.source = getattr(model, "source", None)
        self.runtime = Runtime.of(self.options.settings)
        self.net = prepared(model, self.runtime.device, _owns(owned, model))

    def __call__(self, volume: Volume) -> DenoiseResult:
        with torch_threads(self.options.settings.threads):
            return self.prediction.denoise(volume, self.net, self.options, self.stage, self.runtime)


def denoise_volume(
    volume: Volume,
    model: Any,
    settings: InferenceSettings | None = None,
    sigma: float | None = None,
    passes: int | None = None,
    nonlocal_stage: bool | None = None,
) -> DenoiseResult:
    """Denoised image on the input's grid and intensity scale: input − predicted noise.

    The model predicts noise at the std it was trained on; the scan is scaled so that its noise (`sigma`
    in input units, estimated when None) matches that level, then scaled back. `passes` (residual
    denoiser only): flipped copies averaged, 1, 2, 4 or 8 (default 2; `settings.tta` 8).
    `nonlocal_stage` (residual denoiser only): None runs the second stage the model's config defines
    (`seqinv.inference.nonlocal_stage`), False the network alone, True the stage even where the config
    defines none (default parameters). The model is left as it was.
    """
    options = DenoiseOptions(
        sigma=sigma, passes=passes, nonlocal_stage=nonlocal_stage, settings=settings or InferenceSettings()
    )
    return DenoiseJob(model, options)(volume)


def denoise_stage(model: Any, requested: bool | None) -> Any:
    """The `NonlocalStage` a denoising run uses (None: the network alone); `requested` as
    `denoise_volume`'s `nonlocal_stage`."""
    return prediction_of(model).denoise_stage(model.config, DenoiseOptions(nonlocal_stage=requested))


# ------------------------------------------------------------------------------------------------ embed
#: Input voxels per deepest encoder voxel (four 2x poolings).
ENCODER_STRIDE = 16


def _pad_to_stride(image: Any, stride: int) -> Any:
    """Pad the end of each axis with the background to a multiple of `stride` (the origin stays put)."""
    import torch.nn.functional as F

    pad = []
    for n in reversed(image.shape[2:]):
        pad += [0, -n % stride]
    return F.pad(image, pad, mode="constant", value=float(image.min())) if any(pad) else image


class EmbedJob:
    """Encoder features of volumes (a task model gives its encoder's); `owned` as `SegmentJob`'s."""

    def __init__(self, model: Any, options: EmbedOptions | None = None, owned: Sequence[Any] = ()):
        self.options = options or EmbedOptions()
        encoder = getattr(model, "encoder", model)
        self.source = getattr(model, "source", None)
        self.runtime = Runtime.of(self.options.settings)
        self.net = prepared(encoder, self.runtime.device, _owns(owned, model))

    def __call__(self, volume: Volume) -> EmbedResult:
        with torch_threads(self.options.settings.threads):
            return self._embed(volume)

    def _embed(self, volume: Volume) -> EmbedResult:
        import torch

        timer, net = Timer(), self.net
        with timer.stage("preprocess"):
            image, record = Preprocessor(net.config).apply(volume)
            image = _pad_to_stride(image, ENCODER_STRIDE)  # else a crop under 16 voxels gives an empty map
        with timer.stage("inference"):
            dense = prediction_of(net).features(net, image, self.runtime)
        step = np.array(image.shape[2:]) / np.array(dense.shape[1:])
        to_crop = np.eye(4)
        to_crop[:3, :3] = np.diag(step)
        to_crop[:3, 3] = (step - 1) / 2  # a feature voxel sits at the centre of the block it summarises
        return EmbedResult(
            pooled=net.pool(torch.from_numpy(dense)[None])[0].numpy(),
            dense=dense,
            dense_affine=record.crop_affine @ to_crop,
            record=record,
            info=_run_info(self.runtime, timer),
        )


def embed_volume(volume: Volume, model: Any, settings: InferenceSettings | None = None) -> EmbedResult:
    """Dense deepest-stage encoder features over the scan (1/16 resolution) and their pooled vector (the
    encoder's own pooling: mean, or max for `pooling="max"` models). The model is left as it was."""
    return EmbedJob(model, EmbedOptions(settings=settings or InferenceSettings()))(volume)
