"""Errors that carry a message for the user: the CLI prints them without a traceback."""


class DlzooError(RuntimeError):
    """A problem the user can fix; the message says how."""
