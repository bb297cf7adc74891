"""Helpers for the input-guard, interruption and corpus tests: tiny saved models, CLI runs, checks."""

from __future__ import annotations

import gzip
import sys

import nibabel as nib
import numpy as np

LABELS = ["background", "csf", "gm", "wm"]
#: command -> (model folder name, main output file name for an input called scan.nii.gz)
COMMANDS = {
    "segment": ("seg", "scan_dseg.nii.gz"),
    "denoise": ("den", "scan_desc-denoised.nii.gz"),
    "embed": ("seg", "scan_features.npz"),
}


def save_tiny_models(root, spacing_mm: float = 1.0):
    """A tiny segmentation UNet (also used as the encoder for embed) and a tiny denoiser, on disk.

    A coarse `spacing_mm` keeps inference on scans with a large field of view fast.
    """
    import torch

    from seqinv.models import ModelConfig, SeqInvUNet

    torch.manual_seed(0)
    common = {"arch": "unet", "patch_size": (32, 32, 32), "spacing_mm": (spacing_mm,) * 3}
    seg = ModelConfig.from_preset("tiny", task="segment", out_channels=4, labels=LABELS, **common)
    den = ModelConfig.from_preset("tiny", task="denoise", out_channels=1, **common)
    SeqInvUNet(seg).save_pretrained(root / "seg")
    SeqInvUNet(den).save_pretrained(root / "den")
    return root


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run `seqinv ARGS` in-process through the console entry point; (exit code, stderr)."""
    from seqinv.cli import main

    monkeypatch.setattr(sys, "argv", ["seqinv", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, message: str | None = None) -> None:
    """Exit 2 and exactly one `error:` line (the model line and `warning:` lines aside), no traceback."""
    lines = [
        line for line in err.splitlines() if line.strip() and not line.startswith(("model ", "warning: "))
    ]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    if message is not None:
        assert message in lines[0], err


def scan_data(shape=(24, 26, 20), seed=0) -> np.ndarray:
    """A bright box in a dark field: enough contrast for the foreground crop and noise estimate."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32) + rng.random(shape).astype(np.float32)
    inner = tuple(slice(3, n - 3) for n in shape[:3])
    data[inner] += 100 + 20 * rng.random(data[inner].shape).astype(np.float32)
    return data


def save_nifti(path, data, affine=None, sform=True, **header_fields):
    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for key, value in header_fields.items():
        image.header[key] = value
    if not sform:
        image.header.set_sform(None, code=0)
    nib.save(image, str(path))
    return path


def run_command(monkeypatch, capsys, command, scan, models, *extra) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, command, scan, "--model", models / COMMANDS[command][0], *extra)


def write_raw_nifti(path, data, pixdim=(1.0, 1.0, 1.0), **fields):
    """Header bytes written as given (nibabel's save would rebuild pixdim and the sform from an affine)."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 352
    for key, value in fields.items():
        header[key] = value
    payload = header.binaryblock + b"\0" * 4 + data.astype("<f4").tobytes(order="F")
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as fh:
        fh.write(payload)
    return path


#: gzip defects `damage_gzip` makes: the trailer (CRC-32, then the size, 4 bytes each) wrong or cut off.
GZIP_DEFECTS = ("crc", "length", "no_trailer")


def damage_gzip(path, defect: str):
    """Damage a gzip file's trailer; the deflate data stays intact, so only a full check can tell."""
    data = bytearray(path.read_bytes())
    if defect == "no_trailer":
        data = data[:-8]
    else:
        data[-8 if defect == "crc" else -4] ^= 0xFF
    path.write_bytes(bytes(data))
    return path
