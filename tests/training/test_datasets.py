"""IXI-style and BIDS ARC folders: read through seqinv.io, brought to 1 mm RAS, labels aligned, trainable."""

import nibabel as nib
import numpy as np
import pytest

# LPS voxel axes at 1.2 mm: voxel i grows towards patient Left (-x), j towards Posterior (-y)
LPS_12MM = np.array([[-1.2, 0, 0, 20.0], [0, -1.2, 0, 15.0], [0, 0, 1.2, -10.0], [0, 0, 0, 1]], dtype=float)
SHAPE = (20, 22, 18)
CUBE = (slice(3, 9), slice(12, 18), slice(5, 11))  # off-centre so a missed flip moves it


def _save(path, data, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _head(seed):
    """A dim head block with a bright cube; the label map marks the cube GM, the rest of the head WM."""
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, np.float32)
    image[2:18, 2:20, 2:16] = 0.3
    image[CUBE] = 1.0
    image += 0.01 * rng.random(SHAPE, dtype=np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:18, 2:20, 2:16] = 3
    labels[CUBE] = 2
    return image, labels


def _cube_centre_ras(affine=LPS_12MM):
    centre = [(s.start + s.stop - 1) / 2 for s in CUBE]
    return (affine @ [*centre, 1.0])[:3]


@pytest.fixture
def ixi_folder(tmp_path):
    folder = tmp_path / "ixi"
    for n, ident in enumerate(("IXI002-Guys-0828", "IXI012-HH-1211")):
        image, labels = _head(n)
        _save(folder / "images" / f"{ident}-T1.nii.gz", image, LPS_12MM)
        _save(folder / "labels" / f"{ident}.nii.gz", labels, LPS_12MM)
    return folder


@pytest.fixture
def arc_folder(tmp_path):
    folder = tmp_path / "arc"
    image, labels = _head(0)
    anat = folder / "sub-M2001" / "ses-1253" / "anat"
    _save(anat / "sub-M2001_ses-1253_T1w.nii.gz", image, LPS_12MM)
    # FLAIR on another grid (RAS, 1 mm): the mask must follow it through scanner coordinates
    flair_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    flair_affine[:3, 3] = (LPS_12MM @ [SHAPE[0] - 1, SHAPE[1] - 1, 0, 1])[:3]
    flair = np.zeros((24, 26, 22), np.float32)
    lo = np.rint(np.linalg.inv(flair_affine) @ [*_cube_centre_ras(), 1])[:3].astype(int) - 3
    flair[lo[0] : lo[0] + 7, lo[1] : lo[1] + 7, lo[2] : lo[2] + 7] = 1.0
    _save(anat / "sub-M2001_ses-1253_FLAIR.nii.gz", flair + 0.2, flair_affine)
    mask = (labels == 2).astype(np.uint8)
    masks = folder / "derivatives" / "lesion_masks" / "sub-M2001" / "ses-1253" / "anat"
    _save(masks / "sub-M2001_ses-1253_desc-lesion_mask.nii.gz", mask, LPS_12MM)
    return folder


def _bright_centre(image):
    return np.argwhere(image > 0.6).mean(0)


def test_reader_returns_ras_1mm_grids(ixi_folder):
    from training.datasets import read_ras_1mm

    image, record = read_ras_1mm(ixi_folder / "images" / "IXI002-Guys-0828-T1.nii.gz")
    assert np.allclose(np.diag(record.grid_affine)[:3], 1.0)  # RAS+ axes, 1 mm
    assert np.allclose(record.grid_affine[:3, :3], np.eye(3))
    assert image.shape == tuple(np.floor(np.array(SHAPE[:3]) * 1.2 - 1.2 + 1e-6).astype(int) + 1)
    # the bright cube is where the scanner says it is (within one 1 mm voxel)
    centre_ras = (record.grid_affine @ [*_bright_centre(image), 1.0])[:3]
    assert np.allclose(centre_ras, _cube_centre_ras(), atol=1.0)


def test_ixi_labels_land_on_the_images_bright_cube(ixi_folder):
    from training.task_ops import load_folder

    subjects = load_folder(ixi_folder, "ixi")
    assert [(s.name, s.site, s.contrast) for s in subjects] == [
        ("IXI002-Guys-0828", "Guys", "T1w"),
        ("IXI012-HH-1211", "HH", "T1w"),
    ]
    for s in subjects:
        image, labels = s.image.numpy(), s.labels.numpy()
        assert image.shape == labels.shape and labels.dtype == np.uint8
        assert set(np.unique(labels)) == {0, 2, 3}  # nearest neighbour: no blended classes
        cube = labels == 2
        assert np.allclose(np.argwhere(cube).mean(0), _bright_centre(image), atol=0.6)
        assert image[cube].mean() > 0.9 and image[labels == 3].mean() < 0.4


def test_arc_mask_follows_each_contrast_through_scanner_space(arc_folder):
    from training.task_ops import load_folder

    subjects = load_folder(arc_folder, "arc")
    assert sorted(s.contrast for s in subjects) == ["FLAIR", "T1w"]
    for s in subjects:
        lesion = s.lesion.numpy()
        assert lesion.shape == s.image.shape and set(np.unique(lesion)) == {0, 1}
        assert np.allclose(np.argwhere(lesion == 1).mean(0), _bright_centre(s.image.numpy()), atol=1.0)


def test_mask_outside_the_image_is_a_clear_error(arc_folder):
    from seqinv.errors import InputError
    from training.task_ops import load_folder

    path = next((arc_folder / "derivatives").rglob("*mask.nii.gz"))
    far = LPS_12MM.copy()
    far[:3, 3] += 500.0
    _save(path, nib.load(str(path)).get_fdata().astype(np.uint8), far)
    with pytest.raises(InputError, match="does not overlap"):
        load_folder(arc_folder, "arc")


@pytest.mark.parametrize(("task", "fixture"), [("ixi", "ixi_folder"), ("arc", "arc_folder")])
def test_segment_fine_tunes_on_disk_folders(task, fixture, tmp_path, request):
    from seqinv.models import ModelConfig, SeqInvEncoder, SeqInvUNet
    from training.finetune import FinetuneOptions, run_finetune

    config = ModelConfig.from_preset("tiny", arch="encoder", task="features", patch_size=(32,) * 3)
    SeqInvEncoder(config).save_pretrained(tmp_path / "enc")
    opts = FinetuneOptions(
        output=str(tmp_path / task),
        encoder=str(tmp_path / "enc"),
        task=task,
        data=str(request.getfixturevalue(fixture)),
        patch_size=32,
        batch_size=2,
        steps=2,
        threads=1,
    )
    result = run_finetune(opts, show_progress=False)
    model = SeqInvUNet.from_pretrained(result["output"])
    assert model.config.out_channels == (4 if task == "ixi" else 2)
