"""The task table: every published model records its task; tasks decide default models and masking."""

import json

import pytest
from hub_server import repository_copy

from seqinv.errors import ParameterError, WeightsError
from seqinv.models import ModelConfig, catalogue
from seqinv.tasks import (
    BRAIN_TASK,
    SEGMENT_TASKS,
    TARGETS,
    TASKS,
    TRAIN_TASKS,
    get_task,
    task_of,
    trained_task,
)


@pytest.mark.parametrize("entry", catalogue.CATALOGUE, ids=lambda e: e.ref)
def test_every_published_model_records_the_task_of_its_catalogue_entry(entry):
    assert entry.task in TASKS
    folder = repository_copy(entry)  # the bundled default, or the Hub copy of an older version (hub/)
    config = ModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.task_name == entry.task and task_of(config) == entry.task
    assert config.task == TASKS[entry.task].config_task
    assert list(config.labels) == list(TASKS[entry.task].labels)


def test_each_task_has_a_published_default_model_of_that_task():
    for task in TASKS.values():
        assert catalogue.resolve(task.default_model).task == task.name
    assert SEGMENT_TASKS == ("ixi", "arc") and TRAIN_TASKS == ("ixi", "arc", "denoise")
    assert TASKS["ixi"].head_mask and not TASKS["arc"].head_mask and TASKS["arc"].brain_mask
    assert TASKS[BRAIN_TASK].labels == ("background", "csf", "gm", "wm")


def test_unknown_task_and_inconsistent_config_are_clear_errors():
    with pytest.raises(ParameterError, match=r"unknown task .ixy.; expected one of ixi, arc, denoise, feat"):
        get_task("ixy")
    with pytest.raises(ParameterError, match=r"task_name 'ixi' needs task 'segment', not 'denoise'"):
        ModelConfig.from_preset("tiny", arch="unet", task="denoise", task_name="ixi")


def test_task_of_never_guesses_a_segmentation_task_from_the_outputs():
    old = ModelConfig.from_preset("tiny", arch="unet", task="segment", out_channels=2)
    assert task_of(old) == ""  # saved before configs recorded their task
    assert task_of(ModelConfig.from_preset("tiny", arch="unet", task="denoise")) == "denoise"
    assert task_of(ModelConfig.from_preset("tiny")) == "features"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_model_of_another_task_is_refused(task, tiny_models):
    from seqinv.inference import load_task_model

    net, _ = load_task_model(task, str(tiny_models[task]))
    assert net.config.task_name == task
    for other in TRAIN_TASKS:
        if other != task and task != "features":
            with pytest.raises(WeightsError, match=rf"(is a model of task '{task}'|is a '\w+' model)"):
                load_task_model(other, str(tiny_models[task]))
    if task != "features":  # any model's encoder gives features
        assert load_task_model("features", str(tiny_models[task]))[0].config.arch == "encoder"


def test_each_task_says_what_it_is_measured_against():
    for task in TASKS.values():
        assert task.target in TARGETS
        assert task.output_kind == task.config_task
        assert task.lesion == (task.target == "lesion")
    assert TASKS[BRAIN_TASK].target == "labels" and not TASKS[BRAIN_TASK].lesion


def test_trained_task_refuses_encoders_and_configs_without_a_task():
    assert trained_task(ModelConfig.from_preset("tiny", arch="unet", output_kind="denoise")) == "denoise"
    with pytest.raises(ParameterError, match="has task 'features'; evaluate needs a fine-tuned U-Net"):
        trained_task(ModelConfig.from_preset("tiny"))
    with pytest.raises(ParameterError, match="records no task_name"):
        trained_task(ModelConfig.from_preset("tiny", arch="unet", output_kind="segment", out_channels=2))
