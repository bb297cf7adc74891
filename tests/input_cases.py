"""Helpers for the input-guard, interruption and corpus tests: tiny saved models, CLI runs, checks."""

from __future__ import annotations

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


def save_tiny_models(root):
    """A tiny segmentation UNet (also used as the encoder for embed) and a tiny denoiser, on disk."""
    import torch

    from seqinv.models import ModelConfig, SeqInvUNet

    torch.manual_seed(0)
    common = {"arch": "unet", "patch_size": (32, 32, 32)}
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
    """Exit 2 and exactly one `error:` line (the model line aside), no traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("model ")]
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
