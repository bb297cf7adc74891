"""Export: a pretraining checkpoint becomes a strict-loading Hub folder with a rendered card."""

import json

import pytest
import torch

from training.export import export, find_checkpoint


def test_pretraining_checkpoint_exports_the_encoder_only(tmp_path):
    from seqinv.models import ModelConfig, SeqInvEncoder
    from training.pretrain import PretrainNet, PretrainOptions

    config = ModelConfig.from_preset("tiny", arch="encoder", task="features", patch_size=(32, 32, 32))
    net = PretrainNet(SeqInvEncoder(config))
    opts = PretrainOptions(output="runs/x", phantom=True, preset="tiny", patch_size=32, steps=3)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(
        {
            "step": 3,
            "kind": "pretrain",
            "config": config.to_dict(),
            "model": net.state_dict(),
            "options": opts.__dict__,
            "history": {"loss": [3.0, 2.0, 1.0]},
        },
        tmp_path / "run" / "checkpoints" / "step_0000003.pt",
    )
    out = export(tmp_path / "run", tmp_path / "hub", name="seqinv-tiny-encoder")
    encoder = SeqInvEncoder.from_pretrained(str(out))
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)
    saved = json.loads((out / "config.json").read_text())
    assert saved["name"] == "seqinv-tiny-encoder"
    assert saved["training"]["command"] == (
        "seqinv train pretrain --output runs/x --phantom --preset tiny --patch-size 32 --steps 3"
    )
    assert saved["training"]["metrics"]["final_loss"] == pytest.approx(2.0)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and "$" not in card.split("## Use")[0]
    assert "Not measured yet" in card


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from seqinv.errors import InputError

    with pytest.raises(InputError, match="no checkpoint at .*step_\\*.pt file or a training output folder"):
        find_checkpoint(tmp_path)
