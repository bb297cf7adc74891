"""Issue 31: no cache or checkpoint is unpickled. A file planted at a cache or checkpoint name runs nothing:
a cache entry is rebuilt, a checkpoint refused with one clear error."""

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seqinv.errors import InputError
from training import loop


class _Payload:
    """Unpickling this creates `marker`: what a planted file would do (a shell command, in the report)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker):
    torch.save({"model": _Payload(marker)}, path)  # torch's zip format, as a real checkpoint is


def _tiny_training():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, loop.poly_schedule(optimizer, 10)


# -------------------------------------------------------------------------------------------- phantoms
def _fake_phantom(seed, **_):
    from seqinv.physics import QMRIMaps

    gen = torch.Generator().manual_seed(seed)
    maps = QMRIMaps(*(torch.rand(4, 5, 6, generator=gen) for _ in range(4)), affine=np.diag([1.0, 2, 3, 1]))
    labels = np.arange(120, dtype=np.uint8).reshape(4, 5, 6) % 4
    return SimpleNamespace(maps=maps, labels=labels, lesion=labels == 3)


def _same_subject(a, b):
    for name in ("pd", "r1", "r2s", "mt"):
        assert torch.equal(getattr(a.maps, name), getattr(b.maps, name))
    np.testing.assert_array_equal(a.maps.affine, b.maps.affine)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.lesion, b.lesion)
    assert (a.name, a.contrast, a.site) == (b.name, b.contrast, b.site)


def test_a_planted_phantom_cache_entry_is_rebuilt_and_never_run(tmp_path, monkeypatch):
    from seqinv.physics import phantom
    from training.phantom_cache import load_phantom

    calls = []
    monkeypatch.setattr(phantom, "make_phantom", lambda seed, **kw: calls.append(seed) or _fake_phantom(seed))
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    first = load_phantom(1001, lesion=True, cache_dir=cache)
    _same_subject(load_phantom(1001, lesion=True, cache_dir=cache), first)
    assert calls == [1001]  # the second one came from the cache
    entries = [p for p in cache.iterdir() if p.is_file()]
    assert entries
    for entry in entries:
        _plant(entry, marker)
    _same_subject(load_phantom(1001, lesion=True, cache_dir=cache), first)
    assert not marker.exists() and calls == [1001, 1001]  # refused, rebuilt
    _same_subject(load_phantom(1001, lesion=True, cache_dir=cache), first)
    assert calls == [1001, 1001]  # and cached again


# ----------------------------------------------------------------------------------------- checkpoints
def test_a_planted_checkpoint_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    _plant(tmp_path / "step_0000009.pt", marker)
    with pytest.raises(InputError, match="cannot read checkpoint .*step_0000009.pt") as info:
        loop.load_checkpoint(tmp_path / "step_0000009.pt", *_tiny_training())
    assert not marker.exists() and "\n" not in str(info.value)


def test_checkpoints_hold_plain_data_and_restore_every_random_state(tmp_path):
    model, optimizer, scheduler = _tiny_training()
    path = loop.save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {"options": {"lr": 1e-3}})
    torch.load(path, weights_only=True)  # no allowlist needed: tensors, numbers, strings, containers
    expected = (np.random.rand(3), torch.rand(3), random.random())
    state = loop.load_checkpoint(path, *_tiny_training())
    assert state["step"] == 3 and state["options"] == {"lr": 1e-3}
    again = (np.random.rand(3), torch.rand(3), random.random())
    np.testing.assert_array_equal(again[0], expected[0])
    assert torch.equal(again[1], expected[1]) and again[2] == expected[2]


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    """Before issue 31 the numpy RNG state was saved as a numpy array (runs in progress write those)."""
    model, optimizer, scheduler = _tiny_training()
    path = loop.save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {})
    state = torch.load(path, weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # the earlier format
    torch.save(state, path)
    expected = np.random.rand(4)
    restored = loop.load_checkpoint(path, *_tiny_training())
    np.testing.assert_array_equal(np.random.rand(4), expected)
    assert restored["step"] == 5


def test_a_checkpoint_with_other_numpy_objects_is_refused(tmp_path):
    """The allowance for earlier checkpoints covers the RNG's uint32 key only."""
    model, optimizer, scheduler = _tiny_training()
    path = loop.save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {})
    state = torch.load(path, weights_only=True)
    state["extra"] = np.array([1, "x"], dtype=object)
    torch.save(state, path)
    with pytest.raises(InputError, match="cannot read checkpoint"):
        loop.load_checkpoint(path, *_tiny_training())


def test_export_refuses_a_planted_checkpoint(tmp_path):
    from training.export import export

    marker = tmp_path / "marker"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    _plant(tmp_path / "run" / "checkpoints" / "step_0000003.pt", marker)
    with pytest.raises(InputError, match="cannot read checkpoint"):
        export(tmp_path / "run", tmp_path / "hub")
    assert not marker.exists() and not (tmp_path / "hub").exists()


# ------------------------------------------------------------------------------------- denoise_resnet
def _tiny_denoise(monkeypatch, steps):
    from training import denoise_resnet

    axis = torch.linspace(-1, 1, 24)
    blob = (1.0 - sum(g**2 for g in torch.meshgrid(axis, axis, axis, indexing="ij"))).clamp(min=0)
    monkeypatch.setattr(denoise_resnet, "phantom_images", lambda seeds, contrasts, seed: [blob])
    clean = blob[4:20, 4:20, 4:20]
    case = ("blob/0/gaussian-0.05", clean + 0.05 * torch.randn(clean.shape), clean, 0.05)
    monkeypatch.setattr(denoise_resnet, "validation_set", lambda: [case])
    return denoise_resnet, denoise_resnet.Recipe(
        phantoms=1, contrasts_per_phantom=1, icbm152=False, patch_size=16, batch_size=2, steps=steps,
        widths=(4, 4), validate_every=1, checkpoint_every=1,
    )  # fmt: skip


def test_denoise_resnet_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    denoise_resnet, recipe = _tiny_denoise(monkeypatch, steps=1)
    denoise_resnet.train(recipe, tmp_path)
    recipe.steps = 2
    denoise_resnet.train(recipe, tmp_path)  # resumes at step 1
    logged = [line for line in (tmp_path / "log.jsonl").read_text().splitlines() if line]
    assert [json.loads(line)["step"] for line in logged] == [1, 2]
    torch.load(tmp_path / "checkpoints" / "step_0000002.pt", weights_only=True)  # the common loop's
    torch.load(tmp_path / "best.pt", weights_only=True)


def test_denoise_resnet_refuses_planted_checkpoints(tmp_path, monkeypatch):
    denoise_resnet, recipe = _tiny_denoise(monkeypatch, steps=1)
    marker = tmp_path / "marker"
    (tmp_path / "checkpoints").mkdir()
    _plant(tmp_path / "checkpoints" / "step_0000001.pt", marker)
    with pytest.raises(InputError, match="checkpoint .*step_0000001.pt: .*; remove it to start over"):
        denoise_resnet.train(recipe, tmp_path)
    _plant(tmp_path / "best.pt", marker)
    with pytest.raises(InputError, match="cannot read checkpoint .*best.pt"):
        denoise_resnet.export(tmp_path / "best.pt", tmp_path / "model", "test")
    assert not marker.exists()
