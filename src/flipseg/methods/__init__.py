"""Method recipes. Importing this package registers their segmenters."""

from flipseg.methods.boxinst import model as _boxinst  # noqa: F401  (registers "boxinst")
from flipseg.methods.flip import infer as _flip_infer  # noqa: F401  (registers "flip")
from flipseg.methods.flip import slices as _flip_slices  # noqa: F401  (registers "flip2d-slices")
