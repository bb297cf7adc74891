"""How a model predicts a volume. Each model class names its way (`PREDICTION`, a key of `PREDICTIONS`);
a class that names none predicts in sliding windows. A new kind of model names one of these, or
registers its own (`register`), without a branch in seqinv/inference/core.py.

- "sliding_window" (`SlidingWindow`: the frozen-encoder U-Net, the encoder): the scan resampled to the
  model's 1 mm RAS grid, overlapping windows blended (seqinv/inference/sliding.py), the result mapped
  back to the input's grid.
- "native_grid" (`NativeGrid`: the residual denoiser, seqinv/models/denoiser.py): the stored voxel array
  as it is, in slabs, flipped passes averaged, then the optional non-local second stage
  (seqinv/inference/nonlocal_stage.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqinv.errors import ParameterError
from seqinv.inference.options import DenoiseOptions
from seqinv.inference.results import DenoiseResult, RunInfo, Timer
from seqinv.inference.runtime import Runtime
from seqinv.inference.sliding import InferenceSettings, sliding_window
from seqinv.io import Volume
from seqinv.preprocess import Preprocessor

#: Noise std (z-score units) the denoising models are trained at (as in arXiv 2501.12057); a model config
#: may override it with `training["noise_std"]`.
TRAINED_NOISE_STD = 0.2
#: Range of the input gain used to bring a scan's noise to the trained level.
NOISE_GAIN_RANGE = (0.25, 4.0)


class Prediction:
    """One way of predicting a volume; a way a model does not have is refused with a clear error."""

    name = ""

    def probabilities(self, net: Any, image: Any, runtime: Runtime) -> np.ndarray:
        """Class probabilities (C, X, Y, Z) over a preprocessed model-grid image."""
        raise ParameterError(f"{_name(net.config)} does not segment")

    def features(self, net: Any, image: Any, runtime: Runtime) -> np.ndarray:
        """The deepest encoder map (F, d, h, w) over a preprocessed model-grid image."""
        raise ParameterError(f"{_name(net.config)} gives no encoder features")

    def denoise_stage(self, config: Any, options: DenoiseOptions) -> Any:
        """The `NonlocalStage` a denoising job runs (None: the network alone); refuses the options this
        model has no use for."""
        raise ParameterError(f"{_name(config)} does not denoise")

    def denoise(
        self, volume: Volume, net: Any, options: DenoiseOptions, stage: Any, runtime: Runtime
    ) -> DenoiseResult:
        raise ParameterError(f"{_name(net.config)} does not denoise")


class SlidingWindow(Prediction):
    """Overlapping windows on the model's 1 mm RAS grid, Gaussian-blended."""

    name = "sliding_window"

    def probabilities(self, net: Any, image: Any, runtime: Runtime) -> np.ndarray:
        import torch

        predict = runtime.predictor(lambda x: torch.softmax(net(x).float(), dim=1))
        return self._windows(predict, net, image, runtime)[0].numpy()

    def features(self, net: Any, image: Any, runtime: Runtime) -> np.ndarray:
        predict = runtime.predictor(lambda x: net.forward_features(x)[-1])
        return self._windows(predict, net, image, runtime)[0].numpy()

    def denoise_stage(self, config: Any, options: DenoiseOptions) -> None:
        # flipped passes and the second stage are the residual denoiser's (denoise 2.x): refused, not ignored
        if options.passes not in (None, 1):
            raise ParameterError(
                f"--passes applies to the residual denoiser (denoise 2.x), not to {_name(config)}"
            )
        if options.nonlocal_stage:
            raise ParameterError(
                f"--nonlocal applies to the residual denoiser (denoise 2.x), not to {_name(config)}"
            )
        return None

    def denoise(
        self, volume: Volume, net: Any, options: DenoiseOptions, stage: Any, runtime: Runtime
    ) -> DenoiseResult:
        """Input − predicted noise: the scan is scaled so that its noise (`options.sigma`, estimated when
        None) matches the level the model was trained at, then scaled back."""
        timer = Timer()
        with timer.stage("preprocess"):
            sigma, source, method = noise_level(volume.data, options.sigma)
            image, record = Preprocessor(net.config).apply(volume)
            gain = _noise_gain(net.config, sigma / max(record.intensity_scale, 1e-12))
        with timer.stage("inference"):
            predict = runtime.predictor(lambda x: net(x * gain) / gain)
            noise_z = self._windows(predict, net, image, runtime)[0, 0].numpy()
        with timer.stage("postprocess"):
            noise = record.invert(noise_z, fill=0.0, order=1) * record.intensity_scale
            denoised = volume.data - noise.astype(np.float32)
            non_negative(denoised, volume)
        return DenoiseResult(
            image=denoised.astype(np.float32),
            sigma=sigma,
            sigma_source=source,
            gain=gain,
            record=record,
            info=RunInfo(str(runtime.device), runtime.precision, runtime.settings.to_dict(), timer.stages_s),
            sigma_method=method,
        )

    @staticmethod
    def _windows(predict, net: Any, image: Any, runtime: Runtime):
        settings = runtime.settings
        return sliding_window(predict, image, patch_size(net, settings), settings, runtime.device)


class NativeGrid(Prediction):
    """The residual denoiser on the stored voxel array: no resampling, any spacing or orientation."""

    name = "native_grid"

    def denoise_stage(self, config: Any, options: DenoiseOptions) -> Any:
        from seqinv.inference.nonlocal_stage import NonlocalStage

        if options.nonlocal_stage is False:
            return None
        stage = NonlocalStage.from_config(getattr(config, "nonlocal_stage", None))
        return stage or (NonlocalStage() if options.nonlocal_stage else None)

    def denoise(
        self, volume: Volume, net: Any, options: DenoiseOptions, stage: Any, runtime: Runtime
    ) -> DenoiseResult:
        from seqinv.inference.denoising import DEFAULT_PASSES, TTA_PASSES, predict_noise

        passes = options.passes or (TTA_PASSES if runtime.settings.tta else DEFAULT_PASSES)
        timer = Timer()
        with timer.stage("preprocess"):
            sigma, source, method = noise_level(volume.data, options.sigma)
        with timer.stage("inference"):
            noise = predict_noise(net, volume.data, sigma, runtime.device, passes)
        with timer.stage("postprocess"):
            denoised = np.asarray(volume.data, dtype=np.float32) - noise
        stage_record = None
        if stage is not None:
            with timer.stage("nonlocal"):
                denoised, stage_record = _second_stage(volume, denoised, sigma, method, stage)
        non_negative(denoised, volume)
        return DenoiseResult(
            image=denoised,
            sigma=sigma,
            sigma_source=source,
            gain=1.0,
            record=None,
            # passes (in slabs) over the stored grid: no sliding-window overlap to record
            info=_native_info(runtime, passes, timer),
            sigma_method=method,
            nonlocal_stage=stage_record,
        )


def _second_stage(volume: Volume, denoised: np.ndarray, sigma: float, method: str, stage: Any):
    """(the stage's output, what it ran with)."""
    from seqinv.inference.nonlocal_stage import RICIAN_METHODS, apply_stage

    # the noise model: as the estimate found it, else Rician for images without negative values
    rician = RICIAN_METHODS.get(method, bool(volume.data.min() >= 0))
    spacing = tuple(float(v) for v in np.linalg.norm(np.asarray(volume.affine)[:3, :3], axis=0))
    out = apply_stage(volume.data, denoised, sigma, stage, rician, spacing)
    return out, {**stage.to_dict(), "noise": "rician" if rician else "gaussian"}


def _native_info(runtime: Runtime, passes: int, timer: Timer) -> RunInfo:
    settings = runtime.settings.to_dict()
    settings.update(overlap=None, sw_batch_size=None, tta=passes > 1, passes=passes)
    return RunInfo(str(runtime.device), "fp32", settings, timer.stages_s)


#: Name -> the way of predicting it names (`PREDICTION` of a model class).
PREDICTIONS: dict[str, Prediction] = {p.name: p for p in (SlidingWindow(), NativeGrid())}


def register(prediction: Prediction) -> Prediction:
    """Add a way of predicting, for model classes whose `PREDICTION` names it."""
    PREDICTIONS[prediction.name] = prediction
    return prediction


def prediction_of(model: Any) -> Prediction:
    """How `model` predicts a volume: its class's `PREDICTION` (default: sliding windows)."""
    name = getattr(model, "PREDICTION", SlidingWindow.name)
    if name not in PREDICTIONS:
        known = ", ".join(PREDICTIONS)
        raise ParameterError(f"{_name(model.config)} predicts by {name!r}, not one of {known}")
    return PREDICTIONS[name]


# ------------------------------------------------------------------------------------------------ helpers
def patch_size(model: Any, settings: InferenceSettings) -> tuple[int, int, int]:
    from seqinv.models.config import DEFAULT_WINDOW

    return tuple(settings.patch_size or getattr(model.config, "patch_size", DEFAULT_WINDOW))


def noise_level(data: np.ndarray, sigma: float | None) -> tuple[float, str, str]:
    """(sigma, "given" | "estimated", method)."""
    from seqinv.inference.denoising import estimate_noise

    if sigma is not None:
        return float(sigma), "given", "given"
    value, method = estimate_noise(data)
    return value, "estimated", method


def _noise_gain(config: Any, sigma_z: float) -> float:
    """The input scaling that brings noise of std `sigma_z` (z units) to the level the model learnt."""
    trained = float((getattr(config, "training", None) or {}).get("noise_std", TRAINED_NOISE_STD))
    return float(np.clip(trained / max(sigma_z, 1e-12), *NOISE_GAIN_RANGE))


def non_negative(denoised: np.ndarray, volume: Volume) -> None:
    """Magnitude images (no negative values) stay non-negative, in place."""
    if volume.data.min() >= 0:
        np.maximum(denoised, 0, out=denoised)


def _name(config: Any) -> str:
    return getattr(config, "name", None) or "this model"
