"""Models: the shared ResNet-18 streams and each method's heads."""

from dsol_lite.models.backbones import BackbonePair, ResNet18Trunk, tile_2x2, untile_2x2
from dsol_lite.models.dsol import DSOLStageOne, DSOLStageTwo, StageOneOutput, StageTwoOutput

__all__ = ["BackbonePair", "ResNet18Trunk", "DSOLStageOne", "DSOLStageTwo", "StageOneOutput", "StageTwoOutput",
           "tile_2x2", "untile_2x2"]
