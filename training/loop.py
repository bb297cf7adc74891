"""Shared training machinery: precision, poly schedule, checkpoints with exact resume, progress display."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from training.distributed import DistInfo, mean_across_ranks

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    """`auto`: bf16 on GPU, or on CPU only where it is native (AVX512-BF16/AMX; else Conv3d is slower)."""
    from seqinv.errors import ParameterError

    if precision not in PRECISIONS:
        raise ParameterError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from seqinv.inference.sliding import native_cpu_bf16

    return "bf16" if native_cpu_bf16() else "fp32"


def autocast(precision: str, device: str):
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9, warmup: int = 0):
    """lr · (1 − step/total)^power (arXiv 2501.12057), after a linear warm-up over `warmup` steps.

    The warm-up is for fine-tuning a trained model: AdamW's first steps move every weight by about lr
    whatever its gradient, and without it end-to-end runs from `ixi` 1.2 lost ground for hundreds of
    steps at lr 1e-4 to 1e-3 (training/synth.py's first runs; docs/training.md)."""

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * max(0.0, 1.0 - step / max(1, total_steps)) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    final: float = 0.0,
    warmup: int = 0,
    time_share: Callable[[], float] | None = None,
):
    """lr · (final + (1 − final)·(1 + cos(π·p))/2) after a linear warm-up over `warmup` steps; p is the
    share of the run done: of the steps, or of a time budget (`time_share()`) when that is further.

    The default denoiser's schedule (training/denoise_resnet.py): its CPU runs end on a time budget, and
    the schedule must reach its end then rather than stop half-way down."""

    def factor(step: int) -> float:
        done = step / max(1, total_steps)
        if time_share is not None:
            done = max(done, time_share())
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state as tensors, numbers and strings (checkpoints load with weights_only=True)."""
    name, key, *rest = np.random.get_state()
    numpy_state = (name, torch.from_numpy(key.astype(np.int64)), *rest)
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]  # key: a tensor, or a numpy array in earlier checkpoints
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, extra: dict, keep: int = 2) -> Path:
    """checkpoints/step_XXXXXXX.pt (atomic write); older ones beyond `keep` are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:07d}.pt"
    state = {
        "step": step,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        **extra,
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(Path(folder).glob("step_*.pt"))
    return found[-1] if found else None


def read_checkpoint(path: Path, fix: str = "remove it or start without --resume") -> dict:
    """A checkpoint's dict, never unpickling objects: tensors, numbers, strings and containers only
    (`weights_only=True`), plus the numpy RNG key of checkpoints written before issue 31."""
    from seqinv.errors import InputError

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # maybe an earlier checkpoint; the allowance below refuses anything else
            state = _read_earlier_checkpoint(path)
    except Exception as err:  # torch raises many types (unpickling, zip, truncation)
        raise InputError(f"cannot read checkpoint {path}: {_reason(err)}; {fix}") from None
    if not isinstance(state, dict):
        raise InputError(f"cannot read checkpoint {path}: it holds no dict; {fix}")
    return state


def _read_earlier_checkpoint(path: Path) -> dict:
    """Checkpoints before issue 31 hold the numpy RNG key as a uint32 array. Allowed for it: rebuilding an
    ndarray and its uint32 dtype, nothing else (an array of objects needs other dtypes and is refused)."""
    numpy_globals = [np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(numpy_globals):
        return torch.load(path, map_location="cpu", weights_only=True)


def _reason(err: BaseException) -> str:
    """torch's reason in a few words (its messages run to paragraphs of advice to load unsafely)."""
    text = " ".join(str(err).split())
    found = re.search(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>", text)
    if found:
        return f"it holds {found.group(1) or found.group(2)}, not plain data"
    return text.split(". ")[0][:200] or type(err).__name__


def load_checkpoint(
    path: Path, model, optimizer, scheduler, fix: str = "remove it or start without --resume"
) -> dict:
    """Restore model, optimizer, scheduler and RNG states; returns the checkpoint dict (with `step`)."""
    state = read_checkpoint(path, fix)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def prepare_training(net, opts, info: DistInfo, out: Path):
    """AdamW + poly schedule on the trainable parameters, DDP when distributed, and the state to resume from.

    Returns (model, params, optimizer, scheduler, start_step, history_before); `model` is the DDP wrapper
    (or `net`), checkpoints hold `net` itself.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    scheduler = poly_schedule(optimizer, opts.steps, warmup=getattr(opts, "warmup_steps", 0))
    model = net
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[info.local_rank] if info.device.startswith("cuda") else None
        )
    start_step, before = 0, {"loss": [], "data_s": [], "step_s": []}
    latest = latest_checkpoint(out / "checkpoints") if opts.resume else None
    if latest is not None:
        state = load_checkpoint(latest, net, optimizer, scheduler)
        start_step, before = state["step"], state.get("history", before)
    return model, params, optimizer, scheduler, start_step, before


def step_indices(step: int, batch_size: int, info: DistInfo) -> list[int]:
    """Global sample indices of this rank's share of step `step` (data is a function of the index)."""
    first = (step * info.world_size + info.rank) * batch_size
    return list(range(first, first + batch_size))


def batches(dataset, start_step: int, steps: int, batch_size: int, info: DistInfo, workers: int) -> Iterator:
    """Batches for steps start_step … steps − 1, optionally produced by DataLoader worker processes."""
    sampler = [step_indices(s, batch_size, info) for s in range(start_step, steps)]
    if workers > 0:
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False, prefetch_factor=2
        )
        yield from loader
        return
    collate = torch.utils.data.default_collate
    for indices in sampler:
        yield collate([dataset[i] for i in indices])


class Progress:
    """Rich progress bar with loss, step time and ETA on rank 0; silent elsewhere."""

    def __init__(self, description: str, total: int, start: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.bar.add_task(description, total=total, completed=start, info="")
        # a log file gets no live bar: print a plain line now and then instead
        self.plain = not self.bar.console.is_terminal
        self.description, self.total, self.done = description, total, start
        self.t_start, self.t_last = time.perf_counter(), 0.0

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)

    def update(self, logs: dict) -> None:
        if self.enabled:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            self.bar.update(self.task, advance=1, info=info)
            self.done += 1
            now = time.perf_counter()
            if self.plain and (now - self.t_last >= 30 or self.done == self.total):
                self.t_last = now
                print(f"{self.description} step {self.done}/{self.total}  {info}", flush=True)


def run_loop(
    *,
    model,
    params,
    loss_fn: Callable[[dict], tuple[torch.Tensor, dict]],
    data: Iterator,
    optimizer,
    scheduler,
    start_step: int,
    steps: int,
    precision: str,
    device: str,
    clip: float | None,
    checkpoint_dir: Path | None,
    checkpoint_every: int,
    checkpoint_extra: dict,
    info: DistInfo,
    description: str,
    show_progress: bool = True,
    after_step: Callable[[int, float, dict], bool] | None = None,
) -> dict:
    """The optimisation loop. Returns per-step losses and timings (data vs compute seconds).

    `after_step(steps_done, loss, logs)`, when given, runs after each step and before its checkpoint (so it
    may update `checkpoint_extra`, which every checkpoint copies); True ends the run there, checkpointed."""
    history = {"loss": [], "data_s": [], "step_s": []}
    model.train()
    with Progress(description, steps, start_step, show_progress and info.is_main) as progress:
        t_end = time.perf_counter()
        for step in range(start_step, steps):
            batch = next(data)
            batch = {
                k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
            }
            t_data = time.perf_counter()
            with autocast(precision, device):
                loss, logs = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            scheduler.step()
            value = mean_across_ranks(float(loss.detach()))
            t_now = time.perf_counter()
            history["loss"].append(value)
            history["data_s"].append(t_data - t_end)
            history["step_s"].append(t_now - t_end)
            t_end = t_now
            done = step + 1
            stop = bool(after_step(done, value, logs)) if after_step is not None else False
            if (
                checkpoint_dir is not None
                and info.is_main
                and (done % checkpoint_every == 0 or done == steps or stop)
            ):
                save_checkpoint(
                    checkpoint_dir,
                    done,
                    model,
                    optimizer,
                    scheduler,
                    {**checkpoint_extra, "history": history},
                )
            data_pct = 100 * history["data_s"][-1] / max(history["step_s"][-1], 1e-9)
            shown = {
                "loss": value,
                **{k: float(v) for k, v in logs.items()},
                "s/step": history["step_s"][-1],
                "data%": data_pct,
            }
            progress.update(shown)
            if stop:
                break
    return history
