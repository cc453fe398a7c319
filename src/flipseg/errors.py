"""User-facing error type.

Every mistake a user can make (missing file, box outside the image, unknown
option, corrupt image, ...) raises :class:`FlipsegError` with a one-line
message naming the bad value. The CLI prints that line and exits non-zero;
any other exception is a bug and keeps its traceback.
"""

__all__ = ["FlipsegError", "MaskShapeError"]


class FlipsegError(ValueError):
    """A user mistake, reported as a single line by the CLI."""


class MaskShapeError(FlipsegError):
    """A mask file whose shape differs from its image's. It concerns how a dataset is read
    (``--resize-masks``), not one bad case, so readers that skip bad cases let it through."""
