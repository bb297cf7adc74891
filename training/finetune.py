"""Fine-tuning (arXiv 2501.12057): segmentation (Dice + CE) and denoising (noise-prediction MSE) on a frozen
encoder, or end to end with --train-encoder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from training import loop
from training.augment import AugmentConfig
from training.distributed import DistInfo, setup, teardown
from training.losses import dice_ce
from training.options import TASK_TABLE, TASKS, FinetuneOptions, check_patch, sequence_kinds  # noqa: F401
from training.patches import NoiseConfig, PatchDataset, PatchMaker
from training.phantom_cache import default_cache_dir
from training.pools import label_fraction, phantom_pool, place_pool
from training.pretrain import timing_summary
from training.task_ops import load_folder, task_ops


def parse_class_weights(text: str, n_classes: int) -> torch.Tensor | None:
    from seqinv.errors import ParameterError

    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n_classes or min(values) < 0:
        raise ParameterError(
            f"--class-weights {text!r}: need {n_classes} non-negative comma-separated numbers, e.g. "
            + ",".join(["1"] * n_classes)
        )
    return torch.tensor(values)


def load_encoder(name_or_path: str):
    """A SeqInvEncoder from a folder / repo / published name; a U-Net's encoder is accepted too."""
    from seqinv.models import SeqInvEncoder

    return SeqInvEncoder.from_pretrained(name_or_path)


def build_unet(encoder, opts: FinetuneOptions):
    from seqinv.models import SeqInvUNet
    from seqinv.models.config import DEFAULT_WINDOW

    labels = opts.labels
    config = dataclasses.replace(
        encoder.config,
        arch="unet",
        output_kind=TASK_TABLE[opts.task].output_kind,
        task_name=opts.task,
        out_channels=len(labels) or 1,
        labels=labels,
        # the inference window: at least the default 96³ even after smaller training patches (fully
        # convolutional, instance-normalised nets see more context; session-3 `ixi`, validation phantom:
        # 56.3 % mean Dice with 96³ windows vs 55.2 % with its 64³ training patch)
        patch_size=(max(opts.patch_size, DEFAULT_WINDOW[0]),) * 3,
        spacing_mm=(1.0, 1.0, 1.0),
        name=opts.name or f"{encoder.config.name or 'seqinv'}-{opts.task}",
        dropout=opts.dropout if opts.dropout >= 0 else encoder.config.dropout,
        decoder_features=opts.decoder_features or encoder.config.decoder_features,
        training={},
    )
    unet = SeqInvUNet(config)
    unet.encoder.load_state_dict(encoder.state_dict(), strict=True)
    if opts.init:
        start_from(unet, opts.init, with_encoder=opts.train_encoder)
    return unet if opts.train_encoder else unet.freeze_encoder()


def _widths(config) -> tuple:
    return tuple(config.features), config.decoder_features


def widened(trained, width: int):
    """A copy of U-Net `trained` whose full-resolution decoder stage has `width` channels, computing
    the same output: the old channels keep their weights, the new ones get a fresh initialisation for
    their inputs and zero weights towards the old channels and the output layer (so they start silent
    and grow by their gradients, which are not zero)."""
    from seqinv.models import SeqInvUNet

    old = trained.config.decoder_features
    wide = SeqInvUNet(dataclasses.replace(trained.config, decoder_features=width))
    wide.encoder.load_state_dict(trained.encoder.state_dict(), strict=True)
    target = wide.decoder.state_dict()
    source = trained.decoder.state_dict()
    with torch.no_grad():
        for key, value in source.items():
            out = target[key]
            if out.shape == value.shape:
                out.copy_(value)
            elif key.startswith("head."):  # (classes, width, 1, 1, 1): silent new inputs
                out.zero_()
                out[:, :old] = value
            elif out.ndim > 1 and out.shape[1] != value.shape[1]:  # block2: width -> width
                out[:old, :old] = value
                out[:old, old:] = 0.0
            else:  # block1's weight and biases: new output channels keep their fresh values
                out[:old] = value
    wide.decoder.load_state_dict(target, strict=True)
    return wide


def start_from(unet, name_or_path: str, with_encoder: bool = False) -> None:
    """Copy the decoder of a trained U-Net (and its encoder when `with_encoder`, for end-to-end runs).

    Without `with_encoder` its encoder must be the one this run was given: a decoder only fits the
    features it was trained on. With it, a model with other outputs (another task) gives all layers but
    the output layer.
    """
    from seqinv.errors import ParameterError
    from seqinv.models import SeqInvUNet

    trained = SeqInvUNet.from_pretrained(name_or_path)
    theirs, ours = _widths(trained.config), _widths(unet.config)
    if theirs[0] == ours[0] and theirs[1] < ours[1]:
        trained = widened(trained, ours[1])
        theirs = ours
    if theirs != ours:
        raise ParameterError(
            f"--init {name_or_path}: a {trained.config.preset} net {theirs}, but --encoder gives a "
            f"{unet.config.preset} net {ours}; give a model of the encoder's size"
        )
    same = with_encoder or all(
        torch.equal(a, b)
        for a, b in zip(
            trained.encoder.state_dict().values(), unet.encoder.state_dict().values(), strict=True
        )
    )
    new_outputs = trained.config.out_channels != unet.config.out_channels
    if not same or (new_outputs and not with_encoder):
        raise ParameterError(
            f"--init {name_or_path}: its encoder or outputs differ from this run's (--encoder, --task); "
            "give a model trained on the same encoder for the same task (or add --train-encoder)"
        )
    if with_encoder:
        unet.encoder.load_state_dict(trained.encoder.state_dict(), strict=True)
    decoder = trained.decoder.state_dict()
    if new_outputs:
        # end to end from a model of another task (e.g. the tissue model for lesions): all but the
        # 1x1x1 output layer, which keeps its fresh initialisation
        decoder = {k: v for k, v in decoder.items() if not k.startswith("head.")}
    unet.decoder.load_state_dict(decoder, strict=not new_outputs)


def build_subjects(opts: FinetuneOptions):
    if opts.phantom and opts.phantom_source in ("synthseg", "synth"):
        from training.head_phantoms import head_subjects

        subjects, desc = head_subjects(opts, Path(opts.cache_dir) if opts.cache_dir else default_cache_dir())
    elif opts.phantom:
        cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
        subjects = phantom_pool(opts.phantoms, lesion=TASK_TABLE[opts.task].lesion, cache_dir=cache)
        kinds = opts.sequences or "all kinds"
        desc = f"{opts.phantoms} built-in phantoms, random contrasts from the priors ({kinds})"
    else:
        subjects = load_folder(opts.data, opts.task)
        desc = f"{opts.task} data from {opts.data}"
    kept = label_fraction(subjects, opts.label_fraction)
    return kept, f"{desc}; {len(kept)}/{len(subjects)} subjects ({opts.label_fraction:g} % labels)"


def patch_maker(opts: FinetuneOptions, noise: NoiseConfig, data_device):
    """The training-sample maker of the run's data source."""
    if opts.phantom and opts.phantom_source == "synth":
        return task_ops(opts.task).synth(opts, sequence_kinds(opts.sequences))
    maker_cls, head = PatchMaker, {}
    if opts.phantom and opts.phantom_source == "synthseg":
        from training.head_phantoms import HeadPatchMaker as maker_cls
        from training.head_phantoms import head_sampling

        head = {"head": head_sampling(opts)}
    return maker_cls(
        opts.task,
        opts.patch_size,
        AugmentConfig.finetune(),
        noise,
        device=data_device,
        kinds=sequence_kinds(opts.sequences),
        **head,
    )


def segment_loss(model, batch, class_weights):
    logits = model(batch["image"].contiguous(memory_format=torch.channels_last_3d))
    loss = dice_ce(logits, batch["label"], class_weights=class_weights)
    return loss, {}


def denoise_loss(model, batch):
    predicted = model(batch["image"].contiguous(memory_format=torch.channels_last_3d))
    return torch.nn.functional.mse_loss(predicted.float(), batch["noise"]), {}


def run_finetune(opts: FinetuneOptions, command: str = "", show_progress: bool = True) -> dict:
    """Train a decoder on a frozen encoder (the whole U-Net with `train_encoder`); writes the SeqInvUNet
    (Hub layout) to `opts.output`."""
    opts.validate()
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    info = setup(opts.device)
    try:
        precision = loop.resolve_precision(opts.precision, info.device)
        loop.seed_everything(opts.seed + info.rank)
        out = Path(opts.output)
        unet = build_unet(load_encoder(opts.encoder), opts)
        class_weights = parse_class_weights(opts.class_weights, len(opts.labels)) if opts.labels else None
        subjects, data_desc = build_subjects(opts)
        unet = unet.to(info.device, memory_format=torch.channels_last_3d)
        subjects, data_device = place_pool(subjects, opts.data_device, info.device)
        model, params, optimizer, scheduler, start_step, before = loop.prepare_training(unet, opts, info, out)

        noise = NoiseConfig(opts.sigma_min, opts.sigma_max, opts.rician_prob)
        maker = patch_maker(opts, noise, data_device)
        data = loop.batches(
            PatchDataset(subjects, maker, opts.seed),
            start_step,
            opts.steps,
            opts.batch_size,
            info,
            opts.workers,
        )
        if _denoises(opts):
            loss_fn = lambda batch: denoise_loss(model, batch)  # noqa: E731
        else:
            loss_fn = lambda batch: segment_loss(model, batch, class_weights)  # noqa: E731
        history = loop.run_loop(
            model=model,
            params=params,
            loss_fn=loss_fn,
            data=data,
            optimizer=optimizer,
            scheduler=scheduler,
            start_step=start_step,
            steps=opts.steps,
            precision=precision,
            device=info.device,
            clip=12.0,
            checkpoint_dir=out / "checkpoints",
            checkpoint_every=opts.checkpoint_every,
            checkpoint_extra={
                "options": dataclasses.asdict(opts),
                "kind": opts.task,
                "config": unet.config.to_dict(),
            },
            info=info,
            description=f"fine-tune {opts.task}",
            show_progress=show_progress,
        )
        history = {k: before.get(k, []) + v for k, v in history.items()}
        if info.is_main:
            unet.config.training = finetune_record(opts, command, data_desc, precision, history, info, unet)
            synth = opts.phantom and opts.phantom_source == "synth"  # its own lesion share (issue 34)
            if task_ops(opts.task).prior_correction and not synth:
                shift = lesion_prior_shift(subjects, maker, opts.seed)
                shift_lesion_logit(unet, shift)
                unet.config.training["lesion_prior_shift"] = round(shift, 4)
            unet.cpu().save_pretrained(out)
        return {"history": history, "output": str(out)}
    finally:
        teardown(info)


def _denoises(opts: FinetuneOptions) -> bool:
    """The task's models predict noise (MSE on it) instead of labels (Dice + CE)."""
    return TASK_TABLE[opts.task].output_kind == "denoise"


def lesion_prior_shift(subjects, maker: PatchMaker, seed: int, samples: int = 200) -> float:
    """logit(lesion share of whole volumes) - logit(lesion share of training crops).

    Half the crops are centred on the lesion, so training sees lesions ~17x more often than a whole
    scan holds them and the net over-calls them (validation phantom: 2-4x the lesion volume as false
    positives). Adding this to the lesion logit is the prior correction of Saerens et al. (2002).
    """
    import math

    crops = PatchDataset(subjects, maker, seed + 1)  # other samples than training's
    in_crops = sum(float((crops[i]["label"] > 0).float().mean()) for i in range(samples)) / samples
    masks = [s.lesion for s in subjects if s.lesion is not None]
    if masks:
        in_volumes = sum(float((m > 0).float().mean()) for m in masks) / len(masks)
    else:  # head phantoms: lesions are drawn per crop, so draw one per whole head instead
        from training.head_phantoms import whole_head_lesion_share

        in_volumes = whole_head_lesion_share(subjects, seed)

    def logit(p: float) -> float:
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    return logit(in_volumes) - logit(in_crops)


@torch.no_grad()
def shift_lesion_logit(unet, shift: float) -> None:
    unet.decoder.head.bias[1] += shift


def finetune_record(opts, command, data_desc, precision, history, info: DistInfo, unet) -> dict:
    from seqinv import __version__

    last = history["loss"][-10:]
    return {
        "kind": opts.task,
        "encoder": opts.encoder,
        "encoder_training": dict(unet.encoder.config.training or {}),
        "data": data_desc,
        "command": command,
        "options": dataclasses.asdict(opts),
        "steps": opts.steps,
        "global_batch_size": opts.batch_size * info.world_size,
        "precision": precision,
        "noise_sigma_range": [opts.sigma_min, opts.sigma_max] if _denoises(opts) else None,
        "seqinv_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "metrics": {"final_loss": round(sum(last) / max(1, len(last)), 5), **timing_summary(history)},
    }
