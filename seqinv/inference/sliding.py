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


@dataclass
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
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


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


def sliding_window(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch_size: Sequence[int],
    settings: InferenceSettings,
    device: torch.device,
    pad_value: float | None = None,
) -> torch.Tensor:
    """Run `predictor` over `image` (1, 1, D, H, W) in overlapping windows with Gaussian blending.

    This is MONAI's `sliding_window_inference`; inputs smaller than a window are padded with `pad_value`
    (default: the image minimum, i.e. background) and the result is cropped back. Returns float32 on CPU.
    """
    from monai.inferers import sliding_window_inference

    precision = resolve_precision(settings.precision, device)
    dtype = _DTYPES[precision]
    run = flip_tta(predictor) if settings.tta else predictor

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return run(x).float()

    pad = float(image.min()) if pad_value is None else float(pad_value)
    with torch.inference_mode():
        out = sliding_window_inference(
            image,
            roi_size=tuple(int(p) for p in patch_size),
            sw_batch_size=settings.sw_batch_size,
            predictor=windows,
            overlap=settings.overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=pad,
            sw_device=device,
            device=torch.device("cpu"),
        )
    return out
