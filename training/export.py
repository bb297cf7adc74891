"""Export a training checkpoint to the Hub layout (config.json + model.safetensors + README.md model card
rendered from the card template, package data `training/card_template.md`, with measured metrics), ready
for `push_to_hub`. Paths of the machine it ran on are made relative (published files carry none)."""

from __future__ import annotations

import csv
import json
import math
import re
import string
from importlib import resources
from pathlib import Path

from training.lineage import read_lineage

TEMPLATE_NAME = "card_template.md"
#: The card's summary by the model's output kind (`ModelConfig.output_kind`).
DESCRIPTIONS = {
    "features": "Pretrained 3D encoder: one feature vector per brain MRI patch, whatever the sequence.",
    "segment": "Segmentation head on a frozen pretrained encoder.",
    "denoise": "Denoising head on a frozen pretrained encoder: predicts the noise; output = input − noise.",
}
END_TO_END = {  # fine-tuned with --train-encoder: the encoder is no longer the published one
    "segment": "Segmentation U-Net: a pretrained encoder and its head, fine-tuned end to end.",
    "denoise": "Denoising U-Net: a pretrained encoder and its head, fine-tuned end to end; "
    "predicts the noise; output = input − noise.",
}


def describe(output_kind: str, training: dict) -> str:
    """The card's one-line summary; says "end to end" when the encoder was trained too."""
    if (training.get("options") or {}).get("train_encoder") and output_kind in END_TO_END:
        return END_TO_END[output_kind]
    return DESCRIPTIONS[output_kind]


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the latest one of a run folder (RUN/checkpoints/step_*.pt)."""
    from seqinv.errors import InputError
    from training.loop import latest_checkpoint

    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        if folder.is_dir() and (found := latest_checkpoint(folder)) is not None:
            return found
    raise InputError(f"no checkpoint at {path}; give a step_*.pt file or a training output folder")


def model_from_checkpoint(state: dict):
    """The network a checkpoint's config names (its `arch`: encoder, unet or denoiser), weights loaded."""
    from seqinv.models import ModelConfig
    from seqinv.models.factory import ARCH_CLASSES

    config = ModelConfig.from_dict(state["config"], source="checkpoint config")
    weights = state["model"]
    if config.arch == "encoder":  # pretraining checkpoints hold the projection head too
        weights = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    model = ARCH_CLASSES[config.arch](config)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def read_metrics(csv_path: str | Path, model_label: str) -> list[dict]:
    """Rows of an evaluate summary.csv for one model label."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["model"] == model_label]


def metrics_markdown(rows: list[dict]) -> str:
    if not rows:
        return "Not measured yet (run `seqinv evaluate` and export with `--metrics`)."
    lines = ["| task | contrast | site | metric | value |", "|---|---|---|---|---:|"]
    for r in rows:
        value = float(r["value"])
        shown = "-" if not math.isfinite(value) else f"{value * (100 if r['metric'] == 'dice' else 1):.2f}"
        lines.append(f"| {r['task']} | {r['contrast']} | {r['site']} | {r['metric']} | {shown} |")
    note = (
        "Dice in percent, HD95 in mm, PSNR in dB (`psnr_l1_db`: L = 1 on z-scored images as the paper; "
        "`psnr_range_db`: L = the clean image's range)."
    )
    return "\n".join(lines) + "\n\n" + note


def card_template() -> str:
    """The model card template, read from the installed package (a wheel has no model_cards/)."""
    return resources.files("training").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def render_card(model, metrics_rows: list[dict], template: Path | None = None) -> str:
    from seqinv.models.weights import ARCH_CLASSES

    config = model.config
    kind = config.output_kind
    training = config.training or {}
    cls = ARCH_CLASSES[config.arch]
    usage = {
        "segment": "seqinv segment scan.nii.gz --model <this repo id or folder>",
        "denoise": "seqinv denoise scan.nii.gz --model <this repo id or folder>",
    }.get(kind, "seqinv embed scan.nii.gz --model <this repo id or folder>")
    values = {
        "pipeline_tag": {"segment": "image-segmentation", "denoise": "image-to-image"}.get(
            kind, "image-feature-extraction"
        ),
        "task": kind,
        "title": config.name or f"seqinv {config.preset} {kind}",
        "description": describe(kind, training),
        "cls": cls,
        "preset": config.preset,
        "outputs": f"{config.out_channels} ({', '.join(config.labels) or '-'})",
        "spacing": "×".join(f"{s:g}" for s in config.spacing_mm),
        "patch_size": "×".join(str(p) for p in config.patch_size),
        "normalization": json.dumps(config.normalization),
        "features": str(list(config.features)),
        "seqinv_version": config.seqinv_version,
        "usage": usage,
        "metrics": metrics_markdown(metrics_rows),
        "command": training.get("command") or "not recorded",
        "data": training.get("data", "not recorded"),
        "steps": training.get("steps", "?"),
        "batch": training.get("global_batch_size", "?"),
        "precision": training.get("precision", "?"),
    }
    text = template.read_text(encoding="utf-8") if template else card_template()
    return string.Template(text).safe_substitute(values)


def export(
    checkpoint: str | Path,
    output: str | Path,
    metrics_csv: str | Path | None = None,
    model_label: str = "",
    name: str = "",
) -> Path:
    """Checkpoint → Hub folder; metrics from an evaluate summary.csv go into config and card."""
    from training.loop import read_checkpoint
    from training.options import command_line

    if _finished_model_folder(checkpoint):  # a run's final model, e.g. copied back without checkpoints
        from seqinv.models.factory import build_from_folder

        model = build_from_folder(Path(checkpoint)).eval()
        state, path = {}, Path(checkpoint)
    else:
        path = find_checkpoint(checkpoint)
        state = read_checkpoint(path, fix="give another checkpoint or run folder")
        model = model_from_checkpoint(state)
        if _run_output_of(checkpoint, state):
            # the run's own output holds what training did after its last checkpoint (arc's prior correction)
            from seqinv.models.factory import build_from_folder

            model, path = build_from_folder(Path(checkpoint)).eval(), Path(checkpoint) / "model.safetensors"
    rows = read_metrics(metrics_csv, model_label or model.config.name) if metrics_csv else []
    training = {**_final_record(checkpoint), **(model.config.training or {})}
    options = state.get("options", training.get("options", {}))
    kind = state.get("kind", training.get("kind"))
    if options and not training.get("command"):
        training["command"] = _command_for(kind, options, command_line)
    training.update(
        {
            "kind": kind,
            "steps": state.get("step", training.get("steps")),
            "options": options,
            "exported_from": str(path),
        }
    )
    run_lineage = read_lineage(_run_folder(checkpoint))
    if run_lineage:
        training["lineage"] = run_lineage
    history = state.get("history", {}).get("loss", [])
    final_loss = (training.get("metrics") or {}).get("final_loss")
    training["metrics"] = {
        "final_loss": round(sum(history[-10:]) / max(1, len(history[-10:])), 5) if history else final_loss,
        **{
            f"{r['task']}/{r['contrast']}/{r['site']}/{r['metric']}": round(float(r["value"]), 5)
            for r in rows
        },
    }
    model.config.training = portable(training)
    if not model.config.task_name:  # runs of seqinv before configs recorded their task
        model.config.task_name = _task_name(kind, options)
        model.config.validate()
    if name:
        model.config.name = name
    out = model.save_pretrained(output)
    (Path(out) / "README.md").write_text(render_card(model, rows), encoding="utf-8")
    return Path(out)


def portable(value):
    """`value` without this machine's paths: the working directory and home folder become relative, and
    any other absolute path keeps only its last part (`/scratch/me/runs/ixi` -> `ixi`)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if not isinstance(value, str):
        return value
    for root, short in ((str(Path.cwd()), ""), (str(Path.home()), "~/")):
        if root not in ("", "/"):
            value = value.replace(root + "/", short).replace(root, short.rstrip("/") or ".")
    return _ABSOLUTE.sub(r"\1\3", value)


#: an absolute path at the start of a string or after a space, "=" or quote: (before)(folders/)(last part)
_ABSOLUTE = re.compile(r"""(^|[\s="'])(/[^\s"']*/)([^\s/"']+)""")


def _run_folder(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    if path.is_file():  # RUN/checkpoints/step_*.pt
        return path.parent.parent
    return path


def _task_name(kind: str | None, options: dict) -> str:
    """The task a run trained: features (pretraining) or its --task (fine-tuning)."""
    from seqinv.tasks import TASKS

    if kind == "pretrain":
        return "features"
    return kind if kind in TASKS else options.get("task", "")


def _finished_model_folder(path: str | Path) -> bool:
    path = Path(path)
    has_weights = (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    has_checkpoints = (path / "checkpoints").is_dir() and any((path / "checkpoints").glob("step_*.pt"))
    return path.is_dir() and has_weights and not has_checkpoints


def _run_output_of(run: str | Path, state: dict) -> bool:
    """True when `run` is a run folder whose final model was written after the checkpoint `state`'s step."""
    run = Path(run)
    if not (run.is_dir() and (run / "model.safetensors").is_file()):
        return False
    return _final_record(run).get("steps") == state.get("step")


def _final_record(run: str | Path) -> dict:
    """The training record (data, batch, precision, timings) that a finished run wrote to its config.json;
    checkpoints are saved mid-run, before that record exists."""
    config = Path(run) / "config.json"
    if not config.is_file():
        return {}
    return dict(json.loads(config.read_text(encoding="utf-8")).get("training") or {})


def _command_for(kind: str, options: dict, command_line) -> str:
    """The `seqinv train` command of a run: pretrain, or the subcommand of its task's output kind."""
    from seqinv.tasks import TASKS
    from training.options import FinetuneOptions, PretrainOptions

    if kind == "pretrain":
        return command_line("pretrain", PretrainOptions(**options))
    opts = FinetuneOptions(**options)
    return command_line(TASKS[opts.task].output_kind, opts)
