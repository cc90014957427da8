"""Every script in benchmarks/ answers --help, and only that: exit 0, no file written."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

# The scripts: every file with a __main__ block (benchmarks/online.py is a module the trainers
# share, not a command).
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text())


def snapshot(directory):
    return {p: p.stat().st_mtime_ns for p in directory.rglob("*")
            if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts
            and ".venv" not in p.parts}  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_help_exits_0_and_writes_nothing(script, tmp_path):
    before = snapshot(ROOT / "benchmarks"), snapshot(tmp_path)
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, timeout=120,
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
    assert (snapshot(ROOT / "benchmarks"), snapshot(tmp_path)) == before
