"""A task owns its behaviour (seqinv/tasks.py, training/task_ops.py); test sets never choose
(seqinv/physics/sets.py)."""

import ast
from pathlib import Path

import pytest

from seqinv.errors import ParameterError
from seqinv.tasks import OUTPUT_KINDS, TASKS, TRAIN_TASKS
from training.task_ops import TASK_OPS, task_ops

ROOT = Path(__file__).resolve().parents[2]
#: The tables that may name a task; everything else reads a task's fields.
TABLES = {"seqinv/tasks.py", "training/task_ops.py"}


def test_every_trainable_task_has_its_training_behaviour():
    assert set(TASK_OPS) == set(TRAIN_TASKS)
    with pytest.raises(ParameterError, match="training knows ixi, arc, denoise"):
        task_ops("features")


def test_lesion_behaviour_follows_the_tasks_target():
    for name, ops in TASK_OPS.items():
        lesion = TASKS[name].lesion
        assert (ops.lesion_rate > 0) == ops.lesion_focus == ops.prior_correction == lesion


def _task_name_comparisons(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        values = set()
        for part in (node.left, *node.comparators):
            items = part.elts if isinstance(part, ast.Tuple | ast.List | ast.Set) else [part]
            values |= {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
        if values & names:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_outside_the_task_tables_branches_on_a_task_name():
    names = set(TASKS) - set(OUTPUT_KINDS)  # `ixi`, `arc`: comparing an output kind is fine
    found = []
    for package in ("seqinv", "training"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if str(path.relative_to(ROOT)) not in TABLES:
                found += _task_name_comparisons(path, names)
    assert found == []


# ---- sets ------------------------------------------------------------------------------------------------


def test_refuse_test_refuses_test_maps_and_seeds_only():
    from seqinv.physics.sets import (
        DEVELOPMENT_MAPS,
        DEVELOPMENT_SEED,
        FIT_MAPS,
        HELD_OUT_SEED,
        TEST_MAPS,
        refuse_test,
    )

    refuse_test("choose", maps=DEVELOPMENT_MAPS + FIT_MAPS, seeds=[DEVELOPMENT_SEED, 1000])
    with pytest.raises(ParameterError, match=rf"label maps \[{TEST_MAPS[0]}\] are test maps: never choose"):
        refuse_test("choose", maps=[3, TEST_MAPS[0]])
    with pytest.raises(ParameterError, match=rf"seed {HELD_OUT_SEED} is the test seed: never tune"):
        refuse_test("tune", seeds=[HELD_OUT_SEED])


def test_the_denoiser_chooses_its_checkpoint_on_the_development_phantom(tmp_path, monkeypatch):
    from seqinv.physics.sets import DEVELOPMENT_SEED, HELD_OUT_SEED
    from training import denoise_resnet

    assert denoise_resnet.VALIDATION_SEED == DEVELOPMENT_SEED
    monkeypatch.setattr(denoise_resnet, "VALIDATION_SEED", HELD_OUT_SEED)
    with pytest.raises(ParameterError, match="test seed: never choose checkpoints"):
        denoise_resnet.train(denoise_resnet.Recipe(steps=1), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_training_seeds_skip_the_development_seed():
    from seqinv.physics.sets import DEVELOPMENT_SEED
    from training.phantom_cache import training_seeds

    seeds = training_seeds(4, first=DEVELOPMENT_SEED - 1)
    assert DEVELOPMENT_SEED not in seeds and len(seeds) == 4
