"""The run directory: where one run writes, held by one process at a time.

* The default directory, runs/<algorithm>/<env>/<YYYYmmdd-HHMMSS>-seed<S>-<6 hex digits>, is
  created with an exclusive mkdir: the process that creates it owns it, so runs started in the
  same second (a sweep of seeds in the background) never share one. Names sort by start time.
* A run holds an OS lock on <dir>/.lock (fcntl.flock) from before it reads or writes the directory
  until it ends; the kernel releases the lock when the process dies, kill -9 included. A second
  process that would write the directory (by --output-dir or --resume) stops at once, exit 2,
  naming the holder's pid, and changes nothing there.
* Nothing here removes a directory another process may be using: a run that stops on its input
  before training removes only its own run directory, and only while it holds nothing but the
  lock file. Parent directories it created stay.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from datetime import datetime
from pathlib import Path

from common.errors import ConfigError

LOCK_FILE = ".lock"


class RunDirectoryBusy(ConfigError):
    """Another live process holds the run directory."""


def default_output_dir(algorithm: str, env: str, seed: int) -> Path:
    """runs/<algorithm>/<env>/<date-time>-seed<seed>-<random hex>: a name no other run has."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / algorithm / env.replace("/", "_") / (
        f"{stamp}-seed{seed}-{secrets.token_hex(3)}")


class HeldDirectory:
    """The lock of one run directory, held until `release` or the end of the process."""

    def __init__(self, path: Path, created: bool):
        self.path, self.created = path, created
        self.fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise RunDirectoryBusy(
                f"'{path}' is being written by another run (process {holder}, which holds "
                f"{path / LOCK_FILE}); nothing in it was changed. Wait for that run to end (or "
                "stop it) before resuming it, or choose another --output-dir.") from None
        # this process's pid, for the message of a refused writer
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self):
        """Unlock; a directory this run created and left with nothing but the lock is removed."""
        if self.fd is None:
            return
        try:
            if self.created and {p.name for p in self.path.iterdir()} <= {LOCK_FILE}:
                (self.path / LOCK_FILE).unlink()
                self.path.rmdir()
        except OSError:
            pass  # something else appeared in it: it stays
        os.close(self.fd)
        self.fd = None
        _HELD.pop(self.path, None)


_HELD: dict[Path, HeldDirectory] = {}  # this process's run directories, until they are released


def release(path: Path):
    held = _HELD.get(Path(path))
    if held is not None:
        held.release()


def release_all():
    for held in list(_HELD.values()):
        held.release()


def hold(path: Path, created: bool) -> HeldDirectory:
    held = HeldDirectory(path, created)
    _HELD[path] = held
    return held


def create_new_directory(algorithm: str, env: str, seed: int) -> Path:
    """A fresh default output directory, created by this process alone (exclusive mkdir)."""
    for _ in range(100):
        directory = default_output_dir(algorithm, env, seed)
        directory.parent.mkdir(parents=True, exist_ok=True)  # shared: never removed
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            continue
    raise ConfigError(f"Could not create a new directory under '{directory.parent}'.")


def run_status(directory: Path) -> str | None:
    """The `status` of the run's results.json (None where there is none)."""
    try:
        return json.loads((Path(directory) / "results.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def holder(directory: Path) -> int | None:
    """The pid of the live process that holds `directory` (None where none does)."""
    try:
        fd = os.open(Path(directory) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
