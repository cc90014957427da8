"""The one table from D4RL dataset names to the Minari datasets that replaced them.

D4RL (Fu et al., 2020) is no longer maintained; Farama's Minari hosts its successors. Where Minari
has no successor (the MuJoCo `random`, `medium-replay`, `medium-expert` and `full-replay` sets),
offlax generates a D4RL-style equivalent locally (`offlax/<env>/<level>-v1`, see
`generated.py`); the table names it so that an error can point there.

Reference scores are D4RL's published constants (d4rl/infos.py, REF_MIN_SCORE / REF_MAX_SCORE):
the return of a uniformly random policy and of D4RL's expert policy. They are the fallback for a
Minari dataset whose metadata lacks `ref_min_score` / `ref_max_score` (the `mujoco/*-v0` sets do).

`D4RL_ENVIRONMENTS` names the Gymnasium environment a D4RL *file* is evaluated in (a Minari
dataset names its own): MuJoCo's v5 locomotion tasks (D4RL used gym's v2/v3, the same
observations and actions on mujoco-py; v5's dynamics differ slightly) and Gymnasium-Robotics'
Adroit tasks with D4RL's reward and episode length (`D4RL/AdroitHand<Task>-v1`, see
common/environments.py). Families without one are in `D4RL_UNMAPPED`, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

# (ref_min_score, ref_max_score) per environment family, from d4rl/infos.py.
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "maze2d-umaze-dense": (68.537689, 193.66285642381482),
    "maze2d-medium-dense": (44.264742, 297.4552547777125),
    "maze2d-large-dense": (30.569041, 303.4857382709002),
    "pen": (96.262799, 3076.8331017826877),
    "hammer": (-274.856578, 12794.134825156867),
    "door": (-56.512833, 2880.5693087298737),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
}

# The environment to evaluate a D4RL file's policies in, per family.
D4RL_ENVIRONMENTS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "door": "D4RL/AdroitHandDoor-v1",
    "hammer": "D4RL/AdroitHandHammer-v1",
    "pen": "D4RL/AdroitHandPen-v1",
    "relocate": "D4RL/AdroitHandRelocate-v1",
}
_MAZE = ("{family} files are in D4RL's own maze frame (the start cell at the origin, D4RL's goal "
         "and maze layout); Gymnasium-Robotics' {env} centres the maze and observes a dict with "
         "the goal, so D4RL's {family} policies cannot be scored there as they were. Train on "
         "Minari's re-recording instead ({example}), which names its environment, or give the "
         "environment with --env-id.")
D4RL_UNMAPPED: dict[str, str] = {
    "ant": ("D4RL's ant files observe 111 numbers (gym's Ant-v2/v3, the contact forces of every "
            "body included); Gymnasium's Ant-v5 observes 105 (27 without contact forces). Train "
            "on Minari's re-recorded ant datasets (mujoco/ant/medium-v0), which name their "
            "environment."),
    "antmaze": _MAZE.format(family="AntMaze", env="AntMaze_*", example="antmaze-umaze-v2 loads "
                            "D4RL/antmaze/umaze-v1"),
    "kitchen": ("D4RL's kitchen files observe a flat 60-d vector; Gymnasium-Robotics' "
                "FrankaKitchen-v1 observes a dict of robot state and per-task goals (and does not "
                "start under MuJoCo 4.0 with Gymnasium-Robotics 1.4.2). Minari's re-recording "
                "(kitchen-complete-v0 loads D4RL/kitchen/complete-v2) names its environment."),
    **{family: _MAZE.format(family=family, env="PointMaze_*", example=f"{family}-v1 loads "
                            f"D4RL/pointmaze/{family.split('-', 1)[1]}-v2")
       for family in D4RL_REFERENCE_SCORES if family.startswith("maze2d")},
}


@dataclass(frozen=True)
class D4RLName:
    d4rl_name: str
    family: str  # key of D4RL_REFERENCE_SCORES
    minari_id: str | None  # the Minari successor, None where Minari has none
    offlax_id: str | None  # offlax's locally generated D4RL-style equivalent, if any


def _build_table() -> dict[str, D4RLName]:
    table: dict[str, D4RLName] = {}

    def add(names, family, minari_id, offlax_id=None):
        for name in names:
            table[name] = D4RLName(name, family, minari_id, offlax_id)

    # MuJoCo locomotion: Minari re-recorded medium and expert on the v5 environments.
    generated_envs = {"hopper", "walker2d", "halfcheetah"}
    for env in ("hopper", "walker2d", "halfcheetah", "ant"):
        for level in ("random", "medium", "expert", "medium-replay", "medium-expert", "full-replay"):
            minari_id = f"mujoco/{env}/{level}-v0" if level in ("medium", "expert") else None
            offlax_id = (
                f"offlax/{env}/{level}-v1"
                if env in generated_envs and level != "full-replay"
                else None
            )
            add([f"{env}-{level}-v{v}" for v in (0, 1, 2)], env, minari_id, offlax_id)
    for level in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play",
                  "large-diverse"):
        add([f"antmaze-{level}-v{v}" for v in (0, 1, 2)], "antmaze", f"D4RL/antmaze/{level}-v1")
    for env in ("pen", "hammer", "door", "relocate"):
        for level in ("human", "cloned", "expert"):
            add([f"{env}-{level}-v{v}" for v in (0, 1)], env, f"D4RL/{env}/{level}-v2")
    for level in ("complete", "partial", "mixed"):
        add([f"kitchen-{level}-v0"], "kitchen", f"D4RL/kitchen/{level}-v2")
    for size in ("umaze", "medium", "large"):
        add([f"maze2d-{size}-v1"], f"maze2d-{size}", f"D4RL/pointmaze/{size}-v2")
        add([f"maze2d-{size}-dense-v1"], f"maze2d-{size}-dense", f"D4RL/pointmaze/{size}-dense-v2")
    return table


D4RL_NAMES: dict[str, D4RLName] = _build_table()


def d4rl_name(name: str) -> str | None:
    """The D4RL dataset name that `name` (a D4RL name, or a file stem in D4RL's own cache
    spelling, `hopper_medium-v2`) stands for; None where it is none."""
    for candidate in (name, name.replace("_", "-")):
        if candidate in D4RL_NAMES:
            return candidate
    return None


def reference_family(dataset_id: str) -> str | None:
    """The D4RL reference-score family of a Minari id (`mujoco/hopper/medium-v0` -> `hopper`)."""
    for entry in D4RL_NAMES.values():
        if entry.minari_id == dataset_id:
            return entry.family
    parts = dataset_id.split("/")
    if len(parts) >= 2 and parts[0] in ("mujoco", "D4RL") and parts[1] in D4RL_REFERENCE_SCORES:
        return parts[1]
    return None
