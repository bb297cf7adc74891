"""config.json values out of sane bounds are refused when read: one error naming field, value and range."""

import json
import re
from pathlib import Path

import pytest

from seqinv.errors import ParameterError, WeightsError
from seqinv.models import ModelConfig, SeqInvUNet, load_model
from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
from seqinv.models.weights import CONFIG_NAME, read_config

WEIGHTS = Path(__file__).resolve().parents[2] / "seqinv" / "weights"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny U-Net and a tiny denoiser saved as model folders."""
    root = tmp_path_factory.mktemp("configs")
    SeqInvUNet(preset="tiny", out_channels=2, labels=["background", "lesion"]).save_pretrained(root / "unet")
    ResidualDenoiser(
        denoiser_config((4, 4), nonlocal_stage={"search": 2, "h": 0.8, "weight": 0.6})
    ).save_pretrained(root / "denoiser")
    return root


def _edited(saved, tmp_path, kind, **fields):
    """A copy of the `kind` model folder whose config.json has `fields` replaced."""
    folder = tmp_path / kind
    folder.mkdir()
    for path in (saved / kind).iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / CONFIG_NAME).read_text())
    config.update(fields)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    return folder


def _norm(**fields):
    return {"type": "percentile_zscore", "lower": 0.5, "upper": 99.5, **fields}


# field values from issue #31 (tracebacks, or allocations of hundreds of GiB) and their neighbours;
# messages are plain text (matched literally)
RANGE = "is outside the allowed range"
BAD_UNET = [
    (
        {"features": [4, 8, 16, 32, 100000]},
        f"features 100000 (in widths [4, 8, 16, 32, 100000]) {RANGE} 1 to 2048",
    ),
    ({"features": "abc"}, "features must be a list of integers, got 'abc'"),
    ({"features": [4, 8, 16, 32, 64.5]}, "features must be a list of integers"),
    ({"decoder_features": 0}, f"decoder_features 0 {RANGE} 1 to 2048"),
    ({"decoder_features": "4"}, "decoder_features must be an integer from 1 to 2048, got '4'"),
    ({"in_channels": 1000}, f"in_channels 1000 {RANGE} 1 to 16"),
    ({"out_channels": 100000, "labels": []}, f"out_channels 100000 {RANGE} 1 to 512"),
    ({"patch_size": [-1, 96, 96]}, f"patch_size -1 (in [-1, 96, 96] voxels) {RANGE} 16 to 512"),
    ({"patch_size": [96, 96, 100000]}, f"patch_size 100000 (in [96, 96, 100000] voxels) {RANGE} 16 to 512"),
    ({"patch_size": [96, 96]}, "patch_size must be 3 window sizes (voxels), got [96, 96]"),
    ({"spacing_mm": [0.01, 1, 1]}, f"spacing_mm 0.01 (in [0.01, 1.0, 1.0] mm) {RANGE} 0.25 to 10.0"),
    ({"spacing_mm": [1, 1, 1000]}, f"spacing_mm 1000.0 (in [1.0, 1.0, 1000.0] mm) {RANGE} 0.25 to 10.0"),
    ({"spacing_mm": [1, "x", 1]}, "spacing_mm must be a list of numbers"),
    ({"spacing_mm": 1.0}, "spacing_mm must be a list of numbers, got 1.0"),
    ({"normalization": _norm(lower=99.5, upper=0.5)}, "normalization lower 99.5 must be below upper 0.5"),
    ({"normalization": _norm(upper=150)}, f"normalization upper 150 {RANGE} 0.0 to 100.0"),
    ({"normalization": _norm(lower="low")}, "normalization lower must be a number (a percentile, 0 to 100)"),
    ({"normalization": _norm(type="minmax")}, "normalization type 'minmax' is not one of"),
    ({"normalization": _norm(zscore="robust")}, "normalization zscore 'robust' is not one of"),
    ({"normalization": _norm(clip="yes")}, "normalization clip must be true or false, got 'yes'"),
    ({"normalization": [0.5, 99.5]}, "normalization must be a JSON object"),
    ({"dropout": 1.5}, "dropout must be in [0, 1), got 1.5"),
    ({"labels": ["background", "background"]}, "labels ['background', 'background'] must be distinct"),
    ({"labels": ["background", 3]}, "labels must be a list of strings"),
    ({"training": []}, "training must be a JSON object"),
]
BAD_DENOISER = [
    ({"features": [4] * 65}, f"number of features (hidden layers) 65 {RANGE} 2 to 64"),
    ({"features": [4, 100000]}, f"features 100000 (in widths [4, 100000]) {RANGE} 1 to 2048"),
    (
        {"normalization": {"type": "percentile_scale", "percentile": 120}},
        f"normalization percentile 120 {RANGE}",
    ),
    ({"nonlocal_stage": {"search": 2, "h": "wide", "weight": 0.6}}, "nonlocal_stage h must be a number"),
    ({"nonlocal_stage": [2, 0.8, 0.6]}, "nonlocal_stage must be a JSON object or null"),
]


def _case_id(value):
    return str(value)[:40] if isinstance(value, dict) else ""


@pytest.mark.parametrize(("fields", "message"), BAD_UNET, ids=_case_id)
def test_out_of_bounds_config_values_are_one_clear_error(saved, tmp_path, fields, message):
    folder = _edited(saved, tmp_path, "unet", **fields)
    pattern = (
        rf"config.json: invalid config: {re.escape(message)}.*; re-export the model, or correct the file$"
    )
    with pytest.raises(WeightsError, match=pattern) as err:
        read_config(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match=re.escape(message)):  # before any network is built
        load_model(folder)


@pytest.mark.parametrize(("fields", "message"), BAD_DENOISER, ids=_case_id)
def test_out_of_bounds_denoiser_config_values_are_one_clear_error(saved, tmp_path, fields, message):
    with pytest.raises(WeightsError, match=rf"invalid config: {re.escape(message)}"):
        read_config(_edited(saved, tmp_path, "denoiser", **fields))


def test_configs_within_bounds_still_load(saved, tmp_path):
    folder = _edited(
        saved,
        tmp_path,
        "unet",
        spacing_mm=[0.25, 4, 10],
        patch_size=[16, 96, 512],
        normalization={"lower": 0, "upper": 100, "zscore": None, "clip": False},
    )
    assert read_config(folder).spacing_mm == (0.25, 4.0, 10.0)
    assert read_config(_edited(saved, tmp_path, "denoiser", nonlocal_stage=None)).nonlocal_stage is None


def test_code_built_configs_are_checked_alike():
    with pytest.raises(ParameterError, match=r"spacing_mm 0.01 .* outside the allowed range 0.25 to 10.0"):
        ModelConfig.from_preset("tiny", spacing_mm=(0.01, 1.0, 1.0))
    for preset in ("tiny", "lite", "mini", "small", "paper"):
        ModelConfig.from_preset(preset)


# ---- output_kind: what the outputs are, stored under config.json's "task" key ------------------------


@pytest.mark.parametrize(
    "folder", sorted(p.parent for p in WEIGHTS.glob("*/config.json")), ids=lambda p: p.name
)
def test_published_configs_are_written_back_byte_for_byte(folder):
    """The catalogue pins each config.json's sha256: reading and writing its fields must not move a byte
    (fields added since, such as `nonlocal_stage`, are left out as the file has them)."""
    text = (folder / CONFIG_NAME).read_text(encoding="utf-8")
    original = json.loads(text)
    written = ModelConfig.from_dict(original).to_dict()
    assert ModelConfig.from_dict(original).output_kind == original["task"]
    assert json.dumps({key: written[key] for key in original}, indent=2) + "\n" == text
    assert [key for key in written if key in original] == list(original)


def test_output_kind_is_the_task_key_of_config_json():
    config = ModelConfig.from_preset("tiny", arch="unet", output_kind="denoise")
    data = config.to_dict()
    assert data["task"] == "denoise" and "output_kind" not in data
    assert list(data).index("task") == list(data).index("out_channels") + 1  # the key keeps its place
    assert ModelConfig.from_dict(data) == config
    with pytest.raises(WeightsError, match=r"unknown config fields \['output_kind'\]"):
        ModelConfig.from_dict({**data, "output_kind": "denoise"})


def test_task_is_a_deprecated_alias_of_output_kind():
    import dataclasses

    config = ModelConfig.from_preset("tiny", arch="unet", task="denoise")
    assert config.output_kind == config.task == "denoise"
    assert dataclasses.replace(config, task="segment").output_kind == "segment"
    assert dataclasses.replace(config, output_kind="segment").output_kind == "segment"
    # SeqInvUNet passes task="segment" as its default: an explicit output_kind wins over it
    assert SeqInvUNet(preset="tiny", output_kind="denoise").config.output_kind == "denoise"
    config.task = "segment"
    assert config.output_kind == "segment"
