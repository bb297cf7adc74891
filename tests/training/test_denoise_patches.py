"""`training.denoise_resnet` patches: the template-like smoothing and the precision check."""

import pytest
import torch

from training.denoise_resnet import clean_patch, train
from training.options import DenoiseResnetRecipe


def _roughness(x: torch.Tensor) -> float:
    return float(sum((x.diff(dim=a) ** 2).mean() for a in range(3)))


def test_smoothed_patches_keep_the_crop_and_lose_their_fine_detail():
    torch.manual_seed(0)
    volume = torch.rand(40, 40, 40).to(torch.float16) + 0.5
    sharp = DenoiseResnetRecipe(patch_size=24, thick_prob=0.0)
    smooth = DenoiseResnetRecipe(patch_size=24, thick_prob=0.0, smooth_prob=1.0, smooth_sigma=(1.0, 1.0))
    a = clean_patch(volume, sharp, torch.Generator().manual_seed(3))
    b = clean_patch(volume, smooth, torch.Generator().manual_seed(3))
    assert a.shape == b.shape == (24, 24, 24)
    assert abs(float(a.mean()) - float(b.mean())) < 0.01  # the same crop, blurred
    assert _roughness(b) < 0.2 * _roughness(a)


def test_an_unknown_precision_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="precision 'fp16'"):
        train(DenoiseResnetRecipe(precision="fp16"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_recalibrated_norms_are_the_even_average_over_the_batches():
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
    from training.denoise_resnet import recalibrate_norms

    torch.manual_seed(0)
    net = ResidualDenoiser(denoiser_config((4, 4, 4)))
    r = DenoiseResnetRecipe(patch_size=16, batch_size=2, thick_prob=0.0)
    images = [torch.rand(24, 24, 24).to(torch.float16) + 0.5]
    seen = []
    hook = net.norms[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].mean(dim=(0, 2, 3, 4))))
    recalibrate_norms(net, images, r, batches=3, seed=4)
    hook.remove()
    assert len(seen) == 3 and not net.training
    torch.testing.assert_close(net.norms[0].running_mean, torch.stack(seen).mean(0))
    assert net.norms[0].momentum == 0.1  # restored for later training
