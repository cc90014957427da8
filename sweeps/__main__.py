"""python -m sweeps run CONFIG | report CONFIG | list CONFIG (see sweeps/__init__.py)."""

from __future__ import annotations

import argparse
import sys

from common.errors import OfflaxError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps",
                                     description="Run a grid of offlax runs and report on it.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) every run of the sweep not finished")
    run.add_argument("config", help="the sweep's TOML file")
    run.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                     help="local: processes on this machine (default); slurm: one Slurm array "
                          "job through submitit; submitit-local: the same through submitit's "
                          "local executor")
    run.add_argument("--jobs", type=int, default=1,
                     help="local: runs at the same time (default 1)")
    run.add_argument("--devices", default=None,
                     help="local: comma-separated GPU indices; one run per device at a time")
    run.add_argument("--wait", action="store_true",
                     help="slurm / submitit-local: wait for the jobs and print their outcomes")
    report = commands.add_parser("report", help="tables and plots from the finished runs")
    report.add_argument("config")
    listing = commands.add_parser("list", help="every run of the sweep and what `run` would do")
    listing.add_argument("config")
    args = parser.parse_args(argv)

    from sweeps.grid import load_sweep
    from sweeps.launch import plan, run_local, submit

    try:
        sweep = load_sweep(args.config)
    except OfflaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "list":
        for one in sweep.runs:
            print(f"{plan(one):6} {progress(one):>22}  {one.output_dir}")
        return 0
    if args.command == "report":
        from sweeps.report import build_report

        try:
            out = build_report(sweep)
        except ImportError as error:  # rliable, the `stats` extra
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"report: {out / 'report.md'}")
        return 0
    if args.jobs < 1:
        print("error: --jobs must be at least 1.", file=sys.stderr)
        return 2
    if args.executor == "local":
        devices = args.devices.split(",") if args.devices else None
        try:
            outcomes = run_local(sweep, jobs=args.jobs, devices=devices)
        except KeyboardInterrupt:
            print("interrupted: the running runs checkpointed; run the same command to resume "
                  "them and start the rest.", file=sys.stderr)
            return 130
        problems = [o for o in outcomes if o.status != "finished"]
        print(f"{len(outcomes) - len(problems)} of {len(outcomes)} runs finished"
              + (f"; see the logs beside the runs for: "
                 + ", ".join(f"{o.run.output_dir} ({o.status})" for o in problems)
                 if problems else ""))
        return 0 if not problems else 1
    try:
        import submitit  # noqa: F401
    except ImportError:
        print("error: --executor slurm and submitit-local need submitit: pip install "
              "'offlax[cluster]'.", file=sys.stderr)
        return 2
    cluster = "slurm" if args.executor == "slurm" else "local"
    if cluster == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            print("error: --executor slurm submits with Slurm's sbatch, which is not on this "
                  "machine's PATH: run the command on the cluster's login node, or use "
                  "--executor local here.", file=sys.stderr)
            return 2
    outcomes = submit(sweep, cluster=cluster, wait=args.wait)
    if args.wait:
        problems = [o for o in outcomes if o.status != "finished"]
        print(f"{len(outcomes) - len(problems)} of {len(outcomes)} submitted runs finished")
        return 0 if not problems else 1
    return 0


def progress(run) -> str:
    """'17000/100000 updates': where the run's results.json last stood (it is written at each
    evaluation); '' before the run has written one."""
    import json
    from pathlib import Path

    try:
        results = json.loads((Path(run.output_dir) / "results.json").read_text())
        return f"{results.get('updates', 0)}/{results['args']['total_updates']} updates"
    except (OSError, ValueError, KeyError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
