"""Device/precision selection and MONAI sliding-window inference with Gaussian blending and flip TTA."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from seqinv.errors import ParameterError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Flips used by test-time augmentation: identity plus one flip per spatial axis.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))


@dataclass(frozen=True)
class InferenceSettings:
    """How to run a model over a volume. `overlap` is the fraction shared by neighbouring windows."""

    device: str = "auto"
    precision: str = "auto"
    overlap: float = 0.5
    sw_batch_size: int = 2
    tta: bool = False
    patch_size: tuple[int, int, int] | None = None  # None: the model config's
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ParameterError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.overlap < 1.0:
            raise ParameterError(f"overlap {self.overlap} must be in [0, 1); 0.5 is the usual value")
        if self.sw_batch_size < 1:
            raise ParameterError(f"sw_batch_size {self.sw_batch_size} must be >= 1")

    @classmethod
    def fast(cls, **overrides) -> InferenceSettings:
        """Lower overlap, no TTA: about 2-3x faster, slightly less smooth at window borders."""
        values = {"overlap": 0.25, "tta": False}
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an unavailable accelerator falls back to CPU with a warning."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn("CUDA is not available; running on the CPU", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        warnings.warn("MPS is not available; running on the CPU", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto': bf16 on GPUs that support it (else fp16); on CPU bf16 only where oneDNN has native bf16
    kernels (AVX512-BF16/AMX), fp32 otherwise; fp32 on MPS.

    Without native bf16, CPU autocast is ~100x slower than fp32 (measured, docs/architecture.md).
    """
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ParameterError("precision fp16 is not supported on the CPU; use fp32 or bf16")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and native_cpu_bf16():
        return "bf16"
    return "fp32"


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). oneDNN's own check also says yes on
    plain AVX-512, where it emulates bf16: autocast was 2.5x slower than fp32 there (an Intel Xeon)."""
    onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in checks:  # an older torch: oneDNN's check is all there is
        return onednn
    return onednn and any(check() for check in checks)


def flip_tta(predictor: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Average predictor outputs over flips of the input (each output flipped back)."""

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in TTA_FLIPS:
            out = predictor(x.flip(dims) if dims else x)
            out = out.flip(dims) if dims else out
            total = out if total is None else total + out
        return total / len(TTA_FLIPS)

    return averaged


def scan_starts(size: int, window: int, overlap: float) -> list[int]:
    """Window start indices along one axis, as MONAI's `dense_patch_slices` places them (the last window
    is shifted back to end at the border)."""
    if window >= size:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = next(d for d in range(size) if d * step + window >= size) + 1
    return [min(d * step, size - window) for d in range(count)]


def gaussian_weights(window: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """MONAI's Gaussian importance map: separable exp(-x²/2σ²) centred on the window, σ = 0.125 · size,
    clamped below at max(min, 1e-3)."""
    weights = None
    for n in window:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0
        g = torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2))
        weights = g if weights is None else weights.unsqueeze(-1) * g
    return weights.clamp(min=max(float(weights.min()), 1e-3))


def _pad_to_window(image: torch.Tensor, window: Sequence[int], value: float):
    """Pad each axis shorter than the window on both sides (as MONAI does); returns the crop back."""
    import torch.nn.functional as F

    pad, crop = [], []
    for n, w in zip(reversed(image.shape[2:]), reversed(window), strict=True):
        diff = max(w - n, 0)
        pad += [diff // 2, diff - diff // 2]
    for n, w in zip(image.shape[2:], window, strict=True):
        before = max(w - n, 0) // 2
        crop.append(slice(before, before + n))
    if any(pad):
        image = F.pad(image, pad, mode="constant", value=value)
    return image, crop


def _output_grid(result: torch.Tensor, window: tuple[int, ...], size, weights: torch.Tensor):
    """Output and weight buffers; outputs may be coarser than the input (encoder maps): scale the grid."""
    import torch.nn.functional as F

    scale = [r / w for r, w in zip(result.shape[2:], window, strict=True)]
    out_size = [int(n * f) for n, f in zip(size, scale, strict=True)]
    output = torch.zeros((1, result.shape[1], *out_size), dtype=torch.float32)
    total = torch.zeros(out_size, dtype=torch.float32)
    if tuple(result.shape[2:]) != window:
        weights = F.adaptive_avg_pool3d(weights[None, None], result.shape[2:])[0, 0]
    return output, total, weights, scale


def blend_windows(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Sequence[int],
    overlap: float,
    batch_size: int,
    pad_value: float,
) -> torch.Tensor:
    """Gaussian-blended sliding-window prediction of `image` (1, C, D, H, W), the same as MONAI's
    `sliding_window_inference(mode="gaussian", padding_mode="constant")` (tested against it).

    Our own rather than MONAI's because importing MONAI costs about 2 s of every CLI call (measured with
    `python -X importtime`: `import monai.inferers` loads all of MONAI), 10 % of the 20 s budget.
    """
    window = tuple(int(w) for w in window)
    padded, crop = _pad_to_window(image, window, pad_value)
    size = padded.shape[2:]
    grids = [scan_starts(n, w, overlap) for n, w in zip(size, window, strict=True)]
    starts = [(a, b, c) for a in grids[0] for b in grids[1] for c in grids[2]]
    weights = gaussian_weights(window)
    output = total = None
    for first in range(0, len(starts), batch_size):
        group = starts[first : first + batch_size]
        boxes = [tuple(slice(s, s + w) for s, w in zip(start, window, strict=True)) for start in group]
        batch = torch.cat([padded[(slice(None), slice(None), *box)] for box in boxes])
        result = predictor(batch).float().cpu()
        if output is None:
            output, total, weights, scale = _output_grid(result, window, size, weights)
        for k, start in enumerate(group):
            box = tuple(
                slice(int(s * f), int(s * f) + r)
                for s, f, r in zip(start, scale, result.shape[2:], strict=True)
            )
            output[(0, slice(None), *box)] += result[k] * weights
            total[box] += weights
    output /= total
    crop = [
        slice(int(c.start * f), int(c.start * f) + int((c.stop - c.start) * f))
        for c, f in zip(crop, scale, strict=True)
    ]
    return output[(slice(None), slice(None), *crop)]


def sliding_window(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch_size: Sequence[int],
    settings: InferenceSettings,
    device: torch.device,
    pad_value: float | None = None,
) -> torch.Tensor:
    """Run `predictor` over `image` (1, 1, D, H, W) in overlapping windows with Gaussian blending.

    Equal to MONAI's `sliding_window_inference` (`blend_windows`); inputs smaller than a window are padded
    with `pad_value` (default: the image minimum, i.e. background) and the result is cropped back.
    Returns float32 on CPU.
    """
    precision = resolve_precision(settings.precision, device)
    dtype = _DTYPES[precision]
    run = flip_tta(predictor) if settings.tta else predictor

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return run(x).float()

    pad = float(image.min()) if pad_value is None else float(pad_value)
    with torch.inference_mode():
        return blend_windows(windows, image, patch_size, settings.overlap, settings.sw_batch_size, pad)
