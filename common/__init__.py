"""offlax's shared, non-algorithm code.

common.datasets       load_dataset, Dataset, normalized_score, the DatasetError family
common.normalization  observation statistics, IQL reward scaling
common.behaviour      offlax's D4RL-style datasets from committed behaviour policies
common.d4rl_names     the D4RL name -> Minari id table and D4RL's reference scores
"""
