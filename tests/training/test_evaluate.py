"""Evaluation: tables in the paper's shape, denoising rows (the metrics: tests/test_metrics.py)."""

import math

import pytest
import torch

from training.evaluate import markdown_table, summarise


def test_markdown_table_puts_models_side_by_side_in_order():
    rows = [
        {
            "model": m,
            "task": "ixi",
            "contrast": c,
            "site": "phantom",
            "metric": "dice",
            "class": k,
            "value": v,
        }
        for m, v in (("Base", 0.8), ("SeqInv", 0.9))
        for c in ("T1w", "T2w")
        for k in ("csf", "gm")
    ]
    table = markdown_table(summarise(rows), ["Base", "SeqAug", "SeqInv"])
    lines = table.splitlines()
    assert lines[0] == "| task | contrast | site | metric | Base | SeqAug | SeqInv |"
    assert lines[2] == "| ixi | T1w | phantom | dice | 80.0 | - | 90.0 |"


def test_denoise_evaluation_reports_input_and_output_psnr():
    from seqinv.models import SeqInvUNet
    from training.evaluate import EvalCase, evaluate_model

    model = SeqInvUNet(preset="tiny", task="denoise", out_channels=1, patch_size=(32, 32, 32))
    torch.nn.init.zeros_(model.decoder.head.weight)
    torch.nn.init.zeros_(model.decoder.head.bias)  # predicts no noise: output = noisy input
    image = torch.rand(36, 32, 30)
    rows = evaluate_model(model, [EvalCase("s", "T1w", "site", image)], sigma=0.2)
    value = {r["metric"]: r["value"] for r in rows}
    assert value["psnr_l1_db"] == pytest.approx(value["input_psnr_l1_db"], abs=1e-4)
    assert value["input_psnr_l1_db"] == pytest.approx(20 * math.log10(1 / 0.2), abs=0.3)


def test_table_rows_follow_the_protocol_order():
    rows = [
        {
            "model": "SeqInv",
            "task": "ixi",
            "contrast": c,
            "site": "phantom",
            "metric": m,
            "class": "gm",
            "value": 0.5,
        }
        for c in ("FLAIR", "PDw", "T1w", "T2w")
        for m in ("hd95_mm", "dice")
    ]
    lines = markdown_table(summarise(rows), ["SeqInv"]).splitlines()[2:]
    assert [line.split(" | ")[1:4:2] for line in lines] == [
        [c, m] for c in ("T1w", "T2w", "PDw", "FLAIR") for m in ("dice", "hd95_mm")
    ]


def test_segmentation_is_scored_through_the_inference_path():
    """A model that always says 'gm' scores what `seqinv segment` outputs: gm inside the head region (the
    bright cube and at most a 2-voxel margin; the foreground crop alone would add 8 voxels), background
    outside, mapped back to the case's grid."""
    from seqinv.models import SeqInvUNet
    from training.evaluate import EvalCase, evaluate_model

    model = SeqInvUNet(
        preset="tiny",
        task="segment",
        task_name="ixi",
        out_channels=4,
        patch_size=(32, 32, 32),
        labels=["background", "csf", "gm", "wm"],
    )
    torch.nn.init.zeros_(model.decoder.head.weight)
    torch.nn.init.constant_(model.decoder.head.bias, 0.0)
    with torch.no_grad():
        model.decoder.head.bias[2] = 10.0
    image, truth = torch.zeros(32, 32, 32), torch.zeros(32, 32, 32, dtype=torch.uint8)
    image[12:20, 12:20, 12:20], truth[12:20, 12:20, 12:20] = 1.0, 2
    case = EvalCase("s", "T1w", "site", image, truth, affine=torch.eye(4).numpy())
    rows = evaluate_model(model, [case])
    dice = {r["class"]: r["value"] for r in rows if r["metric"] == "dice"}
    widest = (8 + 2 * 2) ** 3  # predicted gm: the cube plus at most the head mask's 2-voxel margin
    assert 2 * 8**3 / (widest + 8**3) <= dice["gm"] < 1.0
    assert dice["csf"] == 1.0 and dice["wm"] == 1.0  # absent from both
