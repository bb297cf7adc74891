"""Issue 31: a user's files are never lost, mixed up or half-trusted by `seqinv segment | denoise | embed`.

Outputs never overwrite inputs, tasks never overwrite each other, re-runs over a folder leave seqinv's own
outputs alone, `--skip-existing` trusts only a case whose files and sidecar agree, and a full disk is one
`error:` line.
"""

import csv
import errno
import hashlib
import json
import os

import pytest
from input_cases import assert_refused, run_cli, save_nifti, scan_data

MODELS = {"segment": "ixi", "denoise": "denoise", "embed": "features"}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(monkeypatch, capsys, tiny_models, command, *args, task=None):
    model = tiny_models[task or MODELS[command]]
    return run_cli(monkeypatch, capsys, command, *args, "--model", model, "--threads", "1")


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _lines(err):
    return [line for line in err.splitlines() if line.strip() and not line.startswith("model ")]


# ------------------------------------------------------------------------- outputs never replace inputs
def _same_name(tmp_path):
    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    return scan, ("-o", scan)


def _bids_dseg_input(tmp_path):  # the default name of `sub-01_dseg.nii.gz` is itself
    return save_nifti(tmp_path / "sub-01_dseg.nii.gz", scan_data()), ()


def _hard_link(tmp_path):
    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    os.link(scan, tmp_path / "b.nii.gz")
    return scan, ("-o", tmp_path / "b.nii.gz")


def _symlink(tmp_path):
    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    (tmp_path / "b.nii.gz").symlink_to(scan)
    return scan, ("-o", tmp_path / "b.nii.gz")


OVERWRITES = {"same_name": _same_name, "bids_dseg": _bids_dseg_input, "hard_link": _hard_link}
OVERWRITES["symlink"] = _symlink


@pytest.mark.parametrize(
    "case, command",
    [(c, m) for c in OVERWRITES for m in MODELS if c != "bids_dseg" or m == "segment"],  # only segment: dseg
)
def test_an_output_that_is_an_input_is_refused(tmp_path, monkeypatch, capsys, tiny_models, case, command):
    scan, extra = OVERWRITES[case](tmp_path)
    before, files = _sha(scan), sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(monkeypatch, capsys, tiny_models, command, scan, *extra)
    assert_refused(code, err, "would overwrite the input")
    assert _sha(scan) == before and sorted(p.name for p in tmp_path.iterdir()) == files


def test_an_output_of_one_input_that_is_another_input_is_refused(tmp_path, monkeypatch, capsys, tiny_models):
    a = save_nifti(tmp_path / "a.nii.gz", scan_data())
    b = save_nifti(tmp_path / "a_dseg.nii.gz", scan_data(seed=1))  # explicitly named: not skipped
    before = _sha(b)
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", a, b)
    assert_refused(code, err, "would overwrite the input")
    assert _sha(b) == before


def test_the_sidecar_hashes_the_input_as_it_was_read(tmp_path, monkeypatch, capsys, tiny_models):
    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", scan)
    assert code == 0, err
    meta = json.loads((tmp_path / "a_dseg.json").read_text())
    assert meta["input_sha256"] == _sha(scan)
    assert meta["outputs_sha256"]["dseg"] == _sha(tmp_path / "a_dseg.nii.gz")


# ---------------------------------------------------------------------- tasks never replace each other
def test_tissue_and_lesion_outputs_have_their_own_names_and_csv(tmp_path, monkeypatch, capsys, tiny_models):
    scan = save_nifti(tmp_path / "x.nii.gz", scan_data())
    assert _run(monkeypatch, capsys, tiny_models, "segment", scan, "--probs", "--qc", tmp_path)[0] == 0
    tissue = _sha(tmp_path / "x_dseg.nii.gz")
    args = (scan, "--no-brain-mask", "--probs", "--qc", tmp_path)
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", *args, "--task", "arc", task="arc")
    assert code == 0, err
    assert _sha(tmp_path / "x_dseg.nii.gz") == tissue
    assert json.loads((tmp_path / "x_dseg.json").read_text())["task"] == "ixi"
    assert json.loads((tmp_path / "x_label-lesion_mask.json").read_text())["task"] == "arc"
    for name in ("x_label-lesion_mask.nii.gz", "x_label-lesion_probseg.nii.gz", "x_probseg.nii.gz"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "x_qc.png").is_file() and (tmp_path / "x_label-lesion_qc.png").is_file()
    (tissue_row,) = _rows(tmp_path / "volumes.csv")
    (lesion_row,) = _rows(tmp_path / "lesion_volumes.csv")
    assert {"csf_ml", "gm_ml", "wm_ml"} <= set(tissue_row) and "lesion_ml" not in tissue_row
    assert "lesion_ml" in lesion_row and "gm_ml" not in lesion_row


# ------------------------------------------------------------------ re-runs leave seqinv outputs alone
@pytest.mark.parametrize("name", ["x.nii.gz", "sub-01_T1w.nii.gz"], ids=["plain", "bids"])
def test_a_second_run_over_a_folder_skips_seqinv_outputs(tmp_path, monkeypatch, capsys, tiny_models, name):
    scans = tmp_path / "scans"
    scans.mkdir()
    save_nifti(scans / name, scan_data())
    save_nifti(scans / "y_dseg.nii.gz", scan_data(seed=2))  # a label map by name, made elsewhere
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", scans)
    assert code == 0, err
    made = sorted(p.name for p in scans.iterdir())
    for extra in ((), ("--skip-existing",)):
        code, err = _run(monkeypatch, capsys, tiny_models, "segment", scans, *extra)
        assert code == 0, err
        assert "note: skipped 2 seqinv outputs" in err  # the label maps, ours by name and sidecar
        assert sorted(p.name for p in scans.iterdir()) == made
        assert len(_rows(scans / "volumes.csv")) == 1
    code, err = _run(monkeypatch, capsys, tiny_models, "denoise", str(scans / "*.nii.gz"))
    assert code == 0, err
    assert [p.name for p in scans.glob("*desc-denoised*.nii.gz")] == [
        name.replace("_T1w", "_desc-denoised_T1w") if "T1w" in name else "x_desc-denoised.nii.gz"
    ]
    code, err = _run(monkeypatch, capsys, tiny_models, "denoise", scans, "--skip-existing")
    assert code == 0 and "note: skipped 3 seqinv outputs" in err  # the denoised scan by its sidecar


def test_a_folder_of_only_seqinv_outputs_is_refused(tmp_path, monkeypatch, capsys, tiny_models):
    save_nifti(tmp_path / "y_dseg.nii.gz", scan_data())
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", tmp_path)
    assert_refused(code, err, "seqinv outputs")


# --------------------------------------------------------------------- --skip-existing trusts little
def _segment_once(tmp_path, monkeypatch, capsys, tiny_models, *extra):
    scan = tmp_path / "a.nii.gz"
    if not scan.exists():
        save_nifti(scan, scan_data())
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", scan, "-o", tmp_path / "out", *extra)
    assert code == 0, err
    return err


def _tamper_labels(tmp_path):
    path = tmp_path / "out" / "a_dseg.nii.gz"
    path.write_bytes(path.read_bytes()[:-1] + b"x")


def _change_input(tmp_path):
    save_nifti(tmp_path / "a.nii.gz", scan_data(seed=5))


def _old_sidecar(tmp_path):  # written before sidecars recorded options and output hashes
    path = tmp_path / "out" / "a_dseg.json"
    meta = json.loads(path.read_text())
    del meta["options"], meta["outputs_sha256"]
    path.write_text(json.dumps(meta))


STALE = {
    "labels_changed": (_tamper_labels, ()),
    "input_changed": (_change_input, ()),
    "other_options": (lambda p: None, ("--no-refine",)),
    "probs_asked_for": (lambda p: None, ("--probs",)),
    "old_sidecar": (_old_sidecar, ()),
}


def test_skip_existing_trusts_a_case_whose_files_and_sidecar_agree(
    tmp_path, monkeypatch, capsys, tiny_models
):
    _segment_once(tmp_path, monkeypatch, capsys, tiny_models)
    err = _segment_once(tmp_path, monkeypatch, capsys, tiny_models, "--skip-existing")
    assert any(line.startswith("skipped ") and "a_dseg.nii.gz" in line for line in _lines(err)), err


@pytest.mark.parametrize("case", list(STALE))
def test_skip_existing_reruns_a_case_it_cannot_trust(tmp_path, monkeypatch, capsys, tiny_models, case):
    change, extra = STALE[case]
    _segment_once(tmp_path, monkeypatch, capsys, tiny_models)
    change(tmp_path)
    err = _segment_once(tmp_path, monkeypatch, capsys, tiny_models, "--skip-existing", *extra)
    assert any(line.startswith("wrote ") for line in _lines(err)), err
    meta = json.loads((tmp_path / "out" / "a_dseg.json").read_text())
    assert meta["input_sha256"] == _sha(tmp_path / "a.nii.gz")
    assert meta["outputs_sha256"]["dseg"] == _sha(tmp_path / "out" / "a_dseg.nii.gz")


def test_skip_existing_reruns_for_another_model(tmp_path, monkeypatch, capsys, tiny_models):
    from seqinv.models import SeqInvUNet

    other = tmp_path / "other"
    net = SeqInvUNet.from_pretrained(tiny_models["ixi"])
    for weight in net.parameters():
        weight.data.mul_(1.5)
    net.save_pretrained(other)
    _segment_once(tmp_path, monkeypatch, capsys, tiny_models)
    scan, out = tmp_path / "a.nii.gz", tmp_path / "out"
    code, err = run_cli(monkeypatch, capsys, "segment", scan, "-o", out, "--model", other, "--skip-existing")
    assert code == 0 and any(line.startswith("wrote ") for line in _lines(err)), err
    assert json.loads((out / "a_dseg.json").read_text())["model"]["location"] == str(other)


# ------------------------------------------------------------------------------------- clear messages
@pytest.mark.parametrize("command", list(MODELS))
def test_an_output_named_like_a_file_is_refused(tmp_path, monkeypatch, capsys, tiny_models, command):
    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    code, err = _run(monkeypatch, capsys, tiny_models, command, scan, "-o", tmp_path / "labels.mgz")
    assert_refused(code, err, "-o takes")
    assert not (tmp_path / "labels.mgz").exists()


def test_a_single_scan_says_what_it_wrote(tmp_path, monkeypatch, capsys, tiny_models):
    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", scan)
    assert code == 0, err
    (line,) = _lines(err)
    assert line.startswith(f"wrote {tmp_path / 'a_dseg.nii.gz'}") and " s: csf " in line and " mL" in line
    code, err = _run(monkeypatch, capsys, tiny_models, "denoise", scan, "--sigma", "5")
    assert code == 0 and _lines(err)[0].startswith(f"wrote {tmp_path / 'a_desc-denoised.nii.gz'}"), err


def test_failures_name_their_file(tmp_path, monkeypatch, capsys, tiny_models):
    small = save_nifti(tmp_path / "small.nii.gz", scan_data((7, 6, 5)))  # too few voxels for a noise estimate
    code, err = _run(monkeypatch, capsys, tiny_models, "denoise", small)
    assert_refused(code, err, f"{small}: cannot estimate the noise")
    good = save_nifti(tmp_path / "good.nii.gz", scan_data())
    code, err = _run(monkeypatch, capsys, tiny_models, "denoise", good, small, "-o", tmp_path / "out")
    assert code == 1
    assert f"error: {small}: cannot estimate" in err and f"  failed: {small}: cannot estimate" in err


# ----------------------------------------------------------------------------------------- full disk
def test_a_full_disk_while_writing_the_csv_is_one_error_line(tmp_path, monkeypatch, capsys, tiny_models):
    from seqinv.inference import batch

    scan = save_nifti(tmp_path / "a.nii.gz", scan_data())
    (tmp_path / "volumes.csv").write_text("input,dseg\nold,row\n")

    def full_disk(fh, text):
        fh.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(batch, "_write_text", full_disk)
    code, err = _run(monkeypatch, capsys, tiny_models, "segment", scan)
    assert code == 2 and "Traceback" not in err
    errors = [line for line in _lines(err) if line.startswith("error: ")]
    assert len(errors) == 1 and "volumes.csv" in errors[0] and "No space left" in errors[0], err
    assert (tmp_path / "a_dseg.nii.gz").is_file() and (tmp_path / "a_dseg.json").is_file()
    assert (tmp_path / "volumes.csv").read_text() == "input,dseg\nold,row\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
