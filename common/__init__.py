"""offlax's shared, non-algorithm code.

common.datasets       load_dataset, Dataset, normalized_score, fingerprint, the DatasetError
                      family; one module per source:
  .core               Dataset, DatasetInfo, checks, normalised score, fingerprint, errors
  .minari_store       the local Minari directory, downloads, flat-array cache
  .d4rl_hdf5          D4RL's own HDF5 files
  .d4rl_names         the D4RL name -> Minari id table and D4RL's reference scores
  .generated          offlax's D4RL-style datasets: rollouts, builds, reference fingerprints
  .policies           the committed behaviour policies (common/policies/*.npz)
  .portable_math      float arithmetic with the same bits on every machine
common.preferences   preference labels between segments of a dataset:
  .labels             the label file (JSON Lines): read, check against the dataset, write
  .teacher            the scripted B-Pref teacher, uniform query sampling
  __main__            `python -m common.preferences label`: write a label file
common.normalization  observation statistics, action scaling, IQL reward scaling
common.transitions    the training arrays on the device, minibatch sampling inside jit
common.evaluation     vectorised evaluation of all seeds at once (Evaluator, action scaling)
  .saved_runs         a saved run's policy evaluated again, its video;
                      `python -m common.evaluation RUN_DIR`
common.logger         TensorBoard, results.json, progress bar, policy.msgpack
common.training       the shared training loop: host calls, divergence guard, Ctrl-C, resume
common.run_directory  the output directory: unique default names, one writer (an OS lock)
common.files          a run's files written whole or not at all; the error of a full disk
common.checkpoints    checkpoint files: atomic writes, the last k kept, restore
common.cli            argument parsing with --resume, shared checks, exit codes
common.errors         OfflaxError, the family of errors a user can fix
"""
