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
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["name"] == "seqinv-tiny-encoder"
    assert saved["training"]["command"] == (
        "seqinv train pretrain --output runs/x --phantom --preset tiny --patch-size 32 --steps 3"
    )
    assert saved["training"]["metrics"]["final_loss"] == pytest.approx(2.0)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: image-feature-extraction" in card and "$" not in card.split("## Use")[0]
    assert "Not measured yet" in card


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from seqinv.errors import InputError

    with pytest.raises(InputError, match="no checkpoint at .*step_\\*.pt file or a training output folder"):
        find_checkpoint(tmp_path)


def test_a_finished_model_folder_without_checkpoints_exports_with_its_record_and_metrics(tmp_path):
    from seqinv.models import SeqInvUNet

    unet = SeqInvUNet(preset="tiny", out_channels=4, labels=["background", "csf", "gm", "wm"])
    unet.config.name = "seqinv-tiny-ixi"
    unet.config.training = {
        "kind": "ixi",
        "steps": 7,
        "command": "seqinv train segment ...",
        "metrics": {"final_loss": 0.5},
    }
    unet.save_pretrained(tmp_path / "run")
    (tmp_path / "summary.csv").write_text(
        "model,task,contrast,site,metric,class,value\nSeqInv,ixi,T1w,phantom,dice,,0.915\n"
    )
    out = export(
        tmp_path / "run", tmp_path / "hub", metrics_csv=tmp_path / "summary.csv", model_label="SeqInv"
    )
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))["training"]
    assert saved["steps"] == 7 and saved["command"] == "seqinv train segment ..."
    assert saved["metrics"] == {"final_loss": 0.5, "ixi/T1w/phantom/dice": 0.915}
    assert "| ixi | T1w | phantom | dice | 91.50 |" in (out / "README.md").read_text(encoding="utf-8")
    reloaded = SeqInvUNet.from_pretrained(str(out))
    for key, value in unet.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)


def test_card_says_end_to_end_only_when_the_encoder_was_trained(tmp_path):
    from seqinv.models import SeqInvUNet

    unet = SeqInvUNet(preset="tiny", out_channels=4, labels=["background", "csf", "gm", "wm"])
    cases = ((False, "on a frozen pretrained encoder"), (True, "fine-tuned end to end"))
    for train_encoder, expected in cases:
        unet.config.training = {"kind": "ixi", "steps": 3, "options": {"train_encoder": train_encoder}}
        unet.save_pretrained(tmp_path / f"run{train_encoder}")
        out = export(tmp_path / f"run{train_encoder}", tmp_path / f"hub{train_encoder}")
        card = (out / "README.md").read_text(encoding="utf-8")
        assert expected in card and ("frozen" in card) != train_encoder


def test_a_run_folder_exports_its_final_model_unless_a_later_checkpoint_exists(tmp_path):
    """arc runs shift the lesion logit after the last checkpoint; the export must keep that shift."""
    from seqinv.models import SeqInvUNet

    unet = SeqInvUNet(preset="tiny", out_channels=2, labels=["background", "lesion"])
    unet.config.name = "seqinv-tiny-arc"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)

    def checkpoint(step):
        state = {"step": step, "kind": "arc", "config": unet.config.to_dict(), "model": unet.state_dict()}
        name = tmp_path / "run" / "checkpoints" / f"step_{step:07d}.pt"
        torch.save(state | {"history": {"loss": [1.0]}}, name)

    checkpoint(5)
    bias = unet.decoder.head.bias.detach().clone()
    with torch.no_grad():
        unet.decoder.head.bias[1] -= 2.5
    unet.config.training = {"kind": "arc", "steps": 5, "command": "seqinv train segment ..."}
    unet.config.training["lesion_prior_shift"] = -2.5
    unet.save_pretrained(tmp_path / "run")

    out = export(tmp_path / "run", tmp_path / "hub")
    exported = SeqInvUNet.from_pretrained(str(out)).decoder.head.bias
    assert exported[1].item() == pytest.approx(bias[1].item() - 2.5)
    training = json.loads((out / "config.json").read_text(encoding="utf-8"))["training"]
    assert training["lesion_prior_shift"] == -2.5

    with torch.no_grad():  # a resumed run's newer checkpoint wins over the older final model
        unet.decoder.head.bias[1] += 7.0
    checkpoint(9)
    exported = SeqInvUNet.from_pretrained(str(export(tmp_path / "run", tmp_path / "hub2"))).decoder.head.bias
    assert exported[1].item() == pytest.approx(bias[1].item() + 4.5)
