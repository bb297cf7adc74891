"""`save_pretrained`, `from_pretrained` and `push_to_hub` for the seqinv networks (the Hub mixin)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from seqinv import __version__
from seqinv.models.config import ModelConfig
from seqinv.models.sources import locate
from seqinv.models.weights import WEIGHTS_NAME, load_strict, model_card, read_folder, write_folder

if TYPE_CHECKING:
    import torch


class HubMixin:
    """Hub-layout load/save; a subclass sets `ARCH` ("encoder" or "unet") and takes a `ModelConfig`."""

    ARCH: str
    config: ModelConfig

    def save_pretrained(self, save_directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write config.json, model.safetensors (optionally as float16/bfloat16) and README.md."""
        state = {}
        for key, value in self.state_dict().items():
            value = value.detach().cpu()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            state[key] = value.contiguous()
        config = self.config.to_dict()
        config["seqinv_version"] = __version__
        return write_folder(save_directory, config, state, model_card(self.config))

    @classmethod
    def from_folder(cls, folder: str | Path):
        """Build from a model folder and load its weights strictly; eval mode.

        `SeqInvEncoder.from_folder` on a U-Net folder gives its encoder; the reverse is an error.
        """
        folder = Path(folder)
        config, state = read_folder(folder, cls.ARCH)
        model = cls(config)
        load_strict(model, state, str(folder / WEIGHTS_NAME))
        return model.eval()

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
        """Load from a local folder, a Hub repo id (`org/name`) or a published name (`ixi`, `ixi@1.0`).

        See `seqinv.models.sources` for the order. The returned model is in eval mode and carries
        `.source` (a `ModelSource`).
        """
        folder, source = locate(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            prefer=prefer,
        )
        model = cls.from_folder(folder)
        model.source = source
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
