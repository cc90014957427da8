"""A scripted teacher: preferences from the dataset's true rewards, with B-Pref's model of a
human's irrationality (Lee, Smith, Dragan & Abbeel, "B-Pref: Benchmarking Preference-Based
Reinforcement Learning", NeurIPS 2021 Datasets and Benchmarks; code rll-research/BPref,
reward_model.py `get_label`). With the defaults it is their perfectly rational teacher.

For a pair of segments with true rewards r1_t, r2_t (t = 0..H-1; 0 on the absorbing state
after a terminal, labels.py), in B-Pref's order:
  1. skip ("can't tell") if  max(sum_t r1_t, sum_t r2_t) <= skip * m;
  2. myopic returns  G_i = sum_t gamma^(H-1-t) ri_t  (later steps weigh more);
  3. P[first better] = sigma(beta (G1 - G2)) for finite beta; with beta = inf the better
     segment, and the first on a tie (B-Pref's `1 * (sum_1 < sum_2)`);
  4. the answer is flipped with probability `mistake`;
  5. equally good, mu = (0.5, 0.5), if |sum_t r1_t - sum_t r2_t| < equal * m (after 3 and 4,
     as in B-Pref, so it overrides them).
m is B-Pref's margin, a typical segment's return: their mean episode return x H / the episode
length, here the dataset's mean reward per transition x H.

A ranking of K > 2 segments is sorted by G (beta = inf) or drawn from the Plackett-Luce model
with weights exp(beta G) (Bradley-Terry's extension to K), with no skip, mistake or tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.datasets import Dataset
from common.errors import ConfigError
from common.preferences.labels import Query, now, segment_rewards, valid_segment_starts


@dataclass(frozen=True)
class Teacher:
    beta: float = math.inf
    """rationality: P[first better] = sigma(beta (G1 - G2)); inf answers by the larger return
    (B-Pref's default, the 'oracle' teacher)"""
    gamma: float = 1.0
    """myopia: step t of H weighs gamma^(H-1-t) (B-Pref default 1: not myopic)"""
    mistake: float = 0.0
    """probability that the answer is flipped (B-Pref default 0)"""
    skip: float = 0.0
    """skip a pair whose better return is at most skip x the typical segment return (B-Pref
    default 0: never)"""
    equal: float = 0.0
    """answer 'equally good' where the returns differ by less than equal x the typical segment
    return (B-Pref default 0: never)"""

    def check(self):
        if math.isnan(self.beta) or self.beta <= 0:
            raise ConfigError(f"--beta (rationality) must be positive (inf: perfectly rational), "
                              f"got {self.beta}.")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"--gamma (myopia) must lie in (0, 1], got {self.gamma}.")
        if not 0 <= self.mistake <= 1:
            raise ConfigError(f"--mistake must be a probability in [0, 1], got {self.mistake}.")
        for name in ("skip", "equal"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name} must be zero or positive, got {getattr(self, name)}.")

    def describe(self) -> str:
        return (f"scripted B-Pref teacher (beta={self.beta}, gamma={self.gamma}, "
                f"mistake={self.mistake}, skip={self.skip}, equal={self.equal})")

    def pair_probabilities(self, rewards_1, rewards_2, margin: float) -> np.ndarray:
        """(Q, 4) probabilities of the answers [first better, second better, equal, skip] for Q
        pairs of segments with true rewards `rewards_i` of shape (Q, H)."""
        rewards_1, rewards_2 = np.asarray(rewards_1, np.float64), np.asarray(rewards_2, np.float64)
        sum_1, sum_2 = rewards_1.sum(1), rewards_2.sum(1)
        horizon = rewards_1.shape[1]
        weights = self.gamma ** np.arange(horizon - 1, -1, -1.0)
        g_1, g_2 = rewards_1 @ weights, rewards_2 @ weights
        if math.isinf(self.beta):
            first = (g_1 >= g_2).astype(np.float64)
        else:
            first = 1.0 / (1.0 + np.exp(-np.clip(self.beta * (g_1 - g_2), -500, 500)))
        first = (1 - self.mistake) * first + self.mistake * (1 - first)
        skip = (np.maximum(sum_1, sum_2) <= self.skip * margin) if self.skip > 0 else \
            np.zeros(len(sum_1), bool)
        equal = (np.abs(sum_1 - sum_2) < self.equal * margin) & ~skip
        answered = ~skip & ~equal
        return np.stack([answered * first, answered * (1 - first), equal, skip], 1).astype(
            np.float64)

    def answer(self, dataset: Dataset, segment_length: int, queries: list[Query],
               rng: np.random.Generator) -> list[Query]:
        """The teacher's answers to `queries`, drawn from the dataset's true rewards."""
        margin = float(dataset.rewards.mean()) * segment_length
        stamp, who = now(), self.describe()
        answered = [None] * len(queries)
        pairs = [i for i, q in enumerate(queries) if len(q.segments) == 2]
        if pairs:
            starts = np.array([queries[i].segments for i in pairs])  # (P, 2)
            rewards = segment_rewards(dataset, starts, segment_length)  # (P, 2, H)
            probabilities = self.pair_probabilities(rewards[:, 0], rewards[:, 1], margin)
            draws = rng.random(len(pairs))
            choice = (draws[:, None] >= np.cumsum(probabilities, 1)).sum(1).clip(0, 3)
            for i, c in zip(pairs, choice):
                segments = queries[i].segments
                answered[i] = (Query(segments, skipped=True, annotator=who, time=stamp) if c == 3
                               else Query(segments, preference=((1.0, 0.0), (0.0, 1.0),
                                                                (0.5, 0.5))[c],
                                          annotator=who, time=stamp))
        ranked = [i for i, a in enumerate(answered) if a is None]  # K > 2 segments
        if ranked and (self.mistake or self.skip or self.equal):
            raise ConfigError("The scripted teacher ranks K > 2 segments with --beta and "
                              "--gamma only; --mistake, --skip and --equal apply to pairs.")
        if ranked:  # every ranked segment's return at once: one pass over the episode ends
            weights = self.gamma ** np.arange(segment_length - 1, -1, -1.0)
            segments = [queries[i].segments for i in ranked]
            returns = segment_rewards(dataset, np.concatenate(segments), segment_length) @ weights
            splits = np.cumsum([len(k) for k in segments])[:-1]
            for i, query_returns in zip(ranked, np.split(returns, splits)):
                answered[i] = Query(queries[i].segments, ranking=tuple(
                    int(j) for j in self.rank(query_returns, rng)), annotator=who, time=stamp)
        return answered

    def rank(self, returns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Positions best first: by return (beta = inf) or a Plackett-Luce draw with weights
        exp(beta G) (Gumbel-max: sort beta G + Gumbel noise)."""
        if math.isinf(self.beta):
            return np.argsort(-returns, kind="stable")
        return np.argsort(-(self.beta * returns + rng.gumbel(size=len(returns))), kind="stable")


def sample_queries(dataset: Dataset, segment_length: int, num_queries: int, size: int,
                   rng: np.random.Generator) -> list[Query]:
    """`num_queries` queries of `size` segments each, every segment start drawn uniformly among
    the transitions where a segment of `segment_length` fits inside one episode or ends in its
    terminal (labels.py)."""
    starts = np.flatnonzero(valid_segment_starts(dataset, segment_length))
    if len(starts) == 0:
        lengths = dataset.episode_lengths()
        raise ConfigError(
            f"No episode of '{dataset.info.name}' is {segment_length} transitions long (the "
            f"longest has {lengths.max()}), so no segment fits. Use a --segment-length of at most "
            f"{lengths.max()}.")
    drawn = rng.choice(starts, size=(num_queries, size))
    return [Query(tuple(int(s) for s in row)) for row in drawn]
