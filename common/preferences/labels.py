"""The preference-label file: one format for labels from people and from scripts.

A label file is JSON Lines. The first line is a header; every other line is one query, a set
of segments of the dataset shown together, and the answer to it:

    {"format": "offlax-preferences", "version": 2, "dataset": "offlax/hopper/medium-replay-v1",
     "fingerprint": "dd89514488be10a4", "segment_length": 50}
    {"segments": [1200, 53410], "preference": [1, 0], "annotator": "alice", "time": "..."}
    {"segments": [88, 4021], "preference": [0.5, 0.5], "annotator": "alice", "time": "..."}
    {"segments": [913, 77], "preference": null, "annotator": "alice", "time": "..."}
    {"segments": [5, 900, 77, 3120], "ranking": [1, 3, 0, 2], "annotator": "bob", "time": "..."}

- `dataset` and `fingerprint`: the dataset the segments index (`load_dataset` name, and the
  fingerprint of its arrays, so labels made on other data are refused).
- `segments`: the index of each segment's first transition in the dataset's flat arrays; a
  segment is `segment_length` consecutive steps of one episode. If the episode terminates
  (`terminals`: the agent fell; not a time limit, whose future is unknown) before the
  segment's last step, the remaining steps are the absorbing state that termination leads to,
  whose reward is 0: what r + gamma (1 - terminal) V(s') assumes of every RL algorithm here.
  The scripted teacher and the reward model both sum a segment's rewards so. Comparing a
  segment that ends in a fall with one that does not is what tells the reward model what a
  step of life is worth; the Bradley-Terry likelihood cannot see a constant added to every
  step otherwise. (Version 1 files had no such segments; they read as version 2.)
- `preference` (a pair): mu of Christiano et al. (2017), how the preference falls on the two
  segments: `[1, 0]` the first is better, `[0, 1]` the second, `[0.5, 0.5]` equally good, `null`
  "can't tell" (the query was skipped; it is kept for the record and not trained on).
- `ranking` (K >= 2 segments): the segments' positions ordered best first, as InstructGPT's
  labellers rank K responses; it stands for all K(K-1)/2 pairs it orders.
- A line with neither `preference` nor `ranking` is a query that waits for an answer (what
  query selection writes, `python -m common.preferences label` answers).
- `annotator` and `time` (ISO 8601): who answered and when; free text for people, the teacher's
  parameters for scripts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from common.datasets import Dataset
from common.errors import OfflaxError

FORMAT = "offlax-preferences"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no segment reached a terminal
PREFERENCES = ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5))  # mu: first better, second better, equal
QUERY_KEYS = {"segments", "preference", "ranking", "annotator", "time"}


class LabelFileError(OfflaxError):
    """A label file that cannot be used as it is; the message names the line."""


@dataclass(frozen=True)
class Query:
    """Segments shown together and the answer: `preference` (mu, for a pair) or `ranking`
    (positions best first), or neither while it waits for an answer. `preference` None with
    `skipped` True is a "can't tell"."""

    segments: tuple[int, ...]
    preference: tuple[float, float] | None = None
    ranking: tuple[int, ...] | None = None
    skipped: bool = False
    annotator: str = ""
    time: str = ""

    @property
    def answered(self) -> bool:
        return self.preference is not None or self.ranking is not None or self.skipped

    def to_json(self) -> dict:
        line: dict = {"segments": [int(s) for s in self.segments]}
        if self.ranking is not None:
            line["ranking"] = [int(i) for i in self.ranking]
        elif self.preference is not None or self.skipped:
            line["preference"] = None if self.skipped else [float(p) for p in self.preference]
        if self.annotator:
            line["annotator"] = self.annotator
        if self.time:
            line["time"] = self.time
        return line


@dataclass(frozen=True)
class LabelFile:
    dataset: str
    fingerprint: str
    segment_length: int
    queries: list[Query] = field(default_factory=list)

    def header(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "dataset": self.dataset,
                "fingerprint": self.fingerprint, "segment_length": self.segment_length}


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def write_label_file(path: str | os.PathLike, labels: LabelFile):
    """Write `labels` (header, then one query per line), whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as stream:
        stream.write(json.dumps(labels.header()) + "\n")
        for query in labels.queries:
            stream.write(json.dumps(query.to_json()) + "\n")
    os.replace(tmp, path)


def read_label_file(path: str | os.PathLike) -> LabelFile:
    """Parse and check the format of a label file (not yet against a dataset:
    `check_against_dataset`). Raises LabelFileError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"Label file '{path}' does not exist. Write one with "
                             "`python -m common.preferences label --env DATASET --output FILE`.")
    lines = path.read_text().splitlines()
    if not lines:
        raise LabelFileError(f"Label file '{path}' is empty: its first line must be the header "
                             f'{{"format": "{FORMAT}", "version": {VERSION}, ...}}.')
    header = _parse_json(path, 1, lines[0])
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise LabelFileError(f"{path}, line 1: not an offlax preference file (the header must "
                             f'have "format": "{FORMAT}"), got {lines[0][:120]!r}.')
    if header.get("version") not in READABLE_VERSIONS:
        raise LabelFileError(f"{path}, line 1: format version {header.get('version')!r}; this "
                             f"offlax reads versions {', '.join(map(str, READABLE_VERSIONS))}.")
    for key, kind in (("dataset", str), ("fingerprint", str), ("segment_length", int)):
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise LabelFileError(f"{path}, line 1: the header needs \"{key}\" "
                                 f"({kind.__name__}), got {header.get(key)!r}.")
    if header["segment_length"] < 1:
        raise LabelFileError(f"{path}, line 1: segment_length must be at least 1, got "
                             f"{header['segment_length']}.")
    queries = [_parse_query(path, number, line)
               for number, line in enumerate(lines[1:], start=2) if line.strip()]
    return LabelFile(header["dataset"], header["fingerprint"], header["segment_length"], queries)


def _parse_json(path: Path, number: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise LabelFileError(f"{path}, line {number}: not valid JSON ({error.msg} at column "
                             f"{error.colno}): {line[:120]!r}.") from None


def _parse_query(path: Path, number: int, line: str) -> Query:
    where = f"{path}, line {number}"
    entry = _parse_json(path, number, line)
    if not isinstance(entry, dict):
        raise LabelFileError(f"{where}: a query is a JSON object, got {line[:120]!r}.")
    unknown = set(entry) - QUERY_KEYS
    if unknown:
        raise LabelFileError(f"{where}: unknown key(s) {sorted(unknown)}; a query has "
                             f"{sorted(QUERY_KEYS)}.")
    segments = entry.get("segments")
    if (not isinstance(segments, list) or len(segments) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in segments)):
        raise LabelFileError(f"{where}: \"segments\" must be a list of at least two integer "
                             f"start indices, got {segments!r}.")
    if "preference" in entry and "ranking" in entry:
        raise LabelFileError(f"{where}: give either \"preference\" (two segments) or "
                             "\"ranking\", not both.")
    annotator, time = entry.get("annotator", ""), entry.get("time", "")
    if not isinstance(annotator, str) or not isinstance(time, str):
        raise LabelFileError(f"{where}: \"annotator\" and \"time\" must be strings.")
    common = dict(segments=tuple(segments), annotator=annotator, time=time)
    if "ranking" in entry:
        ranking = entry["ranking"]
        if (not isinstance(ranking, list)
                or sorted(r for r in ranking if isinstance(r, int)) != list(range(len(segments)))):
            raise LabelFileError(
                f"{where}: \"ranking\" must order the positions 0..{len(segments) - 1} of the "
                f"segments best first, each once, got {ranking!r}.")
        return Query(ranking=tuple(ranking), **common)
    if "preference" in entry:
        if len(segments) != 2:
            raise LabelFileError(f"{where}: a \"preference\" compares two segments, got "
                                 f"{len(segments)}; use \"ranking\" for more.")
        preference = entry["preference"]
        if preference is None:
            return Query(skipped=True, **common)
        try:
            mu = tuple(float(p) for p in preference)
        except (TypeError, ValueError):
            mu = None
        if mu not in PREFERENCES:
            raise LabelFileError(
                f"{where}: \"preference\" must be [1, 0] (first better), [0, 1] (second "
                f"better), [0.5, 0.5] (equally good) or null (can't tell), got {preference!r}.")
        return Query(preference=mu, **common)
    return Query(**common)


def check_against_dataset(labels: LabelFile, dataset: Dataset, path: str | os.PathLike):
    """The labels were made on this dataset, and every segment is `segment_length` steps of one
    episode inside it (those after a terminal being the absorbing state). Raises LabelFileError
    naming the first bad line."""
    if labels.fingerprint != dataset.info.fingerprint:
        raise LabelFileError(
            f"{path}: its labels were made on '{labels.dataset}' with fingerprint "
            f"{labels.fingerprint}, but '{dataset.info.name}' has fingerprint "
            f"{dataset.info.fingerprint}: the segments would index other transitions. Train on "
            f"the dataset the labels were made on (--env {labels.dataset}), or label this one.")
    valid = valid_segment_starts(dataset, labels.segment_length)
    for number, query in enumerate(labels.queries, start=2):
        for start in query.segments:
            if not 0 <= start < dataset.size:
                raise LabelFileError(
                    f"{path}, line {number}: segment start {start} is out of range: the dataset "
                    f"has {dataset.size} transitions (0..{dataset.size - 1}).")
            if not valid[start]:
                raise LabelFileError(
                    f"{path}, line {number}: the segment starting at {start} runs past the end "
                    f"of its episode within its {labels.segment_length} steps, and the episode "
                    "does not terminate there (a time limit or the end of the data, whose future "
                    "is unknown); a segment must lie inside one episode or end in a terminal.")


def episode_last_steps(dataset: Dataset) -> np.ndarray:
    """(N,) int64: the index of the last transition of each transition's episode (N where the
    data ends without marking an episode end)."""
    ends = np.flatnonzero(dataset.episode_ends)
    following = np.searchsorted(ends, np.arange(dataset.size))  # first end at or after i
    return np.append(ends, dataset.size)[following]


def valid_segment_starts(dataset: Dataset, length: int) -> np.ndarray:
    """(N,) bool: a segment of `length` steps starting here lies inside one episode, or its
    episode terminates (not a time limit) before the segment's last step."""
    last = episode_last_steps(dataset)
    starts = np.arange(dataset.size)
    inside = last >= starts + length - 1
    terminated = np.append(dataset.terminals, False)[last]  # N: the data's unmarked end
    return (inside & (starts + length <= dataset.size)) | (~inside & terminated)


def segment_steps(last_steps, starts, length: int, xp=np):
    """Indices and mask of the steps of segments starting at `starts` (any shape; `last_steps`
    from `episode_last_steps`): `indices` (..., length) clipped to the data, `alive`
    (..., length) False on the absorbing state after a terminal, whose reward is 0. `xp` is
    numpy or jax.numpy (the reward model calls it inside jit)."""
    steps = starts[..., None] + xp.arange(length)
    alive = steps <= last_steps[starts][..., None]
    return xp.minimum(steps, last_steps.shape[0] - 1), alive


def segment_rewards(dataset: Dataset, starts, length: int) -> np.ndarray:
    """The true rewards of segments (..., length), 0 on the absorbing state after a terminal."""
    indices, alive = segment_steps(episode_last_steps(dataset), np.asarray(starts), length)
    return np.where(alive, dataset.rewards[indices], 0.0)
