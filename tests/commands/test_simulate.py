"""`seqinv simulate`: outputs, sidecars, affine, replay, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seqinv.cli import app
from seqinv.errors import SeqInvError
from seqinv.physics import QMRIMaps, sequence_from_dict, simulate

AFFINE = np.array([[-1.0, 0, 0, 30], [0, 1.2, 0, -40], [0, 0, 1.5, -20], [0, 0, 0, 1]])


@pytest.fixture()
def maps_dir(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    rng = np.random.default_rng(0)
    typical = {"PD": (60, 100), "R1": (0.25, 1.2), "R2s": (2, 25), "MT": (0.1, 2.0)}
    for name, (low, high) in typical.items():
        data = rng.uniform(low, high, (7, 6, 5)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, AFFINE), str(folder / f"{name}.nii.gz"))
    return folder


def run_cli(*args):
    """The real entry point in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "seqinv", "simulate", *map(str, args)], capture_output=True, text=True
    )
    return proc.returncode, proc.stdout, proc.stderr


def reference_image(folder, record):
    arrays = {
        k: nib.load(str(folder / f"{k}.nii.gz")).get_fdata(dtype=np.float32)
        for k in ("PD", "R1", "R2s", "MT")
    }
    maps = QMRIMaps(arrays["PD"], arrays["R1"], arrays["R2s"], arrays["MT"], affine=AFFINE)
    return simulate(maps, sequence_from_dict(record)).numpy()


def test_single_sequence_writes_image_sidecar_and_keeps_affine(maps_dir, tmp_path):
    out = tmp_path / "t2w.nii.gz"
    result = CliRunner().invoke(
        app, ["simulate", str(maps_dir), "--sequence", "fse", "--tr", "4", "--te", "0.09", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    image = nib.load(str(out))
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-5)
    sidecar = json.loads((tmp_path / "t2w.json").read_text())
    assert sidecar["sequence"] == {"sequence": "fse", "tr_s": 4.0, "te_s": 0.09}
    assert sidecar["receive"] == 1.0
    np.testing.assert_allclose(image.get_fdata(), reference_image(maps_dir, sidecar["sequence"]), rtol=1e-5)


def test_random_protocols_replay_from_their_sidecars(maps_dir, tmp_path):
    out = tmp_path / "random"
    result = CliRunner().invoke(
        app, ["simulate", str(maps_dir), "--random", "4", "--seed", "3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    images = sorted(out.glob("sim_*.nii.gz"))
    assert len(images) == 4 and len(list(out.glob("sim_*.json"))) == 4
    for path in images:
        record = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())["sequence"]
        assert path.name.endswith(f"_{record['sequence']}.nii.gz")
        np.testing.assert_allclose(
            nib.load(str(path)).get_fdata(), reference_image(maps_dir, record), rtol=1e-4, atol=1e-6
        )


def test_mp2rage_set_and_ti_options(maps_dir, tmp_path):
    out = tmp_path / "uni.nii.gz"
    args = ["simulate", str(maps_dir), "-s", "mp2rage", "--ti", "0.8", "--set", "ti2_s=2.6", "-o", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    record = json.loads((tmp_path / "uni.json").read_text())["sequence"]
    assert record["ti1_s"] == 0.8 and record["ti2_s"] == 2.6
    assert np.abs(nib.load(str(out)).get_fdata()).max() <= 0.5


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sequence", "dwi"], "unknown sequence 'dwi'"),
        (["--sequence", "flair", "--tr", "2", "--ti", "2.5"], "ti_s=2.5 s must be shorter than tr_s=2 s"),
        (["--sequence", "fse", "--tr", "3000"], "tr_s=3000.0 is outside the valid range (0, 100] s"),
        (
            ["--sequence", "gre", "--flip", "200"],
            "flip_deg=200.0 is outside the valid range (0, 180] degrees",
        ),
        (["--sequence", "fse", "--ti", "1"], "--ti does not apply to fse"),
        (["--sequence", "mprage", "--set", "n_exc"], "expected KEY=NUMBER"),
    ],
)
def test_bad_parameters_raise_one_line_user_error_and_write_nothing(maps_dir, tmp_path, args, needle):
    out = tmp_path / "bad.nii.gz"
    result = CliRunner().invoke(app, ["simulate", str(maps_dir), *args, "-o", str(out)])
    assert isinstance(result.exception, SeqInvError), result.output  # main() turns it into exit code 2
    assert needle in str(result.exception) and "\n" not in str(result.exception)
    assert list(tmp_path.glob("bad*")) == []


def test_real_entry_point_exits_2_with_one_line_and_no_output(maps_dir, tmp_path):
    (maps_dir / "MT.nii.gz").unlink()
    out = tmp_path / "o.nii.gz"
    code, _, stderr = run_cli(maps_dir, "--sequence", "fse", "-o", out)
    assert code == 2 and stderr.startswith("error: ") and "missing the MT map" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and not out.exists()
    result = CliRunner().invoke(app, ["simulate", "--sequence", "fse", "-o", str(out)])
    assert isinstance(result.exception, SeqInvError) and "give either MAPS_DIR or --phantom" in str(
        result.exception
    )


@pytest.mark.slow
def test_phantom_is_a_whole_head_from_the_bundled_label_map(tmp_path):
    from seqinv.physics.anatomy import BUNDLED_HEAD

    out = tmp_path / "head"
    result = CliRunner().invoke(
        app,
        ["simulate", "--phantom", "--sequence", "fse", "--contrast", "physics", "-o", str(out / "t2.nii.gz")],
    )
    assert result.exit_code == 0, result.output
    image, labels = nib.load(str(out / "t2.nii.gz")), nib.load(str(out / "phantom_labels.nii.gz"))
    assert image.shape == labels.shape and np.allclose(image.header.get_zooms(), 1.0)
    source = nib.load(str(BUNDLED_HEAD))
    extent = np.asarray(source.shape) * np.asarray(source.header.get_zooms())
    assert image.shape[2] >= 0.8 * extent.max()  # head, face and neck: most of the 256 mm field of view
    assert set(np.unique(np.asarray(labels.dataobj)).tolist()) == {0, 1, 2, 3}
    sidecar = json.loads((out / "t2.json").read_text())
    assert sidecar["source"]["label_map"] == "bundled"


@pytest.mark.slow
def test_phantom_random_outputs(tmp_path):
    out = tmp_path / "phantom"
    result = CliRunner().invoke(
        app, ["simulate", "--phantom", "--label-map", "icbm", "--random", "1", "--seed", "1", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    images = sorted(out.glob("sim_*.nii.gz"))
    assert len(images) == 1
    image = nib.load(str(images[0]))
    assert image.shape == (197, 233, 189)
    np.testing.assert_allclose(image.affine[:3, 3], [-98, -134, -72])
    sidecar = json.loads(images[0].with_name(images[0].name.replace(".nii.gz", ".json")).read_text())
    assert (
        sidecar["source"] == {"phantom_seed": 1} and torch.isfinite(torch.from_numpy(image.get_fdata())).all()
    )
