"""Objectives: each method's loss behind one small interface."""

from dsol_lite.objectives.dsol import negative_partners, stage_one_loss

__all__ = ["negative_partners", "stage_one_loss"]
