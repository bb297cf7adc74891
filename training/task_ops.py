"""What training does for each task: the training side of the task table (seqinv/tasks.py says what a
task is: its outputs, labels, reference and masking).

One `TaskOps` per trainable task, keyed by its name: how a data folder of the task is read, how the
training samples draw lesions, and what is done to the model after training. Training code reads these
fields (and the `Task`'s), never the task's name; a new task adds its entry here (docs/architecture.md).
Torch-free on import: training/options.py checks options with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _tissue_folder(folder: Path) -> list:
    from training.datasets import ixi_subjects

    return ixi_subjects(folder, with_labels=True)


def _image_folder(folder: Path) -> list:
    from training.datasets import ixi_subjects

    return ixi_subjects(folder, with_labels=False)


def _tissue_synth(opts, sequences):
    from training.synth import SynthPatchMaker, synth_prior

    return SynthPatchMaker(opts.patch_size, synth_prior(opts), sequences)


def _lesion_synth(opts, sequences):
    from training.synth import synth_prior
    from training.synth_lesion import SynthLesionPatchMaker, lesion_prior

    return SynthLesionPatchMaker(opts.patch_size, synth_prior(opts), sequences, lesion_prior(opts))


def _lesion_folder(folder: Path) -> list:
    from training.datasets import arc_subjects

    return arc_subjects(folder)


@dataclass(frozen=True)
class TaskOps:
    """Training behaviour of one task.

    `read_folder`: the subjects of a `--data` folder in the task's layout (training/datasets.py).
    `lesion_rate`: head phantoms, share of crops with a stroke-like lesion (the rest teach that most of a
    scan has none); `lesion_central`: share of those with the lesion in the crop's central half.
    `lesion_focus`: cached phantoms, `PatchMaker.lesion_focus` of the crops are centred on the lesion.
    `prior_correction`: after training, the lesion logit is shifted from the crops' lesion share to a
    whole scan's (training/finetune.py `lesion_prior_shift`).
    `synth`: the sample maker of the SynthSeg-grade generator for the task (`--phantom-source synth`,
    training/synth.py, training/synth_lesion.py), from (options, sequence kinds); None: not offered.
    `synth` lesion samples skip the prior correction: its crops' lesion share is the old generator's.
    """

    read_folder: Callable[[Path], list]
    lesion_rate: float = 0.0
    lesion_central: float = 0.0
    lesion_focus: bool = False
    prior_correction: bool = False
    synth: Callable | None = None


TASK_OPS: dict[str, TaskOps] = {
    "ixi": TaskOps(_tissue_folder, synth=_tissue_synth),
    # the ICBM recipe centres half its crops on the lesion; head phantoms put one in 80 % of the crops
    "arc": TaskOps(
        _lesion_folder,
        lesion_rate=0.8,
        lesion_central=0.5,
        lesion_focus=True,
        prior_correction=True,
        synth=_lesion_synth,
    ),
    "denoise": TaskOps(_image_folder),
}
#: Behaviour of code that names no trainable task (pretraining's samples): no lesions, no labels.
NO_TASK = TaskOps(_image_folder)


def task_ops(task: str) -> TaskOps:
    """The training behaviour of `task`; an unknown name raises `ParameterError` naming the known ones."""
    if task not in TASK_OPS:
        from seqinv.errors import ParameterError

        raise ParameterError(f"--task {task!r}: training knows {', '.join(TASK_OPS)}")
    return TASK_OPS[task]


def load_folder(folder: str | Path, task: str) -> list:
    """The subjects of data folder `folder` for `task` (its layout: docs/training.md)."""
    from seqinv.errors import InputError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist")
    return task_ops(task).read_folder(folder)
