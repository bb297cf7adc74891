"""Many inputs at once: expand files/globs/folders, name outputs, run each case, keep going on failure."""

from __future__ import annotations

import contextlib
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
from seqinv.inference.transaction import (
    WriteTransaction,
    backup_path,
    forget_unreplaced,
    restore_previous,
)
from seqinv.io import VOLUME_SUFFIXES, atomic_path, strip_suffix, volume_suffix

try:
    import fcntl
except ImportError:  # Windows: no locks; concurrent CSV writers and killed runs are not handled there
    fcntl = None

GLOB_CHARS = set("*?[")
#: Name endings of label maps, masks and features (BIDS derivatives): never scans to process.
OUTPUT_ENDINGS = ("_dseg", "_probseg", "_mask", "_features")
#: Suffixes that make `-o` look like a file rather than a folder (besides volume suffixes).
FILE_SUFFIXES = (".npz", ".npy", ".png", ".jpg", ".csv", ".tsv", ".json", ".txt", ".gz", ".zip", ".pt")
#: First characters that make a spreadsheet run a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def expand_inputs(items: Sequence[str], note: Callable[[str], None] | None = None) -> list[Path]:
    """Files as given, globs expanded, folders -> their volume files (or the folder itself for DICOM).

    Folders and globs leave out seqinv's own outputs (`is_seqinv_output`), with one `note`; a file named
    explicitly is taken as it is.
    """
    paths: list[Path] = []
    skipped: list[Path] = []
    for item in items:
        if GLOB_CHARS & set(item):
            found = [Path(m) for m in sorted(glob.glob(item))]
            if not found:
                raise InputError(f"no files match {item!r}; check the pattern")
        elif Path(item).is_dir():
            found = _volume_files(Path(item)) or [Path(item)]  # no volume files: a DICOM series folder
        else:
            paths.append(Path(item))
            continue
        outputs = [p for p in found if p.is_file() and is_seqinv_output(p)]
        skipped += outputs
        paths += [p for p in found if p not in outputs]
    if not paths:
        why = f": the folders and globs hold only seqinv outputs ({_names(skipped)})" if skipped else ""
        raise InputError(f"no input scans given{why}; pass files, globs or folders of scans")
    if skipped and note:
        note(
            f"skipped {len(skipped)} seqinv output{'s' if len(skipped) > 1 else ''} in folders and globs "
            f"({_names(skipped)}); name a file to process it"
        )
    return list(dict.fromkeys(paths))


def _volume_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and volume_suffix(p) in VOLUME_SUFFIXES
        and volume_suffix(p) != ".dcm"
        and not p.name.startswith(".")
    )


def _names(paths: list[Path], most: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:most])
    return names + (", ..." if len(paths) > most else "")


def is_seqinv_output(path: Path) -> bool:
    """A label map, mask or features by its name, or any file with a JSON sidecar that seqinv wrote."""
    if strip_suffix(path).endswith(OUTPUT_ENDINGS):
        return True
    meta = read_json(sidecar_path(path))
    return meta is not None and "seqinv_version" in meta and "command" in meta


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None (missing, unreadable, not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def derivative_name(path: Path, kind: str) -> str:
    """BIDS-derivative-style name: 'sub-01_T1w.nii.gz' -> 'sub-01_dseg.nii.gz', 'sub-01_desc-denoised_T1w...'.

    Non-BIDS names keep their stem: 'scan.nii.gz' -> 'scan_dseg.nii.gz'. `kind` is "denoised",
    "features" or the labels' suffix ("dseg", "label-lesion_mask").
    """
    stem = strip_suffix(path) if path.name else "scan"
    parts = stem.split("_")
    bids = len(parts) > 1 and all("-" in p for p in parts[:-1]) and "-" not in parts[-1]
    entities, suffix = ("_".join(parts[:-1]), parts[-1]) if bids else (stem, "")
    if kind == "denoised":
        return f"{entities}_desc-denoised_{suffix}.nii.gz" if bids else f"{stem}_desc-denoised.nii.gz"
    if kind == "features":
        return f"{stem}_features.npz"
    return f"{entities}_{kind}.nii.gz"  # labels: their task's suffix (dseg, label-lesion_mask)


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
    elif output:
        folder = _output_folder(output, len(inputs), file_suffixes)
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


def _output_folder(output: str, n_inputs: int, file_suffixes: tuple[str, ...]) -> Path:
    folder = Path(output)
    if folder.name.lower().endswith(file_suffixes):
        raise InputError(f"-o {output} names a file but {n_inputs} inputs were given; give a folder")
    if not folder.is_dir() and (volume_suffix(folder) or folder.suffix.lower() in FILE_SUFFIXES):
        raise InputError(  # else `-o labels.mgz` would silently become a folder
            f"-o {output} looks like a file name, but -o takes a folder (or, for one input, a "
            f"{' or '.join(file_suffixes)} file); choose another -o"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = f"cannot create output folder {folder} ({err.strerror})"
        raise InputError(f"{why}; choose another -o") from None
    return folder


def refuse_overwriting(inputs: list[Path], outputs: list[Path]) -> None:
    """No output may be an input or an input's JSON sidecar, by name, symlink or hard link."""
    protected: dict = {}
    for source in inputs:
        sidecar_file = sidecar_path(source)
        for path, what in ((source, "the input"), (sidecar_file, "the sidecar of the input")):
            if path is source or path.is_file():
                for key in _identities(path):
                    protected.setdefault(key, f"{what} {source}")
    for output in outputs:
        for key in _identities(output):
            if key in protected:
                raise InputError(f"{output} would overwrite {protected[key]}; choose another -o")


def _identities(path: Path) -> list:
    """What makes two paths one file: the resolved name, and (existing files) device and inode."""
    keys: list = [str(path.resolve())]
    with contextlib.suppress(OSError):
        info = path.stat()
        keys.append((info.st_dev, info.st_ino))
    return keys


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


def sidecar(
    command: str, input_path: Path, input_sha256: str | None, source, info, extra: dict, options: dict
) -> dict:
    """The JSON written next to each output: what made it, from which input bytes (`input_sha256`, hashed
    before any output was written), with which `options`, how long it took, and the sha256 of each file in
    `extra["outputs"]` (written before the sidecar), which `--skip-existing` checks."""
    outputs = extra.get("outputs", {})
    return {
        "seqinv_version": __version__,
        "command": command,
        "input": str(input_path),
        "input_sha256": input_sha256,
        "model": model_metadata(source),
        "options": options,
        "device": info.device,
        "precision": info.precision,
        "overlap": info.settings["overlap"],
        "sw_batch_size": info.settings["sw_batch_size"],
        "tta": info.settings["tta"],
        "timings_s": {k: round(v, 4) for k, v in info.timings_s.items()},
        **extra,
        "outputs_sha256": {kind: file_sha256(Path(path)) for kind, path in outputs.items()},
    }


def trusted(source: Path, target: Path, model, options: dict, files: dict[str, Path]) -> dict | None:
    """`--skip-existing`: the sidecar of `target` if its case can be trusted, else None.

    Trusted: made by this model (sha256) with these `options` from these input bytes, and each of `files`
    (kind -> path: what this run would write) is the file the sidecar recorded.
    """
    meta = read_json(sidecar_path(target))
    if meta is None or meta.get("options") != options:
        return None
    sha = getattr(model, "sha256", None)
    if sha is None or (meta.get("model") or {}).get("sha256") != sha:
        return None
    recorded = meta.get("outputs_sha256") or {}
    if any(recorded.get(kind) is None or recorded[kind] != file_sha256(p) for kind, p in files.items()):
        return None
    return meta if meta.get("input_sha256") == file_sha256(source) else None


# ------------------------------------------------------------------------------------ the cohort CSV
def update_csv(path: Path, rows: list[dict], key: str = "input") -> None:
    """Write rows to a cohort CSV, replacing earlier rows of the same input and keeping the others.

    Writers take turns (a lock file beside it), so concurrent runs keep every row; cells a spreadsheet
    would run as formulas are escaped. A failed write (disk full) raises `InputError` and leaves the
    previous file as it was.
    """
    try:
        with locked(path) as alone:
            if alone:  # no other writer: temporaries are those of a killed one
                remove_temporaries(path)
            _write_csv(path, _merge(_read_rows(path), rows, key))
    except OSError as err:
        raise InputError(
            f"cannot write {path} ({err.strerror or err}); its new rows are not saved, the other outputs "
            "are complete: free space or choose another --volumes, then rerun with --skip-existing"
        ) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path} is not a CSV seqinv can update ({err}); choose another --volumes") from None


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _merge(existing: list[dict], rows: list[dict], key: str) -> list[dict]:
    rows = [_escaped(r) for r in rows]
    new_keys = {_resolved(r[key]) for r in rows}
    return [r for r in map(_escaped, existing) if _resolved(r.get(key)) not in new_keys] + rows


def _resolved(value: str | None) -> str | None:
    """Rows are keyed by the input's absolute path; older rows may hold it as typed."""
    return str(Path(value).resolve()) if value else value


def _escaped(row: dict) -> dict:
    return {_cell(k): _cell(v) for k, v in row.items()}


def _cell(value):
    """A leading quote keeps a spreadsheet from running a cell as a formula; numbers stay numbers."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(c for row in rows for c in row))
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        _write_text(fh, buffer.getvalue())


def _write_text(fh, text: str) -> None:
    fh.write(text)
    fh.flush()
    os.fsync(fh.fileno())  # a full disk shows here, while the temporary can still be removed


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock for `path` (flock on a hidden lock file beside it, removed after); yields
    whether it is held: without fcntl, or on a file system without locks, the block runs unlocked."""
    lock = path.with_name(f".{path.name}.lock")
    fd = _lock(lock) if fcntl is not None else None
    try:
        yield fd is not None
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(lock)  # before unlocking: a waiter then sees a new file and locks that
            os.close(fd)


def _lock(lock: Path) -> int | None:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks here (some network file systems)
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock)
            return None
        except BaseException:  # interrupted while waiting
            os.close(fd)
            raise
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # the holder before us removed it: lock the current one


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


# ------------------------------------------------------------------------- what killed runs left
def remove_temporaries(path: Path) -> None:
    """Remove the temporaries `seqinv.io.atomic_path` made for `path` (the caller knows they are stale)."""
    for temp in path.parent.glob(glob.escape(f".{path.name}.") + "*.tmp*"):
        with contextlib.suppress(OSError):
            temp.unlink()


def recover_cases(cases: list[list[Path]]) -> None:
    """Undo what a killed run left of these cases (each its files, the sidecar last): its temporaries go,
    and the files it replaced come back from their backups unless the sidecar, written last, vouches for
    the new ones. Only for folders no live run writes into (`writing_into`)."""
    for files in cases:
        for path in files:
            remove_temporaries(path)
            forget_unreplaced(path)  # kept, but the killed run had not written it yet
        replaced = [p for p in files if backup_path(p).exists()]
        keep_new = bool(replaced) and _vouched(files[-1], replaced)
        for path in replaced:
            with contextlib.suppress(OSError):
                if keep_new:
                    os.unlink(backup_path(path))
                else:
                    restore_previous(path)


def _vouched(sidecar_file: Path, replaced: list[Path]) -> bool:
    if sidecar_file in replaced:  # the sidecar was replaced, so every file before it was too
        return True
    recorded = set(((read_json(sidecar_file) or {}).get("outputs_sha256") or {}).values())
    return all(file_sha256(p) in recorded for p in replaced)


@contextlib.contextmanager
def writing_into(cases: list[list[Path]]):
    """Hold a shared lock on each output folder while a batch writes its `cases` there.

    A folder that no live run holds can only have temporaries and backups of killed runs: when this run
    is alone in all its folders, `recover_cases` cleans up first. Without fcntl nothing is locked or
    cleaned (a killed run cannot be told from a live one).
    """
    fds = _open_folders({p.parent for files in cases for p in files})
    try:
        if fds and all(_flock(fd, "LOCK_EX", "LOCK_NB") for fd in fds):  # no other seqinv run writes here
            recover_cases(cases)
        for fd in fds:
            _flock(fd, "LOCK_SH")
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _open_folders(folders: set[Path]) -> list[int]:
    if fcntl is None:
        return []
    fds = []
    for folder in sorted(folders):  # one order for every run: no two runs wait for each other
        with contextlib.suppress(OSError):
            fds.append(os.open(folder if str(folder) else ".", os.O_RDONLY))
    if len(fds) < len(folders):  # a folder that cannot be opened: no locks, no clean-up
        for fd in fds:
            os.close(fd)
        return []
    return fds


def _flock(fd: int, *flags: str) -> bool:
    how = 0
    for flag in flags:
        how |= getattr(fcntl, flag)
    try:
        fcntl.flock(fd, how)
        return True
    except OSError:
        return False


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
    process: Callable[[Path, Path, WriteTransaction], object],
    skip: Callable[[Path, Path], bool],
    label: str,
    report: bool = True,
    describe: Callable[[Path, object], str] | None = None,
) -> BatchSummary:
    """Run `process(input, output, writes)` per case; failures are collected and the other cases go on.

    Each case writes its files through its own `WriteTransaction` (`writes.output(path)` before writing
    each): a failed or interrupted case leaves none of its files, and those it replaced come back.
    A single input re-raises its user error (the CLI prints it as one line, exit 2). With `report`
    (the CLI), a progress bar is drawn on a terminal, each case says what it wrote (`describe(output,
    result)`) or that it was skipped, failures (naming their file) and a summary are printed, and warnings
    raised while processing a case are printed as `warning: ...` lines; without it nothing is printed
    (and the process's warning filters are left alone).
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
                _say(console, f"skipped {source}: {target} is up to date (--skip-existing)")
                bar.advance(task)
                continue
            with _caught_warnings(report) as caught:
                try:
                    with WriteTransaction() as writes:  # a failed or interrupted case: none of its files
                        summary.results[source] = process(source, target, writes)
                    summary.done.append(source)
                except SeqInvError as err:
                    err.args = (_naming(str(err), source),)
                    if single:
                        _print_warnings(console, caught)
                        raise
                    summary.failed.append((source, str(err)))
                    _say(console, f"error: {err}")
                except (OSError, MemoryError, RuntimeError, ValueError) as err:
                    message = f"{source}: {type(err).__name__}: {err}"
                    if single:
                        _print_warnings(console, caught)
                        raise SeqInvError(message) from err
                    summary.failed.append((source, message))
                    _say(console, f"error: {message}")
            _print_warnings(console, caught)
            if describe is not None and source in summary.results:
                _say(console, describe(target, summary.results[source]))
            bar.advance(task)
    if not single:
        _say(
            console,
            f"{label}: {len(summary.done)} done, {len(summary.skipped)} skipped, "
            f"{len(summary.failed)} failed",
        )
        for _source, message in summary.failed:
            _say(console, f"  failed: {message}")
    return summary


@contextlib.contextmanager
def _caught_warnings(report: bool):
    """The warnings of one case, to print them (`report`); without it the process-wide warning filters
    (not thread-safe to change) are not touched."""
    if not report:
        yield None
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _naming(message: str, source: Path) -> str:
    """A failure line names its file (a message about the scan's content may not)."""
    return message if str(source) in message or source.name in message else f"{source}: {message}"


def _say(console, line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_warnings(console, caught) -> None:
    seen = set()
    for item in caught or ():
        text = str(item.message)
        if text not in seen:
            seen.add(text)
            _say(console, f"warning: {text}")
