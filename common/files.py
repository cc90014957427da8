"""Writing a run's files: whole or not at all, and one clear error when the disk refuses.

Every file a run writes (checkpoints, results.json, policy.msgpack) goes through
`write_atomically`: to a temporary name, then renamed over the final one, so a reader never sees
half a file. Any OSError (a full disk, a quota, a vanished mount) removes the temporary file and
becomes a `RunWriteError`: what could not be written, where, why, how much space is left there,
and the run's last complete checkpoint, which `--resume` continues from once there is space.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.errors import OfflaxError


class RunWriteError(OfflaxError):
    """A run's file could not be written (disk full, permissions, ...): the run stops, exit 1."""

    exit_code = 1

    def __init__(self, what: str, path: Path, error: OSError, last_checkpoint: Path | None,
                 run_dir: Path | None = None, size: int | None = None):
        self.what, self.path, self.error = what, Path(path), error
        self.last_checkpoint = last_checkpoint
        run_dir = Path(run_dir) if run_dir is not None else self.path.parent
        if last_checkpoint is not None:
            after = (f"Its last complete checkpoint is '{last_checkpoint}': free some space, then "
                     f"`--resume {run_dir}` continues the run from it exactly.")
        else:
            after = ("It had not completed a checkpoint yet: free some space and start it again "
                     "(in a new --output-dir).")
        super().__init__(
            f"Could not write {what} '{self.path}' ({error.strerror or error}; "
            + (f"it needs {readable(size)}, " if size is not None else "")
            + f"{free_space(self.path)} free there). The run stopped; no partial file was left. "
            + after)


def readable(size: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def free_space(path: Path) -> str:
    """Free space on the filesystem of `path` (or of its nearest existing parent), readable."""
    for candidate in (Path(path), *Path(path).parents):
        try:
            return readable(shutil.disk_usage(candidate).free)
        except OSError:
            continue
    return "unknown space"


def write_atomically(path: Path, data: bytes, what: str, last_checkpoint=None,
                     run_dir: Path | None = None, durable: bool = False):
    """Write `data` to `path` through a temporary file renamed over it. `durable` also fsyncs
    the file and its directory (checkpoints: they must survive a power cut). On an OSError the
    temporary file is removed and a RunWriteError raised; an older `path` stays as it was.

    `last_checkpoint` (a path, or a function giving it) and `run_dir` go into the error's
    message."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_directory(path.parent)
    except OSError as error:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        last = last_checkpoint() if callable(last_checkpoint) else last_checkpoint
        raise RunWriteError(what, path, error, last, run_dir, size=len(data)) from None


def fsync_directory(directory: Path):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
