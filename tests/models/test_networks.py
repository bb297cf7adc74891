"""Networks (arXiv 2501.12057), strict Hub-layout save/load, reference import. Tiny inputs, CPU."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqinv.errors import InputError, WeightsError
from seqinv.models import (
    PRESETS,
    Projector,
    Reconstructor,
    SeqInvEncoder,
    SeqInvUNet,
    load_reference_encoder,
)
from seqinv.models.weights import WEIGHTS_NAME


def _conv_params(c_in, c_out, k=3):
    return c_in * c_out * k**3 + c_out


def _encoder_params(features, in_channels=1):
    widths = (in_channels, *features)
    return sum(
        _conv_params(widths[i], widths[i + 1]) + _conv_params(widths[i + 1], widths[i + 1]) for i in range(5)
    )


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_runs_on_32_cubed(preset):
    features, _ = PRESETS[preset]
    model = SeqInvUNet(preset=preset, out_channels=3).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        maps = model.encoder.forward_features(x)
        pooled = model.encoder(x)
        out = model(x)
    assert [tuple(m.shape) for m in maps] == [
        (1, f, 32 // 2**i, 32 // 2**i, 32 // 2**i) for i, f in enumerate(features)
    ]
    assert pooled.shape == (1, features[-1])
    torch.testing.assert_close(pooled, maps[-1].mean(dim=(2, 3, 4)))  # the paper's mean pooling
    assert out.shape == (1, 3, 32, 32, 32)
    assert torch.isfinite(out).all()


def test_paper_encoder_has_40_6_million_parameters_and_is_the_default():
    with torch.device("meta"):
        encoder = SeqInvEncoder()
    count = sum(p.numel() for p in encoder.parameters())
    assert encoder.config.features == (64, 128, 256, 512, 768)
    assert count == _encoder_params((64, 128, 256, 512, 768)) == 40_592_448
    assert round(count / 1e6, 1) == 40.6


def test_small_preset_is_at_most_4_million_parameters():
    count = sum(p.numel() for p in SeqInvEncoder(preset="small").parameters())
    assert count == _encoder_params(PRESETS["small"][0]) <= 4_000_000


def test_paper_decoder_widths_match_the_spec():
    with torch.device("meta"):
        model = SeqInvUNet(preset="paper", out_channels=4)
    state = model.state_dict()
    # (transposed conv in→out, conv after concat in→out) as in the paper
    spec = [
        ((768, 384), (384 + 512, 512)),
        ((512, 256), (256 + 256, 256)),
        ((256, 128), (128 + 128, 128)),
        ((128, 128), (128 + 64, 32)),
    ]
    for i, ((up_in, up_out), (cat_in, out)) in enumerate(spec):
        assert state[f"decoder.ups.{i}.up.weight"].shape == (up_in, up_out, 2, 2, 2)
        assert state[f"decoder.ups.{i}.block1.conv.weight"].shape == (out, cat_in, 3, 3, 3)
        assert state[f"decoder.ups.{i}.block2.conv.weight"].shape == (out, out, 3, 3, 3)
    assert state["decoder.head.weight"].shape == (4, 32, 1, 1, 1)


def test_state_dict_names_are_our_own():
    names = list(SeqInvUNet(preset="tiny", out_channels=2).state_dict())
    assert names[0] == "encoder.stages.0.block1.conv.weight"
    assert names[-1] == "decoder.head.bias"
    assert not any(".adn." in n or "conv_0" in n for n in names)  # no MONAI names
    assert len(names) == 2 * (5 * 2 + 4 * 3 + 1)  # weight+bias of 10 encoder convs, 4×3 decoder, 1 head


def test_freeze_encoder_survives_train_mode_and_blocks_gradients():
    model = SeqInvUNet(preset="tiny", out_channels=2).freeze_encoder()
    model.train()
    assert not model.encoder.training and model.decoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    x = torch.randn(1, 1, 32, 32, 32)
    a, b = model.encoder(x), model.encoder(x)
    assert torch.equal(a, b)  # no dropout in the frozen encoder
    model(x).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_unet_pads_odd_sizes_and_encoder_rejects_tiny_inputs():
    model = SeqInvUNet(preset="tiny", out_channels=2).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 20, 33, 17)).shape == (1, 2, 20, 33, 17)
        assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
        padded = torch.nn.functional.pad(x[..., :30], (0, 2, 0, 0, 0, 0), mode="replicate")
        assert torch.equal(model(x[..., :30]), model(padded)[..., :30])  # edge-pad, run, crop
    with pytest.raises(InputError, match=r"\(8, 32, 32\) is too small: it needs at least 16 voxels"):
        model.encoder(torch.randn(1, 1, 8, 32, 32))
    with pytest.raises(InputError, match=r"32 along one"):
        model.encoder(torch.randn(1, 1, 16, 16, 31))
    assert model.encoder(torch.randn(1, 1, 16, 16, 32)).shape == (1, 64)
    with pytest.raises(InputError, match=r"expected \(batch, 1, D, H, W\)"):
        model(torch.randn(1, 2, 32, 32, 32))


def test_heads_shapes():
    assert Projector(64)(torch.randn(3, 64)).shape == (3, 128)
    recon = Reconstructor(64)
    assert [m.out_channels for m in recon.ups] == [32, 16, 8, 4]
    assert recon(torch.randn(2, 64, 2, 2, 2)).shape == (2, 1, 32, 32, 32)


# ---- save / load ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_unet():
    torch.manual_seed(1)
    return SeqInvUNet(
        preset="tiny", out_channels=4, labels=["background", "csf", "gm", "wm"], name="t"
    ).eval()


def test_round_trip_is_bit_exact(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = SeqInvUNet.from_pretrained(tmp_path / "m")
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_unet(x))
    assert loaded.config == tiny_unet.config
    assert loaded.source.kind == "local" and not loaded.training
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: seqinv\n") and "csf" in card


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_back_as_float32(tmp_path, tiny_unet, dtype):
    from safetensors import safe_open

    tiny_unet.save_pretrained(tmp_path, dtype=dtype)
    with safe_open(tmp_path / WEIGHTS_NAME, framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict) == {dtype}
    loaded = SeqInvUNet.from_pretrained(tmp_path)
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, tiny_unet.state_dict()[key].to(dtype).float())


def _resave_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / WEIGHTS_NAME)
    edit(state)
    save_file(state, folder / WEIGHTS_NAME)


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path)
    _resave_weights(tmp_path, lambda s: (s.pop("decoder.head.bias"), s.update(extra=torch.zeros(1))))
    with pytest.raises(WeightsError, match=r"1 missing keys: decoder.head.bias; 1 unexpected keys: extra"):
        SeqInvUNet.from_pretrained(tmp_path)


def test_shape_mismatch_is_named(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["out_channels"], config["labels"] = 2, ["a", "b"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"shape mismatches: decoder.head.bias \(4,\) \(model \(2,\)\)"):
        SeqInvUNet.from_pretrained(tmp_path)


def test_newer_format_and_unknown_fields_are_refused(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(WeightsError, match=r"format_version 99 is newer .* upgrade"):
        SeqInvUNet.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(WeightsError, match=r"unknown config fields \['colour'\]"):
        SeqInvUNet.from_pretrained(tmp_path)


def test_truncated_or_foreign_weight_file_is_refused(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path)
    data = (tmp_path / WEIGHTS_NAME).read_bytes()
    (tmp_path / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"not a valid safetensors file .* truncated"):
        SeqInvUNet.from_pretrained(tmp_path)
    torch.save({"a": torch.zeros(1)}, tmp_path / WEIGHTS_NAME)  # a pickle in disguise
    with pytest.raises(WeightsError, match=r"not a valid safetensors file"):
        SeqInvUNet.from_pretrained(tmp_path)


def test_encoder_from_task_model_folder_and_not_the_reverse(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path / "unet")
    encoder = SeqInvEncoder.from_pretrained(tmp_path / "unet")
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, tiny_unet.encoder.state_dict()[key])
    encoder.save_pretrained(tmp_path / "enc")
    with pytest.raises(WeightsError, match=r"holds an encoder model .*SeqInvEncoder.from_pretrained"):
        SeqInvUNet.from_pretrained(tmp_path / "enc")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match=r"model folder .*nope not found"):
        SeqInvEncoder.from_pretrained(str(tmp_path / "nope"))


# ---- reference import --------------------------------------------------------------------------------


def _reference_export(path, features=(4, 8, 16, 32, 64)):
    from monai.networks.nets import BasicUNet

    torch.manual_seed(3)
    net = BasicUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        features=(*features, features[0]),
        act="GELU",
        norm=("instance", {"affine": False}),
        dropout=0.2,
    ).eval()
    torch.save({"config": {"features": list(features), "dropout": 0.2}, "state_dict": net.state_dict()}, path)
    return net


def test_reference_encoder_matches_monai_basicunet(tmp_path):
    net = _reference_export(tmp_path / "seqinv_encoder.pt")
    encoder = load_reference_encoder(tmp_path / "seqinv_encoder.pt")
    assert encoder.config.preset == "tiny"
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        ours = encoder.forward_features(x)
        theirs = [net.conv_0(x)]
        for down in (net.down_1, net.down_2, net.down_3, net.down_4):
            theirs.append(down(theirs[-1]))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reference_import_refuses_pickled_objects_and_foreign_keys(tmp_path):
    torch.save(
        {
            "config": {},
            "state_dict": {
                "conv_0.conv_0.conv.weight": torch.zeros(4, 1, 3, 3, 3),
                "head.fc.weight": torch.zeros(1),
            },
        },
        tmp_path / "a_encoder.pt",
    )
    with pytest.raises(WeightsError, match=r"cannot map key 'head.fc.weight'"):
        load_reference_encoder(tmp_path / "a_encoder.pt")
    torch.save({"config": np.dtype("float32"), "state_dict": {}}, tmp_path / "b_encoder.pt")
    with pytest.raises(WeightsError, match=r"not a weights-only torch file"):
        load_reference_encoder(tmp_path / "b_encoder.pt")


def test_push_to_hub_uploads_the_hub_layout(tmp_path, tiny_unet, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, endpoint=None, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create", repo_id, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            names = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload", repo_id, names))
            return type("Info", (), {"oid": "c" * 40})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert tiny_unet.push_to_hub("org/tiny", token="t") == "c" * 40
    assert calls == [
        ("init", "t"),
        ("create", "org/tiny", True),
        ("upload", "org/tiny", ["README.md", "config.json", "model.safetensors"]),
    ]


def test_unet_from_encoder_copies_the_encoder_weights():
    encoder = SeqInvEncoder(preset="tiny")
    unet = SeqInvUNet.from_encoder(encoder, out_channels=4, labels=["bg", "csf", "gm", "wm"])
    assert unet.config.arch == "unet" and unet.config.features == encoder.config.features
    for key, value in encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[key], value)


@pytest.mark.parametrize("in_channels,out_channels", [(1, 8), (8, 16), (16, 8)])
def test_onednn_conv_matches_torch_conv(in_channels, out_channels):
    from seqinv.models.networks import Conv3d

    conv = Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
    x = torch.randn(1, in_channels, 20, 18, 16)
    with torch.inference_mode():
        ours = conv(x)
        reference = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
    assert set(conv.state_dict()) == {"weight", "bias"}


def test_max_pooling_is_the_global_max_and_unknown_pooling_is_refused():
    from seqinv.errors import ParameterError
    from seqinv.models import ModelConfig, SeqInvEncoder

    encoder = SeqInvEncoder(preset="tiny", pooling="max").eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), encoder.forward_features(x)[-1].amax(dim=(2, 3, 4)))
    with pytest.raises(ParameterError, match="pooling 'median'"):
        ModelConfig.from_preset("tiny", pooling="median")


def test_lite_preset_is_cheaper_than_mini():
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for preset in ("lite", "mini"):
        model = SeqInvUNet(preset=preset, out_channels=4).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, 32, 32, 32))
        flops[preset] = counter.get_total_flops()
    assert flops["lite"] < 0.5 * flops["mini"]
