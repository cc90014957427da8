"""offlax's shared, non-algorithm code: datasets, normalisation, (later) evaluation and logging."""

from common.datasets import (
    Dataset,
    DatasetError,
    DatasetFormatError,
    DatasetInfo,
    DatasetUnavailableError,
    UnknownDatasetError,
    load_dataset,
    normalized_score,
)
from common.normalization import ObservationStatistics, iql_reward_scale, observation_statistics

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "ObservationStatistics",
    "UnknownDatasetError",
    "iql_reward_scale",
    "load_dataset",
    "normalized_score",
    "observation_statistics",
]
