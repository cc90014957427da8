"""The one exception family a run ends with when the user can fix the cause.

Every error offlax raises on purpose derives from `OfflaxError`: its message is one paragraph
that names the problem and the fix, and `common.cli.run_main` prints it (no traceback) and exits
with its `exit_code`.
"""


class OfflaxError(Exception):
    """A problem the user can fix; the message says what and how."""

    exit_code = 2  # bad input, as argparse and tyro use
    label = "error"  # what the message is printed after


class ConfigError(OfflaxError):
    """Command-line arguments that cannot make a sensible run."""
