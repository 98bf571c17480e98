"""Errors that carry a message for the user: the CLI prints them without a traceback."""


class DlzooError(RuntimeError):
    """A problem the user can fix; the message says how."""


class InvalidInput(DlzooError, ValueError):
    """A setting, argument or input file that cannot be used; the message says which and what would do.

    Also a ValueError, so callers that catch bad values keep working. Any other ValueError is a
    bug and keeps its traceback.
    """


class Terminated(BaseException):
    """SIGTERM arrived (a CI time-out, a preempted runner, `kill`).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it, while
    `finally` blocks and context managers still run: staging directories are removed and the
    MLflow run ends as KILLED instead of staying RUNNING for ever.
    """

    exit_code = 128 + 15  # what a shell reports for a process killed by SIGTERM
