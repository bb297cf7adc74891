"""Read any scan into a float32 array with a voxel -> RAS+ mm affine; write results atomically.

NIfTI goes through nibabel (sform preferred, qform as fallback, scaling applied). NRRD, MHA/MHD and DICOM
series folders go through SimpleITK, whose LPS direction/origin are turned into a RAS affine.
Bad input raises `InputError` with one line naming the file, the problem and the fix; fixable oddities
(a few NaN voxels, thick slices, sform/qform disagreement) raise an `InputWarning` instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqinv.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES

#: Voxel sizes outside this range (mm) are treated as a broken header, not a real scan.
MIN_VOXEL_MM = 0.05
MAX_VOXEL_MM = 20.0
#: Slices thicker than this (mm) still work but lose detail after resampling to 1 mm.
THICK_SLICE_MM = 3.0
#: sform and qform further apart than this (mm, at any corner of the field of view) trigger a warning.
SFORM_QFORM_TOL_MM = 0.5

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class InputWarning(UserWarning):
    """A scan that is processed, but with a caveat the user should see."""


@dataclass
class Volume:
    """A 3D scan: `data` float32 (X, Y, Z) in voxel order, `affine` voxel -> RAS+ mm (4x4 float64).

    `header` is the nibabel NIfTI header for NIfTI inputs (kept so outputs preserve it), else None.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def voxel_mm(self) -> np.ndarray:
        return voxel_sizes(self.affine)

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths in mm: the norms of the affine's first three columns."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def volume_suffix(path: str | os.PathLike) -> str:
    """The file's volume suffix ('.nii.gz', '.nrrd', ...) or '' if it has none we know."""
    name = Path(path).name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def strip_suffix(path: str | os.PathLike) -> str:
    """File name without its volume suffix: 'sub-01_T1w.nii.gz' -> 'sub-01_T1w'."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else Path(name).stem


# ---------------------------------------------------------------------------------------------- reading
def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D scan (NIfTI, NRRD, MHA/MHD, or a DICOM series folder) as float32 + RAS affine.

    Raises `InputError` for missing/unreadable files, non-3D data, empty or all-NaN volumes and broken
    voxel sizes. A 4D file with a single volume is accepted.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        data, affine, header = _read_dicom_folder(path)
    elif volume_suffix(path) in NIFTI_SUFFIXES:
        data, affine, header = _read_nifti(path)
    else:
        data, affine, header = _read_sitk(path)
    data = _squeeze_to_3d(data, path)
    _check_affine(affine, path)
    data = _check_values(data, path)
    return Volume(data=data, affine=affine, header=header, path=path)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib/gzip errors)
        raise InputError(
            f"{path}: cannot read as NIfTI ({type(err).__name__}: {_first_line(err)}); "
            "the file is truncated, corrupt or not a NIfTI image"
        ) from None
    header = img.header
    affine = np.asarray(img.affine, dtype=np.float64)
    _warn_sform_qform(header, data.shape, path)
    return data, affine, header


def _warn_sform_qform(header: Any, shape: tuple[int, ...], path: Path) -> None:
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform is None or qform is None or not sform_code or not qform_code:
        return
    corners = np.array(
        [
            [i, j, k, 1]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1 if len(shape) > 2 else 0)
        ],
        dtype=float,
    ).T
    gap_mm = float(np.abs((sform - qform) @ corners)[:3].max())
    if gap_mm > SFORM_QFORM_TOL_MM:
        warnings.warn(
            f"{path.name}: sform and qform disagree by up to {gap_mm:.1f} mm; using the sform",
            InputWarning,
            stacklevel=3,
        )


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray, None]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except Exception as err:
        raise InputError(
            f"{path}: cannot read ({_first_line(err)}); expected NIfTI (.nii/.nii.gz), NRRD, MHA/MHD "
            "or a DICOM series folder"
        ) from None
    return _from_sitk(image, path)


def _read_dicom_folder(path: Path) -> tuple[np.ndarray, np.ndarray, None]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(f"{path}: folder holds no DICOM series; give a scan file or a DICOM series folder")
    files = {sid: reader.GetGDCMSeriesFileNames(str(path), sid) for sid in series}
    chosen = max(files, key=lambda sid: len(files[sid]))
    if len(series) > 1:
        warnings.warn(
            f"{path.name}: {len(series)} DICOM series in the folder; using the largest ({chosen})",
            InputWarning,
            stacklevel=3,
        )
    reader.SetFileNames(files[chosen])
    try:
        image = reader.Execute()
    except Exception as err:
        raise InputError(f"{path}: cannot read the DICOM series ({_first_line(err)})") from None
    return _from_sitk(image, path)


def _from_sitk(image: Any, path: Path) -> tuple[np.ndarray, np.ndarray, None]:
    """SimpleITK image -> (array in (i, j, k) order, RAS affine)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB image); "
            "expected one grey-level volume"
        )
    array = sitk.GetArrayFromImage(image)  # (t, z, y, x) or (z, y, x)
    data = np.asarray(array, dtype=np.float32).transpose(tuple(range(array.ndim))[::-1])
    dim = image.GetDimension()
    if dim < 3:
        return data, np.eye(4), None  # rejected as 2D by the caller
    direction = np.array(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    spacing = np.array(image.GetSpacing()[:3], dtype=float)
    origin = np.array(image.GetOrigin()[:3], dtype=float)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing
    affine_lps[:3, 3] = origin
    return data, LPS_TO_RAS @ affine_lps, None


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:  # 4D/5D with one volume
        data = data[..., 0]
    if data.ndim > 3:
        raise InputError(
            f"{path}: {data.ndim}D image of shape {data.shape} holds {int(np.prod(data.shape[3:]))} volumes; "
            "expected one 3D volume; split it first (e.g. `fslsplit` or nibabel's `image.slicer`)"
        )
    if data.ndim < 3 or min(data.shape) < 2:
        raise InputError(
            f"{path}: shape {data.shape} is a 2D image; expected a 3D volume with at least 2 voxels per axis"
        )
    return data


def _check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: the affine (voxel-to-world matrix) contains NaN or Inf; fix the header")
    sizes = voxel_sizes(affine)
    if sizes.min() < MIN_VOXEL_MM or sizes.max() > MAX_VOXEL_MM:
        raise InputError(
            f"{path}: voxel size {_fmt_mm(sizes)} mm is outside {MIN_VOXEL_MM:g}-{MAX_VOXEL_MM:g} mm; "
            "the header's pixdim/affine is broken; fix it (e.g. with `fslorient` or nibabel)"
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * sizes.prod():
        raise InputError(f"{path}: the affine is singular (axes not independent); fix the header")
    if sizes.max() > THICK_SLICE_MM:
        warnings.warn(
            f"{path.name}: voxel size {_fmt_mm(sizes)} mm; slices thicker than {THICK_SLICE_MM:g} mm "
            "lose detail when resampled to 1 mm",
            InputWarning,
            stacklevel=3,
        )


def _check_values(data: np.ndarray, path: Path) -> np.ndarray:
    finite = np.isfinite(data)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == data.size:
        raise InputError(f"{path}: every voxel is NaN or Inf; the image holds no data")
    if n_bad:
        background = float(data[finite].min())
        data = np.where(finite, data, background).astype(np.float32, copy=False)
        warnings.warn(
            f"{path.name}: {n_bad} NaN/Inf voxels ({100 * n_bad / data.size:.2g} %) set to background",
            InputWarning,
            stacklevel=3,
        )
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise InputError(f"{path}: every voxel equals {lo:g}; the image is empty")
    return np.ascontiguousarray(data, dtype=np.float32)


def _fmt_mm(sizes: np.ndarray) -> str:
    return "x".join(f"{s:.3g}" for s in sizes)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else "no details"


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's folder; on success it replaces `path` in one rename.

    On any error (or Ctrl-C) the temporary file is removed, so no half-written result is ever left.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{folder}: output folder does not exist; create it or choose another -o")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{folder}: output folder is not writable; choose another -o")
    suffix = volume_suffix(path) or path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _new_file_mode())  # mkstemp makes 0600; results get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    header: Any = None,
    dtype: Any = None,
    slope: float | None = None,
) -> Path:
    """Write a NIfTI volume atomically, keeping the input's header fields (codes, units, description).

    `dtype` is the on-disk type; `slope` stores data/slope as integers with scl_slope (e.g. uint8
    probabilities with slope 1/255).
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(data)
    dtype = np.dtype(dtype or data.dtype)
    if isinstance(header, nib.Nifti1Header):
        header = header.copy()
        sform_code = int(header["sform_code"]) or 2
        qform_code = int(header["qform_code"]) or 2
    else:
        header, sform_code, qform_code = None, 2, 2
    if slope is not None:
        data = np.round(data / slope)
    image = nib.Nifti1Image(data.astype(dtype, copy=False), affine, header=header)
    image.set_data_dtype(dtype)
    image.set_sform(affine, code=sform_code)
    image.set_qform(affine, code=qform_code)
    if np.abs(image.header.get_qform() - affine).max() > 1e-3:  # sheared: a qform cannot hold it
        image.set_qform(None, code=0)
    image.header.set_slope_inter(slope if slope is not None else 1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path
