"""Objectives: each method's loss behind one small interface."""

from dsol_lite.objectives.dsol import negative_partners, quadrant_maxima, stage_one_loss, stage_two_loss

__all__ = ["negative_partners", "stage_one_loss", "quadrant_maxima", "stage_two_loss"]
