"""Evaluation metrics against MONAI and closed-form values; tables in the paper's shape."""

import math

import pytest
import torch

from training.evaluate import dice_per_class, hd95_per_class, markdown_table, psnr_pair, summarise


def test_dice_matches_monai():
    from monai.metrics import compute_dice

    g = torch.Generator().manual_seed(0)
    pred, truth = torch.randint(0, 4, (8, 9, 7), generator=g), torch.randint(0, 4, (8, 9, 7), generator=g)
    ours = dice_per_class(pred, truth, ["bg", "csf", "gm", "wm"])
    onehot = lambda x: torch.nn.functional.one_hot(x, 4).movedim(-1, 0)[None]  # noqa: E731
    reference = compute_dice(onehot(pred), onehot(truth), include_background=False)[0]
    assert list(ours.values()) == pytest.approx(reference.tolist(), rel=1e-6)


def test_hd95_of_a_shifted_cube_is_the_shift_in_mm():
    truth = torch.zeros(24, 24, 24, dtype=torch.long)
    truth[6:14, 6:14, 6:14] = 1
    pred = torch.roll(truth, shifts=3, dims=0)
    assert hd95_per_class(pred, truth, ["bg", "lesion"], (2.0, 1.0, 1.0))["lesion"] == pytest.approx(6.0)


def test_psnr_l1_is_the_papers_convention_and_range_psnr_uses_the_clean_range():
    clean = torch.linspace(-1, 3, 1000)
    noisy = clean + 0.2 * torch.where(torch.arange(1000) % 2 == 0, 1.0, -1.0)  # RMSE exactly 0.2
    values = psnr_pair(clean, noisy)
    assert values["psnr_l1_db"] == pytest.approx(20 * math.log10(1 / 0.2), rel=1e-5)  # ≈ 14 dB
    assert values["psnr_range_db"] == pytest.approx(20 * math.log10(4 / 0.2), rel=1e-5)


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
