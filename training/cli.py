"""`seqinv train pretrain|segment|denoise|denoise-head|export` and `seqinv evaluate`.

Options come from the option dataclasses (PretrainOptions, FinetuneOptions, DenoiseResnetOptions):
one source of truth for the CLI, the TOML config files and the command recorded in every model's config.
Heavy imports stay inside command bodies so `seqinv --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect

import typer

from training.options import SKIP, build_options, command_line, require_train_extra

HELP = {
    "output": "Output folder: the model in the Hub layout, plus checkpoints/.",
    "strategy": "Pretraining views: base (fixed MPRAGE), seqaug (one random sequence), seqinv (two).",
    "phantom": "Train on the built-in head phantoms (seqinv.physics.phantom) instead of data on disk.",
    "maps": "Folder of qMRI maps (PD, R1, R2s, MT, optional R2), or of one such sub-folder per subject.",
    "data": "IXI-style folder (task ixi/denoise) or BIDS-style ARC folder (task arc); see docs/training.md.",
    "phantoms": "Number of phantoms in the training pool (built once, cached on disk); synthseg: label maps "
    "(at most 16).",
    "phantom_source": "Phantoms: icbm (ICBM152-based, cached), synthseg (whole heads from SynthSeg's label "
    "maps, a new subject, contrast and acquisition per sample; docs/physics.md) or synth (the same heads "
    "through the SynthSeg-grade generator, training/synth.py; maps 1-14, 15-16 kept for development).",
    "label_maps": "synthseg: folder of training_seg_01..18.nii.gz (default $SEQINV_LABEL_MAPS).",
    "random_contrast": "synthseg: share of samples with random per-tissue intensities instead of physics.",
    "clinical": "synthseg: share of samples acquired with thick slices (1-7 mm, random axis, gaps).",
    "superficial_wm": "synthseg: share of samples whose white matter darkens towards the cortex (less myelin "
    "under the cortex, as in real scans; labels stay WM).",
    "decoder_features": "Width of the full-resolution decoder stage (0: the encoder preset's). With --init "
    "from a narrower model the extra channels start silent, so training starts from that model's output.",
    "physics_share": "synth: share of samples simulated with a physics sequence (the rest: a random "
    "intensity and spread per label, as SynthSeg).",
    "csf_rim_mm": "synth: extra-cerebral CSF (label 24) counts as CSF within this many mm of grey or white "
    "matter, background beyond (docs/physics.md, the CSF convention).",
    "lesion_free": "synth, task arc: share of samples with no lesion, which teach what is not one.",
    "pv_max": "synthseg: largest partial-volume blur in voxels (drawn per sample in [0.3, pv-max]).",
    "preset": "Encoder size: tiny (tests), lite (bundled CPU models), mini (0.9 M), small (3.5 M), "
    "paper (40.6 M).",
    "pooling": "How h is pooled from the last map for NT-Xent: mean (paper) or max (bundled encoders).",
    "patch_size": "Cubic patch edge in voxels (1 mm); a multiple of 16, >= 32.",
    "batch_size": "Samples (pretraining: view pairs) per step and per process.",
    "steps": "Optimisation steps.",
    "lr": "AdamW learning rate (paper: 1e-3 pretraining, 5e-5 fine-tuning; small CPU runs like 1e-3).",
    "weight_decay": "AdamW weight decay.",
    "warmup_steps": "Linear learning-rate warm-up over this many steps (for end-to-end runs from a trained "
    "model: AdamW's first steps otherwise move every weight by about lr).",
    "temperature": "NT-Xent temperature.",
    "clip": "Gradient-norm clipping threshold.",
    "precision": "auto, fp32 or bf16 (auto picks bf16 only where the hardware has fast bf16).",
    "threads": "torch.set_num_threads (0: torch's default).",
    "workers": "DataLoader worker processes generating samples (0: in the training process).",
    "seed": "Run seed: data, augmentation and initialisation are a function of it.",
    "checkpoint_every": "Save a checkpoint every N steps (and at the end).",
    "resume": "Resume from the latest checkpoint in OUTPUT/checkpoints (exact: same losses).",
    "elastic": "Add Rand3DElastic to the spatial augmentation (slow on CPU).",
    "device": "auto, cpu or cuda.",
    "data_device": "Where samples are generated: cpu (worker processes) or cuda (on the GPU, --workers 0).",
    "dropout": "Decoder dropout (default: the encoder's, 0.2 in the paper).",
    "name": "Model name stored in config.json.",
    "cache_dir": "Phantom cache folder (default ~/.cache/seqinv/phantoms or $SEQINV_CACHE).",
    "encoder": "Pretrained encoder: a folder, a Hub repo id or a published model name.",
    "init": "Start the decoder from this trained U-Net (same encoder and task), e.g. to train on; with "
    "--train-encoder its encoder too, and it may be a model of another task (all but its output layer).",
    "sequences": "Sequence kinds to simulate on phantoms, comma-separated (e.g. mprage,fse,flair); "
    "a kind listed twice is drawn twice as often; default: all kinds of the priors.",
    "train_encoder": "Fine-tune the encoder too (end to end) instead of freezing it (the paper freezes it).",
    "task": "ixi (tissue: bg/CSF/GM/WM), arc (stroke lesion), denoise.",
    "label_fraction": "Percent of training subjects whose labels are used (1, 10, 100).",
    "class_weights": "Cross-entropy class weights, comma-separated, one per class.",
    "sigma_min": "Denoising: smallest noise sigma (z-scored units).",
    "sigma_max": "Denoising: largest noise sigma (z-scored units).",
    "rician_prob": "Denoising: probability of Rician rather than Gaussian noise.",
}

#: `seqinv train denoise` (the default denoiser, training/denoise_resnet.py): its recipe keys.
DENOISER_HELP = {
    "phantoms": "Training phantoms (built-in, cached), each imaged with random sequences.",
    "contrasts_per_phantom": "Random sequences imaged per phantom.",
    "icbm152": "Add nilearn's ICBM152 2009a T1w template to the clean images.",
    "head_phantoms": "Add this many whole-head SynthSeg phantoms (training label maps only).",
    "label_maps": "Folder of SynthSeg label maps (default $SEQINV_LABEL_MAPS).",
    "init": "Start from this denoiser (folder or model name) of the same widths, or a shallower one.",
    "patch_size": "Cubic patch edge in voxels (even).",
    "lr": "AdamW peak learning rate (cosine schedule down to --min-lr).",
    "min_lr": "Learning rate at the end of the schedule.",
    "widths": "Layer widths at half resolution, comma-separated.",
    "sigma_min": "Smallest noise std (units of the image's 99th percentile).",
    "sigma_max": "Largest noise std (units of the image's 99th percentile).",
    "offset_prob": "Share of Gaussian samples with a negative offset (as in z-scored images).",
    "offset_min": "Most negative such offset.",
    "thick_prob": "Share of patches with one thick axis (blurred like a slice profile).",
    "thick_mm": "Thick-axis voxel size range (mm), comma-separated.",
    "voxel_mm": "Voxel size range (mm), comma-separated.",
    "gamma": "Random gamma range, comma-separated.",
    "bias_strength": "Largest bias-field strength.",
    "gain": "Random gain range, comma-separated.",
    "smooth_prob": "Share of patches blurred in 3D, like an averaged template.",
    "smooth_sigma": "That blur's std range (voxels), comma-separated.",
    "precision": "fp32 or bf16 (fast only where bf16 is native).",
    "recalibrate_norms": "Batch-norm statistics averaged over this many batches before the export.",
    "validate_every": "Validate on the development phantom every N steps; the best step is exported.",
    "checkpoint_every": "Save a checkpoint every N steps (a run resumes from the latest).",
    "time_budget_s": "> 0: the schedule ends, and training stops, after this much training time.",
}


def _make_command(cls, sub: str, runner, fixed: dict | None = None, hidden=frozenset(), helps=None):
    """A typer command whose options are the dataclass fields (plus --config); tuple fields are
    comma-separated text."""
    fixed, helps = fixed or {}, {**HELP, **(helps or {})}
    defaults = cls()
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=str | None,
            default=typer.Option(None, "--config", help="TOML file of options (command-line options win)."),
        ),
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    ]
    for f in dataclasses.fields(cls):
        if f.name in SKIP or f.name in fixed or f.name in hidden:
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if isinstance(default, bool) else [flag]
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=type(default),
                default=typer.Option(default, *decls, help=helps.get(f.name, "")),
            )
        )

    def command(**kwargs):
        ctx = kwargs.pop("ctx")
        config = kwargs.pop("config")
        # typer vendors its own click: compare the source by name, not by enum identity
        explicit = {k for k in kwargs if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
        opts = _tuples(build_options(cls, config, kwargs, explicit, fixed))
        runner(opts, command_line(sub, opts))

    command.__signature__ = inspect.Signature(params)
    return command


def _tuples(opts):
    """Tuple fields given as comma-separated text (command line) or arrays (TOML) as tuples of the
    default's type, so the recorded command leaves out those equal to the default."""
    from seqinv.errors import ParameterError

    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if not (isinstance(f.default, tuple) and f.default) or isinstance(value, tuple):
            continue
        items = value.split(",") if isinstance(value, str) else value
        try:
            setattr(opts, f.name, tuple(type(f.default[0])(v) for v in items))
        except (TypeError, ValueError):
            flag = "--" + f.name.replace("_", "-")
            raise ParameterError(f"{flag} {value!r}: give comma-separated numbers, e.g. 1,2") from None
    return opts


def _pretrain(opts, command: str) -> None:
    opts.validate()  # bad options fail before torch is imported
    require_train_extra()
    from training.pretrain import run_pretrain

    result = run_pretrain(opts, command=command)
    typer.echo(f"encoder written to {result['output']}")


def _finetune(opts, command: str) -> None:
    opts.validate()
    require_train_extra()
    from training.finetune import run_finetune

    result = run_finetune(opts, command=command)
    typer.echo(f"model written to {result['output']}")


def _denoise(opts, command: str) -> None:
    opts.validate()
    require_train_extra()
    from training.denoise_resnet import run_denoise

    result = run_denoise(opts, command=command)
    typer.echo(f"model written to {result['output']}")


def register(app: typer.Typer) -> None:
    from training.options import (  # torch-free: --help stays fast
        DenoiseResnetOptions,
        FinetuneOptions,
        PretrainOptions,
    )

    train = typer.Typer(
        help="Pretrain encoders, fine-tune heads and train the default denoiser (simulated data or yours).",
        no_args_is_help=True,
    )
    train.command(
        "pretrain", help="Contrastive pretraining (Base / SeqAug / SeqInv) on qMRI maps or phantoms."
    )(_make_command(PretrainOptions, "pretrain", _pretrain))
    train.command("segment", help="Fine-tune a segmentation head (tissue: --task ixi, lesion: --task arc).")(
        _make_command(FinetuneOptions, "segment", _finetune, hidden={"sigma_min", "sigma_max", "rician_prob"})
    )
    train.command(
        "denoise", help="Train the default denoiser (a residual CNN; training/recipes/denoise-resnet.toml)."
    )(_make_command(DenoiseResnetOptions, "denoise", _denoise, helps=DENOISER_HELP))
    train.command(
        "denoise-head", help="Fine-tune a denoising head on an encoder (research; noise prediction)."
    )(
        _make_command(
            FinetuneOptions, "denoise-head", _finetune, fixed={"task": "denoise"}, hidden={"class_weights"}
        )
    )
    _register_more(train, app)
    app.add_typer(train, name="train")


def _register_more(train: typer.Typer, app: typer.Typer) -> None:
    """export and evaluate (defined in their own modules' command functions)."""
    try:
        from training.commands import register_extra
    except ModuleNotFoundError as err:
        if err.name != "training.commands":
            raise
        return
    register_extra(train, app)
