#!/usr/bin/env bash
# Wheels of what offlax needs beyond a GPU machine's own Python, for a machine that cannot reach
# a package index (the device machines this project is lent: Python 3.12 with jax[cuda], flax,
# optax, chex, h5py, typer and tensorboard, but no MuJoCo, Gymnasium, Minari or tyro).
#
#   bash benchmarks/accelerator_wheels.sh [DIR]      # here, with a network: wheels into DIR (.whl)
#   # there, from the repository's root:
#   python3 -m pip install --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#   python benchmarks/accelerator_timing.py
#
# The versions are the ones pyproject.toml pins (mujoco, gymnasium, minari) and the ones they
# were tested with; PYTHON_VERSION (default 3.12) picks the wheels' Python.
set -euo pipefail
dest=${1:-.whl}
python=${PYTHON_VERSION:-3.12}
packages=(
    mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw==2.11.0 pyopengl==3.1.10
    websockets==17.4 gymnasium==1.4.0 farama-notifications==0.0.6 minari==0.5.4
    tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 tensorboardX==2.6.5
    gymnasium-robotics==1.4.2 pettingzoo==1.27.0
)
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python" \
    --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 --platform any \
    -d "$dest" "${packages[@]}"
ls -1 "$dest"
du -sh "$dest"
