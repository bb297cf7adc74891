"""Many inputs at once: expand files/globs/folders, name outputs, run each case, keep going on failure."""

from __future__ import annotations

import csv
import glob
import hashlib
import io as _io
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seqinv import __version__
from seqinv.errors import InputError, SeqInvError
from seqinv.io import VOLUME_SUFFIXES, all_or_nothing, atomic_path, strip_suffix, volume_suffix

GLOB_CHARS = set("*?[")


def expand_inputs(items: Sequence[str]) -> list[Path]:
    """Files as given, globs expanded, folders -> their volume files (or the folder itself for DICOM)."""
    paths: list[Path] = []
    for item in items:
        if GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"no files match {item!r}; check the pattern")
            paths += [Path(m) for m in matches]
        elif Path(item).is_dir():
            found = sorted(
                p
                for p in Path(item).iterdir()
                if p.is_file()
                and volume_suffix(p) in VOLUME_SUFFIXES
                and volume_suffix(p) != ".dcm"
                and not p.name.startswith(".")
            )
            paths += found or [Path(item)]  # no volume files: a DICOM series folder
        else:
            paths.append(Path(item))
    if not paths:
        raise InputError("no input scans given; pass files, globs or folders")
    return list(dict.fromkeys(paths))


def derivative_name(path: Path, kind: str) -> str:
    """BIDS-derivative-style name: 'sub-01_T1w.nii.gz' -> 'sub-01_dseg.nii.gz', 'sub-01_desc-denoised_T1w...'.

    Non-BIDS names keep their stem: 'scan.nii.gz' -> 'scan_dseg.nii.gz'.
    """
    stem = strip_suffix(path) if path.name else "scan"
    parts = stem.split("_")
    bids = len(parts) > 1 and all("-" in p for p in parts[:-1]) and "-" not in parts[-1]
    entities, suffix = ("_".join(parts[:-1]), parts[-1]) if bids else (stem, "")
    if kind == "dseg":
        return f"{entities}_dseg.nii.gz"
    if kind == "denoised":
        return f"{entities}_desc-denoised_{suffix}.nii.gz" if bids else f"{stem}_desc-denoised.nii.gz"
    if kind == "features":
        return f"{stem}_features.npz"
    raise ValueError(kind)


def sibling(path: Path, old: str, new: str) -> Path:
    """'x_dseg.nii.gz' -> 'x_probseg.nii.gz' (replace the last `old` in the name, keep the folder)."""
    name = path.name
    stem = name[: -len(volume_suffix(name))] if volume_suffix(name) else Path(name).stem
    head, _, tail = stem.rpartition(old) if old in stem else (stem, "", "")
    return path.with_name(f"{head}{new}{tail}" + (volume_suffix(name) or path.suffix))


def sidecar_path(path: Path) -> Path:
    suffix = volume_suffix(path) or path.suffix
    return path.with_name(path.name[: len(path.name) - len(suffix)] + ".json")


def plan_outputs(
    inputs: list[Path], output: str | None, kind: str, file_suffixes: tuple[str, ...]
) -> list[Path]:
    """Main output file per input. `output` names a file (one input, with a known suffix) or a folder."""
    if output and len(inputs) == 1 and Path(output).name.lower().endswith(file_suffixes):
        targets = [Path(output)]
    else:
        if output:
            folder = Path(output)
            if folder.name.lower().endswith(file_suffixes):
                raise InputError(
                    f"-o {output} names a file but {len(inputs)} inputs were given; give a folder"
                )
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise InputError(
                    f"cannot create output folder {folder} ({err.strerror}); choose another -o"
                ) from None
            targets = [folder / derivative_name(p, kind) for p in inputs]
        else:
            targets = [p.parent / derivative_name(p, kind) for p in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, targets, strict=True):
        if target in seen:
            raise InputError(
                f"{seen[target]} and {source} would both write {target}; rename one or run them separately"
            )
        seen[target] = source
    for folder in {t.parent for t in targets}:
        check_writable(folder)
    return targets


def check_writable(folder: Path) -> None:
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist; create it or choose another -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable; choose another -o")


def file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, slice)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def model_metadata(source) -> dict:
    return {
        "name": getattr(source, "name", None),
        "source": getattr(source, "kind", None),
        "location": getattr(source, "location", None),
        "revision": getattr(source, "revision", None),
        "sha256": getattr(source, "sha256", None),
        "describe": source.describe() if hasattr(source, "describe") else str(source),
    }


def sidecar(command: str, input_path: Path, source, info, extra: dict) -> dict:
    """The JSON written next to each output: what made it, with what, how long it took."""
    return {
        "seqinv_version": __version__,
        "command": command,
        "input": str(input_path),
        "input_sha256": file_sha256(input_path),
        "model": model_metadata(source),
        "device": info.device,
        "precision": info.precision,
        "overlap": info.settings["overlap"],
        "sw_batch_size": info.settings["sw_batch_size"],
        "tta": info.settings["tta"],
        "timings_s": {k: round(v, 4) for k, v in info.timings_s.items()},
        **extra,
    }


def update_csv(path: Path, rows: list[dict], key: str = "input") -> None:
    """Write rows to a cohort CSV, replacing earlier rows of the same input and keeping the others."""
    existing: list[dict] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            existing = list(csv.DictReader(fh))
    new_keys = {r[key] for r in rows}
    merged = [r for r in existing if r.get(key) not in new_keys] + rows
    columns: list[str] = []
    for row in merged:
        columns += [c for c in row if c not in columns]
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(merged)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


@dataclass
class BatchSummary:
    """What a batch did; `results` maps each processed input to what `process` returned (its sidecar)."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    results: dict[Path, object] = field(default_factory=dict)


def run_cases(
    inputs: list[Path],
    outputs: list[Path],
    process: Callable[[Path, Path], object],
    skip: Callable[[Path, Path], bool],
    label: str,
    report: bool = True,
) -> BatchSummary:
    """Run `process(input, output)` per case; failures are collected and the other cases go on.

    A single input re-raises its user error (the CLI prints it as one line, exit 2). With `report`
    (the CLI), a progress bar is drawn on a terminal, failures and a summary are printed, and warnings
    raised while processing a case are printed as `warning: ...` lines; without it nothing is printed.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, quiet=not report)
    summary = BatchSummary()
    single = len(inputs) == 1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(
        *columns, console=console, transient=True, disable=single or not sys.stderr.isatty()
    ) as bar:
        task = bar.add_task(label, total=len(inputs))
        for source, target in zip(inputs, outputs, strict=True):
            bar.update(task, description=f"{label} {source.name}")
            if skip(source, target):
                summary.skipped.append(source)
                bar.advance(task)
                continue
            with warnings.catch_warnings(record=report) as caught:
                if report:
                    warnings.simplefilter("always")
                try:
                    with all_or_nothing():  # a failed or interrupted case leaves none of its files
                        summary.results[source] = process(source, target)
                    summary.done.append(source)
                except SeqInvError as err:
                    if single:
                        _print_warnings(console, caught)
                        raise
                    summary.failed.append((source, str(err)))
                    console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
                except (OSError, MemoryError, RuntimeError, ValueError) as err:
                    message = f"{source}: {type(err).__name__}: {err}"
                    if single:
                        _print_warnings(console, caught)
                        raise SeqInvError(message) from err
                    summary.failed.append((source, message))
                    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            _print_warnings(console, caught)
            bar.advance(task)
    if not single:
        console.print(
            f"{label}: {len(summary.done)} done, {len(summary.skipped)} skipped, "
            f"{len(summary.failed)} failed",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        for _source, message in summary.failed:
            console.print(f"  failed: {message}", markup=False, highlight=False, soft_wrap=True)
    return summary


def _print_warnings(console, caught) -> None:
    seen = set()
    for item in caught or ():
        text = str(item.message)
        if text not in seen:
            seen.add(text)
            console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)
