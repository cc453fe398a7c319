"""flipseg: breast-lesion masks from boxes and tags in 2D/3D ultrasound."""

from flipseg.boxes import Box
from flipseg.errors import FlipsegError

__all__ = ["Box", "FlipsegError", "__version__"]
__version__ = "0.1.0"
