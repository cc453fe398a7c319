"""User-facing error type.

Every mistake a user can make (missing file, box outside the image, unknown
option, corrupt image, ...) raises :class:`FlipsegError` with a one-line
message naming the bad value. The CLI prints that line and exits non-zero;
any other exception is a bug and keeps its traceback.
"""

__all__ = ["FlipsegError"]


class FlipsegError(ValueError):
    """A user mistake, reported as a single line by the CLI."""
