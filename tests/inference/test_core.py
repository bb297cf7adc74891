"""Sliding window vs MONAI and vs a whole-volume forward, orientation equivariance, denoise and embed."""

import types

import nibabel.orientations as nio
import numpy as np
import pytest
import torch
from torch import nn

from seqinv.inference.core import denoise_volume, embed_volume, estimate_noise_sigma, segment_volume
from seqinv.inference.sliding import InferenceSettings, sliding_window
from seqinv.io import Volume

NORMALIZATION = {"type": "percentile_zscore", "lower": 0.5, "upper": 99.5, "zscore": None}  # [0, 1] input
INTENSITY = {0: 0.0, 1: 20.0, 2: 60.0, 3: 100.0}  # background, CSF, GM, WM


class IntensityClassifier(nn.Module):
    """Deterministic segmenter: 3x3x3 mean filter, then logits peaked at each class's scaled intensity."""

    def __init__(self, patch=(16, 16, 16), blur: int = 3):
        super().__init__()
        self.config = types.SimpleNamespace(
            patch_size=patch,
            spacing_mm=(1.0, 1.0, 1.0),
            normalization=NORMALIZATION,
            labels=["background", "csf", "gm", "wm"],
            task="segment",
            task_name="ixi",
            training={},
        )
        self.blur = nn.AvgPool3d(blur, stride=1, padding=blur // 2, count_include_pad=False)
        self.register_buffer("centres", torch.tensor([0.0, 0.2, 0.6, 1.0]).view(1, 4, 1, 1, 1))

    def forward(self, x):
        return -200.0 * (self.blur(x) - self.centres) ** 2


def shells(affine, shape):
    """Concentric shells defined in world mm (so any grid samples the same object): labels and image."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    radius = np.linalg.norm(world - np.array([18.0, 17.0, 16.0]), axis=-1)
    labels = np.select([radius < 6, radius < 10, radius < 13], [3, 2, 1], 0).astype(np.uint8)
    image = np.vectorize(INTENSITY.get)(labels).astype(np.float32)
    return labels, image


def _reorient(volume, codes):
    ornt = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), nio.axcodes2ornt(codes))
    moved = np.ascontiguousarray(nio.apply_orientation(volume.data, ornt))
    return Volume(moved, volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)), ornt


@pytest.mark.parametrize(
    ("shape", "overlap", "batch"),
    [((40, 35, 24), 0.5, 2), ((70, 33, 50), 0.25, 3), ((20, 50, 31), 0.6, 1), ((10, 12, 9), 0.5, 2)],
)
def test_sliding_window_equals_monai_on_the_same_model(shape, overlap, batch):
    from monai.inferers import sliding_window_inference

    from seqinv.models import ModelConfig, SeqInvUNet

    net = SeqInvUNet(ModelConfig.from_preset("tiny", arch="unet", task="segment", out_channels=3)).eval()
    image = torch.randn(1, 1, *shape)
    settings = InferenceSettings(overlap=overlap, sw_batch_size=batch, precision="fp32")
    ours = sliding_window(net, image, (32, 32, 32), settings, torch.device("cpu"), pad_value=0.0)
    with torch.no_grad():
        reference = sliding_window_inference(image, (32, 32, 32), 2, net, overlap=overlap, mode="gaussian")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_segmenting_does_not_import_monai(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, torch\n"
        "from seqinv.io import Volume\n"
        "from seqinv.inference import segment_volume\n"
        "from seqinv.models import ModelConfig, SeqInvUNet\n"
        "net = SeqInvUNet(ModelConfig.from_preset('tiny', arch='unet', task='segment', out_channels=4,"
        " patch_size=(32, 32, 32)))\n"
        "segment_volume(Volume(np.random.rand(20, 20, 20).astype('float32'), np.eye(4)), net)\n"
        "assert 'monai' not in sys.modules, 'monai was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("shape", [(40, 35, 24), (10, 12, 9)])  # larger and smaller than one window
def test_sliding_window_of_a_pointwise_model_equals_the_whole_volume_forward(shape):
    net = nn.Conv3d(1, 2, kernel_size=1).eval()
    image = torch.randn(1, 1, *shape)
    settings = InferenceSettings(overlap=0.25, precision="fp32")  # exact: no bf16 on AMX CPUs
    out = sliding_window(net, image, (16, 16, 16), settings, torch.device("cpu"))
    assert out.shape == (1, 2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(out, net(image), rtol=1e-5, atol=1e-5)


def test_tta_of_a_flip_symmetric_model_changes_nothing():
    net = IntensityClassifier()
    image = torch.rand(1, 1, 20, 18, 17)
    plain = sliding_window(net, image, (16, 16, 16), InferenceSettings(), torch.device("cpu"))
    tta = sliding_window(net, image, (16, 16, 16), InferenceSettings(tta=True), torch.device("cpu"))
    torch.testing.assert_close(tta, plain, rtol=1e-4, atol=1e-4)


def test_segmentation_is_orientation_equivariant_and_correct():
    affine = np.eye(4)
    truth, image = shells(affine, (36, 34, 32))
    reference = segment_volume(Volume(image, affine), IntensityClassifier())
    assert (reference.labels == truth).mean() > 0.97
    for codes in [("L", "P", "S"), ("L", "A", "S"), ("P", "I", "R"), ("I", "L", "P")]:
        volume, ornt = _reorient(Volume(image, affine), codes)
        labels = segment_volume(volume, IntensityClassifier()).labels
        assert labels.shape == volume.shape
        back = nio.apply_orientation(
            labels, nio.ornt_transform(nio.axcodes2ornt(codes), nio.axcodes2ornt("RAS"))
        )
        assert (back == reference.labels).mean() >= 0.999, codes


def test_refinement_sharpens_a_blurry_tissue_model_and_the_qc_shows_its_labels():
    affine = np.eye(4)
    truth, image = shells(affine, (36, 34, 32))
    image = image + np.random.default_rng(0).normal(0, 3, image.shape).astype(np.float32)
    blurry = IntensityClassifier(blur=7)  # thin shells smear into their neighbours
    plain = segment_volume(Volume(image, affine), blurry, refine=False)
    refined = segment_volume(Volume(image, affine), blurry)  # ixi: refined by default
    assert plain.refinement is None and refined.refinement["method"] == "em-gaussian-mixture-per-class"
    tissue = truth > 0
    assert (plain.labels == truth)[tissue].mean() < 0.95
    assert (refined.labels == truth)[tissue].mean() > 0.97
    np.testing.assert_array_equal(refined.labels > 0, plain.labels > 0)  # the brain is the network's
    np.testing.assert_array_equal(refined.model_labels, refined.labels[refined.record.crop])


def test_oblique_anisotropic_input_is_segmented_on_its_own_grid():
    angle = 0.35
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    ) @ np.diag([1.2, 0.9, 2.0])
    affine[:3, 3] = [2.0, -1.0, 4.0]
    truth, image = shells(affine, (32, 40, 18))
    result = segment_volume(Volume(image, affine), IntensityClassifier(), probs=True)
    assert result.record.resampled
    assert result.labels.shape == image.shape and result.probs.shape == (4, *image.shape)
    assert (result.labels == truth).mean() > 0.9
    np.testing.assert_allclose(result.probs.sum(axis=0), 1.0, atol=1e-4)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert result.volumes_ml["wm"] == pytest.approx((result.labels == 3).sum() * voxel_ml)


def test_noise_estimate_recovers_the_added_noise():
    rng = np.random.default_rng(0)
    i, j, k = np.mgrid[:48, :48, :48]
    smooth = (200 + 60 * np.sin(i / 7) * np.cos(j / 5) + k).astype(np.float32)
    assert estimate_noise_sigma(smooth + rng.normal(0, 8, smooth.shape).astype(np.float32)) == pytest.approx(
        8, rel=0.1
    )


class KnownNoise(nn.Module):
    """'Denoiser' that predicts a fixed fraction of its input as noise: output = input * (1 - f)."""

    def __init__(self, fraction):
        super().__init__()
        self.fraction = fraction
        self.config = types.SimpleNamespace(
            patch_size=(16, 16, 16),
            spacing_mm=(1.0, 1.0, 1.0),
            task="denoise",
            training={},
            normalization={"lower": 0.0, "upper": 100.0, "zscore": None, "clip": False},
        )

    def forward(self, x):
        return x * self.fraction


def test_denoise_maps_the_predicted_noise_back_to_input_units():
    rng = np.random.default_rng(0)
    data = (rng.random((20, 18, 16)) * 100 + 50).astype(np.float32)
    result = denoise_volume(Volume(data, np.diag([1.0, 1.0, 1.0, 1.0])), KnownNoise(0.1), sigma=3.0)
    # z = (x - min) / (max - min): predicted noise 0.1 z is 0.1 (x - min) in input units (gain cancels)
    np.testing.assert_allclose(result.image, data - 0.1 * (data - data.min()), rtol=1e-4, atol=1e-3)
    assert result.sigma == 3.0 and result.sigma_source == "given"


def test_embed_gives_pooled_and_dense_features_with_their_affine():
    from seqinv.models import ModelConfig, SeqInvEncoder

    encoder = SeqInvEncoder(ModelConfig.from_preset("tiny", patch_size=(32, 32, 32)))
    data = np.random.default_rng(0).random((32, 32, 32)).astype(np.float32) + 1
    result = embed_volume(Volume(data, np.eye(4)), encoder, InferenceSettings(overlap=0.0, precision="fp32"))
    assert result.dense.shape == (64, 2, 2, 2) and result.pooled.shape == (64,)
    np.testing.assert_allclose(result.pooled, result.dense.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(np.diag(result.dense_affine)[:3], 16.0)  # one feature voxel per 16 mm
    with torch.no_grad():
        direct = encoder.eval()(torch.from_numpy(_model_input(data)))
    np.testing.assert_allclose(result.pooled, direct[0].numpy(), rtol=1e-3, atol=1e-4)


def _model_input(data):
    from seqinv.preprocess import Preprocessor

    class Config:
        spacing_mm = (1.0, 1.0, 1.0)
        normalization = {"type": "percentile_zscore", "lower": 0.5, "upper": 99.5}

    tensor, _ = Preprocessor(Config(), crop=False).apply(Volume(data, np.eye(4)))
    return tensor.numpy()


def test_auto_precision_follows_cpu_bf16_support(monkeypatch):
    from seqinv.inference.sliding import resolve_precision
    from training.loop import resolve_precision as training_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for avx512_bf16, amx, wanted in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        # oneDNN says yes on plain AVX-512 too (it emulates bf16): only native bf16 or AMX count
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", cpu) == wanted
        assert training_precision("auto", "cpu") == wanted
    assert resolve_precision("fp32", cpu) == "fp32"


def test_tissue_labels_in_the_air_are_cleared_unless_asked_to_keep_them():
    affine = np.eye(4)
    truth, image = shells(affine, (36, 34, 32))
    image[1:5, 1:5, 1:5] = INTENSITY[2]  # a GM-bright island in the air, far from the head
    volume = Volume(image, affine)
    cleared = segment_volume(volume, IntensityClassifier())
    kept = segment_volume(volume, IntensityClassifier(), head_mask=False)
    assert (kept.labels[1:5, 1:5, 1:5] > 0).all()
    assert (cleared.labels[1:5, 1:5, 1:5] == 0).all()
    assert np.mean(cleared.labels[6:] == kept.labels[6:]) > 0.999  # the head is untouched
    assert (cleared.model_labels[1:5, 1:5, 1:5] == 0).all()  # the QC montage shows what was written


def test_head_region_fills_dark_csf_and_leaves_out_air_noise():
    from seqinv.preprocess import head_region

    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    _, image = shells(np.eye(4), shape)
    radius = np.linalg.norm(np.argwhere(np.ones(shape)) - [18, 17, 16], axis=1).reshape(shape)
    image[(radius >= 13) & (radius < 15)] = 60.0  # a bright scalp, apart from the brain (T1w-like)
    image[(image == INTENSITY[1])] = 2.0  # CSF darker than the noise threshold
    noisy = image + rng.random(image.shape).astype(np.float32) * 4.0
    noisy[1:4, 1:4, 1:4] += 60.0  # a bright speck in the air
    head = head_region(noisy)
    inside = (
        np.linalg.norm(np.argwhere(np.ones(image.shape)) - [18, 17, 16], axis=1).reshape(image.shape) < 12
    )
    assert head[inside].all()  # dark CSF shell filled
    assert not head[1:4, 1:4, 1:4].any()  # the speck is not the head


def test_lesion_models_keep_labels_anywhere():
    net = IntensityClassifier()
    net.config.labels, net.config.task_name = ["background", "lesion"], "arc"
    net.centres = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1)
    image = np.zeros((20, 20, 20), np.float32)
    image[1:6, 1:6, 1:6], image[11:18, 11:18, 11:18] = 100.0, 100.0  # >= 10 voxels a slice: not noise
    result = segment_volume(Volume(image, np.eye(4)), net)
    assert result.labels[3, 3, 3] == 1 and result.labels[14, 14, 14] == 1


def test_a_brain_model_keeps_lesion_calls_inside_the_brain():
    from seqinv.errors import ParameterError

    lesion = IntensityClassifier()
    lesion.config.labels, lesion.config.task_name = ["background", "lesion"], "arc"
    lesion.centres = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1)  # WM-bright voxels are "lesion"
    truth, image = shells(np.eye(4), (36, 34, 32))
    image[1:5, 1:5, 1:5] = INTENSITY[3]  # a WM-bright island in the air, far from the head
    volume = Volume(image, np.eye(4))
    unbounded = segment_volume(volume, lesion)
    bounded = segment_volume(volume, lesion, brain_model=IntensityClassifier())
    assert (unbounded.labels[2:4, 2:4, 2:4] == 1).all()  # its core (the 3³ blur softens its rim)
    assert (bounded.labels[1:5, 1:5, 1:5] == 0).all()
    core = truth == 3
    assert np.mean(bounded.labels[core] == 1) > 0.99  # the lesion inside the brain is kept
    assert bounded.volumes_ml["lesion"] < unbounded.volumes_ml["lesion"]
    with pytest.raises(ParameterError, match="is not a tissue \\(ixi\\) model"):
        segment_volume(volume, lesion, brain_model=lesion)


def test_keep_one_brain_drops_detached_tissue_and_fills_holes():
    from seqinv.inference.core import keep_one_brain

    probs = np.zeros((4, 30, 30, 30), np.float32)
    probs[0] = 1.0
    probs[:, 5:20, 5:20, 5:20] = [[[[0.0]]], [[[0.1]]], [[[0.2]]], [[[0.7]]]]  # WM brain
    probs[:, 11:14, 11:14, 11:14] = [[[[0.6]]], [[[0.3]]], [[[0.05]]], [[[0.05]]]]  # a hole inside it
    probs[:, 24:28, 24:28, 24:28] = [[[[0.1]]], [[[0.0]]], [[[0.9]]], [[[0.0]]]]  # detached "neck" GM
    keep_one_brain(probs)
    labels = np.argmax(probs, axis=0)
    assert (labels[24:28, 24:28, 24:28] == 0).all()  # the detached piece is background
    assert (labels[11:14, 11:14, 11:14] == 1).all()  # the hole takes the net's best tissue class, CSF
    assert (labels[5:20, 5:20, 5:20] > 0).all() and int((labels > 0).sum()) == 15**3
    np.testing.assert_allclose(probs.sum(0)[11:14, 11:14, 11:14], 1.0, rtol=1e-6)


def test_tasks_keep_one_brain_only_for_tissue():
    from seqinv.tasks import TASKS

    assert TASKS["ixi"].one_brain and not TASKS["arc"].one_brain
