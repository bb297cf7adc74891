"""Train the default denoiser (`seqinv.models.denoiser.ResidualDenoiser`) on clean images with known noise.

    seqinv train denoise --config training/recipes/denoise-resnet.toml#heads --output runs/heads \
        [--steps N ...]   # one option per recipe key overrides the file; trains, then exports the model
    seqinv train replay training/recipes/denoise-resnet.toml --runs runs   # every stage, in order
    python -m training.denoise_resnet --config FILE#STAGE --output DIR [...]   # the same, under the name
        # the published lineage of denoise 2.x records (plus --threads)
    python -m training.denoise_resnet --export runs/heads/best.pt --output runs/heads-export

Training runs through the common loop (training/loop.py: checkpoints in OUTPUT/checkpoints, a run
resumes from the latest one as this trainer always did, warm-up and schedule, progress); `best.pt` is the
checkpoint of the best validation, `log.jsonl` every validation.

Clean sources (never the benchmark's real scans): phantoms of `seqinv.physics.phantom` (training seeds
only, never `HELD_OUT_SEED`) imaged with random sequences of the physics priors, and nilearn's ICBM152
2009a T1w template (1 mm). Each volume is scaled so that its 99th percentile is 1 (`intensity_scale`, as
at inference). Each patch draws a voxel size (one axis thick with probability `thick_prob`), blurs
the thick axis like a slice profile and resamples to the patch grid, permutes and flips the axes,
applies a random gamma, bias field and gain, then noise: Gaussian (with a random offset, as in z-scored
images) or Rician, std log-uniform in [sigma_min, sigma_max] (units of the scale). Loss: mean squared
error of the predicted noise, divided by sigma (so low noise levels count). Checkpoints are chosen on the
development phantom (`DEVELOPMENT_SEED`, the four evaluation protocols); the test phantom `HELD_OUT_SEED`
only measures (seqinv/physics/sets.py). PSNR: seqinv/metrics.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import tomllib
import torch
import torch.nn.functional as F

from seqinv.physics.sets import DEVELOPMENT_SEED, refuse_test
from training.options import DenoiseResnetRecipe as Recipe
from training.subjects import sample_seed

#: The command `--export` records for a run without lineage.json (a replay records its stage instead).
PUBLISHED_COMMAND = "python -m training.denoise_resnet --config training/recipes/denoise-resnet.toml#long"


def read_recipe(path: str | None) -> Recipe:
    """The recipe of a flat `[train]` file or of the `denoise-resnet` stage of a recipe (`FILE#STAGE`)."""
    recipe = Recipe()
    if path:
        file, _, name = str(path).partition("#")
        with open(file, "rb") as f:
            data = tomllib.load(f)
        if "stage" in data:  # a recipe of ordered stages (training/recipe.py)
            found = [s for s in data["stage"] if s.get("command") == "denoise-resnet"]
            found = [s for s in found if name in ("", s.get("name"))]
            if len(found) != 1:
                raise SystemExit(f"error: {file}: {len(found)} denoise-resnet stages match; use FILE#STAGE")
            data = found[0].get("options") or {}
        else:
            data = data.get("train", {})
        data = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - {f.name for f in fields(Recipe)})
        if unknown:
            raise SystemExit(f"error: unknown recipe keys {unknown} in {path}")
        for key, value in data.items():
            setattr(recipe, key, tuple(value) if isinstance(value, list) else value)
    return recipe


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """One flag per recipe key (`--steps 2400`, `--widths 32,32`), overriding the config file."""
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(f.default, tuple):
            kind = type(f.default[0])
            p.add_argument(flag, type=lambda text, kind=kind: tuple(kind(v) for v in text.split(",")))
        else:
            p.add_argument(flag, type=type(f.default), default=None)


# ------------------------------------------------------------------------------------------------ sources
def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _crop_to_content(volume: np.ndarray, margin: int = 4) -> np.ndarray:
    nz = np.argwhere(volume > 0.02 * volume.max())
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, volume.shape)
    return volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]


def _scaled(volume: np.ndarray) -> torch.Tensor:
    from seqinv.inference.denoising import intensity_scale

    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32)).clip(min=0)
    volume = _crop_to_content(volume)
    return torch.from_numpy(volume / intensity_scale(volume)).to(torch.float16)


def phantom_images(seeds: list[int], contrasts: int, seed: int) -> list[torch.Tensor]:
    from seqinv.physics import simulate
    from seqinv.physics.priors import draw_sequence
    from training.phantom_cache import default_cache_dir, load_phantom

    gen = torch.Generator().manual_seed(seed)
    images = []
    for s in seeds:
        subject = load_phantom(s, lesion=False, cache_dir=default_cache_dir())
        for _ in range(contrasts):
            images.append(_scaled(simulate(subject.maps, draw_sequence(gen)).float().numpy()))
        _log(f"phantom {s}: {contrasts} contrasts")
    return images


def head_phantom_images(count: int, folder: str, seed: int) -> list[torch.Tensor]:
    """One image per whole-head SynthSeg phantom (training label maps only, each with a new random
    anatomy draw and sequence from the priors), 1 mm, no noise."""
    from seqinv.physics import simulate
    from seqinv.physics.anatomy import make_head_phantom
    from seqinv.physics.priors import draw_sequence
    from training.head_phantoms import head_pool

    gen = torch.Generator().manual_seed(seed + 17)
    subjects = head_pool(count, folder)
    images = []
    for k in range(count):
        subject = subjects[k % len(subjects)]
        phantom = make_head_phantom(subject.name, seed * 1000 + k, anatomy=subject.anatomy)
        image = torch.nan_to_num(simulate(phantom.maps, draw_sequence(gen)).float())
        images.append(_scaled(image.numpy()))
        _log(f"head phantom {subject.name}: done")
    return images


def pinned(init: str) -> str:
    """A published model name as `name@version` (what `init` loaded when this run started)."""
    from seqinv.models.catalogue import is_published, resolve

    return resolve(init).ref if init and is_published(init) else init


def initial_weights(net, init: str) -> None:
    """Start from a trained denoiser (folder or model name) of the same widths, or of a shallower stack of
    the same width: it is then deepened by identity residual pairs (`deepened_state`)."""
    from seqinv.models.factory import load_model

    trained, _ = load_model(init)
    state = trained.float().state_dict()
    old, new = tuple(trained.config.features), tuple(net.config.features)
    if old != new:
        if not _can_deepen(old, new):
            raise SystemExit(
                f"error: --init {init}: its widths differ from this recipe's (and it cannot be deepened "
                "into them: that needs one width, an even number of layers and an even number more)"
            )
        state = deepened_state(state, net.state_dict(), len(old), len(new))
    net.load_state_dict(state, strict=True)


def _can_deepen(old: tuple, new: tuple) -> bool:
    same_width = len(set(old) | set(new)) == 1
    return same_width and len(new) > len(old) and len(old) % 2 == 0 and (len(new) - len(old)) % 2 == 0


def deepened_state(old: dict, fresh: dict, n_old: int, n_new: int) -> dict:
    """`old`'s weights in a deeper stack that computes the same function: the new residual pairs go in
    before the last body convolution, the second batch norm of each with zero scale and shift (so the
    pair adds nothing until it learns to); the new first convolutions keep `fresh`'s He init."""
    last, extra = n_old - 2, n_new - n_old  # index of the last body conv (a plain one), layers added
    state = dict(fresh)
    for key, value in old.items():
        part = key.split(".")
        if part[0] in ("body", "norms") and int(part[1]) == last:
            part[1] = str(last + extra)
        state[".".join(part)] = value
    for j in range(last + 1, last + extra, 2):  # the second layer of each new pair
        for field in ("weight", "bias"):
            state[f"norms.{j}.{field}"] = torch.zeros_like(fresh[f"norms.{j}.{field}"])
    return state


def icbm152_image() -> torch.Tensor:
    from nilearn.datasets import load_mni152_template

    return _scaled(np.asarray(load_mni152_template(resolution=1).get_fdata()))


# ------------------------------------------------------------------------------------------------ patches
def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _blur_axis(x: torch.Tensor, axis: int, sigma_vox: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma_vox)))
    taps = torch.exp(-((torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma_vox) ** 2) / 2)
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = taps.numel()
    pad = [0] * 6
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
    return F.conv3d(F.pad(x, pad, mode="replicate"), (taps / taps.sum()).view(shape))


def clean_patch(volume: torch.Tensor, r: Recipe, gen: torch.Generator) -> torch.Tensor:
    """One clean patch (P^3, scale units): random voxel size and thick axis, blur, resample, flips."""
    p = r.patch_size
    voxel = [_u(gen, *r.voxel_mm)] * 3
    thick = -1
    if _u(gen, 0, 1) < r.thick_prob:
        thick = int(torch.randint(3, (1,), generator=gen))
        voxel[thick] = _u(gen, *r.thick_mm)
    extent = [min(int(math.ceil(p * v)), n) for v, n in zip(voxel, volume.shape, strict=True)]
    for _ in range(8):  # prefer crops with anatomy in them
        start = [
            int(torch.randint(n - e + 1, (1,), generator=gen))
            for n, e in zip(volume.shape, extent, strict=True)
        ]
        crop = volume[tuple(slice(s, s + e) for s, e in zip(start, extent, strict=True))]
        if float(crop.float().mean()) > 0.1:
            break
    x = crop.float()[None, None]
    if thick >= 0:
        x = _blur_axis(x, thick, 0.45 * voxel[thick])
    x = F.interpolate(x, size=(p, p, p), mode="trilinear", align_corners=False)[0, 0]
    if r.smooth_prob > 0 and _u(gen, 0, 1) < r.smooth_prob:
        width = _u(gen, *r.smooth_sigma)
        for axis in range(3):
            x = _blur_axis(x[None, None], axis, width)[0, 0]
    x = x.permute(*torch.randperm(3, generator=gen).tolist())
    flips = [a for a in range(3) if _u(gen, 0, 1) < 0.5]
    return x.flip(flips) if flips else x


def intensity(x: torch.Tensor, r: Recipe, gen: torch.Generator) -> torch.Tensor:
    from seqinv.physics.priors import random_receive_field

    x = x.clamp(min=0)
    if _u(gen, 0, 1) < 0.5:
        x = x.pow(_u(gen, *r.gamma))
    strength = _u(gen, 0, r.bias_strength)
    x = x * random_receive_field(x.shape, generator=gen, strength=strength)
    return x * _u(gen, *r.gain)


def add_noise(clean: torch.Tensor, r: Recipe, gen: torch.Generator):
    """(noisy, target, sigma): Gaussian around clean + offset, or Rician of clean."""
    sigma = math.exp(_u(gen, math.log(r.sigma_min), math.log(r.sigma_max)))
    n1 = torch.randn(clean.shape, generator=gen) * sigma
    if _u(gen, 0, 1) < r.rician_prob:
        n2 = torch.randn(clean.shape, generator=gen) * sigma
        return torch.sqrt((clean + n1) ** 2 + n2**2), clean, sigma
    offset = _u(gen, r.offset_min, 0.0) if _u(gen, 0, 1) < r.offset_prob else 0.0
    return clean + offset + n1, clean + offset, sigma


def draw_sample(images: list[torch.Tensor], r: Recipe, gen: torch.Generator):
    """(noisy, target, sigma) of one patch of a random image."""
    volume = images[int(torch.randint(len(images), (1,), generator=gen))]
    return add_noise(intensity(clean_patch(volume, r, gen), r, gen), r, gen)


def batch(images: list[torch.Tensor], r: Recipe, gen: torch.Generator):
    """`r.batch_size` samples drawn in turn from `gen` (the batches of `recalibrate_norms`)."""
    noisy, target, sigmas = zip(*(draw_sample(images, r, gen) for _ in range(r.batch_size)), strict=True)
    return torch.stack(noisy)[:, None], torch.stack(target)[:, None], torch.tensor(sigmas)


class NoisyPatches(torch.utils.data.Dataset):
    """Sample `index`: one patch drawn with a generator seeded by the run's seed and the index, so a
    resumed run draws what an uninterrupted one would (training/loop.py `batches`)."""

    def __init__(self, images: list[torch.Tensor], r: Recipe):
        self.images, self.r = images, r

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(sample_seed(self.r.seed, index))
        noisy, target, sigma = draw_sample(self.images, self.r, gen)
        sigma = torch.tensor(sigma, dtype=torch.float32)
        return {"noisy": noisy[None], "target": target[None], "sigma": sigma}


def noise_loss(net, batch: dict) -> torch.Tensor:
    """Mean squared error of the predicted noise, divided by sigma (so low noise levels count)."""
    noisy, sigma = batch["noisy"], batch["sigma"]
    predicted = net(noisy, sigma)
    per_sample = ((predicted.float() - (noisy - batch["target"])) ** 2).mean(dim=(1, 2, 3, 4))
    return (per_sample / sigma).mean()


# ------------------------------------------------------------------------------------------------ validation
VALIDATION_NOISE = (("gaussian", 0.06), ("rician", 0.03), ("rician", 0.08))
#: The phantom whose validation chooses the checkpoint (and the batch-norm check at export).
VALIDATION_SEED = DEVELOPMENT_SEED


def validation_set(
    size: int = 64, seed: int | None = None
) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(name, noisy, clean, sigma) on a central crop of the phantom of `seed`, 4 contrasts, 3 noise
    settings. Default `VALIDATION_SEED`, which chooses checkpoints; measuring passes `HELD_OUT_SEED`."""
    from seqinv.physics import simulate
    from training.evaluate import phantom_protocols
    from training.phantom_cache import default_cache_dir, load_phantom

    seed = VALIDATION_SEED if seed is None else seed
    subject = load_phantom(seed, lesion=False, cache_dir=default_cache_dir())
    centre = (subject.labels > 0).nonzero().float().mean(0).round().long().tolist()
    cases, gen = [], torch.Generator().manual_seed(1234)
    for contrast, sequence in phantom_protocols().items():
        image = _scaled(simulate(subject.maps, sequence).float().numpy()).float()
        c = [min(max(v, size), n - size) for v, n in zip(centre, image.shape, strict=True)]
        for k, shift in enumerate((0,)):
            box = tuple(
                slice(v - size // 2 + (shift if a == 2 else 0), v + size // 2 + (shift if a == 2 else 0))
                for a, v in enumerate(c)
            )
            clean = image[box]
            if clean.shape != (size,) * 3:
                continue
            for noise, sigma in VALIDATION_NOISE:
                n1 = torch.randn(clean.shape, generator=gen) * sigma
                if noise == "rician":
                    n2 = torch.randn(clean.shape, generator=gen) * sigma
                    noisy = torch.sqrt((clean + n1) ** 2 + n2**2)
                else:
                    noisy = clean + n1
                cases.append((f"{contrast}/{k}/{noise}-{sigma}", noisy, clean, sigma))
    return cases


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) with peak 1, the scale's unit (seqinv/metrics.py `psnr_db`)."""
    from seqinv.metrics import psnr_db

    return psnr_db(b, a, 1.0)


@torch.inference_mode()
def validate(net, cases, passes: int = 1) -> dict[str, float]:
    """Mean PSNR (dB) per noise setting of the cases, denoised with `passes` flipped passes."""
    from seqinv.inference.denoising import flip_average

    net.eval()
    gains = {}
    for name, noisy, clean, sigma in cases:
        out = noisy - flip_average(lambda x, s=sigma: net(x[None, None], s)[0, 0], noisy, passes)
        key = name.split("/")[-1]
        gains.setdefault(key, []).append((psnr(out, clean), psnr(noisy, clean)))
    net.train()
    result = {}
    for key, pairs in gains.items():
        result[f"{key}/psnr_db"] = float(np.mean([p for p, _ in pairs]))
        result[f"{key}/input_psnr_db"] = float(np.mean([q for _, q in pairs]))
    result["mean_gain_db"] = float(np.mean([p - q for v in gains.values() for p, q in v]))
    return result


# ------------------------------------------------------------------------------------------------ training
def training_images(r: Recipe) -> list[torch.Tensor]:
    from training.phantom_cache import training_seeds

    images = phantom_images(training_seeds(r.phantoms), r.contrasts_per_phantom, r.seed)
    if r.head_phantoms:
        images += head_phantom_images(r.head_phantoms, r.label_maps, r.seed)
    if r.icbm152:
        images.append(icbm152_image())
    return images


class Clock:
    """Training time across resumes, and the share of the time budget it has used (0 without one)."""

    def __init__(self, budget_s: float):
        self.budget_s, self.before_s, self.start = budget_s, 0.0, time.time()

    def resume(self, before_s: float) -> None:
        self.before_s, self.start = before_s, time.time()

    def elapsed(self) -> float:
        return self.before_s + time.time() - self.start

    def share(self) -> float:
        return self.elapsed() / self.budget_s if self.budget_s > 0 else 0.0


class Chooser:
    """After each step: a validation every `validate_every` steps and at the end, `best.pt` when its mean
    gain is the best yet; stops the run once the time budget is spent. Its state (best gain, training
    time) lives in `extra`, which every checkpoint copies."""

    def __init__(self, net, cases, r: Recipe, output: Path, clock: Clock, extra: dict):
        self.net, self.cases, self.r, self.output = net, cases, r, output
        self.clock, self.extra = clock, extra
        self.losses: list[float] = []

    def after_step(self, done: int, loss: float, logs: dict) -> bool:
        self.losses.append(loss)
        spent = self.clock.share() >= 1
        self.extra["elapsed_s"] = self.clock.elapsed()
        if done % self.r.validate_every == 0 or done == self.r.steps or spent:
            self._validate(done, logs["lr"])
        return spent

    def _validate(self, done: int, lr: float) -> None:
        metrics = validate(self.net, self.cases)
        record = {"step": done, "loss": float(np.mean(self.losses)), "lr": lr, "s": self.clock.elapsed()}
        record.update(metrics)
        with open(self.output / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        _log(json.dumps(record))
        self.losses = []
        if metrics["mean_gain_db"] > self.extra["best"]:
            self.extra["best"] = metrics["mean_gain_db"]
            state = {"model": self.net.state_dict(), "step": done, "metrics": metrics}
            torch.save({**state, "recipe": asdict(self.r)}, self.output / "best.pt.tmp")
            os.replace(self.output / "best.pt.tmp", self.output / "best.pt")


def new_network(r: Recipe):
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config

    net = ResidualDenoiser(denoiser_config(tuple(r.widths)))
    if r.init:
        initial_weights(net, r.init)
    return net


def resume(folder: Path, net, optimizer, scheduler, clock: Clock, extra: dict) -> int:
    """The step to start from: the latest checkpoint's (weights, optimizer, schedule, random states, best
    gain and training time restored), or 0."""
    from training import loop

    latest = loop.latest_checkpoint(folder)
    if latest is None:
        return 0
    state = loop.load_checkpoint(latest, net, optimizer, scheduler, fix="remove it to start over")
    extra["best"], extra["elapsed_s"] = state["best"], state["elapsed_s"]
    clock.resume(state["elapsed_s"])
    # the schedule of this call (its steps or time budget may differ from the checkpoint's)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * scheduler.lr_lambdas[0](scheduler.last_epoch)
    return state["step"]


def train(r: Recipe, output: Path, show_progress: bool = True) -> dict:
    """Train into `output` through the common loop: checkpoints/ (resumed from), best.pt (chosen on the
    `VALIDATION_SEED` phantom), log.jsonl and recipe.json. Returns the loop's history of this call."""
    from training import loop

    if r.precision not in ("fp32", "bf16"):
        raise SystemExit(f"error: precision {r.precision!r} is not fp32 or bf16")
    refuse_test("choose checkpoints", seeds=[VALIDATION_SEED])
    loop.seed_everything(r.seed)
    r.init = pinned(r.init)
    output.mkdir(parents=True, exist_ok=True)
    (output / "recipe.json").write_text(json.dumps(asdict(r), indent=2))
    images, cases = training_images(r), validation_set()
    _log(f"{len(images)} training volumes, {len(cases)} validation cases")
    net = new_network(r)
    optimizer = torch.optim.AdamW(net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    clock = Clock(r.time_budget_s)
    scheduler = loop.cosine_schedule(optimizer, r.steps, r.min_lr / r.lr, r.warmup_steps, clock.share)
    extra = {"kind": "denoise", "config": net.config.to_dict(), "recipe": asdict(r)}
    extra.update(best=-math.inf, elapsed_s=0.0)
    start = resume(output / "checkpoints", net, optimizer, scheduler, clock, extra)
    chooser = Chooser(net, cases, r, output, clock, extra)
    return _run_loop(net, optimizer, scheduler, NoisyPatches(images, r), start, chooser, show_progress)


def _run_loop(net, optimizer, scheduler, data, start: int, chooser: Chooser, show_progress: bool) -> dict:
    from training import loop
    from training.distributed import DistInfo

    r, info = chooser.r, DistInfo()  # one CPU process, as the published runs
    end = start if chooser.clock.share() >= 1 else r.steps  # a spent time budget trains no more
    return loop.run_loop(
        model=net,
        params=list(net.parameters()),
        loss_fn=lambda batch: (noise_loss(net, batch), {"lr": optimizer.param_groups[0]["lr"]}),
        data=loop.batches(data, start, end, r.batch_size, info, workers=0),
        optimizer=optimizer,
        scheduler=scheduler,
        start_step=start,
        steps=end,
        precision=r.precision,
        device=info.device,
        clip=1.0,
        checkpoint_dir=chooser.output / "checkpoints",
        checkpoint_every=r.checkpoint_every,
        checkpoint_extra=chooser.extra,
        info=info,
        description="denoiser",
        show_progress=show_progress,
        after_step=chooser.after_step,
    )


@torch.no_grad()
def recalibrate_norms(net, images, r: Recipe, batches: int, seed: int = 0) -> None:
    """Batch-norm running statistics averaged evenly over `batches` fresh training batches. Momentum keeps
    mostly the last few dozen batches: one odd batch before a checkpoint shifts them (measured: validation
    dips of 1.5-2 dB that the next validation had forgotten)."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    net.train()
    for _ in range(batches):
        noisy, _, sigma = batch(images, r, gen)
        net(noisy, sigma)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()


def export(checkpoint: Path, output: Path, command: str, recalibrate: int = 0) -> None:
    """The checkpoint as a model folder (float16); `recalibrate` > 0: its batch-norm statistics first
    averaged over that many training batches (`recalibrate_norms`) and the validation redone."""
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
    from training.lineage import read_lineage
    from training.loop import read_checkpoint

    state = read_checkpoint(checkpoint, fix="give another checkpoint")
    r = {**state["recipe"], "recalibrate_norms": recalibrate}  # the recipe of what is exported
    training = {
        "kind": "denoise",
        "data": (
            f"{r['phantoms']} built-in phantoms x {r['contrasts_per_phantom']} random contrasts"
            + (f" + {r['head_phantoms']} whole-head SynthSeg phantoms" if r.get("head_phantoms") else "")
            + (" + nilearn ICBM152 2009a T1w template" if r["icbm152"] else "")
            + (f"; started from {r['init']}" if r.get("init") else "")
        ),
        "recipe": r,
        "steps": state["step"],
        "validation": state["metrics"],
        "command": command,
    }
    run_lineage = read_lineage(Path(checkpoint).parent)  # written by `seqinv train replay`
    if run_lineage:
        training["lineage"] = run_lineage
        training["command"] = run_lineage["stages"][-1]["command"]  # what made it, not the export call
    net = ResidualDenoiser(denoiser_config(tuple(r["widths"]), name=r["name"], training=training))
    if run_lineage and run_lineage.get("nonlocal_stage") is not None:  # the published model's second stage
        net.config.nonlocal_stage = dict(run_lineage["nonlocal_stage"])
        net.config.validate()
    net.load_state_dict(state["model"])
    if recalibrate > 0:
        recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
        recalibrate_norms(net, training_images(recipe), recipe, recalibrate)
        metrics = validate(net, validation_set())
        training["norms_recalibrated"] = {"batches": recalibrate, "validation": metrics}
        _log(f"batch-norm statistics over {recalibrate} batches: validation {json.dumps(metrics)}")
    net.save_pretrained(output, dtype=torch.float16)
    print(f"exported step {state['step']} to {output}")


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Recipe]:
    """The script's arguments and its recipe: defaults < --config file < the recipe flags given."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="a flat [train] file or a recipe (FILE#STAGE)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--export", type=Path, default=None, help="checkpoint to export as a model folder")
    p.add_argument("--threads", type=int, default=1)
    _add_recipe_flags(p)
    args = p.parse_args(argv)
    recipe = read_recipe(args.config)
    for f in fields(Recipe):
        if getattr(args, f.name) is not None:
            setattr(recipe, f.name, getattr(args, f.name))
    return args, recipe


def run_denoise(opts, command: str = "", show_progress: bool = True) -> dict:
    """`seqinv train denoise` (`opts`: training.options.DenoiseResnetOptions): train into `opts.output`,
    then export the chosen checkpoint there (`recalibrate_norms` batches first, when set)."""
    output = Path(opts.output)
    history = train(opts.recipe, output, show_progress)
    export(output / "best.pt", output, command, opts.recalibrate_norms)
    return {"history": history, "output": str(output)}


def main(argv: list[str] | None = None) -> None:
    """`seqinv train denoise` under the name the published lineage of denoise 2.x records."""
    from seqinv.errors import ParameterError
    from training.options import DenoiseResnetOptions, command_line

    args, recipe = parse(argv)
    torch.set_num_threads(args.threads)
    if args.export:
        export(args.export, args.output, PUBLISHED_COMMAND, recipe.recalibrate_norms)
        return
    opts = DenoiseResnetOptions(**asdict(recipe), output=str(args.output))
    try:
        opts.validate()
    except ParameterError as err:
        raise SystemExit(f"error: {err}") from None
    run_denoise(opts, command_line("denoise-resnet", opts))


if __name__ == "__main__":
    sys.exit(main())
