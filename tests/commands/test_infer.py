"""`seqinv segment|denoise|embed` end to end with a tiny random model saved to disk."""

import csv
import json
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from seqinv.cli import main
from seqinv.inference.sliding import resolve_precision

LABELS = ["background", "csf", "gm", "wm"]


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["seqinv", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from seqinv.models import ModelConfig, SeqInvUNet

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    common = {"arch": "unet", "patch_size": (32, 32, 32)}
    seg = ModelConfig.from_preset(
        "tiny", task="segment", task_name="ixi", out_channels=4, labels=LABELS, **common
    )
    den = ModelConfig.from_preset("tiny", task="denoise", task_name="denoise", out_channels=1, **common)
    SeqInvUNet(seg).save_pretrained(root / "seg")
    lesion = ["background", "lesion"]
    les = ModelConfig.from_preset(
        "tiny", task="segment", task_name="arc", out_channels=2, labels=lesion, **common
    )
    SeqInvUNet(les).save_pretrained(root / "les")
    SeqInvUNet(den).save_pretrained(root / "den")
    return root


def _scan(path, affine=None, shape=(28, 30, 24), dtype=np.float32):
    rng = np.random.default_rng(0)
    data = np.zeros(shape, np.float32)
    data[4:-4, 4:-4, 3:-3] = 100 + 20 * rng.random(tuple(n - 8 for n in shape[:2]) + (shape[2] - 6,))
    image = nib.Nifti1Image(data.astype(dtype), np.eye(4) if affine is None else affine)
    image.header["descrip"] = b"test scan"
    nib.save(image, path)
    return path


OBLIQUE = np.array([[0.9, 0.3, 0.0, -5.0], [-0.25, 1.0, 0.1, 3.0], [0.0, -0.2, 2.5, 8.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.eye(4), OBLIQUE], ids=["ras", "oblique"])
def test_segment_writes_native_space_outputs(tmp_path, monkeypatch, capsys, models, affine):
    scan = _scan(tmp_path / "sub-01_T1w.nii.gz", affine)
    code, _, err = run(
        monkeypatch,
        capsys,
        "segment",
        scan,
        "--model",
        models / "seg",
        "--probs",
        "--qc",
        tmp_path / "qc.png",
    )
    assert code == 0, err
    assert "model seg: local" in err
    source = nib.load(scan)
    dseg = nib.load(tmp_path / "sub-01_dseg.nii.gz")
    probs = nib.load(tmp_path / "sub-01_probseg.nii.gz")
    assert dseg.shape == source.shape and probs.shape == (*source.shape, 4)
    np.testing.assert_allclose(dseg.affine, source.affine, atol=1e-6)
    np.testing.assert_allclose(probs.affine, source.affine, atol=1e-6)
    assert dseg.get_data_dtype() == np.uint8 and dseg.header["descrip"] == b"test scan"
    labels = np.asarray(dseg.dataobj)
    assert labels.max() < 4
    np.testing.assert_allclose(probs.get_fdata().sum(axis=-1), 1.0, atol=0.01)
    meta = json.loads((tmp_path / "sub-01_dseg.json").read_text())
    auto = resolve_precision("auto", torch.device("cpu"))  # bf16 on CPUs with AMX
    assert meta["model"]["sha256"] and meta["precision"] == auto and meta["overlap"] == 0.5
    assert {"read", "preprocess", "inference", "postprocess", "write", "total"} <= set(meta["timings_s"])
    with open(tmp_path / "volumes.csv") as fh:
        row = next(csv.DictReader(fh))
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert float(row["gm_ml"]) == pytest.approx((labels == 2).sum() * voxel_ml, abs=1e-3)
    assert (tmp_path / "qc.png").stat().st_size > 100


def test_many_inputs_one_bad_continue_and_skip_existing(tmp_path, monkeypatch, capsys, models):
    a = _scan(tmp_path / "a.nii.gz")
    b = _scan(tmp_path / "b.nii.gz", np.diag([1.0, 1.0, 1.5, 1.0]), dtype=np.int16)
    (tmp_path / "c.nii.gz").write_text("not a scan")
    out = tmp_path / "out"
    code, _, err = run(
        monkeypatch, capsys, "segment", a, b, tmp_path / "c.nii.gz", "--model", models / "seg", "-o", out
    )
    assert code == 1
    assert "2 done, 0 skipped, 1 failed" in err and "c.nii.gz: cannot read as NIfTI" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "a_dseg.json",
        "a_dseg.nii.gz",
        "b_dseg.json",
        "b_dseg.nii.gz",
        "volumes.csv",
    ]
    assert nib.load(out / "b_dseg.nii.gz").shape == nib.load(b).shape
    before = (out / "a_dseg.nii.gz").stat().st_mtime_ns
    code, _, err = run(
        monkeypatch, capsys, "segment", a, b, "--model", models / "seg", "-o", out, "--skip-existing"
    )
    assert code == 0 and "0 done, 2 skipped, 0 failed" in err
    assert (out / "a_dseg.nii.gz").stat().st_mtime_ns == before
    with open(out / "volumes.csv") as fh:
        assert [r["input"] for r in csv.DictReader(fh)] == [str(a), str(b)]


def test_denoise_keeps_grid_and_intensity_scale(tmp_path, monkeypatch, capsys, models):
    scan = _scan(tmp_path / "sub-02_T2w.nii.gz", np.diag([0.9, 0.9, 1.2, 1.0]))
    code, _, err = run(monkeypatch, capsys, "denoise", scan, "--model", models / "den", "--fast")
    assert code == 0, err
    out = nib.load(tmp_path / "sub-02_desc-denoised_T2w.nii.gz")
    source = nib.load(scan)
    assert out.shape == source.shape
    np.testing.assert_allclose(out.affine, source.affine, atol=1e-6)
    denoised, noisy = out.get_fdata(), source.get_fdata()
    assert abs(np.median(denoised[noisy > 50]) - np.median(noisy[noisy > 50])) < 20  # same intensity scale
    meta = json.loads((tmp_path / "sub-02_desc-denoised_T2w.json").read_text())
    assert meta["noise_sigma_source"] == "estimated" and meta["overlap"] == 0.25


def test_embed_writes_npz(tmp_path, monkeypatch, capsys, models):
    scan = _scan(tmp_path / "a.nii.gz", shape=(32, 32, 32))
    code, _, err = run(
        monkeypatch, capsys, "embed", scan, "--model", models / "seg", "-o", tmp_path / "f.npz"
    )
    assert code == 0, err
    features = np.load(tmp_path / "f.npz")
    assert features["pooled"].shape == (64,) and features["dense"].shape[0] == 64
    assert features["dense_affine"].shape == (4, 4)


def test_wrong_kind_of_model_is_a_clear_error(tmp_path, monkeypatch, capsys, models):
    scan = _scan(tmp_path / "a.nii.gz")
    code, _, err = run(monkeypatch, capsys, "segment", scan, "--model", models / "den")
    assert code == 2 and "is a 'denoise' model" in err
    assert not (tmp_path / "a_dseg.nii.gz").exists()


def test_arc_lesion_calls_are_bounded_by_the_brain_model(tmp_path, monkeypatch, capsys, models):
    scan = _scan(tmp_path / "a.nii.gz")
    args = ["segment", scan, "--task", "arc", "--model", models / "les"]
    code, _, err = run(monkeypatch, capsys, *args, "--brain-model", models / "seg", "-o", tmp_path / "b")
    assert code == 0, err
    meta = json.loads((tmp_path / "b" / "a_label-lesion_mask.json").read_text())  # apart from tissue labels
    assert meta["task"] == "arc" and "model seg: local" in meta["brain_mask_model"]["describe"]
    assert "brain_mask" in meta["timings_s"]
    code, _, err = run(monkeypatch, capsys, *args, "--no-brain-mask", "-o", tmp_path / "n")
    assert code == 0, err
    assert json.loads((tmp_path / "n" / "a_label-lesion_mask.json").read_text())["brain_mask_model"] is None
    code, _, err = run(monkeypatch, capsys, *args, "--brain-model", models / "les", "-o", tmp_path / "l")
    assert code == 2 and err.strip().endswith("error: the brain mask model is not a tissue (ixi) model")
    assert not list(tmp_path.glob("l/*"))
    code, _, err = run(monkeypatch, capsys, "segment", scan, "--brain-model", models / "seg")
    assert code == 2 and err.strip().endswith("is not used here: it bounds lesion calls (--task arc)")
    assert not (tmp_path / "a_dseg.nii.gz").exists()


def test_tissue_labels_are_refined_unless_asked_not_to(tmp_path, monkeypatch, capsys, models):
    scan = _scan(tmp_path / "a_T1w.nii.gz", np.eye(4))
    seg = ("segment", scan, "--model", models / "seg")
    code, _, err = run(monkeypatch, capsys, *seg, "-o", tmp_path / "r_dseg.nii.gz")
    assert code == 0, err
    fit = json.loads((tmp_path / "r_dseg.json").read_text())["intensity_refinement"]
    code, _, err = run(monkeypatch, capsys, *seg, "--no-refine", "-o", tmp_path / "n_dseg.nii.gz")
    assert code == 0, err
    assert json.loads((tmp_path / "n_dseg.json").read_text())["intensity_refinement"] is None
    assert fit["method"] == "em-gaussian-mixture-per-class" and len(fit["means"]) == 3


def test_thick_slices_can_be_labelled_on_the_model_1mm_grid(tmp_path, monkeypatch, capsys, models):
    thick = np.diag([1.0, 1.0, 4.0, 1.0])
    thick[:3, 3] = [-10.0, 5.0, 20.0]
    scan = _scan(tmp_path / "a_T2w.nii.gz", thick, shape=(28, 30, 8))
    image = nib.load(scan)
    image.header.set_dim_info(slice=2)
    image.header["slice_code"], image.header["slice_end"] = 1, 7  # sequential, 8 slices
    nib.save(nib.Nifti1Image(image.get_fdata(dtype=np.float32), thick, image.header), scan)
    seg = ("segment", scan, "--model", models / "seg", "--probs")
    code, _, err = run(monkeypatch, capsys, *seg, "--grid", "model", "-o", tmp_path / "m_dseg.nii.gz")
    assert code == 0, err
    out = nib.load(tmp_path / "m_dseg.nii.gz")
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), 1.0)
    # it covers the scan: the input's centre lies inside the output's field of view
    centre = thick @ np.array([13.5, 14.5, 3.5, 1.0])
    voxel = np.linalg.inv(out.affine) @ centre
    assert np.all(voxel[:3] >= 0) and np.all(voxel[:3] <= np.array(out.shape) - 1)
    assert out.shape[2] > 8 * 3  # 32 mm of slab on 1 mm voxels, not 8 slices
    # the input's slices do not describe this grid; the rest of its header stays
    assert int(out.header["slice_code"]) == 0 and out.header.get_dim_info() == (None, None, None)
    assert out.header["descrip"].tobytes().startswith(b"test scan")
    probs = nib.load(tmp_path / "m_probseg.nii.gz")
    assert probs.shape == out.shape + (4,)
    np.testing.assert_allclose(probs.affine, out.affine)
    meta = json.loads((tmp_path / "m_dseg.json").read_text())
    assert meta["output_grid"].startswith("model")
    counts = np.bincount(np.asarray(out.dataobj).ravel(), minlength=4)
    np.testing.assert_allclose(list(meta["volumes_ml"].values()), counts / 1000.0, rtol=1e-6)
    code, _, err = run(monkeypatch, capsys, *seg, "--grid", "coarse", "-o", tmp_path / "x_dseg.nii.gz")
    assert code == 2 and err.strip().endswith("error: --grid 'coarse' is not one of input, model")
    assert not (tmp_path / "x_dseg.nii.gz").exists()


def test_denoise_passes_are_recorded_and_checked(tmp_path, monkeypatch, capsys):
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config

    ResidualDenoiser(denoiser_config((4, 4))).save_pretrained(tmp_path / "resid")
    scan = _scan(tmp_path / "a_T2w.nii.gz")
    base = ("denoise", scan, "--model", tmp_path / "resid", "--sigma", "5")
    for flags, passes in (((), 2), (("--fast",), 1), (("--tta",), 8), (("--passes", "4"), 4)):
        code, _, err = run(monkeypatch, capsys, *base, *flags, "-o", tmp_path / f"p{passes}")
        assert code == 0, err
        meta = json.loads((tmp_path / f"p{passes}" / "a_T2w_desc-denoised.json").read_text())
        assert meta["passes"] == passes and meta["tta"] is (passes > 1)
    code, _, err = run(monkeypatch, capsys, *base, "--passes", "3", "-o", tmp_path / "bad")
    assert code == 2 and err.strip().endswith("error: --passes 3 is not one of 1, 2, 4, 8")
    assert not list(tmp_path.glob("bad/*"))


def test_passes_are_refused_for_a_model_without_them(tmp_path, monkeypatch, capsys, models):
    scan = _scan(tmp_path / "a_T2w.nii.gz")
    args = ("denoise", scan, "--model", models / "den", "--passes", "2", "-o", tmp_path / "out")
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and "error: --passes applies to the residual denoiser (denoise 2.x)" in err
    assert not list(tmp_path.glob("out/*.nii.gz"))
