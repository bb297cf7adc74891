"""Issue 32, items 3-5: one options object per job, no process state changed, a model owns its prediction."""

import dataclasses
import os
import threading
import types

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from seqinv.errors import ParameterError
from seqinv.inference import (
    DenoiseOptions,
    SegmentJob,
    SegmentOptions,
    denoise,
    denoise_volume,
    embed_volume,
    segment,
    segment_files,
    segment_volume,
)
from seqinv.inference import predictions as pr
from seqinv.inference.batch import run_cases
from seqinv.inference.runtime import is_prepared, torch_threads
from seqinv.inference.sliding import InferenceSettings
from seqinv.inference.transaction import WriteTransaction, backup_path
from seqinv.io import Volume, write_volume


def _scan(path, seed=0):
    rng = np.random.default_rng(seed)
    data = np.zeros((28, 30, 24), np.float32) + rng.random((28, 30, 24)).astype(np.float32)
    data[4:-4, 4:-4, 3:-3] += 100 + 20 * rng.random((20, 22, 18)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.2, 1.0])), path)
    return path


def _tiny_unet(**overrides):
    from seqinv.models import ModelConfig, SeqInvUNet

    values = {"task": "segment", "task_name": "ixi", "out_channels": 4, "patch_size": (32, 32, 32)}
    values["labels"] = ["background", "csf", "gm", "wm"]
    return SeqInvUNet(ModelConfig.from_preset("tiny", arch="unet", **{**values, **overrides}))


def _state(model):
    """What a run could change: each module's mode, each tensor's device, layout and values."""
    modes = [m.training for m in model.modules()]
    tensors = [(t.device, t.stride(), t.detach().clone()) for t in (*model.parameters(), *model.buffers())]
    return modes, tensors


def _same_state(a, b):
    assert a[0] == b[0]
    for (device_a, stride_a, value_a), (device_b, stride_b, value_b) in zip(a[1], b[1], strict=True):
        assert device_a == device_b and stride_a == stride_b
        assert torch.equal(value_a, value_b)


# ------------------------------------------------------------------------------------------ options
def test_options_are_checked_once_when_made_with_the_messages_users_know():
    with pytest.raises(ParameterError, match="--grid 'coarse' is not one of input, model"):
        SegmentOptions(grid="coarse")
    with pytest.raises(ParameterError, match="unknown task 'brats' for segment; expected one of ixi, arc"):
        SegmentOptions(task="brats")
    with pytest.raises(ParameterError, match="--sigma 0.0 must be > 0"):
        DenoiseOptions(sigma=0.0)
    with pytest.raises(ParameterError, match="--passes 3 is not one of 1, 2, 4, 8"):
        DenoiseOptions(passes=3)
    with pytest.raises(ParameterError, match="--fast and --tta contradict each other"):
        SegmentOptions.build(fast=True, tta=True)
    with pytest.raises(ParameterError, match="overlap 1.5 must be in"):
        SegmentOptions.build(overlap=1.5)
    with pytest.raises(TypeError, match="unknown option: colour"):
        SegmentOptions.build(colour="red")
    options = SegmentOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.grid = "model"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.settings.overlap = 0.1


def test_keywords_build_on_an_options_object_and_fast_means_what_the_cli_says():
    base = SegmentOptions(task="arc", probs=True, settings={"threads": 2})
    built = SegmentOptions.build(base, grid="model", refine=False, overlap=0.4)
    assert (built.task, built.probs, built.grid, built.refine) == ("arc", True, "model", False)
    assert built.settings.overlap == 0.4 and built.settings.threads == 2
    assert SegmentOptions.build(fast=True).settings.overlap == 0.25
    assert SegmentOptions.build(fast=True, overlap=0.1).settings.overlap == 0.1
    fast = DenoiseOptions.build(fast=True)
    assert fast.passes == 1 and fast.settings.overlap == 0.25 and not fast.settings.tta
    assert DenoiseOptions.build(fast=True, passes=4).passes == 4
    recorded = SegmentOptions().recorded()  # as sidecars written before the options object record it
    assert recorded == {
        "task": "ixi",
        "input_volume": None,
        "grid": "input",
        "head_mask": None,
        "refine": None,
        "brain_mask_model": None,
        "overlap": 0.5,
        "tta": False,
    }


def test_the_api_reaches_every_option_of_the_cli(tmp_path):
    folder = tmp_path / "seg"
    _tiny_unet(name="seg").save_pretrained(folder)
    scan = _scan(tmp_path / "a.nii.gz")
    volume = Volume(nib.load(scan).get_fdata(dtype=np.float32), nib.load(scan).affine)
    settings = InferenceSettings(overlap=0.25, precision="fp32", threads=1)
    for options in (
        {"head_mask": False, "refine": False, "grid": "input"},
        {"head_mask": True, "refine": True, "grid": "model"},
    ):
        api = segment(scan, model=folder, probs=True, overlap=0.25, precision="fp32", threads=1, **options)
        from seqinv.models import SeqInvUNet

        direct = segment_volume(volume, SeqInvUNet.from_pretrained(folder), settings, probs=True, **options)
        assert api.grid == options["grid"] and (api.refinement is None) is (not options["refine"])
        np.testing.assert_array_equal(api.labels, direct.labels)
        np.testing.assert_allclose(api.probs, direct.probs, atol=1e-6)
        np.testing.assert_allclose(api.affine, direct.affine)
    fast = segment(scan, model=folder, options=SegmentOptions(grid="model"), fast=True, precision="fp32")
    assert fast.grid == "model" and fast.info.settings["overlap"] == 0.25


def test_the_denoise_api_takes_passes_the_stage_and_fast(tmp_path):
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config

    ResidualDenoiser(denoiser_config((4, 4), name="tiny")).save_pretrained(tmp_path / "d")
    scan = _scan(tmp_path / "a.nii.gz")
    assert denoise(scan, model=tmp_path / "d", sigma=5.0, fast=True).info.settings["passes"] == 1
    result = denoise(scan, model=tmp_path / "d", sigma=5.0, passes=4, nonlocal_stage=True)
    assert result.info.settings["passes"] == 4 and result.nonlocal_stage["search"] == 2


# ------------------------------------------------------------------------------------------ no hidden state
class _ThreadsSeen(nn.Module):
    """A segmenter that records torch's thread count while it runs (in the class: runs use a copy)."""

    seen: set = set()

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(
            patch_size=(16, 16, 16),
            spacing_mm=(1.0, 1.0, 1.0),
            normalization={"type": "percentile_zscore", "lower": 0.5, "upper": 99.5, "zscore": None},
            labels=["background", "lesion"],
            task="segment",
            task_name="arc",
            training={},
        )
        self.conv = nn.Conv3d(1, 2, 1)
        self.seen.clear()

    def forward(self, x):
        self.seen.add(torch.get_num_threads())
        return self.conv(x)


def test_thread_count_is_scoped_to_the_call():
    torch.set_num_threads(1)
    net = _ThreadsSeen()
    volume = Volume(np.random.default_rng(0).random((20, 18, 16)).astype(np.float32), np.eye(4))
    segment_volume(volume, net, InferenceSettings(threads=2))
    assert net.seen == {2} and torch.get_num_threads() == 1
    with pytest.raises(RuntimeError, match="stop"), torch_threads(3):
        assert torch.get_num_threads() == 3
        raise RuntimeError("stop")
    assert torch.get_num_threads() == 1


def test_the_callers_model_is_left_as_it_was():
    volume = Volume(np.random.default_rng(0).random((34, 32, 36)).astype(np.float32) + 1, np.eye(4))
    settings = InferenceSettings(overlap=0.0, precision="fp32")
    unet = _tiny_unet().freeze_encoder().train()  # mixed modes: the frozen encoder stays in eval
    before = _state(unet)
    segment_volume(volume, unet, settings)
    embed_volume(volume, unet, settings)
    _same_state(before, _state(unet))
    assert unet.training and not unet.encoder.training

    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config

    denoiser = ResidualDenoiser(denoiser_config((4, 4))).train()
    before = _state(denoiser)
    denoise_volume(volume, denoiser, settings, sigma=0.1)
    _same_state(before, _state(denoiser))
    assert all(m.training for m in denoiser.modules())  # batch norm stays in training mode


def test_a_prepared_model_is_used_as_it_is_and_one_loaded_for_the_job_in_place():
    net = _tiny_unet().eval().to(memory_format=torch.channels_last_3d)
    assert is_prepared(net, torch.device("cpu"))
    assert SegmentJob(net).net is net  # nothing to change: no copy
    fresh = _tiny_unet()
    assert SegmentJob(fresh).net is not fresh and fresh.training
    assert SegmentJob(fresh, owned=[fresh]).net is fresh and not fresh.training


def test_two_batches_in_threads_give_what_one_at_a_time_gives(tmp_path):
    net = _tiny_unet().eval()
    scans = [_scan(tmp_path / f"s{i}.nii.gz", seed=i) for i in range(3)]
    options = SegmentOptions(probs=True, settings={"precision": "fp32"})
    alone = segment_files(scans, tmp_path / "alone", model=net, options=options)
    errors = []

    def batch(folder):
        try:
            segment_files(scans, tmp_path / folder, model=net, options=options)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=batch, args=(f"t{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(alone.done) == 3
    for folder in ("t0", "t1"):
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "alone").iterdir())
        for scan in scans:
            name = scan.name.replace(".nii.gz", "_dseg.nii.gz")
            a, b = nib.load(tmp_path / "alone" / name), nib.load(tmp_path / folder / name)
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert not net.training


def test_a_failing_case_in_one_thread_leaves_another_threads_files(tmp_path):
    """Each case has its own transaction: one rolled back in a thread removes none of another's files
    (a module-level write log did: every open block logged every file)."""
    data = np.ones((4, 4, 4), np.float32)
    a_opened, b_written = threading.Event(), threading.Event()

    def failing(src, dst, writes):
        write_volume(writes.output(dst), data, np.eye(4))
        a_opened.set()
        b_written.wait(timeout=60)
        raise ParameterError("this case fails after the other thread wrote")

    def finishing(src, dst, writes):
        a_opened.wait(timeout=60)
        write_volume(writes.output(dst), data, np.eye(4))
        b_written.set()

    def run(process, name):
        run_cases(
            [tmp_path / f"{name}.in"] * 2,
            [tmp_path / f"{name}{i}.nii.gz" for i in range(2)],
            process,
            lambda s, d: False,
            name,
            report=False,
        )

    threads = [threading.Thread(target=run, args=(p, n)) for p, n in ((failing, "a"), (finishing, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0.nii.gz", "b1.nii.gz"]


# ------------------------------------------------------------------------------------------ transactions
def test_a_kept_file_not_yet_replaced_is_not_taken_for_a_replaced_one(tmp_path):
    """A run killed after keeping the sidecar but before writing it: the old sidecar does not vouch for
    the new labels, which are rolled back."""
    import hashlib

    from seqinv.inference.batch import recover_cases

    labels, meta = tmp_path / "a_dseg.nii.gz", tmp_path / "a_dseg.json"
    labels.write_text("old labels")
    meta.write_text(f'{{"outputs_sha256": {{"dseg": "{hashlib.sha256(b"old labels").hexdigest()}"}}}}')
    writes = WriteTransaction()
    writes.output(labels)
    labels.unlink()
    labels.write_text("new labels")  # written (a new file; the kept one is the old)
    writes.output(meta)  # kept; killed before the new sidecar was written
    recover_cases([[labels, meta]])
    assert labels.read_text() == "old labels" and not backup_path(labels).exists()
    assert not backup_path(meta).exists() and meta.is_file()


# ------------------------------------------------------------------------------------------ predictions
def test_each_model_class_names_how_it_predicts():
    from seqinv.models import SeqInvEncoder
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config

    assert isinstance(pr.prediction_of(ResidualDenoiser(denoiser_config((4, 4)))), pr.NativeGrid)
    assert isinstance(pr.prediction_of(_tiny_unet()), pr.SlidingWindow)
    assert isinstance(pr.prediction_of(SeqInvEncoder()), pr.SlidingWindow)
    assert isinstance(pr.prediction_of(nn.Identity()), pr.SlidingWindow)  # none named: windows


def test_a_new_kind_of_model_brings_its_own_prediction_without_touching_core():
    class Halve(pr.Prediction):
        name = "test_halve"

        def denoise_stage(self, config, options):
            return None

        def denoise(self, volume, net, options, stage, runtime):
            from seqinv.inference.results import DenoiseResult, RunInfo

            info = RunInfo("cpu", "fp32", runtime.settings.to_dict(), {})
            return DenoiseResult(volume.data / 2, 1.0, "given", 1.0, None, info)

    class HalvingModel(nn.Module):
        PREDICTION = "test_halve"
        config = types.SimpleNamespace(name="halving")

    volume = Volume(np.full((8, 8, 8), 4.0, np.float32), np.eye(4))
    with pytest.raises(ParameterError, match="halving predicts by 'test_halve', not one of"):
        denoise_volume(volume, HalvingModel())
    pr.register(Halve())
    try:
        np.testing.assert_array_equal(denoise_volume(volume, HalvingModel()).image, 2.0)
        with pytest.raises(ParameterError, match="halving does not segment"):
            segment_volume(volume, HalvingModel())
    finally:
        del pr.PREDICTIONS["test_halve"]


def test_a_rolled_back_case_restores_an_output_that_was_a_link(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("old")
    link = tmp_path / "a_dseg.json"
    link.symlink_to(target)
    with pytest.raises(KeyboardInterrupt), WriteTransaction() as writes:
        writes.output(link).with_name("tmp").write_text("new")
        os.replace(tmp_path / "tmp", link)
        raise KeyboardInterrupt
    assert link.is_symlink() and link.read_text() == "old" and not backup_path(link).exists()
