"""`python -m common.evaluation RUN_DIR`: evaluate a saved policy again (see saved_runs.py)."""

from common.evaluation.saved_runs import main

raise SystemExit(main())
