"""Train the default denoiser (`seqinv.models.denoiser.ResidualDenoiser`) on clean images with known noise.

    seqinv train replay training/recipes/denoise-resnet.toml --runs runs   # trains and exports runs/heads
    python -m training.denoise_resnet --config training/recipes/denoise-resnet.toml#heads \
        --output runs/denoise-resnet [--steps N ...]   # one flag per recipe key overrides the file
    python -m training.denoise_resnet --export runs/denoise-resnet/best.pt --output runs/denoise-export

Clean sources (never the benchmark's real scans): phantoms of `seqinv.physics.phantom` (training seeds
only, never `HELD_OUT_SEED`) imaged with random sequences of the physics priors, and nilearn's ICBM152
2009a T1w template (1 mm). Each volume is scaled so that its 99th percentile is 1 (`intensity_scale`, as
at inference). Each patch draws a voxel size (one axis thick with probability `thick_prob`), blurs
the thick axis like a slice profile and resamples to the patch grid, permutes and flips the axes,
applies a random gamma, bias field and gain, then noise: Gaussian (with a random offset, as in z-scored
images) or Rician, std log-uniform in [sigma_min, sigma_max] (units of the scale). Loss: mean squared
error of the predicted noise, divided by sigma (so low noise levels count). Checkpoints are chosen on a
held-out phantom (`HELD_OUT_SEED`, the four evaluation protocols).
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

from training.options import DenoiseResnetRecipe as Recipe


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


def batch(images: list[torch.Tensor], r: Recipe, gen: torch.Generator):
    noisy, target, sigmas = [], [], []
    for _ in range(r.batch_size):
        volume = images[int(torch.randint(len(images), (1,), generator=gen))]
        clean = intensity(clean_patch(volume, r, gen), r, gen)
        n, t, s = add_noise(clean, r, gen)
        noisy.append(n)
        target.append(t)
        sigmas.append(s)
    return torch.stack(noisy)[:, None], torch.stack(target)[:, None], torch.tensor(sigmas)


# ------------------------------------------------------------------------------------------------ validation
VALIDATION_NOISE = (("gaussian", 0.06), ("rician", 0.03), ("rician", 0.08))


def validation_set(size: int = 64) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(name, noisy, clean, sigma) on two crops of the held-out phantom, 4 contrasts, 3 noise settings."""
    from seqinv.physics import simulate
    from seqinv.physics.phantom import HELD_OUT_SEED
    from training.evaluate import phantom_protocols
    from training.phantom_cache import default_cache_dir, load_phantom

    subject = load_phantom(HELD_OUT_SEED, lesion=False, cache_dir=default_cache_dir())
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
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


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


# ------------------------------------------------------------------------------------------------ loop
def training_images(r: Recipe) -> list[torch.Tensor]:
    from training.phantom_cache import training_seeds

    images = phantom_images(training_seeds(r.phantoms), r.contrasts_per_phantom, r.seed)
    if r.head_phantoms:
        images += head_phantom_images(r.head_phantoms, r.label_maps, r.seed)
    if r.icbm152:
        images.append(icbm152_image())
    return images


def train(r: Recipe, output: Path) -> None:
    from seqinv.models.denoiser import ResidualDenoiser, denoiser_config
    from training.loop import autocast, read_checkpoint

    if r.precision not in ("fp32", "bf16"):
        raise SystemExit(f"error: precision {r.precision!r} is not fp32 or bf16")
    torch.manual_seed(r.seed)
    r.init = pinned(r.init)
    output.mkdir(parents=True, exist_ok=True)
    (output / "recipe.json").write_text(json.dumps(asdict(r), indent=2))
    images = training_images(r)
    cases = validation_set()
    _log(f"{len(images)} training volumes, {len(cases)} validation cases")
    net = ResidualDenoiser(denoiser_config(tuple(r.widths)))
    if r.init:
        initial_weights(net, r.init)
    opt = torch.optim.AdamW(net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    start, best = 0, -math.inf
    last = output / "last.pt"
    if last.exists():  # resume
        state = read_checkpoint(last, fix="remove it to start over")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, best = state["step"], state["best"]
    gen = torch.Generator().manual_seed(r.seed * 7919 + start)
    log = open(output / "log.jsonl", "a")  # noqa: SIM115 (open for the whole run)
    t0, losses = time.time(), []
    elapsed0 = state["elapsed_s"] if last.exists() else 0.0
    for step in range(start, r.steps):
        elapsed = elapsed0 + time.time() - t0
        progress = max(step / r.steps, elapsed / r.time_budget_s if r.time_budget_s > 0 else 0.0)
        if progress >= 1:
            break
        lr = r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * progress))
        lr *= min(1.0, (step + 1) / r.warmup_steps)  # a short warm-up, as usual for Adam
        for group in opt.param_groups:
            group["lr"] = lr
        noisy, target, sigma = batch(images, r, gen)
        with autocast(r.precision, "cpu"):
            pred = net(noisy, sigma)
        per_sample = ((pred.float() - (noisy - target)) ** 2).mean(dim=(1, 2, 3, 4))
        loss = (per_sample / sigma).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1
        last_step = (
            done % r.validate_every == 0
            or done == r.steps
            or (r.time_budget_s > 0 and elapsed0 + time.time() - t0 >= r.time_budget_s)
        )
        if last_step:
            metrics = validate(net, cases)
            record = {
                "step": done,
                "loss": float(np.mean(losses)),
                "lr": lr,
                "s": time.time() - t0,
                **metrics,
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            _log(json.dumps(record))
            losses = []
            if metrics["mean_gain_db"] > best:
                best = metrics["mean_gain_db"]
                torch.save(
                    {"model": net.state_dict(), "step": done, "metrics": metrics, "recipe": asdict(r)},
                    output / "best.pt",
                )
        if done % r.checkpoint_every == 0 or last_step:
            tmp = output / "last.pt.tmp"
            state = {
                "model": net.state_dict(),
                "opt": opt.state_dict(),
                "step": done,
                "best": best,
                "elapsed_s": elapsed0 + time.time() - t0,
            }
            torch.save(state, tmp)
            os.replace(tmp, last)


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
    averaged over that many training batches (`recalibrate_norms`) and the held-out validation redone."""
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


def main(argv: list[str] | None = None) -> None:
    args, recipe = parse(argv)
    torch.set_num_threads(args.threads)
    if args.export:
        export(
            args.export,
            args.output,
            "python -m training.denoise_resnet --config training/recipes/denoise-resnet.toml#long",
            recipe.recalibrate_norms,
        )
    else:
        train(recipe, args.output)


if __name__ == "__main__":
    sys.exit(main())
