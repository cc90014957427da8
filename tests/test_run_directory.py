"""A run directory never loses a result: many runs at once, a second writer, a full disk."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from test_reliability import (EXPERT, SMALL, assert_same_run, cli_flags, finish, small_args,
                              start, wait_for)

from conftest import ROOT

sys.path.insert(0, str(ROOT / "algorithms"))
import td3_bc  # noqa: E402

import common.files  # noqa: E402
from common.checkpoints import list_checkpoints  # noqa: E402
from common.cli import run_main  # noqa: E402
from common.run_directory import LOCK_FILE  # noqa: E402

pytestmark = pytest.mark.usefixtures("generated_datasets")
TINY = cli_flags(env=EXPERT, hidden_dims=(32, 32), eval_episodes=1, batch_size=64,
                 total_updates=200, eval_interval=100)


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# Many runs at once


def test_seeds_launched_together_with_the_default_directory_each_get_their_own(tmp_path):
    """The sweep of the README: four seeds in the background, same second, default directory."""
    processes = [subprocess.Popen([sys.executable, str(ROOT / "algorithms" / "bc.py"), *TINY,
                                   "--seed", str(seed)], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for seed in range(4)]
    outputs = [finish(p) for p in processes]
    assert [code for code, _ in outputs] == [0] * 4, outputs
    runs = sorted((tmp_path / "runs" / "bc" / EXPERT.replace("/", "_")).iterdir())
    assert len(runs) == 4
    seeds = sorted(json.loads((run / "results.json").read_text())["seeds"][0] for run in runs)
    assert seeds == [0, 1, 2, 3]
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert f"-seed{json.loads((run / 'results.json').read_text())['seeds'][0]}-" in run.name


def make_directories(parent: str, count: int, barrier, queue):
    from common.run_directory import create_new_directory, hold

    os.chdir(parent)
    made = []
    barrier.wait()
    for _ in range(count):
        directory = create_new_directory("bc", "offlax/x/y-v1", 0)
        hold(directory, created=True)  # held, as a run holds it
        made.append(str(directory))
    queue.put(made)


def test_sixteen_processes_creating_default_directories_in_one_second_never_share(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(16), context.Queue()
    workers = [context.Process(target=make_directories, args=(str(tmp_path), 5, barrier, queue))
               for _ in range(16)]
    for worker in workers:
        worker.start()
    made = [d for _ in workers for d in queue.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(made) == len(set(made)) == 80


def claim_distinct_directories(root: str, worker: int, trials: int, barrier, queue):
    from common.training import prepare_output_dir

    errors = []
    for trial in range(trials):
        barrier.wait()  # every worker claims sweep/seed<k> under a parent that does not exist
        args = types.SimpleNamespace(resume=None, env=EXPERT, seed=worker,
                                     output_dir=f"{root}/trial{trial}/sweep/seed{worker}")
        try:
            prepare_output_dir("bc", args)
        except Exception as error:  # noqa: BLE001 -- reported by the test
            errors.append(f"trial {trial}: {error}")
    queue.put(errors)


def test_concurrent_runs_into_distinct_directories_under_a_new_parent_never_refuse(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(4), context.Queue()
    workers = [context.Process(target=claim_distinct_directories,
                               args=(str(tmp_path), k, 20, barrier, queue)) for k in range(4)]
    for worker in workers:
        worker.start()
    errors = [e for _ in workers for e in queue.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    assert len(list(tmp_path.glob("trial*/sweep/seed*/.lock"))) == 80


# --------------------------------------------------------------------------------------------
# One writer


def wait_until_held(run: Path, process):
    lock = run / LOCK_FILE
    wait_for(lock, process)
    while lock.read_text().strip() != str(process.pid):
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.02)


@pytest.mark.parametrize("second", ["--resume", "--output-dir"])
def test_a_second_writer_is_refused_and_the_first_finishes_unharmed(tmp_path, second):
    run = tmp_path / "run"
    flags = cli_flags(**{**SMALL, "total_updates": 3000, "eval_interval": 500})
    if second == "--resume":  # a killed run, resumed twice at once
        killed = start("bc", *flags, "--output-dir", str(run))
        wait_for(run / "checkpoints" / "checkpoint_000000500.msgpack", killed)
        killed.kill()
        killed.wait()
        first = start("bc", "--resume", str(run))
    else:
        first = start("bc", *flags, "--output-dir", str(run))
    wait_until_held(run, first)
    os.kill(first.pid, signal.SIGSTOP)  # hold it still while the second writer tries
    try:
        before = snapshot(run)
        argv = ["--resume", str(run)] if second == "--resume" else [*flags, "--output-dir",
                                                                   str(run)]
        code, output = finish(start("bc", *argv), timeout=120)
        assert code == 2, output
        assert f"'{run}' is being written by another run (process {first.pid}" in output
        assert "Traceback" not in output
        assert snapshot(run) == before, "the refused writer changed nothing"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    code, output = finish(first)
    assert code == 0, output
    assert json.loads((run / "results.json").read_text())["status"] == "finished"


def test_a_lock_dies_with_its_process(tmp_path):
    """kill -9 releases the lock: another process may hold the directory at once."""
    run = tmp_path / "run"
    process = start("bc", *cli_flags(**{**SMALL, "total_updates": 200000, "eval_interval": 500}),
                    "--output-dir", str(run))
    wait_until_held(run, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    held = subprocess.run([sys.executable, "-c", (
        "from pathlib import Path; from common.run_directory import hold; "
        f"hold(Path({str(run)!r}), created=False); print('held')")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert held.stdout.strip() == "held", held.stderr


# --------------------------------------------------------------------------------------------
# A full disk


def failing_open(big_files_that_fit: list):
    """open() for common.files on a nearly full disk: small files (results.json) still fit, and
    of larger ones (checkpoints) only the next `big_files_that_fit[0]`; a write that does not
    fit writes part of its data, then fails with ENOSPC, as a full disk does."""
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return file
        real_write = file.write

        def write(data):
            if len(data) > 16_384:
                if big_files_that_fit[0] == 0:
                    real_write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                big_files_that_fit[0] -= 1
            return real_write(data)

        file.write = write
        return file

    return fake_open


def test_a_full_disk_ends_the_run_clearly_and_resume_matches_an_uninterrupted_run(
        tmp_path, monkeypatch, capsys):
    """A write error injected at the file layer (every platform): the second checkpoint does not
    fit. One message, exit 1, no partial file, results.json says so, and after freeing space
    the resumed run equals one that never stopped, bit for bit."""
    flags = dict(total_updates=600, eval_interval=200)
    reference = tmp_path / "reference"
    td3_bc.main(small_args("td3_bc", reference, **flags))
    assert list_checkpoints(reference)[0].stat().st_size > 16_384

    run = tmp_path / "run"
    monkeypatch.setattr(common.files, "open", failing_open([1]), raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_main(td3_bc.main, small_args("td3_bc", run, **flags))
    monkeypatch.undo()
    err = capsys.readouterr().err.split("\r")[-1].splitlines()[-1]
    assert exit_info.value.code == 1
    assert err.startswith("error: Could not write the checkpoint") and "Traceback" not in err
    assert "No space left on device" in err and "free there" in err
    first = list_checkpoints(run)[0]
    assert f"last complete checkpoint is '{first}'" in err and f"--resume {run}" in err
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint_000000200.msgpack"]
    assert not list(run.rglob("*.tmp")), "no partial file"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "failed" and results["message"] == err[len("error: "):]

    run_main(td3_bc.main, td3_bc.Args(**{**SMALL, **flags, "resume": str(run)}))  # space again
    assert_same_run(reference, run)


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def test_a_full_tmpfs_during_a_run_in_a_real_process(tmp_path):
    """The issue's case on a real small filesystem (where this machine lets us mount one): TD3+BC
    whose second checkpoint does not fit. Freed, the run resumes to the uninterrupted result."""
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        flags = cli_flags(**{**SMALL, "hidden_dims": (128, 128), "total_updates": 600,
                             "eval_interval": 200})
        reference = tmp_path / "reference"
        assert finish(start("td3_bc", *flags, "--output-dir", str(reference)))[0] == 0
        size = list_checkpoints(reference)[0].stat().st_size
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                                     - int(size * 1.5) - 64 * 1024))
        run = disk / "run"
        code, output = finish(start("td3_bc", *flags, "--output-dir", str(run)))
        last_line = output.strip().splitlines()[-1]
        assert code == 1, output
        assert "Traceback" not in output and output.count("error:") == 1, output
        assert last_line.startswith("error: Could not write"), output
        assert "No space left on device" in last_line
        assert not list(run.rglob("*.tmp"))
        assert json.loads((run / "results.json").read_text())["status"] == "failed"
        ballast.unlink()
        code, output = finish(start("td3_bc", "--resume", str(run)))
        assert code == 0, output
        assert_same_run(reference, run)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
