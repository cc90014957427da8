"""`python -m common.preferences label`: write a label file answered by the scripted teacher.

    # 1000 pairs of 50-transition segments drawn uniformly, answered from the true rewards:
    python -m common.preferences label --env offlax/hopper/medium-replay-v1 \\
        --num-queries 1000 --output labels.jsonl
    # answer the queries that query selection chose (algorithms/reward_model.py --next-queries):
    python -m common.preferences label --queries RUN/next_queries.jsonl --output labels2.jsonl

The teacher's flags are B-Pref's simulated human (common/preferences/teacher.py); the defaults
are its perfectly rational teacher. Queries already answered in --queries are kept as they are.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from common.datasets import DatasetError, load_dataset
from common.errors import OfflaxError
from common.preferences.labels import (
    LabelFile,
    check_against_dataset,
    read_label_file,
    write_label_file,
)
from common.preferences.teacher import Teacher, sample_queries

SEGMENT_LENGTH = 50  # B-Pref's MuJoCo segments (BPref config/train_PEBBLE.yaml: segment 50)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.preferences", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    label = commands.add_parser("label", help="answer queries with the scripted teacher")
    label.add_argument("--env", help="dataset to draw queries from (not with --queries)")
    label.add_argument("--queries", help="a label file whose unanswered queries to answer")
    label.add_argument("--output", required=True, help="label file to write (.jsonl)")
    label.add_argument("--num-queries", type=int, default=1000,
                       help="queries to draw (default 1000, the issue's largest budget)")
    label.add_argument("--segment-length", type=int, default=SEGMENT_LENGTH,
                       help=f"transitions per segment (default {SEGMENT_LENGTH}, B-Pref's)")
    label.add_argument("--segments-per-query", type=int, default=2,
                       help="2: pairs (Christiano et al.); K > 2: rankings of K (InstructGPT)")
    label.add_argument("--seed", type=int, default=0)
    teacher_defaults = Teacher()
    for name in ("beta", "gamma", "mistake", "skip", "equal"):
        label.add_argument(f"--{name}", type=float, default=getattr(teacher_defaults, name),
                           help=_field_doc(name))
    args = parser.parse_args(argv)
    try:
        return label_command(args)
    except (OfflaxError, DatasetError) as error:
        print(f"{error.label}: {error}", file=sys.stderr)
        return error.exit_code


def _field_doc(name: str) -> str:
    return {"beta": "rationality (inf: perfectly rational; default inf)",
            "gamma": "myopia: step t of H weighs gamma^(H-1-t) (default 1)",
            "mistake": "probability of a flipped answer (default 0)",
            "skip": "skip pairs whose better return <= skip x a typical segment's (default 0)",
            "equal": "'equally good' where returns differ < equal x a typical segment's "
                     "(default 0)"}[name]


def label_command(args) -> int:
    from common.errors import ConfigError

    teacher = Teacher(args.beta, args.gamma, args.mistake, args.skip, args.equal)
    teacher.check()
    if (args.env is None) == (args.queries is None):
        raise ConfigError("Give either --env (draw new queries from that dataset) or --queries "
                          "(answer the unanswered queries of that label file).")
    if args.queries is not None:
        source = read_label_file(args.queries)
        dataset = load_dataset(source.dataset)
        check_against_dataset(source, dataset, args.queries)
        segment_length, queries = source.segment_length, source.queries
    else:
        for name in ("num_queries", "segment_length"):
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1.")
        if args.segments_per_query < 2:
            raise ConfigError("--segments-per-query must be at least 2.")
        dataset = load_dataset(args.env)
        segment_length = args.segment_length
        queries = sample_queries(dataset, segment_length, args.num_queries,
                                 args.segments_per_query, np.random.default_rng(args.seed))
    rng = np.random.default_rng(args.seed + 1)
    todo = [i for i, q in enumerate(queries) if not q.answered]
    answers = teacher.answer(dataset, segment_length, [queries[i] for i in todo], rng)
    queries = list(queries)
    for i, answer in zip(todo, answers):
        queries[i] = answer
    name = args.env if args.env is not None else source.dataset
    write_label_file(args.output, LabelFile(name, dataset.info.fingerprint, segment_length,
                                            queries))
    counts = {"skipped": sum(q.skipped for q in answers),
              "equal": sum(q.preference == (0.5, 0.5) for q in answers)}
    print(f"{args.output}: {len(answers)} queries answered by the {teacher.describe()} "
          f"({counts['skipped']} skipped, {counts['equal']} equally good), "
          f"{len(queries) - len(answers)} kept as they were; segments of {segment_length} "
          f"transitions of {name}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
