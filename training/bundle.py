"""The release tool: bundle an exported model into the package as float16.

`python -m training.bundle EXPORT_DIR NAME` copies it into seqinv/weights/NAME/ and prints the sha256 for
its version's entry in seqinv/models/catalogue.py (then `push_to_hub` gives the commit to pin, and
CHANGELOG.md gets a line saying what the version changed).

Half-precision storage halves the wheel; the weights load back as float32. Before bundling, the float16
copy is run against the float32 original on a 64³ crop of the bundled example scan and the agreement is
printed (segmentation: share of voxels with the same label; otherwise the largest absolute difference).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from seqinv.errors import WeightsError
from seqinv.models import sources
from seqinv.models.catalogue import resolve
from seqinv.models.weights import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, file_sha256, read_config

EXAMPLE = Path(__file__).resolve().parents[1] / "seqinv" / "data" / "example_t1w.nii.gz"


def example_crop(size: int = 64):
    """A z-scored central crop of the bundled example scan, shape (1, 1, size, size, size)."""
    import nibabel as nib
    import torch

    data = nib.load(str(EXAMPLE)).get_fdata(dtype="float32")
    starts = [(n - size) // 2 for n in data.shape]
    crop = data[tuple(slice(s, s + size) for s in starts)]
    crop = (crop - crop.mean()) / (crop.std() + 1e-6)
    return torch.from_numpy(crop.copy())[None, None]


def compare(original, half, x) -> str:
    import torch

    args = (x, 0.2) if getattr(original.config, "arch", "") == "denoiser" else (x,)  # its noise-level input
    with torch.inference_mode():
        a, b = original(*args), half(*args)
    if getattr(original.config, "output_kind", "") == "segment":
        same = (a.argmax(1) == b.argmax(1)).float().mean().item()
        return f"float16 vs float32 labels agree on {100 * same:.3f} % of voxels"
    return f"float16 vs float32 max |difference| {float((a - b).abs().max()):.2e}"


def bundle(export_dir: str | Path, name: str) -> str:
    import torch

    from seqinv.models.factory import build_from_folder

    export_dir = Path(export_dir)
    original = build_from_folder(export_dir).eval()
    with tempfile.TemporaryDirectory() as tmp:
        original.save_pretrained(tmp, dtype=torch.float16)
        if (export_dir / "README.md").is_file():  # keep the card rendered by `seqinv train export`
            shutil.copyfile(export_dir / "README.md", Path(tmp) / "README.md")
        half = build_from_folder(Path(tmp)).eval()
        print(compare(original, half, example_crop()))
        return bundle_model(tmp, name)


def bundle_model(model_dir: str | Path, name: str, weights_root: str | Path | None = None) -> str:
    """Copy a saved model into `seqinv/weights/<name>/` (after a strict load) and return its sha256.

    Prints the sha256 of the weights and of config.json to put into the version's entry in
    seqinv/models/catalogue.py; until they are there, loading the bundled copy fails its hash check.
    """
    from seqinv.models.factory import build_from_folder

    entry = resolve(name)
    source = Path(model_dir)
    model = build_from_folder(source)
    wanted = ("unet", "denoiser") if entry.kind == "task" else ("encoder",)
    if model.config.arch not in wanted:
        raise WeightsError(
            f"model {name!r} must be a {' or '.join(wanted)} model, but {source} holds a {model.config.arch}"
        )
    target = Path(weights_root or sources.BUNDLED_ROOT) / sources.bundled_name(entry)
    target.mkdir(parents=True, exist_ok=True)
    for filename in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
        if (source / filename).is_file():
            shutil.copyfile(source / filename, target / filename)
    read_config(target)
    sha = file_sha256(target / WEIGHTS_NAME)
    config_sha = file_sha256(target / CONFIG_NAME)
    print(f"bundled {name} in {target} ({(target / WEIGHTS_NAME).stat().st_size / 1e6:.1f} MB)")
    print(
        f'set sha256 = "{sha}" and config_sha256 = "{config_sha}" in the catalogue entry of '
        f"{entry.name} (seqinv/models/catalogue.py)"
    )
    return sha


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m training.bundle EXPORT_DIR NAME")
    bundle(sys.argv[1], sys.argv[2])
