"""Preferences between segments of a dataset: the label file (`labels.py`), the scripted B-Pref
teacher that answers queries from the true rewards (`teacher.py`), and the command that writes
label files (`python -m common.preferences label`, `__main__.py`). The reward model that learns
from them is an algorithm file, `algorithms/reward_model.py`."""

from common.preferences.labels import (
    LabelFile,
    LabelFileError,
    Query,
    check_against_dataset,
    episode_last_steps,
    read_label_file,
    segment_rewards,
    segment_steps,
    valid_segment_starts,
    write_label_file,
)
from common.preferences.teacher import Teacher, sample_queries

__all__ = ["LabelFile", "LabelFileError", "Query", "Teacher", "check_against_dataset",
           "episode_last_steps", "read_label_file", "sample_queries", "segment_rewards",
           "segment_steps", "valid_segment_starts", "write_label_file"]
