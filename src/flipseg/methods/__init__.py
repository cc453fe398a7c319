"""Method recipes. Importing this package registers their segmenters."""

from flipseg.methods.flip import infer as _flip_infer  # noqa: F401  (registers "flip")
