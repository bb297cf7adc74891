"""What inference returns: the results of segment, denoise and embed, and what ran (`RunInfo`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqinv.preprocess import PreprocessRecord


@dataclass
class Timer:
    """Wall time per named stage, in seconds."""

    stages_s: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.stages_s[name] = timer.stages_s.get(name, 0.0) + time.perf_counter() - self.start

        return _Stage()


@dataclass
class RunInfo:
    """What ran: for sidecars and logs."""

    device: str
    precision: str
    settings: dict[str, Any]
    timings_s: dict[str, float]


@dataclass
class SegmentResult:
    labels: np.ndarray  # uint8, on `grid` (the input's, or the model's 1 mm grid)
    probs: np.ndarray | None  # float32 (C, X, Y, Z), same grid, when asked for
    label_names: list[str]
    volumes_ml: dict[str, float]
    record: PreprocessRecord
    model_image: np.ndarray  # model-space input (cropped), for QC
    model_labels: np.ndarray  # model-space labels (cropped), for QC
    info: RunInfo
    refinement: dict | None = None  # what the intensity refinement fitted (None: not run)
    grid: str = "input"  # the grid of labels and probs: "input" or "model" (`affine`)
    affine: np.ndarray | None = None  # voxel -> RAS+ of labels and probs


@dataclass
class DenoiseResult:
    image: np.ndarray  # float32, input grid, input intensity scale
    sigma: float  # noise std in input intensity units
    sigma_source: str  # "given" | "estimated"
    gain: float  # input scaling used to match the trained noise level
    record: PreprocessRecord | None  # None: denoised on the input's own grid (no preprocessing)
    info: RunInfo
    sigma_method: str = ""  # how an estimated sigma was found (seqinv.inference.denoising.estimate_noise)
    nonlocal_stage: dict | None = None  # the second stage's parameters and noise model (None: not run)


@dataclass
class EmbedResult:
    pooled: np.ndarray  # (F,) mean (or max, per the model's config) of the dense map
    dense: np.ndarray  # (F, d, h, w) deepest encoder map over the cropped 1 mm RAS grid
    dense_affine: np.ndarray  # voxel -> RAS of the dense map
    record: PreprocessRecord
    info: RunInfo
