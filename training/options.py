"""Options of `seqinv train pretrain|segment|denoise` (also the keys of the TOML config files).

Torch-free on purpose: the CLI reads these dataclasses at registration, and `seqinv --help` must stay fast.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqinv.tasks import TASKS as TASK_TABLE
from seqinv.tasks import TISSUE_TASK
from seqinv.tasks import TRAIN_TASKS as TASKS

STRATEGIES = ("base", "seqaug", "seqinv")


@dataclass
class PretrainOptions:
    """Every option of `seqinv train pretrain` (also the keys of a TOML config file)."""

    output: str = ""
    strategy: str = "seqinv"
    phantom: bool = False
    maps: str = ""  # folder of qMRI subjects (instead of --phantom)
    phantoms: int = 16  # size of the phantom pool
    phantom_source: str = "icbm"  # icbm (ICBM152) | synthseg (training/head_phantoms.py)
    label_maps: str = ""  # folder of SynthSeg label maps (default: $SEQINV_LABEL_MAPS)
    random_contrast: float = 0.3  # synthseg: share of random-contrast samples
    clinical: float = 0.5  # synthseg: share of thick-slice (clinical) acquisitions
    preset: str = "small"
    pooling: str = "mean"  # mean (the paper's) or max: see docs/training.md
    patch_size: int = 64
    batch_size: int = 4
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.5
    clip: float = 12.0
    precision: str = "auto"
    threads: int = 0  # 0: torch default
    workers: int = 0
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False
    elastic: bool = False
    device: str = "auto"
    data_device: str = "cpu"
    name: str = ""
    cache_dir: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        from seqinv.errors import ParameterError

        if not self.output:
            raise ParameterError(
                "--output is required: the folder that receives the encoder and checkpoints/"
            )
        if self.strategy not in STRATEGIES:
            raise ParameterError(f"--strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.phantom == bool(self.maps):
            raise ParameterError("give exactly one data source: --phantom or --maps FOLDER (qMRI maps)")
        check_patch(self.patch_size)
        for name in ("batch_size", "steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.batch_size < 2:
            raise ParameterError(f"--batch-size {self.batch_size}: NT-Xent needs >= 2 pairs for negatives")
        check_data_device(self)
        check_phantom_source(self)


def require_train_extra() -> None:
    """Training imports MONAI, which `pip install seqinv` leaves out: say how to get it, in one line."""
    import importlib.util

    from seqinv.errors import SeqInvError

    if importlib.util.find_spec("monai") is None:
        raise SeqInvError("training needs MONAI, which this installation lacks: pip install 'seqinv[train]'")


def check_data_device(opts) -> None:
    from seqinv.errors import ParameterError

    if opts.data_device not in ("cpu", "cuda"):
        raise ParameterError(f"--data-device {opts.data_device!r} is not one of cpu, cuda")
    if opts.data_device == "cuda" and opts.workers:
        raise ParameterError("--data-device cuda generates samples in the training process: use --workers 0")


PHANTOM_SOURCES = ("icbm", "synthseg", "synth")


def check_phantom_source(opts) -> None:
    """The head-phantom options (training/head_phantoms.py): valid source, rates in [0, 1]."""
    from seqinv.errors import ParameterError

    if opts.phantom_source not in PHANTOM_SOURCES:
        raise ParameterError(
            f"--phantom-source {opts.phantom_source!r} is not one of {', '.join(PHANTOM_SOURCES)}"
        )
    for name in ("random_contrast", "clinical", "superficial_wm"):
        if not 0.0 <= getattr(opts, name, 0.0) <= 1.0:
            raise ParameterError(f"--{name.replace('_', '-')} {getattr(opts, name)}: a rate in [0, 1]")
    if not 0.3 <= getattr(opts, "pv_max", 0.6) <= 3.0:
        raise ParameterError(f"--pv-max {opts.pv_max}: a blur in voxels in [0.3, 3]")
    if opts.phantom_source in ("synthseg", "synth") and opts.data_device == "cuda":
        raise ParameterError(
            f"--phantom-source {opts.phantom_source} renders on the CPU: use --data-device cpu"
        )
    if opts.phantom_source == "synth" and not _synth_task(getattr(opts, "task", "")):
        synth_tasks = ", ".join(n for n in TASKS if _synth_task(n))
        raise ParameterError(
            f"--phantom-source synth makes tissue and lesion labels: use it with --task {synth_tasks}"
        )
    if not 0.0 <= getattr(opts, "physics_share", 0.0) <= 1.0:
        raise ParameterError(f"--physics-share {opts.physics_share}: a rate in [0, 1]")
    if not 0.0 <= getattr(opts, "lesion_free", 0.4) <= 1.0:
        raise ParameterError(f"--lesion-free {opts.lesion_free}: a rate in [0, 1]")
    if not 0.0 <= getattr(opts, "csf_rim_mm", 1.5) <= 12.0:
        raise ParameterError(f"--csf-rim-mm {opts.csf_rim_mm}: a distance in [0, 12] mm")


def _synth_task(task: str) -> bool:
    from training.task_ops import TASK_OPS

    return task in TASK_OPS and TASK_OPS[task].synth is not None


def sequence_kinds(text: str) -> tuple[str, ...] | None:
    """`--sequences` as a tuple of kinds (None: every kind of the priors)."""
    return tuple(k.strip() for k in text.split(",") if k.strip()) or None


def check_sequences(opts) -> None:
    from seqinv.errors import ParameterError

    kinds = sequence_kinds(opts.sequences)
    if not kinds:
        return  # no import of the priors (torch) for the default: bad options fail fast
    if not opts.phantom:
        raise ParameterError("--sequences chooses simulated contrasts: it needs --phantom, not --data")
    from seqinv.physics.priors import PRIORS, unknown_kinds

    unknown = unknown_kinds(kinds)
    if unknown:
        raise ParameterError(
            f"--sequences: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(PRIORS)}"
        )


def check_patch(patch_size: int) -> None:
    from seqinv.errors import ParameterError

    if patch_size < 32 or patch_size > 512 or patch_size % 16:
        raise ParameterError(
            f"--patch-size {patch_size}: must be a multiple of 16 in [32, 512] (the encoder halves 4 times); "
            "e.g. 64 or 96"
        )


@dataclass
class FinetuneOptions:
    """Every option of `seqinv train segment|denoise` (also the keys of a TOML config file)."""

    output: str = ""
    encoder: str = ""  # folder, Hub repo id or published model name of a SeqInvEncoder (or a U-Net's encoder)
    init: str = ""  # a trained U-Net (same encoder and task) whose decoder this run starts from
    train_encoder: bool = False  # fine-tune the encoder too (end to end) instead of freezing it
    task: str = TISSUE_TASK  # one of seqinv/tasks.py TRAIN_TASKS (ixi | arc | denoise)
    phantom: bool = False
    data: str = ""  # IXI-style or BIDS-style ARC folder (see docs/training.md)
    phantoms: int = 16
    phantom_source: str = "icbm"  # icbm (ICBM152) | synthseg (training/head_phantoms.py)
    label_maps: str = ""  # folder of SynthSeg label maps (default: $SEQINV_LABEL_MAPS)
    random_contrast: float = 0.3  # synthseg: share of random-contrast samples
    clinical: float = 0.5  # synthseg: share of thick-slice (clinical) acquisitions
    superficial_wm: float = 0.0  # synthseg: share of samples with darker WM under the cortex
    pv_max: float = 0.6  # synthseg: largest partial-volume blur (voxels; drawn in [0.3, pv_max])
    physics_share: float = 0.2  # synth: share of physics-sequence samples (the rest: Gaussian mixture)
    csf_rim_mm: float = 1.5  # synth: label 24 is CSF within this distance of GM/WM, background beyond
    lesion_free: float = 0.4  # synth, task arc: share of samples without a lesion (training/synth_lesion.py)
    label_fraction: float = 100.0
    sequences: str = ""  # comma-separated sequence kinds to simulate (seqinv.physics.priors); "": all
    patch_size: int = 64
    batch_size: int = 2
    steps: int = 1000
    lr: float = 5e-5
    warmup_steps: int = 0  # linear lr warm-up (fine-tuning a trained model end to end)
    weight_decay: float = 0.01
    class_weights: str = ""  # comma-separated, one per class
    sigma_min: float = 0.05
    sigma_max: float = 0.4
    rician_prob: float = 0.5
    precision: str = "auto"
    threads: int = 0
    workers: int = 0
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False
    device: str = "auto"
    data_device: str = "cpu"
    dropout: float = -1.0  # < 0: the encoder's
    decoder_features: int = 0  # width of the full-resolution decoder stage; 0: the encoder preset's
    name: str = ""
    cache_dir: str = ""

    def validate(self) -> None:
        from seqinv.errors import ParameterError

        if not self.output:
            raise ParameterError("--output is required: the folder that receives the model and checkpoints/")
        if not self.encoder:
            raise ParameterError(
                "--encoder is required: a pretrained encoder folder, Hub repo id or model name"
            )
        if self.task not in TASKS:
            raise ParameterError(f"--task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.phantom == bool(self.data):
            raise ParameterError("give exactly one data source: --phantom or --data FOLDER")
        check_patch(self.patch_size)
        for name in ("batch_size", "steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        check_data_device(self)
        check_phantom_source(self)
        check_sequences(self)
        if not 0 <= self.warmup_steps < self.steps:
            raise ParameterError(f"--warmup-steps {self.warmup_steps}: in [0, --steps)")
        if self.dropout >= 1.0:
            raise ParameterError(f"--dropout {self.dropout}: must be < 1 (negative: the encoder's)")
        if self.decoder_features < 0:
            raise ParameterError(
                f"--decoder-features {self.decoder_features}: must be >= 1 (0: the preset's)"
            )
        if not 0 <= self.sigma_min <= self.sigma_max:
            raise ParameterError(
                f"noise range [{self.sigma_min}, {self.sigma_max}]: need 0 <= --sigma-min <= --sigma-max"
            )

    @property
    def labels(self) -> list[str]:
        return list(TASK_TABLE[self.task].labels) if self.task in TASK_TABLE else []


@dataclass
class DenoiseResnetRecipe:
    """The keys of a `python -m training.denoise_resnet` recipe (training/recipes/denoise-resnet.toml)."""

    phantoms: int = 8
    contrasts_per_phantom: int = 4
    icbm152: bool = True
    head_phantoms: int = 0  # whole-head SynthSeg phantoms (training label maps only), one image each
    label_maps: str = ""  # folder of SynthSeg label maps (default: $SEQINV_LABEL_MAPS)
    init: str = ""  # a denoiser (folder or model name, same widths) to start from instead of scratch
    patch_size: int = 48
    batch_size: int = 4
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    widths: tuple = (32,) * 10
    sigma_min: float = 0.008
    sigma_max: float = 0.2
    rician_prob: float = 0.5
    offset_prob: float = 0.5
    offset_min: float = -0.6
    thick_prob: float = 0.4
    thick_mm: tuple = (1.5, 3.5)
    voxel_mm: tuple = (0.8, 1.25)
    gamma: tuple = (0.75, 1.33)
    bias_strength: float = 0.4
    gain: tuple = (0.8, 1.25)
    smooth_prob: float = 0.0  # share of patches blurred in 3D, like an averaged template (0: never drawn)
    smooth_sigma: tuple = (0.5, 1.5)  # that blur's std, in patch voxels
    precision: str = "fp32"  # fp32 or bf16 (autocast; fast only where bf16 is native, e.g. AMX)
    recalibrate_norms: int = 0  # at export: batch-norm statistics averaged over this many training batches
    validate_every: int = 200
    checkpoint_every: int = 100
    time_budget_s: float = 0.0  # > 0: the schedule ends (and training stops) after this much training time
    seed: int = 0
    name: str = "seqinv-denoise-resnet"


@dataclass
class DenoiseResnetOptions(DenoiseResnetRecipe):
    """A `denoise-resnet` recipe stage: the script's recipe keys and the folder that receives the model."""

    output: str = ""

    def validate(self) -> None:
        from seqinv.errors import ParameterError

        if not self.output:
            raise ParameterError("--output is required: the folder that receives the model and checkpoints")
        for name in ("phantoms", "patch_size", "batch_size", "steps", "validate_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.patch_size % 2:
            raise ParameterError(f"--patch-size {self.patch_size}: must be even (the denoiser halves it)")
        if not self.widths:
            raise ParameterError("--widths: give at least one layer width")
        if self.precision not in ("fp32", "bf16"):
            raise ParameterError(f"--precision {self.precision!r}: must be fp32 or bf16")
        if not 0.0 <= self.smooth_prob <= 1.0:
            raise ParameterError(f"--smooth-prob {self.smooth_prob}: must be in [0, 1]")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ParameterError(
                f"noise range [{self.sigma_min}, {self.sigma_max}]: need 0 < --sigma-min <= --sigma-max"
            )
        for name in ("rician_prob", "offset_prob", "thick_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParameterError(f"--{name.replace('_', '-')} {getattr(self, name)}: a rate in [0, 1]")

    @property
    def recipe(self) -> DenoiseResnetRecipe:
        """The script's recipe (without the output folder, which is not part of the recorded recipe)."""
        names = [f.name for f in dataclasses.fields(DenoiseResnetRecipe)]
        return DenoiseResnetRecipe(**{name: getattr(self, name) for name in names})


# ---- options from TOML files and back to a command line ------------------------------------------
#: Option fields that are not command-line options.
SKIP = {"extra"}
#: Recipe commands that are scripts of their own rather than `seqinv train` subcommands.
SCRIPTS = {"denoise-resnet": "python -m training.denoise_resnet"}


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a TOML file: keys are option names with '_' or '-' (`patch_size` or `patch-size`).

    `RECIPE.toml#STAGE` gives the options of one stage of a recipe (training/recipes/).
    """
    import tomllib

    from seqinv.errors import InputError

    path, _, stage = str(path).partition("#")
    file = Path(path)
    if not file.is_file():
        raise InputError(f"config file {path} does not exist; see training/recipes/ for examples")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"config file {path} is not valid TOML: {err}") from err
    if stage:
        found = [s for s in data.get("stage", []) if s.get("name") == stage]
        if not found:
            raise InputError(f"recipe {path} has no stage {stage!r}")
        data = found[0].get("options") or {}
    data = data.get("train", data)
    return {k.replace("-", "_"): v for k, v in data.items() if k != "command"}


def build_options(cls, config_file: str | None, given: dict[str, Any], explicit: set[str], fixed: dict):
    """Defaults < config file < options given on the command line; unknown config keys are an error."""
    from seqinv.errors import ParameterError

    names = [f.name for f in dataclasses.fields(cls) if f.name not in SKIP]
    values: dict[str, Any] = {}
    if config_file:
        loaded = read_config_file(config_file)
        unknown = sorted(set(loaded) - set(names))
        if unknown:
            raise ParameterError(
                f"config {config_file}: unknown options {unknown}; valid: {', '.join(names)}"
            )
        values.update(loaded)
    values.update({k: v for k, v in given.items() if k in explicit})
    values.update(fixed)
    return cls(**values)


def command_line(sub: str, opts) -> str:
    """The exact command that reproduces `opts` (every option that differs from its default)."""
    defaults = type(opts)()
    parts = SCRIPTS[sub].split() if sub in SCRIPTS else ["seqinv", "train", sub]
    names = [f.name for f in dataclasses.fields(opts)]
    for name in ["output"] + [n for n in names if n != "output"]:
        if name in SKIP or (sub != "pretrain" and name == "task"):
            continue
        value, default = getattr(opts, name), getattr(defaults, name)
        if value == default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, tuple | list):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    if sub == "segment":
        parts += ["--task", opts.task]
    return shlex.join(parts)
