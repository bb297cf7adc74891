"""The one table of seqinv tasks: what each task's model outputs, what it is measured against and how its
calls are masked.

A task (`ixi`, `arc`, `denoise`, `features`) is what a user asks for (`seqinv segment --task arc`,
`seqinv train segment --task ixi`); every model's config.json records the task it serves (`task_name`).
Code outside this table (and training/task_ops.py, what training does per task) reads a task's fields,
never its name: adding a task is one `Task` here and one `TaskOps` there (docs/architecture.md).
Pure data: nothing here imports torch or reads files.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What a network's output means (`ModelConfig.output_kind`): features (an encoder), segment, denoise.
OUTPUT_KINDS = ("features", "segment", "denoise")
CONFIG_TASKS = OUTPUT_KINDS  # the old name
#: Where a task's reference lies (`Task.target`): the subject's or phantom's attribute of that name.
TARGETS = ("", "labels", "lesion")


@dataclass(frozen=True)
class Task:
    """One task. `config_task` (also `output_kind`) is the `ModelConfig.output_kind` its models have;
    `default_model` a catalogue name.

    `head_mask`: voxels outside the head become background (tissue labels in the noisy air of a scan are
    not anatomy). `brain_mask`: calls stay inside the brain (CSF, GM, WM) of a tissue model.
    `refine`: the tissue probabilities are refined by this scan's intensities (seqinv/inference/refine.py).
    `one_brain`: the brain (every class but background) is kept as one connected piece with its holes
    filled (`seqinv.inference.core.brain_component`): neck, tongue or eyes labelled apart from it go.
    `output_suffix`: the BIDS-derivative suffix of its labels (`sub-01_<output_suffix>.nii.gz`) and
    `volumes_csv` the default name of its cohort volumes CSV: tasks never overwrite each other's files.
    `target`: what its outputs are trained on and measured against: "labels" (the tissue classes of a
    subject or phantom), "lesion" (a lesion mask: phantoms then carry a lesion) or "" (none).
    """

    name: str
    config_task: str
    default_model: str
    labels: tuple[str, ...]
    head_mask: bool
    brain_mask: bool
    description: str
    refine: bool = False
    one_brain: bool = False
    output_suffix: str = "dseg"
    volumes_csv: str = "volumes.csv"
    target: str = ""

    @property
    def output_kind(self) -> str:
        """What its models output (`ModelConfig.output_kind`): features, segment or denoise."""
        return self.config_task

    @property
    def lesion(self) -> bool:
        """Its reference is a lesion mask: its phantoms carry a lesion."""
        return self.target == "lesion"

    @property
    def trainable(self) -> bool:
        """Fine-tuned by `seqinv train segment|denoise` (encoders come from `seqinv train pretrain`)."""
        return self.config_task != "features"


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "ixi",
            "segment",
            "ixi",
            ("background", "csf", "gm", "wm"),
            head_mask=True,
            brain_mask=False,
            description="brain tissue (0 background, 1 CSF, 2 GM, 3 WM)",
            refine=True,
            one_brain=True,
            target="labels",
        ),
        Task(
            "arc",
            "segment",
            "arc",
            ("background", "lesion"),
            head_mask=False,
            brain_mask=True,
            description="stroke lesions (0 background, 1 lesion); research only",
            output_suffix="label-lesion_mask",
            volumes_csv="lesion_volumes.csv",
            target="lesion",
        ),
        Task("denoise", "denoise", "denoise", (), False, False, "denoising (predicts the noise)"),
        Task("features", "features", "seqinv", (), False, False, "encoder features"),
    )
}
#: The brain-tissue task (CSF, GM, WM): the real-scan benchmark's segmentation task.
TISSUE_TASK = "ixi"
#: The task whose model bounds lesion calls (`brain_mask`).
BRAIN_TASK = TISSUE_TASK
SEGMENT_TASKS = tuple(n for n, t in TASKS.items() if t.config_task == "segment")
TRAIN_TASKS = tuple(n for n, t in TASKS.items() if t.trainable)


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name raises `ParameterError` listing the known ones."""
    if name not in TASKS:
        from seqinv.errors import ParameterError

        raise ParameterError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of(config) -> str:
    """The task a model config serves: its `task_name`, else the one task of its `output_kind` ("" if
    several).

    Models saved before configs recorded `task_name` are segmentation models of unknown task; they run
    only where the user names the task (`--task`), never by guessing from their outputs.
    """
    if getattr(config, "task_name", ""):
        return config.task_name
    matches = [t.name for t in TASKS.values() if t.output_kind == _output_kind(config)]
    return matches[0] if len(matches) == 1 else ""


def trained_task(config) -> str:
    """The task of a fine-tuned model's config (`task_of`); `ParameterError` for an encoder or a model
    that records no task: measuring it needs to know what it was trained for."""
    task = task_of(config)
    if task not in TRAIN_TASKS:
        from seqinv.errors import ParameterError

        kind = _output_kind(config)
        why = f"has task {kind!r}" if kind == "features" else "records no task_name"
        raise ParameterError(
            f"model {getattr(config, 'name', '') or '?'} {why}; evaluate needs a fine-tuned U-Net of task "
            f"{', '.join(TRAIN_TASKS)} (seqinv train segment / denoise, exported by this seqinv)"
        )
    return task


def _output_kind(config) -> str | None:
    return getattr(config, "output_kind", None) or getattr(config, "task", None)
