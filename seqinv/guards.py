"""Checks made before a scan's voxels are read: is it a volume, which volume, does it fit in memory.

`seqinv.io.read_volume` calls these on what the header says, so a surface file, a broken voxel size, a
many-volume series or a scan too large for this machine is refused with one line before anything is
allocated. Every refusal is an `InputError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from seqinv.errors import InputError, ParameterError

#: Environment variable: the memory (GB, 1e9 bytes) one scan may use; default: the memory available now.
MEMORY_ENV = "SEQINV_MAX_MEMORY_GB"
#: Bytes a run needs whatever the scan: Python, torch, the model, one batch of windows. With the per-voxel
#: terms below: 1.02 GB estimated for the bundled example (197x228x178, int16) against a measured peak RSS
#: of 0.86 GB for `segment --probs` and 0.63 GB for `denoise` (lite models, fp32, 2 threads).
BASE_BYTES = 0.4e9
#: Working bytes per input voxel beyond its on-disk type: the float32 copy, labels, and class probabilities
#: mapped back to the input grid (segment --probs, 4 classes).
NATIVE_BYTES_PER_VOXEL = 24
#: Working bytes per voxel of the 1 mm model grid: grid, crop, normalised input, model output (4 classes),
#: sliding-window weights.
GRID_BYTES_PER_VOXEL = 48
#: NIfTI intent codes 3000-3099 are CIFTI-2 (grayordinates, parcels, connectivity), not volumes.
CIFTI_INTENTS = range(3000, 3100)
VOLUME_HINT = "give a 3D scan (NIfTI, MGH/MGZ, MINC, NRRD, MHA/MHD or a DICOM series folder)"


# ------------------------------------------------------------------------------------ not a volume at all
def check_spatial_image(img: Any, path: Path) -> None:
    """Refuse nibabel images that are not voxel grids: CIFTI-2, GIFTI, MGH surface overlays."""
    import nibabel as nib

    if isinstance(img, nib.Cifti2Image) or _intent_code(img) in CIFTI_INTENTS:
        raise InputError(
            f"{path}: CIFTI-2 file (data on surface vertices and grayordinates, shape {tuple(img.shape)}), "
            f"not a volume; {VOLUME_HINT}"
        )
    if isinstance(img, nib.GiftiImage):
        raise InputError(
            f"{path}: GIFTI surface file ({len(img.darrays)} data arrays on mesh vertices), not a volume; "
            f"{VOLUME_HINT}"
        )
    if not hasattr(img, "affine") or img.affine is None:
        raise InputError(f"{path}: {type(img).__name__} has no voxel-to-world affine; {VOLUME_HINT}")
    shape = tuple(int(n) for n in img.shape)
    if isinstance(img, nib.Minc1Image) and len(shape) > 3:  # Minc2Image too; nibabel puts time first
        raise InputError(
            f"{path}: 4D MINC image of shape {shape}; seqinv reads 3D MINC only; extract one volume "
            "first (e.g. `mincreshape -dimrange time=0,0`) or convert it to NIfTI"
        )
    if isinstance(img, nib.MGHImage) and len(shape) >= 3 and shape[0] > 1 and shape[1:3] == (1, 1):
        raise InputError(
            f"{path}: MGH/MGZ surface overlay ({shape[0]} vertices, shape {shape}), not a volume; "
            f"{VOLUME_HINT}"
        )


def _intent_code(img: Any) -> int | None:
    header = getattr(img, "header", None)
    try:
        return int(header["intent_code"])
    except (TypeError, KeyError, ValueError):
        return None


#: Leading bytes of files that are surely not volumes, and what they are.
_MAGIC = (
    (b"TRACK", "TrackVis streamlines (.trk)"),
    (b"mrtrix tracks", "MRtrix streamlines (.tck)"),
    (b"\xff\xff\xfe", "FreeSurfer surface mesh"),
    (b"\xff\xff\xff", "FreeSurfer curvature/overlay file"),
)


def sniff_non_volume(path: Path) -> str | None:
    """What the file is when its first bytes show it is no volume (surfaces, streamlines, DICOM without
    pixels), else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if b"<GIFTI" in head or path.name.lower().endswith((".gii", ".gii.gz", ".gii.bz2")):
        return "GIFTI surface file"
    if head[128:132] == b"DICM" and not _has_pixel_data(path):
        return "DICOM object without pixel data (a report, presentation state or raw data, not an image)"
    return None


def _has_pixel_data(path: Path) -> bool:
    """Does the DICOM file hold the Pixel Data element (7FE0,0010)? Little-endian tag bytes suffice."""
    with open(path, "rb") as fh:
        return b"\xe0\x7f\x10\x00" in fh.read()


# ------------------------------------------------------------------------------------------- voxel sizes
def check_raw_pixdim(img: Any, path: Path) -> None:
    """Refuse a zero, negative or NaN voxel size in a NIfTI/Analyze header whose affine is built from it.

    nibabel silently sets zero pixdim to 1 mm when it loads a header, which would make volumes in mL up,
    so the header is read again without its fixes.
    """
    import nibabel as nib

    header = getattr(img, "header", None)
    if not isinstance(header, nib.analyze.AnalyzeHeader):
        return
    if "sform_code" in header and int(header["sform_code"]) > 0:
        return  # the affine comes from the sform, not from pixdim
    raw = _raw_header(img, header)
    ndim = min(int(raw["dim"][0]), 3) if 0 < int(raw["dim"][0]) <= 7 else 3
    pixdim = np.asarray(raw["pixdim"][1 : 1 + ndim], dtype=float)
    if not (np.all(np.isfinite(pixdim)) and np.all(pixdim > 0)):
        shown = "x".join(f"{v:g}" for v in pixdim)
        raise InputError(
            f"{path}: the header's voxel size (pixdim) is {shown} mm and there is no sform; expected "
            "positive sizes in mm (read as 1 mm they would make every volume in mL wrong); fix the header "
            "(e.g. nibabel's header.set_zooms or `fslchpixdim`)"
        )


def _raw_header(img: Any, header: Any) -> Any:
    from nibabel.openers import ImageOpener

    holder = img.file_map.get("header") or img.file_map["image"]
    with ImageOpener(holder.filename or holder.fileobj) as fh:
        return type(header).from_fileobj(fh, check=False)


# --------------------------------------------------------------------------------------------- 4D inputs
def volume_count(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[3:])) if len(shape) > 3 else 1


def check_volume_option(volume: Any) -> int | None:
    if volume is None:
        return None
    if isinstance(volume, bool) or not isinstance(volume, (int, np.integer)) or volume < 0:
        raise ParameterError(f"--volume {volume!r}: expected an integer >= 0 (0 is the first volume)")
    return int(volume)


def pick_volume(shape: tuple[int, ...], volume: int | None, path: Path) -> tuple | None:
    """Index of the volume to read from a 4D/5D image (None: read all, the image holds one volume)."""
    count = volume_count(shape)
    if count == 1:
        if volume not in (None, 0):
            raise InputError(f"{path}: --volume {volume} asked for, but the scan holds a single volume")
        return None
    if volume is None:
        raise InputError(
            f"{path}: {len(shape)}D image of shape {shape} holds {count} volumes; pick one with "
            f"`--volume N` (0 to {count - 1}; Python: volume=N), or split it (e.g. `fslsplit`)"
        )
    if volume >= count:
        raise InputError(
            f"{path}: --volume {volume} is out of range; the scan holds {count} volumes (0 to {count - 1})"
        )
    return (slice(None),) * 3 + tuple(int(i) for i in np.unravel_index(volume, shape[3:]))


def check_dims(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) < 3 or min(shape[:3]) < 2:
        what = (
            "a single DICOM slice; give the folder of the whole series"
            if _is_dicom_file(path)
            else ("expected a 3D volume with at least 2 voxels per axis")
        )
        raise InputError(f"{path}: shape {tuple(shape)} is a 2D image; {what}")


def _is_dicom_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(".dcm")


# ------------------------------------------------------------------------------------------------ memory
def memory_limit_bytes() -> tuple[float, str]:
    """(bytes one scan may use, where that limit comes from)."""
    value = os.environ.get(MEMORY_ENV, "").strip()
    if value:
        try:
            limit_gb = float(value)
        except ValueError:
            limit_gb = -1.0
        if not limit_gb > 0:
            raise ParameterError(f"{MEMORY_ENV}={value!r}: expected a number of GB > 0")
        return limit_gb * 1e9, f"{MEMORY_ENV}={value}"
    available = available_memory_bytes()
    if available is None:
        return math.inf, "unknown available memory"
    return float(available), "the memory available now"


def available_memory_bytes() -> int | None:
    """Memory this process can still use: MemAvailable, bounded by a cgroup (container) limit."""
    available = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None:
        with contextlib.suppress(ImportError):
            import psutil

            available = int(psutil.virtual_memory().available)
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            room = int(limit) - used
            available = room if available is None else min(available, room)
    return available


def grid_shape_1mm(shape: tuple[int, ...], affine: np.ndarray) -> tuple[int, int, int]:
    """Shape of the axis-aligned 1 mm grid covering the input (what preprocessing resamples onto)."""
    corners = np.array(
        [[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)],
        dtype=float,
    ).T
    world = (np.asarray(affine, dtype=float) @ corners)[:3]
    extent = world.max(axis=1) - world.min(axis=1)
    return tuple(int(n) + 1 for n in np.floor(extent + 1e-6))


def needed_bytes(shape: tuple[int, ...], itemsize: int, affine: np.ndarray, volumes: int = 1) -> float:
    """Rough upper bound of the memory one segment/denoise/embed run needs for this scan."""
    native = float(np.prod(shape[:3], dtype=float))
    grid = float(np.prod(grid_shape_1mm(shape, affine), dtype=float))
    per_voxel = native * (volumes * (itemsize + 4) + NATIVE_BYTES_PER_VOXEL) + grid * GRID_BYTES_PER_VOXEL
    return BASE_BYTES + per_voxel


def check_memory(path: Path, shape: tuple[int, ...], itemsize: int, affine: np.ndarray, volumes: int = 1):
    """Refuse, before reading any voxel, a scan whose processing would not fit in memory."""
    need = needed_bytes(shape, itemsize, affine, volumes)
    limit, source = memory_limit_bytes()
    if need > limit:
        grid = "x".join(map(str, grid_shape_1mm(shape, affine)))
        dims = "x".join(map(str, shape[:3]))
        raise InputError(
            f"{path}: a {dims} volume (a {grid} grid at 1 mm) needs about {_gb(need)} to process, more than "
            f"the {_gb(limit)} limit ({source}); crop or downsample the scan, free memory, or raise the "
            f"limit with {MEMORY_ENV}"
        )


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3g} GB"
