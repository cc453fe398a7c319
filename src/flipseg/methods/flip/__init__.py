"""Flip Learning: multi-agent DDQN erasing inside a box until the classifier flips."""

from flipseg.methods.flip.config import PAPER_2D_LEVELS, PAPER_3D_LEVELS, FlipConfig

__all__ = ["FlipConfig", "PAPER_2D_LEVELS", "PAPER_3D_LEVELS"]
