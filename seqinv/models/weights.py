"""Model folders in the Hub layout (`config.json` + `model.safetensors` + `README.md`): read, write,
check strictly, hash.

Nothing here unpickles a file: weights are read with safetensors only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from seqinv.errors import WeightsError
from seqinv.models.config import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: The network class of each `ModelConfig.arch` (by name: the networks import this module).
ARCH_CLASSES = {"encoder": "SeqInvEncoder", "unet": "SeqInvUNet", "denoiser": "ResidualDenoiser"}
_ARTICLED = {"encoder": "an encoder", "unet": "a U-Net", "denoiser": "a residual denoiser"}
#: How many names an error lists before "... and N more".
_LIST_LIMIT = 6


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f" ... and {more} more" if more > 0 else "")


def read_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{path} not found; a seqinv model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is not valid JSON ({err}); re-download or re-export the model") from err
    return ModelConfig.from_dict(data, source=str(path))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a truncated or foreign file raises `WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} not found; a seqinv model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt: "
            "delete it and download again"
        ) from err


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one `WeightsError` listing missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{key} {tuple(state[key].shape)} (model {tuple(expected[key].shape)})"
        for key in sorted(set(expected) & set(state))
        if state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_names(shapes)}")
    if problems:
        raise WeightsError(
            f"weights in {source} do not match the {type(model).__name__} "
            f"(preset {getattr(model, 'config', None) and model.config.preset}): " + "; ".join(problems)
        )


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model` (float16/bf16 files become the model's float32) after a strict check."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def encoder_state_from_unet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder part of a U-Net state dict (a task model's encoder is its pretrained encoder)."""
    return {key[len("encoder.") :]: value for key, value in state.items() if key.startswith("encoder.")}


def encoder_config(config: ModelConfig) -> ModelConfig:
    """The config of a U-Net's encoder (its features, no outputs)."""
    return dataclasses.replace(
        config, arch="encoder", output_kind="features", task_name="features", labels=[], out_channels=1
    )


def read_folder(folder: str | Path, arch: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and weights of a model folder, as a network of `arch` needs them.

    `arch="encoder"` on a U-Net folder gives its encoder; the reverse is an error.
    """
    folder = Path(folder)
    config = read_config(folder)
    state = read_weights(folder / WEIGHTS_NAME)
    if arch == "encoder" and config.arch == "unet":
        return encoder_config(config), encoder_state_from_unet(state)
    if arch != config.arch:
        found = ARCH_CLASSES[config.arch]
        raise WeightsError(
            f"{folder} holds {_ARTICLED[config.arch]} model ({found}), "
            f"not a {ARCH_CLASSES[arch]}; load it with {found}.from_pretrained"
        )
    return config, state


def write_folder(folder: str | Path, config: dict, state: dict[str, torch.Tensor], card: str) -> Path:
    """Write config.json, model.safetensors and README.md, each atomically."""
    from safetensors.torch import save

    from seqinv.io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        metadata = {"format": "pt", "seqinv_format_version": str(config["format_version"])}
        tmp.write_bytes(save(state, metadata=metadata))  # into our file: save_file would make it 0600
    with atomic_path(folder / CARD_NAME) as tmp:
        tmp.write_text(card, encoding="utf-8")
    return folder


def model_card(config: ModelConfig) -> str:
    """README.md with the Hub's YAML metadata block."""
    pipeline = {"segment": "image-segmentation", "denoise": "image-to-image"}.get(
        config.output_kind, "image-feature-extraction"
    )
    title = config.name or f"seqinv {config.preset} {config.arch}"
    training = json.dumps(config.training, indent=2, sort_keys=True) if config.training else "not recorded"
    cls = ARCH_CLASSES[config.arch]
    return f"""---
library_name: seqinv
license: apache-2.0
pipeline_tag: {pipeline}
tags:
- medical-imaging
- mri
- 3d
- seqinv
---

# {title}

A seqinv model ({cls}, preset `{config.preset}`, task `{config.output_kind}`): a 3D CNN encoder trained to
give the same representation for any MRI sequence (Chalcroft et al., arXiv 2501.12057).

| field | value |
|---|---|
| encoder widths | {list(config.features)} |
| decoder width | {config.decoder_features} |
| outputs | {config.out_channels} ({", ".join(config.labels) or "-"}) |
| input spacing (mm) | {list(config.spacing_mm)} |
| patch size | {list(config.patch_size)} |
| normalisation | `{json.dumps(config.normalization)}` |
| seqinv version | {config.seqinv_version} (format {config.format_version}) |

## Use

```python
from seqinv.models import {cls}
model = {cls}.from_pretrained("<this repo id or folder>")
```

## Training

```json
{training}
```
"""
