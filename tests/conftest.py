"""Shared test settings: tiny, deterministic, offline."""

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never reach the real Hub; the fake-Hub fixture turns this off for its own tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


# The loopback Hub (tests/hub_server.py): `fake_hub` points HF_ENDPOINT at it, with a Hub cache in tmp_path.
from hub_server import fake_hub, fake_hub_server, published_hub  # noqa: E402, F401 (fixtures)

#: task -> (config task, labels) of the tiny model `tiny_models` saves for it
TINY_TASKS = {
    "ixi": ("segment", ["background", "csf", "gm", "wm"]),
    "arc": ("segment", ["background", "lesion"]),
    "denoise": ("denoise", []),
    "features": ("features", []),
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """task -> folder of a tiny saved model of that task (random weights, 32³ windows)."""
    import torch

    from seqinv.models import ModelConfig, SeqInvEncoder, SeqInvUNet

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_models")
    folders = {}
    for task, (config_task, labels) in TINY_TASKS.items():
        arch = "encoder" if config_task == "features" else "unet"
        config = ModelConfig.from_preset(
            "tiny",
            arch=arch,
            task=config_task,
            task_name=task,
            out_channels=max(1, len(labels)),
            labels=labels,
            patch_size=(32, 32, 32),
            name=f"tiny-{task}",
        )
        (SeqInvEncoder if arch == "encoder" else SeqInvUNet)(config).save_pretrained(root / task)
        folders[task] = root / task
    return folders
