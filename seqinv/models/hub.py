"""Hub layout (`config.json` + `model.safetensors` + `README.md`) and strict weight loading.

Nothing here unpickles a file: weights are read with safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqinv import __version__
from seqinv.errors import WeightsError
from seqinv.models.config import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_ARTICLED = {"encoder": "an encoder", "unet": "a U-Net"}
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


def build_from_folder(folder: str | Path, model_class: type | None = None) -> nn.Module:
    """Build the model described by `folder/config.json` and load `folder/model.safetensors` strictly.

    `model_class=SeqInvEncoder` on a U-Net folder gives its encoder; the reverse is an error.
    """
    import dataclasses

    from seqinv.models.networks import SeqInvEncoder, SeqInvUNet

    folder = Path(folder)
    config = read_config(folder)
    state = read_weights(folder / WEIGHTS_NAME)
    arch_class = SeqInvUNet if config.arch == "unet" else SeqInvEncoder
    model_class = model_class or arch_class
    if model_class is SeqInvEncoder and config.arch == "unet":
        config = dataclasses.replace(config, arch="encoder", task="features", labels=[], out_channels=1)
        state = encoder_state_from_unet(state)
    elif model_class is not arch_class:
        raise WeightsError(
            f"{folder} holds {_ARTICLED[config.arch]} model ({arch_class.__name__}), "
            f"not a {model_class.__name__}; load it with {arch_class.__name__}.from_pretrained"
        )
    model = model_class(config)
    load_strict(model, state, str(folder / WEIGHTS_NAME))
    model.eval()
    return model


def model_card(config: ModelConfig) -> str:
    """README.md with the Hub's YAML metadata block."""
    pipeline = {"segment": "image-segmentation", "denoise": "image-to-image"}.get(
        config.task, "image-feature-extraction"
    )
    title = config.name or f"seqinv {config.preset} {config.arch}"
    training = json.dumps(config.training, indent=2, sort_keys=True) if config.training else "not recorded"
    cls = "SeqInvUNet" if config.arch == "unet" else "SeqInvEncoder"
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

A seqinv model ({cls}, preset `{config.preset}`, task `{config.task}`): a 3D CNN encoder trained to give the
same representation for any MRI sequence (Chalcroft et al., arXiv 2501.12057).

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


class HubMixin:
    """`save_pretrained`, `from_pretrained` and `push_to_hub` for the seqinv networks."""

    config: ModelConfig

    def save_pretrained(self, save_directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write config.json, model.safetensors (optionally as float16/bfloat16) and README.md."""
        import torch
        from safetensors.torch import save_file

        from seqinv.io import atomic_path

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for key, value in self.state_dict().items():
            value = value.detach().cpu()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            state[key] = value.contiguous()
        config = self.config.to_dict()
        config["seqinv_version"] = __version__
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            metadata = {"format": "pt", "seqinv_format_version": str(config["format_version"])}
            save_file(state, str(tmp), metadata=metadata)
        with atomic_path(folder / CARD_NAME) as tmp:
            tmp.write_text(model_card(self.config), encoding="utf-8")
        del torch
        return folder

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | None = None,
        prefer: str = "auto",
    ):
        """Load from a local folder, a Hub repo id (`org/name`) or a registry name (`seqinv`, `ixi`, ...).

        See `seqinv.models.registry.load_model` for the resolution order. The returned model is in eval
        mode and carries `.source` (a `ModelSource`).
        """
        from seqinv.models.registry import load_model

        model, _ = load_model(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            prefer=prefer,
            model_class=cls,
        )
        return model

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool = False,
        commit_message: str = "Upload seqinv model",
        dtype: torch.dtype | None = None,
    ) -> str:
        """Create `repo_id` if needed and upload the Hub layout; returns the commit id to pin."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, dtype=dtype)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return info.oid


def as_config(value: Any) -> ModelConfig:
    return value if isinstance(value, ModelConfig) else ModelConfig.from_dict(value)
