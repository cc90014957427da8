"""Sweeps: a grid of runs (algorithms x datasets x variants x seeds) from one TOML file, run on
this machine or a Slurm cluster, and a report with interval estimates.

    python -m sweeps list   sweeps/configs/door_human.toml   # the runs, and what `run` would do
    python -m sweeps run    sweeps/configs/door_human.toml --jobs 2
    python -m sweeps run    sweeps/configs/door_human.toml --executor slurm
    python -m sweeps report sweeps/configs/door_human.toml   # -> <output_dir>/report/

`grid.py` reads the config (its format is documented there), `launch.py` runs the runs (skip the
finished, resume the interrupted, start the rest), `statistics.py` computes the estimates with
rliable and `report.py` writes the tables and plots, with the published numbers of
`published/` beside the D4RL datasets.
"""
