"""Recipes: the ordered training stages that made a published model, replayable with `seqinv train replay`.

A recipe (training/recipes/<model>.toml) names the model and version it made and lists its stages:

    model = "ixi"
    version = "1.0"

    [[stage]]
    name = "gpu"              # the stage's output folder: RUNS/gpu
    command = "segment"       # pretrain | segment | denoise | denoise-head | denoise-resnet
    note = "why this stage"   # optional
    [stage.options]           # the options of `seqinv train <command>` (TOML names); denoise-resnet:
                              # `seqinv train denoise` as `python -m training.denoise_resnet`
    encoder = "@seqinv"       # "@name": the output folder of an earlier stage

    [[stage]]
    name = "ixi-e2e5b"
    recipe = "ixi.toml"       # or: the stages of another recipe up to `until`, replayed in the same RUNS
    until = "e2e5b"

Replaying runs every stage in order (stages whose output already holds a model are kept) and writes
`lineage.json` into each stage's folder: the recipe and the commands of every stage up to it, which
`seqinv train export` copies into the exported config.json (`training.lineage`).

A stage made before its command was renamed says so (`published_as = "denoise"` on a `denoise-head`
stage): it runs under today's name and records the name its published lineage holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.lineage import LINEAGE_NAME
from training.options import SKIP, DenoiseResnetOptions, FinetuneOptions, PretrainOptions, command_line

COMMANDS = {
    "pretrain": PretrainOptions,
    "segment": FinetuneOptions,
    "denoise": DenoiseResnetOptions,  # the default denoiser
    "denoise-head": FinetuneOptions,  # the research head on an encoder (task denoise)
    "denoise-resnet": DenoiseResnetOptions,  # `denoise` as the script that made denoise 2.x
}
#: Earlier names of a command: `seqinv train denoise` trained the research head until issue 32.
EARLIER_NAMES = {"denoise-head": ("denoise",)}


@dataclass
class Stage:
    name: str
    command: str
    options: Any  # PretrainOptions | FinetuneOptions | DenoiseResnetOptions, with outputs resolved
    note: str = ""
    published_as: str = ""  # the command's earlier name, which the published lineage records

    @property
    def command_line(self) -> str:
        """The command as the lineage records it."""
        return command_line(self.published_as or self.command, self.options)

    @property
    def run_line(self) -> str:
        """The command that runs it today."""
        return command_line(self.command, self.options)


def _error(path: Path, message: str):
    from seqinv.errors import InputError

    return InputError(f"recipe {path}: {message}")


def read_recipe(path: str | Path) -> dict:
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise _error(path, "not found; the published models' recipes are in training/recipes/")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise _error(path, f"not valid TOML: {err}") from err
    if not data.get("stage"):
        raise _error(path, "has no [[stage]] tables")
    if "nonlocal_stage" in data:
        from seqinv.errors import ParameterError
        from seqinv.inference.nonlocal_stage import NonlocalStage

        try:
            NonlocalStage.from_config(dict(data["nonlocal_stage"]))
        except (ParameterError, TypeError, ValueError) as err:
            raise _error(path, f"nonlocal_stage: {err}") from err
    return data


def plan(path: str | Path, runs: str | Path, until: str | None = None) -> list[Stage]:
    """The stages of a recipe in order, with `output` set to RUNS/<stage> and "@stage" references resolved."""
    path, runs = Path(path), Path(runs)
    stages: list[Stage] = []
    outputs: dict[str, str] = {}
    for raw in read_recipe(path)["stage"]:
        name = raw.get("name") or ""
        if not name or name in outputs:
            raise _error(path, f"every stage needs a unique name; got {name!r}")
        if raw.get("recipe"):  # the stages of another recipe, replayed into the same runs folder
            inner = plan(path.parent / raw["recipe"], runs, raw.get("until"))
            stages += [s for s in inner if s.name not in outputs]
            outputs.update({s.name: s.options.output for s in inner})
            outputs[name] = inner[-1].options.output
        else:
            stages.append(_stage(path, raw, runs / name, outputs))
            outputs[name] = str(runs / name)
        if name == until:
            return stages
    if until is not None:
        raise _error(path, f"has no stage {until!r}")
    return stages


def _stage(path: Path, raw: dict, output: Path, outputs: dict[str, str]) -> Stage:
    command = raw.get("command", "")
    if command not in COMMANDS:
        raise _error(path, f"stage {raw['name']!r}: command {command!r} is not one of {', '.join(COMMANDS)}")
    cls = COMMANDS[command]
    names = {f.name for f in dataclasses.fields(cls)} - SKIP
    options = {k.replace("-", "_"): v for k, v in (raw.get("options") or {}).items()}
    unknown = sorted(set(options) - names)
    if unknown:
        raise _error(path, f"stage {raw['name']!r}: unknown options {unknown}")
    for key, value in options.items():
        if isinstance(value, str) and value.startswith("@"):
            if value[1:] not in outputs:
                raise _error(path, f"stage {raw['name']!r}: {key} = {value!r} names no earlier stage")
            options[key] = outputs[value[1:]]
    if command == "denoise-head":
        options["task"] = "denoise"
    if cls is DenoiseResnetOptions:  # TOML arrays are the recipe's tuples
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    opts = cls(**{**options, "output": str(output)})
    opts.validate()
    return Stage(raw["name"], command, opts, raw.get("note", ""), _published_as(path, raw))


def _published_as(path: Path, raw: dict) -> str:
    name, command = raw.get("published_as", ""), raw["command"]
    if name and name not in EARLIER_NAMES.get(command, ()):
        raise _error(path, f"stage {raw['name']!r}: published_as {name!r} is no earlier name of {command!r}")
    return name


def lineage(path: str | Path, stages: list[Stage], upto: int) -> dict:
    """What a stage's run records of its recipe. The recipe's `nonlocal_stage` (a denoiser's second stage,
    `seqinv.inference.nonlocal_stage`) belongs to its published model: only the last stage records it,
    and the export writes it into the model's config."""
    data = read_recipe(path)
    record = {
        "recipe": Path(path).name,
        "model": data.get("model", ""),
        "version": str(data.get("version", "")),
        "stages": [{"name": s.name, "command": s.command_line} for s in stages[: upto + 1]],
    }
    if "nonlocal_stage" in data and stages[upto].name == plan(path, "runs")[-1].name:
        record["nonlocal_stage"] = dict(data["nonlocal_stage"])  # the recipe's last stage, nested or not
    return record


def _done(stage: Stage) -> bool:
    out = Path(stage.options.output)
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def replay(
    path: str | Path, runs: str | Path, until: str | None = None, dry_run: bool = False, echo=print
) -> list[Stage]:
    """Run a recipe's stages in order (finished ones are kept); `dry_run` only prints the commands."""
    stages = plan(path, runs, until)
    for i, stage in enumerate(stages):
        done = _done(stage)
        echo(("# done: " if done and not dry_run else "") + stage.run_line)
        if dry_run or done:
            continue
        Path(stage.options.output).mkdir(parents=True, exist_ok=True)
        record = lineage(path, stages, i)
        (Path(stage.options.output) / LINEAGE_NAME).write_text(json.dumps(record, indent=2) + "\n")
        _run(stage)
    return stages


def _run(stage: Stage) -> None:
    if isinstance(stage.options, DenoiseResnetOptions):
        from training.denoise_resnet import run_denoise

        run_denoise(stage.options, command=stage.command_line)  # trains, then exports into its folder
    elif stage.command == "pretrain":
        from training.pretrain import run_pretrain

        run_pretrain(stage.options, command=stage.command_line)
    else:
        from training.finetune import run_finetune

        run_finetune(stage.options, command=stage.command_line)
