"""Build any saved or published model: the network its config.json names, with its weights loaded strictly."""

from __future__ import annotations

from pathlib import Path

from seqinv.models.denoiser import ResidualDenoiser
from seqinv.models.networks import SeqInvEncoder, SeqInvUNet
from seqinv.models.sources import ModelSource, locate
from seqinv.models.weights import read_config

ARCH_CLASSES = {"encoder": SeqInvEncoder, "unet": SeqInvUNet, "denoiser": ResidualDenoiser}


def build_from_folder(folder: str | Path, model_class: type | None = None):
    """The model of `folder/config.json` with `folder/model.safetensors` loaded strictly, in eval mode.

    `model_class=SeqInvEncoder` on a U-Net folder gives its encoder; the reverse is an error.
    """
    model_class = model_class or ARCH_CLASSES[read_config(folder).arch]
    return model_class.from_folder(folder)


def load_model(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    prefer: str = "auto",
    model_class: type | None = None,
) -> tuple[object, ModelSource]:
    """Load a model strictly (order: seqinv/models/sources.py); returns `(model, source)`.

    The model is in eval mode and carries `.source`. `model_class=SeqInvEncoder` on a task model gives
    its encoder.
    """
    folder, source = locate(name_or_path, revision, cache_dir, local_files_only, token, prefer)
    model = build_from_folder(folder, model_class)
    model.source = source
    return model, source
