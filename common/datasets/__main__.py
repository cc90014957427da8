"""`python -m common.datasets [NAME]`: load a dataset (default: the embedded default) and print
what it holds, with its fingerprint."""

from __future__ import annotations

import argparse

from common.datasets import (
    DEFAULT_DATASET,
    OFFLAX_NAMESPACE,
    DatasetError,
    known_names,
    load_dataset,
    normalized_score,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.datasets", description=__doc__)
    parser.add_argument("name", nargs="?", default=DEFAULT_DATASET,
                        help=f"D4RL name, Minari id, offlax id or path (default {DEFAULT_DATASET})")
    parser.add_argument("--list", action="store_true", help="list the known dataset names")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(known_names()))
        return 0
    try:
        dataset = load_dataset(args.name)
    except DatasetError as error:
        print(f"{error.label}: {error}")
        return error.exit_code
    returns = dataset.episode_returns()
    info = dataset.info
    actions = (f"discrete actions {int(dataset.actions.min())}..{int(dataset.actions.max())}"
               if dataset.discrete else f"action {dataset.actions.shape[1]}")
    print(f"{info.name}  [{info.source}: {info.dataset_id}]  env {info.env_id}")
    print(
        f"  {dataset.size} transitions, {len(returns)} episodes, obs {dataset.observations.shape[1]}"
        f", {actions}, terminals {int(dataset.terminals.sum())}, "
        f"timeouts {int(dataset.timeouts.sum())}"
    )
    print(f"  return mean {returns.mean():.1f} min {returns.min():.1f} max {returns.max():.1f}")
    if info.ref_min_score is not None:
        score = normalized_score(returns.mean(), info)
        print(
            f"  reference {info.ref_min_score:.1f} .. {info.ref_max_score:.1f} "
            f"({info.ref_score_source}); mean normalised score {score:.1f}"
        )
    print(f"  fingerprint {info.fingerprint}{_against_reference(info)}")
    return 0


def _against_reference(info) -> str:
    if info.source != OFFLAX_NAMESPACE:
        return ""
    from common.datasets.generated import reference_fingerprints

    reference = reference_fingerprints()["datasets"].get(info.dataset_id, {}).get("fingerprint")
    if reference is None:
        return " (no reference build of this id)"
    if reference == info.fingerprint:
        return " (equals the reference build)"
    return f" (the reference build has {reference}: this build differs)"


if __name__ == "__main__":
    raise SystemExit(main())
