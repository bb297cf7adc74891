"""Physics-simulated contrastive pretraining (arXiv 2501.12057): NT-Xent on projected pooled features plus L1
reconstruction of the pre-intensity-augmentation view, equal weights."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from training import loop
from training.augment import AugmentConfig
from training.distributed import DistInfo, global_nt_xent, setup, teardown
from training.options import STRATEGIES, PretrainOptions, check_patch  # noqa: F401 (re-exported)
from training.phantom_cache import default_cache_dir
from training.pools import maps_pool, phantom_pool, place_pool
from training.views import PretrainDataset, ViewMaker


class PretrainNet(nn.Module):
    """Encoder + projector (pooled h → z) + reconstructor (deepest map → image)."""

    def __init__(self, encoder):
        super().__init__()
        from seqinv.models import Projector, Reconstructor

        self.encoder = encoder
        width = encoder.out_features
        self.projector = Projector(width, hidden=512, out=128)
        self.reconstructor = Reconstructor(width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        deepest = self.encoder.forward_features(x)[-1]
        return self.projector(self.encoder.pool(deepest)), self.reconstructor(deepest)


def pretrain_loss(net, batch: dict, temperature: float) -> tuple[torch.Tensor, dict]:
    """NT-Xent(z1, z2) + mean L1 of the two reconstructions; both views in one forward pass."""
    views = torch.cat([batch["view1"], batch["view2"]]).contiguous(memory_format=torch.channels_last_3d)
    targets = torch.cat([batch["target1"], batch["target2"]])
    z, recon = net(views)
    z1, z2 = z.float().chunk(2)
    contrastive = global_nt_xent(z1, z2, temperature)
    reconstruction = (recon.float() - targets).abs().mean()
    return contrastive + reconstruction, {
        "ntxent": float(contrastive.detach()),
        "l1": float(reconstruction.detach()),
    }


def build_subjects(opts: PretrainOptions):
    if opts.phantom and opts.phantom_source == "synthseg":
        from training.head_phantoms import head_subjects

        return head_subjects(opts, Path(opts.cache_dir) if opts.cache_dir else default_cache_dir())
    if opts.phantom:
        cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
        return phantom_pool(opts.phantoms, cache_dir=cache), f"{opts.phantoms} built-in phantoms"
    return maps_pool(opts.maps), f"qMRI maps from {opts.maps}"


def run_pretrain(opts: PretrainOptions, command: str = "", show_progress: bool = True) -> dict:
    """Train; writes the encoder (Hub layout) to `opts.output` and checkpoints to `opts.output/checkpoints`.

    Returns {"history": per-step losses and timings, "output": folder}.
    """
    from seqinv.models import ModelConfig, SeqInvEncoder

    opts.validate()
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    info = setup(opts.device)
    try:
        precision = loop.resolve_precision(opts.precision, info.device)
        loop.seed_everything(opts.seed + info.rank)
        out = Path(opts.output)
        t0 = time.perf_counter()
        subjects, data_desc = build_subjects(opts)
        pool_s = time.perf_counter() - t0

        config = ModelConfig.from_preset(
            opts.preset,
            arch="encoder",
            output_kind="features",
            patch_size=(opts.patch_size,) * 3,
            pooling=opts.pooling,
            name=opts.name or f"seqinv-{opts.strategy}-{opts.preset}",
        )
        net = PretrainNet(SeqInvEncoder(config)).to(info.device, memory_format=torch.channels_last_3d)
        model, params, optimizer, scheduler, start_step, history_before = loop.prepare_training(
            net, opts, info, out
        )

        aug = dataclasses.replace(AugmentConfig.pretrain(), elastic_prob=0.3 if opts.elastic else 0.0)
        subjects, data_device = place_pool(subjects, opts.data_device, info.device)
        if opts.phantom and opts.phantom_source == "synthseg":
            from training.head_phantoms import HeadViewMaker, head_sampling

            maker = HeadViewMaker(opts.strategy, opts.patch_size, aug, head=head_sampling(opts))
        else:
            maker = ViewMaker(opts.strategy, opts.patch_size, aug, device=data_device)
        dataset = PretrainDataset(subjects, maker, opts.seed)
        data = loop.batches(dataset, start_step, opts.steps, opts.batch_size, info, opts.workers)
        history = loop.run_loop(
            model=model,
            params=params,
            loss_fn=lambda batch: pretrain_loss(model, batch, opts.temperature),
            data=data,
            optimizer=optimizer,
            scheduler=scheduler,
            start_step=start_step,
            steps=opts.steps,
            precision=precision,
            device=info.device,
            clip=opts.clip,
            checkpoint_dir=out / "checkpoints",
            checkpoint_every=opts.checkpoint_every,
            checkpoint_extra={
                "options": dataclasses.asdict(opts),
                "kind": "pretrain",
                "config": config.to_dict(),
            },
            info=info,
            description=f"pretrain {opts.strategy}",
            show_progress=show_progress,
        )
        history = {k: history_before.get(k, []) + v for k, v in history.items()}
        if info.is_main:
            encoder = net.encoder
            encoder.config.training = training_record(opts, command, data_desc, precision, history, info)
            encoder.cpu().save_pretrained(out)
        return {"history": history, "output": str(out), "pool_s": pool_s}
    finally:
        teardown(info)


def timing_summary(history: dict, skip: int = 1) -> dict:
    """Mean step time and data-generation share, leaving out the first (warm-up) steps."""
    steps = history["step_s"][skip:] or history["step_s"]
    data = history["data_s"][skip:] or history["data_s"]
    if not steps:
        return {}
    step_s = sum(steps) / len(steps)
    return {"step_s": round(step_s, 4), "data_share": round(sum(data) / max(sum(steps), 1e-9), 4)}


def training_record(
    opts, command: str, data_desc: str, precision: str, history: dict, info: DistInfo
) -> dict:
    from seqinv import __version__

    last = history["loss"][-10:]
    return {
        "kind": "pretrain",
        "strategy": opts.strategy,
        "data": data_desc,
        "command": command,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "extra"},
        "steps": opts.steps,
        "global_batch_size": opts.batch_size * info.world_size,
        "world_size": info.world_size,
        "precision": precision,
        "seqinv_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "metrics": {"final_loss": round(sum(last) / max(1, len(last)), 5), **timing_summary(history)},
    }
