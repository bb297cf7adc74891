"""Training pipeline on tiny synthetic qMRI subjects: views, fine-tuning patches, loops, exact resume, CLI."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from training.augment import AugmentConfig, spatial_transforms
from training.crops import crop_pad
from training.patches import NoiseConfig, PatchMaker
from training.phantom_cache import training_seeds
from training.pools import label_fraction
from training.subjects import Subject, sample_seed
from training.views import ViewMaker


def sphere_subject(name="s0", size=40, lesion=False) -> Subject:
    from seqinv.physics import QMRIMaps

    z = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    r = ((z - size / 2) ** 2).sum(0).sqrt() / (size / 2)
    labels = torch.zeros((size,) * 3, dtype=torch.uint8)
    labels[r < 0.95], labels[r < 0.8], labels[r < 0.55] = 1, 2, 3
    lab = labels.long()
    maps = QMRIMaps(
        pd=torch.tensor([0.0, 98, 80, 69])[lab],
        r1=torch.tensor([0.0, 0.25, 0.6, 1.0])[lab],
        r2s=torch.tensor([0.0, 3, 16, 21])[lab],
        mt=torch.tensor([0.0, 0.1, 0.8, 1.6])[lab],
    )
    les = ((r < 0.4) & (z[0] > size / 2)).to(torch.uint8) if lesion else None
    return Subject(name=name, maps=maps, labels=labels, lesion=les)


def test_rotation_range_is_degrees_converted_to_radians():
    affine = spatial_transforms(AugmentConfig(rotate_deg=15.0), 32, ("image",))[0]
    assert affine.rand_affine.rand_affine_grid.rotate_range == pytest.approx([math.radians(15)] * 3)


@pytest.mark.parametrize(("strategy", "same_sequence"), [("base", True), ("seqaug", True), ("seqinv", False)])
def test_strategies_draw_the_documented_sequences(strategy, same_sequence):
    pair = ViewMaker(strategy, 32).pair(sphere_subject(), seed=5)
    seq1, seq2 = json.loads(pair["sequences"])
    assert (seq1 == seq2) is same_sequence
    if strategy == "base":
        assert seq1["sequence"] == "mprage"
    assert pair["view1"].shape == pair["target1"].shape == (1, 32, 32, 32)
    assert abs(float(pair["view1"].mean())) < 1e-4 and float(pair["view1"].std()) == pytest.approx(
        1, abs=1e-3
    )


def test_target_is_the_view_before_intensity_augmentation():
    pair = ViewMaker("seqinv", 32, AugmentConfig.none()).pair(sphere_subject(), seed=1)
    target = pair["target1"]
    assert float(target.min()) >= 0 and float(target.max()) <= 1
    expected = (target - target.mean()) / target.std()
    torch.testing.assert_close(pair["view1"], expected, atol=1e-5, rtol=1e-5)


def test_samples_are_a_function_of_the_seed():
    maker = ViewMaker("seqinv", 32)
    a, b, c = (maker.pair(sphere_subject(), s) for s in (3, 3, 4))
    assert torch.equal(a["view1"], b["view1"]) and not torch.equal(a["view1"], c["view1"])


def test_segment_patches_keep_labels_aligned_with_anatomy():
    sample = PatchMaker("ixi", 32, AugmentConfig.none()).sample(sphere_subject(), seed=2)
    image, label = sample["image"][0], sample["label"][0]
    assert set(label.unique().tolist()) <= {0, 1, 2, 3} and label.dtype == torch.long
    # Without augmentation the image is piecewise constant per tissue class up to the smooth receive field,
    # so the labels explain most of the image's variance (a misaligned label map would not).
    within = sum(float(((image[label == c] - image[label == c].mean()) ** 2).sum()) for c in label.unique())
    assert 1 - within / float(((image - image.mean()) ** 2).sum()) > 0.8


def test_arc_patches_are_centred_on_the_lesion_when_focused():
    maker = PatchMaker("arc", 32, AugmentConfig.none(), lesion_focus=1.0)
    sample = maker.sample(sphere_subject(size=64, lesion=True), seed=0)
    assert int(sample["label"].sum()) > 0


def test_lesion_prior_shift_is_the_logit_gap_between_volumes_and_crops():
    from training.finetune import lesion_prior_shift, shift_lesion_logit

    subject = sphere_subject(size=20)
    subject.lesion = torch.zeros(20, 20, 20, dtype=torch.uint8)
    subject.lesion.view(-1)[:80] = 1  # 1 % of the volume
    crops = torch.zeros(1, 10, 10, 10, dtype=torch.long)
    crops.view(-1)[:100] = 1  # 10 % of every training crop

    class Maker:
        def sample(self, subject, seed):
            return {"label": crops}

    # logit(0.01) - logit(0.10), worked by hand
    assert lesion_prior_shift([subject], Maker(), seed=0, samples=3) == pytest.approx(
        -4.59512 + 2.19722, abs=1e-4
    )
    from seqinv.models import SeqInvUNet

    net = SeqInvUNet(preset="tiny", out_channels=2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    before = net(x)
    shift_lesion_logit(net, -2.4)
    after = net(x)
    assert torch.allclose(after[:, 1] - before[:, 1], torch.tensor(-2.4), atol=1e-5)
    assert torch.equal(after[:, 0], before[:, 0])


def test_focused_crops_contain_a_tiny_lesion():
    from training.crops import crop_start

    mask = torch.zeros(96, 96, 96, dtype=torch.bool)
    mask[70:73, 10:13, 50:53] = True  # 27 voxels: 512 random tries miss it ~98 % of the time
    for seed in range(20):
        start = crop_start(mask.shape, 32, torch.Generator().manual_seed(seed), focus=mask)
        assert bool(crop_pad(mask.float(), start, 32).any())
    assert crop_start(mask.shape, 32, torch.Generator(), focus=torch.zeros_like(mask)) is not None


def test_denoise_pairs_are_noisy_minus_clean_over_the_sigma_range():
    maker = PatchMaker("denoise", 32, AugmentConfig.none(), NoiseConfig(0.1, 0.1, rician_prob=0.0))
    sample = maker.sample(sphere_subject(), seed=0)
    torch.testing.assert_close(sample["image"] - sample["clean"], sample["noise"])
    assert float(sample["noise"].std()) == pytest.approx(0.1, rel=0.05)


def test_crop_pad_zero_fills_outside_the_volume():
    v = torch.arange(27.0).reshape(3, 3, 3)
    out = crop_pad(v, [-1, 0, 1], 3)
    assert torch.equal(out[0], torch.zeros(3, 3)) and torch.equal(out[1, :, :2], v[0, :, 1:])


def test_label_fraction_counts_subjects_not_images():
    subjects = [Subject(name=f"sub{i}") for i in range(10) for _ in ("T1w", "T2w")]
    kept = label_fraction(subjects, 10)
    assert len({s.name for s in kept}) == 1 and len(kept) == 2
    assert len(label_fraction(subjects, 1)) == 2  # at least one subject
    from seqinv.errors import ParameterError

    with pytest.raises(ParameterError, match="--label-fraction 0"):
        label_fraction(subjects, 0)


def test_training_seeds_skip_the_held_out_phantom():
    from seqinv.physics.phantom import HELD_OUT_SEED

    seeds = training_seeds(5, first=HELD_OUT_SEED - 2)
    assert HELD_OUT_SEED not in seeds and len(seeds) == 5


def _fit_fixed_batch(pooling: str, steps: int = 16) -> list[float]:
    from seqinv.models import SeqInvEncoder
    from training.pretrain import PretrainNet, pretrain_loss

    torch.manual_seed(0)
    maker = ViewMaker("seqinv", 32)
    pairs = [maker.pair(sphere_subject(), s) for s in range(3)]
    batch = torch.utils.data.default_collate(pairs)
    net = PretrainNet(SeqInvEncoder(preset="tiny", dropout=0.0, pooling=pooling))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ntxent = []
    for _ in range(steps):
        loss, logs = pretrain_loss(net, batch, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ntxent.append(logs["ntxent"])
    return ntxent


def test_max_pooled_features_learn_the_contrastive_task_on_a_fixed_batch():
    # 3 pairs: chance is ln(5). Mean pooling also fits one fixed batch at this lr (docs/training.md), so the
    # evidence against it is the training runs, not this test.
    ntxent = _fit_fixed_batch("max")
    assert ntxent[0] > 0.95 * math.log(5) and ntxent[-1] < 0.5 * math.log(5)


def _tiny_options(tmp_path, **kw):
    from training.pretrain import PretrainOptions

    values = dict(
        output=str(tmp_path / "run"),
        phantom=True,
        preset="tiny",
        patch_size=32,
        batch_size=2,
        steps=4,
        checkpoint_every=2,
        threads=1,
        precision="fp32",  # bf16 autocast (auto on CPUs with avx512_bf16) does not repeat to 1e-6
    )
    values.update(kw)
    return PretrainOptions(**values)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, monkeypatch):
    from seqinv.models import SeqInvEncoder
    from training import pretrain

    monkeypatch.setattr(pretrain, "build_subjects", lambda opts: ([sphere_subject()], "spheres"))
    full = pretrain.run_pretrain(_tiny_options(tmp_path), show_progress=False)["history"]["loss"]
    (tmp_path / "run" / "checkpoints" / "step_0000004.pt").unlink()
    resumed = pretrain.run_pretrain(_tiny_options(tmp_path, resume=True), show_progress=False)
    assert resumed["history"]["loss"] == pytest.approx(full, rel=1e-6)
    encoder = SeqInvEncoder.from_pretrained(str(tmp_path / "run"))
    record = encoder.config.training
    assert (
        record["strategy"] == "seqinv" and record["steps"] == 4 and encoder.config.patch_size == (32, 32, 32)
    )


def test_config_file_sets_options_and_the_command_line_wins(tmp_path):
    from training.options import build_options, command_line
    from training.pretrain import PretrainOptions

    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\nstrategy = "base"\npatch-size = 96\nsteps = 7\n')
    opts = build_options(PretrainOptions, str(cfg), {"steps": 9, "preset": "paper"}, {"steps"}, {})
    assert (opts.strategy, opts.patch_size, opts.steps, opts.preset) == ("base", 96, 9, "small")
    assert command_line("pretrain", opts) == "seqinv train pretrain --strategy base --patch-size 96 --steps 9"
    from seqinv.errors import ParameterError

    cfg.write_text("[train]\nbatchsize = 2\n")
    with pytest.raises(ParameterError, match="unknown options \\['batchsize'\\]"):
        build_options(PretrainOptions, str(cfg), {}, set(), {})


def test_published_recipes_are_valid_and_end_in_the_published_command():
    import json
    from pathlib import Path

    import tomllib

    from training.recipe import plan

    root = Path(__file__).resolve().parents[2]
    names = sorted(p.stem for p in (root / "training" / "recipes").glob("*.toml"))
    assert names == ["arc", "arc-heads", "base", "denoise", "denoise-resnet", "ixi", "seqaug", "seqinv"]
    for name in names:
        path = root / "training" / "recipes" / f"{name}.toml"
        stages = plan(path, "runs")  # every stage validates
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
        folder = root / "seqinv" / "weights" / recipe["model"]  # the bundled default
        if (root / "hub" / f"{recipe['model']}@{recipe['version']}").is_dir():  # a newer one is bundled
            folder = root / "hub" / f"{recipe['model']}@{recipe['version']}"
        training = json.loads((folder / "config.json").read_text())["training"]
        assert training["lineage"]["recipe"] == path.name
        assert training["lineage"]["stages"][-1]["command"] == stages[-1].command_line
        assert [s["name"] for s in training["lineage"]["stages"]] == [s.name for s in stages]
        published = training.get("options") or training["recipe"]  # denoise-resnet records its recipe
        for key in ("steps", "lr", "seed", "phantoms", "patch_size", "class_weights", "sequences", "widths"):
            if key in published:
                value = getattr(stages[-1].options, key)
                assert (list(value) if key == "widths" else value) == published[key], (name, key)
    assert len(plan(root / "training" / "recipes" / "ixi.toml", "runs")) == 26
    from training.denoise_resnet import read_recipe

    denoisers = (("denoise@2.1", "heads", "denoise@2.0"), ("denoise", "long", "denoise@2.1"))
    for folder, stage, before in denoisers:
        where = root / ("hub" if "@" in folder else "seqinv/weights")  # older versions: their Hub copies
        published = json.loads((where / folder / "config.json").read_text())
        last = read_recipe(str(root / "training" / "recipes" / f"denoise-resnet.toml#{stage}"))
        recipe = published["training"]["recipe"]
        recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()}
        assert last.init.startswith("@") and recorded.pop("init") == before  # the stage before, as published
        now = {k: v for k, v in dataclasses.asdict(last).items() if k != "init"}
        defaults = dataclasses.asdict(type(last)())
        newer = {k: now.pop(k) for k in set(now) - set(recorded)}  # keys added after it was published
        assert newer == {k: defaults[k] for k in newer}, folder  # defaults: what the model was made with
        assert now == recorded, folder  # key for key
    with pytest.raises(SystemExit, match="3 denoise-resnet stages match; use FILE#STAGE"):
        read_recipe(str(root / "training" / "recipes" / "denoise-resnet.toml"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain", "--phantom", "--patch-size", "40", "--output", "o"], "--patch-size 40"),
        (["pretrain", "--output", "o"], "--phantom or --maps"),
        (["segment", "--phantom", "--encoder", "e", "--task", "brain", "--output", "o"], "--task 'brain'"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "seqinv", "train", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_finetune_trains_only_the_decoder(tmp_path, monkeypatch):
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    SeqInvEncoder(preset="tiny").save_pretrained(tmp_path / "enc")
    monkeypatch.setattr(finetune, "build_subjects", lambda opts: ([sphere_subject()], "spheres"))
    opts = finetune.FinetuneOptions(
        output=str(tmp_path / "seg"),
        encoder=str(tmp_path / "enc"),
        task="ixi",
        phantom=True,
        patch_size=32,
        steps=2,
        lr=1e-3,
        class_weights="0.5,1,1,1",
    )
    finetune.run_finetune(opts, command="seqinv train segment ...", show_progress=False)
    unet = SeqInvUNet.from_pretrained(str(tmp_path / "seg"))
    encoder = SeqInvEncoder.from_pretrained(str(tmp_path / "enc"))
    for key, value in encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[key], value)
    assert unet.config.labels == ["background", "csf", "gm", "wm"] and unet.config.spacing_mm == (1, 1, 1)
    # inference windows are 96³ even though training patches were 32³
    assert unet.config.patch_size == (96, 96, 96) and unet.config.training["options"]["patch_size"] == 32
    assert unet.config.training["command"] == "seqinv train segment ..."
    assert np.isfinite(unet.config.training["metrics"]["final_loss"])


def test_pretraining_reads_qmri_map_folders(tmp_path):
    import nibabel as nib

    from seqinv.models import SeqInvEncoder
    from training.pretrain import run_pretrain

    maps = sphere_subject(size=36).maps
    for sub in ("sub-01", "sub-02"):
        (tmp_path / "maps" / sub).mkdir(parents=True)
        for key, name in (("pd", "PD"), ("r1", "R1"), ("r2s", "R2s"), ("mt", "MT")):
            data = getattr(maps, key).numpy()
            nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "maps" / sub / f"{name}.nii.gz")
    opts = _tiny_options(tmp_path, phantom=False, maps=str(tmp_path / "maps"), steps=1)
    run_pretrain(opts, show_progress=False)
    record = SeqInvEncoder.from_pretrained(str(tmp_path / "run")).config.training
    assert record["data"] == f"qMRI maps from {tmp_path / 'maps'}"


def test_torch_bias_and_rician_augmentations_are_seeded_and_behave():
    from training.augment import RandRician, RandSmoothBias, seed_transforms

    image = torch.full((1, 24, 24, 24), 0.5)
    bias, noise = RandSmoothBias(coeff=0.3, prob=1.0), RandRician(prob=1.0, std=0.1)
    seed_transforms([bias, noise], 3)
    first = noise(bias(image))
    seed_transforms([bias, noise], 3)
    assert torch.equal(first, noise(bias(image)))
    field = RandSmoothBias(coeff=0.3, prob=1.0)(image) / image
    assert field.min() > 0 and field.std() > 0  # smooth positive gain
    assert (RandRician(prob=1.0, std=0.1)(torch.zeros(1, 8, 8, 8)) >= 0).all()  # a magnitude


def test_some_fine_tuning_crops_fall_outside_the_head():
    subject = sphere_subject(size=96)
    maker = PatchMaker("ixi", 32, AugmentConfig.none(), head_focus=0.0)
    focused = PatchMaker("ixi", 32, AugmentConfig.none(), head_focus=1.0)
    background = [float((maker.sample(subject, s)["label"] == 0).float().mean()) for s in range(12)]
    centred = [float((focused.sample(subject, s)["label"] == 0).float().mean()) for s in range(12)]
    # uniform crops reach the corners (air) that crops centred on labelled voxels rarely see
    assert np.mean(background) > 1.5 * np.mean(centred)


def test_init_starts_from_a_trained_decoder_and_refuses_another_encoder(tmp_path, monkeypatch):
    from seqinv.errors import ParameterError
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    torch.manual_seed(0)
    encoder = SeqInvEncoder(preset="tiny")
    encoder.save_pretrained(tmp_path / "enc")
    trained = SeqInvUNet.from_encoder(encoder, out_channels=4)
    trained.save_pretrained(tmp_path / "trained")
    opts = finetune.FinetuneOptions(output="o", encoder=str(tmp_path / "enc"), init=str(tmp_path / "trained"))
    unet = finetune.build_unet(encoder, opts)
    for key, value in trained.decoder.state_dict().items():
        assert torch.equal(unet.decoder.state_dict()[key], value)
    with pytest.raises(ParameterError, match="--init .* encoder or outputs differ"):
        finetune.build_unet(SeqInvEncoder(preset="tiny"), opts)
    # another architecture is refused before any weight is copied, even end to end
    SeqInvUNet(preset="mini", out_channels=4).save_pretrained(tmp_path / "mini")
    for train_encoder in (False, True):
        other = dataclasses.replace(opts, init=str(tmp_path / "mini"), train_encoder=train_encoder)
        with pytest.raises(ParameterError, match=r"a mini net \(\(8, 16, 32, 64, 128\), 8\), but --encoder"):
            finetune.build_unet(encoder, other)


def test_end_to_end_init_from_another_task_keeps_all_but_the_output_layer(tmp_path):
    from seqinv.errors import ParameterError
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    torch.manual_seed(0)
    encoder = SeqInvEncoder(preset="tiny")
    encoder.save_pretrained(tmp_path / "enc")
    tissue = SeqInvUNet.from_encoder(encoder, out_channels=4)
    torch.nn.init.normal_(tissue.decoder.ups[0].up.weight)  # a decoder unlike a fresh one
    tissue.save_pretrained(tmp_path / "ixi")
    opts = finetune.FinetuneOptions(
        output="o", encoder=str(tmp_path / "enc"), init=str(tmp_path / "ixi"), task="arc", train_encoder=True
    )
    unet = finetune.build_unet(encoder, opts)
    assert unet.config.out_channels == 2
    ours, theirs = unet.state_dict(), tissue.state_dict()
    copied = [k for k in theirs if not k.startswith("decoder.head.")]
    assert copied and all(torch.equal(ours[k], theirs[k]) for k in copied)
    assert ours["decoder.head.weight"].shape[0] == 2
    # frozen encoder: a decoder for other outputs is refused (the message names both causes)
    with pytest.raises(ParameterError, match="--init .* encoder or outputs differ"):
        finetune.build_unet(encoder, dataclasses.replace(opts, train_encoder=False))


def test_train_encoder_trains_the_whole_unet_and_init_copies_its_encoder(tmp_path, monkeypatch):
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    torch.manual_seed(0)
    encoder = SeqInvEncoder(preset="tiny")
    encoder.save_pretrained(tmp_path / "enc")
    other = SeqInvUNet.from_encoder(SeqInvEncoder(preset="tiny"), out_channels=4)  # another encoder
    other.save_pretrained(tmp_path / "trained")
    opts = finetune.FinetuneOptions(
        output=str(tmp_path / "seg"),
        encoder=str(tmp_path / "enc"),
        init=str(tmp_path / "trained"),
        train_encoder=True,
        task="ixi",
        phantom=True,
        patch_size=32,
        steps=2,
        lr=1e-2,
        dropout=0.0,
    )
    unet = finetune.build_unet(encoder, opts)
    assert all(p.requires_grad for p in unet.parameters())
    for key, value in other.state_dict().items():
        assert torch.equal(unet.state_dict()[key], value)
    monkeypatch.setattr(finetune, "build_subjects", lambda opts: ([sphere_subject()], "spheres"))
    finetune.run_finetune(opts, show_progress=False)
    result = SeqInvUNet.from_pretrained(str(tmp_path / "seg"))
    changed = [
        k for k, v in other.encoder.state_dict().items() if not torch.equal(result.encoder.state_dict()[k], v)
    ]
    assert changed and result.config.training["options"]["train_encoder"] is True


def test_sequences_option_limits_the_simulated_kinds(monkeypatch):
    from seqinv.errors import ParameterError
    from seqinv.physics import priors
    from training.options import FinetuneOptions

    drawn, real = [], priors.draw_sequence
    monkeypatch.setattr(
        priors, "draw_sequence", lambda gen, kinds=None: drawn.append(real(gen, kinds)) or drawn[-1]
    )
    maker = PatchMaker("ixi", 32, AugmentConfig.none(), kinds=("fse", "flair"))
    for index in range(8):
        maker.sample(sphere_subject(), sample_seed(0, index))
    assert {seq.to_dict()["sequence"] for seq in drawn} == {"fse", "flair"}
    opts = FinetuneOptions(output="o", encoder="e", phantom=True, sequences="fse,bogus")
    with pytest.raises(ParameterError, match="--sequences: unknown kind.*bogus"):
        opts.validate()


def test_data_device_cuda_needs_workers_0():
    from seqinv.errors import ParameterError
    from training.options import PretrainOptions

    opts = PretrainOptions(output="o", phantom=True, data_device="cuda", workers=2)
    with pytest.raises(ParameterError, match="--data-device cuda .* --workers 0"):
        opts.validate()


def test_init_from_a_narrower_decoder_widens_it_without_changing_the_output(tmp_path):
    from seqinv.models import SeqInvEncoder, SeqInvUNet
    from training import finetune

    torch.manual_seed(0)
    encoder = SeqInvEncoder(preset="tiny")
    encoder.save_pretrained(tmp_path / "enc")
    trained = SeqInvUNet.from_encoder(encoder, out_channels=4)
    for p in trained.decoder.parameters():  # a decoder unlike a fresh one
        torch.nn.init.normal_(p, std=0.3)
    trained.save_pretrained(tmp_path / "trained")
    opts = finetune.FinetuneOptions(
        output="o", encoder=str(tmp_path / "enc"), init=str(tmp_path / "trained"), decoder_features=9
    )
    unet = finetune.build_unet(encoder, opts).eval()
    assert unet.config.decoder_features == 9 and unet.decoder.head.weight.shape[1] == 9
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(unet(x), trained.eval()(x), atol=1e-5)
    # the new channels are not dead: the output layer's weights from them get gradients
    unet.train()
    unet(x).square().mean().backward()
    assert unet.decoder.head.weight.grad[:, 4:].abs().sum() > 0
    # a narrower --decoder-features than --init's is refused
    with pytest.raises(Exception, match="--init"):
        finetune.build_unet(encoder, dataclasses.replace(opts, decoder_features=2))
