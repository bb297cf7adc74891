"""The one table of seqinv tasks: what each task's model outputs and how its calls are masked.

A task (`ixi`, `arc`, `denoise`, `features`) is what a user asks for (`seqinv segment --task arc`,
`seqinv train segment --task ixi`); every model's config.json records the task it serves (`task_name`).
Pure data: nothing here imports torch or reads files.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What a network's output means (`ModelConfig.task`): features (an encoder), segment, denoise.
CONFIG_TASKS = ("features", "segment", "denoise")


@dataclass(frozen=True)
class Task:
    """One task. `config_task` is the `ModelConfig.task` its models have; `default_model` a catalogue name.

    `head_mask`: voxels outside the head become background (tissue labels in the noisy air of a scan are
    not anatomy). `brain_mask`: calls stay inside the brain (CSF, GM, WM) of a tissue model.
    `refine`: the tissue probabilities are refined by this scan's intensities (seqinv/inference/refine.py).
    `one_brain`: the brain (every class but background) is kept as one connected piece with its holes
    filled (`seqinv.inference.core.brain_component`): neck, tongue or eyes labelled apart from it go.
    `output_suffix`: the BIDS-derivative suffix of its labels (`sub-01_<output_suffix>.nii.gz`) and
    `volumes_csv` the default name of its cohort volumes CSV: tasks never overwrite each other's files.
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
        ),
        Task("denoise", "denoise", "denoise", (), False, False, "denoising (predicts the noise)"),
        Task("features", "features", "seqinv", (), False, False, "encoder features"),
    )
}
#: The task whose model bounds lesion calls (`brain_mask`).
BRAIN_TASK = "ixi"
SEGMENT_TASKS = tuple(n for n, t in TASKS.items() if t.config_task == "segment")
TRAIN_TASKS = tuple(n for n, t in TASKS.items() if t.trainable)


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name raises `ParameterError` listing the known ones."""
    if name not in TASKS:
        from seqinv.errors import ParameterError

        raise ParameterError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of(config) -> str:
    """The task a model config serves: its `task_name`, else the one task of its `task` ("" if several).

    Models saved before configs recorded `task_name` are segmentation models of unknown task; they run
    only where the user names the task (`--task`), never by guessing from their outputs.
    """
    if getattr(config, "task_name", ""):
        return config.task_name
    matches = [t.name for t in TASKS.values() if t.config_task == getattr(config, "task", None)]
    return matches[0] if len(matches) == 1 else ""
