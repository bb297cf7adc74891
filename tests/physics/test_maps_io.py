"""Reading qMRI folders: names, units, and clear errors for bad maps."""

import nibabel as nib
import numpy as np
import pytest

from seqinv.errors import InputError
from seqinv.physics.maps_io import load_maps

AFFINE = np.array([[0, 0, 1.5, -10], [-1.2, 0, 0, 20], [0, 1.0, 0, -5], [0, 0, 0, 1]], dtype=float)


def six_nans(data):
    data = data.copy()
    data.flat[:6] = np.nan
    return data


TYPICAL = {"PD": 70.0, "R1": 1.0, "R2s": 20.0, "MT": 1.5, "R2": 13.0}


def write_maps(folder, names=None, shape=(6, 7, 5), affine=AFFINE, scale=None, edit=None):
    """Write maps with values around `TYPICAL` (a gradient, so medians are typical); returns the arrays."""
    names = names or {k: f"{k}.nii.gz" for k in ("PD", "R1", "R2s", "MT")}
    ramp = np.linspace(0.8, 1.2, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    arrays = {}
    for key, name in names.items():
        data = ramp * TYPICAL[key] * (scale or {}).get(key, 1.0)
        if edit and key in edit:
            data = edit[key](data)
        arrays[key] = data
        nib.save(nib.Nifti1Image(data, affine), str(folder / name))
    return arrays


def test_plain_names_load_with_affine_and_values(tmp_path):
    arrays = write_maps(tmp_path, names={k: f"{k}.nii.gz" for k in TYPICAL})
    maps = load_maps(tmp_path)
    assert maps.shape == (6, 7, 5)
    np.testing.assert_allclose(maps.affine, AFFINE)
    np.testing.assert_allclose(maps.r1.numpy(), arrays["R1"])
    np.testing.assert_allclose(maps.r2.numpy(), arrays["R2"])
    np.testing.assert_allclose(maps.mt.numpy(), arrays["MT"])


def test_hmri_toolbox_names(tmp_path):
    names = {"PD": "s01_PD.nii", "R1": "s01_R1.nii.gz", "R2s": "s01_R2s_OLS.nii.gz", "MT": "s01_MTsat.nii"}
    arrays = write_maps(tmp_path, names=names)
    (tmp_path / "notes.txt").write_text("ignored")
    maps = load_maps(tmp_path)
    assert maps.r2 is None
    np.testing.assert_allclose(maps.pd.numpy(), arrays["PD"])
    np.testing.assert_allclose(maps.r2s.numpy(), arrays["R2s"])


def test_r1_in_per_ms_is_converted(tmp_path):
    arrays = write_maps(tmp_path, scale={"R1": 1e-3})
    maps = load_maps(tmp_path)
    np.testing.assert_allclose(maps.r1.numpy(), arrays["R1"] * 1000, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"names": {"PD": "PD.nii", "R1": "R1.nii", "R2s": "R2s.nii"}}, "missing the MT map"),
        (
            {"scale": {"R1": 50.0}},
            "R1 map median 50 (non-zero voxels) is outside the plausible range [0.1, 5] 1/s",
        ),
        ({"scale": {"PD": 0.01}}, "PD map median 0.7 (non-zero voxels) is outside the plausible range"),
        ({"edit": {"R2s": six_nans}}, "R2S map has 6 NaN/Inf voxels"),
        ({"edit": {"MT": lambda d: d - 1.7}}, "negative voxels"),
    ],
)
def test_bad_maps_raise_one_clear_line(tmp_path, kwargs, needle):
    write_maps(tmp_path, **kwargs)
    with pytest.raises(InputError) as info:
        load_maps(tmp_path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_clean_replaces_nan_and_negative(tmp_path):
    write_maps(tmp_path, edit={"R2s": six_nans, "MT": lambda d: d - 1.7})
    maps = load_maps(tmp_path, clean=True)
    assert int((maps.r2s == 0).sum()) == 6 and float(maps.mt.min()) == 0.0


def test_mismatched_shape_and_affine(tmp_path):
    write_maps(tmp_path)
    nib.save(nib.Nifti1Image(np.ones((6, 7, 4), np.float32), AFFINE), str(tmp_path / "MT.nii.gz"))
    with pytest.raises(InputError, match=r"MT.nii.gz: shape \(6, 7, 4\) differs from"):
        load_maps(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.full((6, 7, 5), 1.5, np.float32), shifted), str(tmp_path / "MT.nii.gz"))
    with pytest.raises(InputError, match=r"affine differs from PD.nii.gz \(max difference 2 mm\)"):
        load_maps(tmp_path)


def test_ambiguous_and_missing_folder(tmp_path):
    write_maps(tmp_path)
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.float32), AFFINE), str(tmp_path / "sub_PD.nii"))
    with pytest.raises(InputError, match="several files look like the PD map"):
        load_maps(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        load_maps(tmp_path / "nope")
