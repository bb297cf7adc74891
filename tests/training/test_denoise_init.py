"""`seqinv train denoise --init`: a run starts from a trained denoiser of the same widths."""

import pytest
import torch

from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
from training.denoise_resnet import initial_weights, pinned


def test_init_copies_every_weight_and_refuses_other_widths(tmp_path):
    torch.manual_seed(0)
    trained = ResidualDenoiser(denoiser_config((4, 4)))
    for p in trained.parameters():
        torch.nn.init.normal_(p, std=0.2)
    trained.save_pretrained(tmp_path / "m", dtype=torch.float32)
    fresh = ResidualDenoiser(denoiser_config((4, 4)))
    initial_weights(fresh, str(tmp_path / "m"))
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(SystemExit, match="widths differ"):
        initial_weights(ResidualDenoiser(denoiser_config((4, 4, 4))), str(tmp_path / "m"))


def test_a_published_name_is_recorded_with_its_version(tmp_path):
    assert pinned("denoise@1.0") == "denoise@1.0"
    assert pinned("denoise").startswith("denoise@")
    assert pinned(str(tmp_path)) == str(tmp_path) and pinned("") == ""


def test_a_shallower_denoiser_is_deepened_into_the_same_function(tmp_path):
    torch.manual_seed(0)
    trained = ResidualDenoiser(denoiser_config((4,) * 4))
    for p in trained.parameters():
        torch.nn.init.normal_(p, std=0.3)
    trained.save_pretrained(tmp_path / "m", dtype=torch.float32)
    deeper = ResidualDenoiser(denoiser_config((4,) * 8))
    initial_weights(deeper, str(tmp_path / "m"))
    x = torch.rand(2, 1, 12, 10, 14)
    trained.eval(), deeper.eval()
    with torch.no_grad():
        torch.testing.assert_close(deeper(x, 0.1), trained(x, 0.1))
    # new pairs (body 2-3 and 4-5): the second's batch norm starts at zero, the first conv is He-initialised
    assert float(deeper.norms[3].weight.abs().sum()) == 0 and float(deeper.norms[5].weight.abs().sum()) == 0
    assert float(deeper.body[2].weight.abs().sum()) > 0
    torch.testing.assert_close(deeper.body[6].weight, trained.body[2].weight)  # the old last conv, moved
    with pytest.raises(SystemExit, match="cannot be deepened"):
        initial_weights(ResidualDenoiser(denoiser_config((4,) * 7)), str(tmp_path / "m"))
    with pytest.raises(SystemExit, match="cannot be deepened"):
        initial_weights(ResidualDenoiser(denoiser_config((8,) * 8)), str(tmp_path / "m"))
