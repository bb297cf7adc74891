"""The files one case writes, as one transaction: all of them stand, or none does.

    with WriteTransaction() as writes:
        write_volume(writes.output(dst), labels, affine)   # registered before it is written
        write_json(writes.output(sidecar_path(dst)), meta)
    # an error or Ctrl-C inside the block removes the new files and brings back those they replaced

Each file is still written atomically (`seqinv.io.atomic_path`: a temporary, then one rename); the
transaction keeps the file an output replaces as a hard link beside it (`backup_path`) until the case
finishes, so a killed run can be rolled back by the next one (`seqinv.inference.batch.recover_cases`).
A transaction is an object of its caller, not process state: batches in two threads never see each
other's files.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def backup_path(path: Path) -> Path:
    """Where the file an unfinished case replaces waits: '.x_dseg.nii.gz.seqinv-previous'."""
    return path.with_name(f".{path.name}.seqinv-previous")


class WriteTransaction:
    """The outputs of one case (`written`). `output(path)` before writing a file; `commit()` keeps them
    all, `rollback()` removes them and restores what they replaced (as a context manager: rollback on
    any exception, Ctrl-C included, else commit). One transaction per case."""

    def __init__(self) -> None:
        self.written: list[Path] = []

    def output(self, path: str | os.PathLike) -> Path:
        """Register `path` as an output of this case, keeping the file there until the case finishes."""
        path = Path(path)
        if path not in self.written:
            _keep_previous(path)
            self.written.append(path)
        return path

    def commit(self) -> None:
        for path in self.written:
            with contextlib.suppress(OSError):
                os.unlink(backup_path(path))

    def rollback(self) -> None:
        for path in self.written:
            with contextlib.suppress(OSError):
                os.unlink(path)
            restore_previous(path)

    def __enter__(self) -> WriteTransaction:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.rollback()


def restore_previous(path: Path) -> None:
    """Put the file kept at `backup_path(path)` back at `path` (nothing if none is kept)."""
    if not forget_unreplaced(path):
        with contextlib.suppress(OSError):
            os.replace(backup_path(path), path)


def forget_unreplaced(path: Path) -> bool:
    """Remove the kept file of an output not replaced yet (the kept file is still the one at `path`);
    whether it was so. A rename between two links of one file would do nothing, so this comes first."""
    backup = backup_path(path)
    try:
        kept, current = os.lstat(backup), os.lstat(path)
        if (kept.st_dev, kept.st_ino) != (current.st_dev, current.st_ino):
            return False
        os.unlink(backup)
    except OSError:
        return False
    return True


def _keep_previous(path: Path) -> None:
    """A hard link to the file at `path`, if any: the new file's rename leaves it as it was. Where links
    are refused (some network or FAT file systems) the file is moved aside instead."""
    backup = backup_path(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(backup)  # a killed run's, that a live run in the folder kept from being recovered
    try:
        os.link(path, backup, follow_symlinks=False)  # a link output is kept as the link it is
    except FileNotFoundError:
        return
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, backup)
