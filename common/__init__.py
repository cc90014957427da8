"""offlax's shared, non-algorithm code.

common.datasets       load_dataset, Dataset, normalized_score, the DatasetError family
common.normalization  observation statistics, action scaling, IQL reward scaling
common.transitions    the training arrays on the device, minibatch sampling inside jit
common.evaluation     vectorised evaluation of all seeds at once
common.logger         TensorBoard, results.json, progress bar, policy.msgpack
common.training       the shared training loop: host calls, divergence guard, Ctrl-C, resume
common.checkpoints    checkpoint files: atomic writes, the last k kept, restore
common.cli            argument parsing with --resume, shared checks, exit codes
common.errors         OfflaxError, the family of errors a user can fix
common.evaluate       `python -m common.evaluate RUN_DIR`: evaluate a saved policy, record video
common.behaviour      offlax's D4RL-style datasets from committed behaviour policies
common.d4rl_names     the D4RL name -> Minari id table and D4RL's reference scores
"""
