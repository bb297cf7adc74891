"""Read any scan into a float32 array with a voxel -> RAS+ mm affine; write results atomically.

NIfTI, MGH/MGZ, MINC and nibabel's pair formats go through nibabel (sform preferred, qform as fallback,
scaling applied). NRRD, MHA/MHD and DICOM series folders go through SimpleITK, whose LPS direction/origin
are turned into a RAS affine. The header is checked before any voxel is read (`seqinv.guards`: not a
volume, which volume of a 4D file, broken voxel sizes, memory). Bad input raises `InputError` with one
line naming the file, the problem and the fix; fixable oddities (a few NaN voxels, thick slices,
sform/qform disagreement) raise an `InputWarning` instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqinv import guards
from seqinv.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Single-file formats nibabel reads (besides NIfTI); pairs (.hdr/.img, AFNI, PAR/REC) only when named.
NIBABEL_SUFFIXES = NIFTI_SUFFIXES + (".mgh", ".mgz", ".mnc")
NIBABEL_PAIR_SUFFIXES = (".hdr", ".img", ".img.gz", ".head", ".brik", ".brik.gz", ".par", ".rec")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
VOLUME_SUFFIXES = NIBABEL_SUFFIXES + SITK_SUFFIXES

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
    """The file's volume suffix ('.nii.gz', '.nrrd', '.brik.gz', ...) or '' if it has none we know."""
    name = Path(path).name.lower()
    for suffix in sorted(VOLUME_SUFFIXES + NIBABEL_PAIR_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def strip_suffix(path: str | os.PathLike) -> str:
    """File name without its volume suffix: 'sub-01_T1w.nii.gz' -> 'sub-01_T1w'."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else Path(name).stem


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class _Opened:
    """What a reader knows before the voxels are read (header shape, type, affine) and how to read them."""

    shape: tuple[int, ...]
    itemsize: int
    affine: np.ndarray | None
    header: Any
    load: Callable[[tuple | None], tuple[np.ndarray, np.ndarray]]  # volume index -> (data, affine)
    reads_all_volumes: bool = False  # True: `load` decodes every volume even when one is picked


def read_volume(path: str | os.PathLike, volume: int | None = None) -> Volume:
    """Read a 3D scan (NIfTI, MGH/MGZ, MINC, NRRD, MHA/MHD, or a DICOM series folder) as float32 + RAS affine.

    `volume` picks one volume (0-based) of a 4D input; a 4D file with a single volume needs none.
    Raises `InputError` for missing/unreadable files, files that are not volumes (surfaces, CIFTI,
    streamlines), non-3D data, broken voxel sizes or affines, volumes too large for memory (checked on
    the header, before reading; see `seqinv.guards`), and empty or all-NaN volumes.
    """
    path = Path(path)
    volume = guards.check_volume_option(volume)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    opened = _open(path)
    guards.check_dims(opened.shape, path)
    index = guards.pick_volume(opened.shape, volume, path)
    if opened.affine is not None:
        _check_affine(opened.affine, path)
    volumes = guards.volume_count(opened.shape) if opened.reads_all_volumes else 1
    if opened.affine is not None:
        guards.check_memory(path, opened.shape, opened.itemsize, opened.affine, volumes)
    data, affine = opened.load(index)
    data = _squeeze_to_3d(data, path)
    if opened.affine is None:
        _check_affine(affine, path)
    data = _check_values(data, path)
    return Volume(data=data, affine=affine, header=opened.header, path=path)


def _open(path: Path) -> _Opened:
    if path.is_dir():
        return _open_dicom_folder(path)
    what = guards.sniff_non_volume(path)
    if what:
        raise InputError(f"{path}: {what}, not a volume; {guards.VOLUME_HINT}")
    suffix = volume_suffix(path)
    if suffix in NIBABEL_SUFFIXES or path.name.lower().endswith(NIBABEL_PAIR_SUFFIXES):
        return _open_nibabel(path)
    if suffix in SITK_SUFFIXES:
        return _open_sitk(path)
    try:  # an unknown suffix: whichever library recognises the file
        return _open_sitk(path)
    except _NotRecognised:
        return _open_nibabel(path, fallback=True)


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs header fixes ("setting 0 dims to 1") to stderr; the guards report what matters."""
    import logging

    logger = logging.getLogger("nibabel.global")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _open_nibabel(path: Path, fallback: bool = False) -> _Opened:
    import nibabel as nib

    try:
        with _quiet_nibabel(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib/gzip errors)
        if fallback:
            raise InputError(f"{path}: not a format seqinv reads; {guards.VOLUME_HINT}") from None
        what = "cannot read as NIfTI" if volume_suffix(path) in NIFTI_SUFFIXES else "cannot read"
        raise _nibabel_error(path, err, what) from None
    guards.check_spatial_image(img, path)
    guards.check_raw_pixdim(img, path)
    shape = tuple(int(n) for n in img.shape)
    affine = np.asarray(img.affine, dtype=np.float64)
    header = img.header
    if isinstance(header, nib.Nifti1Header):
        _warn_sform_qform(header, shape, path)

    def load(index: tuple | None) -> tuple[np.ndarray, np.ndarray]:
        try:
            with _quiet_nibabel():
                data = np.asarray(img.dataobj[index] if index else img.dataobj, dtype=np.float32)
        except Exception as err:  # the header was fine, the voxels are not (truncated, bad compression)
            raise _nibabel_error(path, err, "cannot read the voxels") from None
        _check_gzip_files(img, path)
        return data, affine  # dataobj applies scl_slope / scl_inter

    itemsize = int(getattr(img.get_data_dtype(), "itemsize", 4) or 4)
    return _Opened(shape, itemsize, affine, header, load)


def _check_gzip_files(img: Any, path: Path) -> None:
    """Refuse gzipped files (the image's or its pair's data file) whose CRC, size or trailer is wrong:
    nibabel reads only the bytes it needs, so the stream's end is never checked otherwise."""
    for holder in img.file_map.values():
        name = getattr(holder, "filename", None)
        if not name or not os.path.isfile(name):
            continue
        problem = _gzip_problem(Path(name))
        if problem:
            raise InputError(
                f"{path}: the compressed data is damaged ({problem}); the file is truncated or corrupt; "
                "copy or export it again"
            )


_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _gzip_problem(path: Path) -> str | None:
    """Why a gzip file's stream is broken (bad CRC or size, no trailer), or None if it is sound or not gzip.

    Decompressed in chunks and thrown away: memory stays small whatever the file holds. Further members
    (`cat a.gz b.gz`) are checked too; other bytes after the last member are ignored, as gzip tools do.
    """
    import zlib

    with open(path, "rb") as fh:
        if fh.read(2) != _GZIP_MAGIC:
            return None
        fh.seek(0)
        stream, pending = zlib.decompressobj(31), b""
        while True:
            if len(pending) < len(_GZIP_MAGIC):  # also when a chunk ends inside the next member's magic
                pending += fh.read(_CHUNK)
            if not pending:
                break
            if stream.eof:  # one member done: another one, or trailing bytes
                if not pending.startswith(_GZIP_MAGIC):
                    return None
                stream = zlib.decompressobj(31)
            try:
                stream.decompress(pending, _CHUNK)  # checks the CRC-32 and size at the member's end
                while stream.unconsumed_tail and not stream.eof:
                    stream.decompress(stream.unconsumed_tail, _CHUNK)
            except zlib.error as err:
                return str(err).split(": ")[-1]
            pending = stream.unused_data if stream.eof else b""
        if not stream.eof:
            stream.flush()
    return None if stream.eof else "it ends before the gzip trailer"


def _nibabel_error(path: Path, err: BaseException, what: str) -> InputError:
    if isinstance(err, FileNotFoundError) and err.filename:
        return InputError(
            f"{path}: its data file {Path(err.filename).name} is missing; keep the header and data files "
            "of a pair (.hdr/.img, .PAR/.REC, .HEAD/.BRIK) together"
        )
    kind = "a NIfTI image" if volume_suffix(path) in NIFTI_SUFFIXES else "a volume image"
    return InputError(
        f"{path}: {what} ({type(err).__name__}: {_first_line(err)}); the file is truncated, corrupt or "
        f"not {kind}"
    )


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


@contextlib.contextmanager
def _quiet_stderr():
    """Hold back what C libraries (ITK, MINC) print to stderr while a file is tried; errors say it."""
    import sys

    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _sitk():
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return sitk


class _NotRecognised(InputError):
    """SimpleITK cannot read the file's header (another reader may)."""


def _open_sitk(path: Path) -> _Opened:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _quiet_stderr():
            reader.ReadImageInformation()
    except Exception as err:
        raise _NotRecognised(f"{path}: cannot read ({_itk_message(err)}); {guards.VOLUME_HINT}") from None
    _check_components(reader.GetNumberOfComponents(), path)
    shape = tuple(int(n) for n in reader.GetSize())
    affine = _sitk_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin(), len(shape))

    def load(index: tuple | None) -> tuple[np.ndarray, np.ndarray]:
        try:
            with _quiet_stderr():
                image = reader.Execute()
        except Exception as err:
            raise InputError(f"{path}: cannot read the voxels ({_itk_message(err)})") from None
        return _sitk_array(image, index), affine

    itemsize = _sitk_itemsize(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    return _Opened(shape, itemsize, affine if len(shape) >= 3 else None, None, load, True)


def _open_dicom_folder(path: Path) -> _Opened:
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    with _quiet_stderr():
        series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(f"{path}: folder holds no DICOM series; give a scan file or a DICOM series folder")
    files = {sid: reader.GetGDCMSeriesFileNames(str(path), sid) for sid in series}
    chosen = max(files, key=lambda sid: len(files[sid]))
    if len(series) > 1:
        warnings.warn(
            f"{path.name}: {len(series)} DICOM series in the folder; using the largest ({chosen})",
            InputWarning,
            stacklevel=4,
        )
    first = _open_sitk(Path(files[chosen][0]))
    slices = len(files[chosen])
    shape = (*first.shape[:2], slices) if slices > 1 else first.shape
    if first.affine is not None and len(shape) >= 3:  # one slice's geometry suffices for memory
        guards.check_memory(path, shape, first.itemsize, first.affine, guards.volume_count(shape))
    reader.SetFileNames(files[chosen])

    def load(index: tuple | None) -> tuple[np.ndarray, np.ndarray]:
        try:
            with _quiet_stderr():
                image = reader.Execute()
        except Exception as err:
            raise InputError(f"{path}: cannot read the DICOM series ({_itk_message(err)})") from None
        _check_components(image.GetNumberOfComponentsPerPixel(), path)
        dim = image.GetDimension()
        affine = _sitk_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin(), dim)
        return _sitk_array(image, index), affine

    # the series affine (slice spacing, order) is known only once it is read
    return _Opened(shape, first.itemsize, None, None, load, True)


def _check_components(count: int, path: Path) -> None:
    if count > 1:
        raise InputError(
            f"{path}: {count} values per voxel (vector/RGB image); expected one grey-level volume"
        )


def _sitk_affine(direction, spacing, origin, dim: int) -> np.ndarray:
    """ITK's LPS direction/spacing/origin -> voxel -> RAS affine (identity for 2D, refused later)."""
    if dim < 3:
        return np.eye(4)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.array(direction, dtype=float).reshape(dim, dim)[:3, :3] * np.array(spacing[:3])
    affine_lps[:3, 3] = np.array(origin[:3], dtype=float)
    return LPS_TO_RAS @ affine_lps


def _sitk_array(image: Any, index: tuple | None) -> np.ndarray:
    """SimpleITK image -> float32 array in (i, j, k[, t]) order, the `index` volume only when given."""
    sitk = _sitk()
    array = sitk.GetArrayFromImage(image)  # (t, z, y, x) or (z, y, x); a copy: `image` is freed after
    array = array.transpose(tuple(range(array.ndim))[::-1])
    if index is not None:
        array = array[index]
    return np.asarray(array, dtype=np.float32)


def _sitk_itemsize(pixel_type: str) -> int:
    for bits in (8, 16, 32, 64):
        if f"{bits}-bit" in pixel_type:
            return bits // 8
    return 8


def _itk_message(err: BaseException) -> str:
    """The useful part of an ITK exception (after 'ITK ERROR:'), without C++ source paths."""
    text = " ".join(str(err).split())
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1].split(":", 1)[-1].strip()
    elif "Exception thrown" in text:
        text = "format not recognised"
    return text[:200] or "no details"


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:  # 4D/5D with one volume
        data = data[..., 0]
    guards.check_dims(data.shape, path)
    if data.ndim > 3:
        guards.pick_volume(data.shape, None, path)  # raises: several volumes and none picked
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
    tmp = _new_temporary(folder, f".{path.name}.", f".tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _new_temporary(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file with the mode `open()` gives (0o666 less the umask, which the kernel applies:
    reading the umask would mean setting it, process state that threads share), unlike mkstemp's 0600."""
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise InputError(f"{folder}: could not create a temporary file; choose another -o")


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
