"""Localization metrics, each named by the protocol it comes from (DESIGN section 5).

Notebook: 02_stage_one (single source), 05_evaluation (all of them).

``single``: DSOL single source, EZ-VSL cIoU, the centre-prior and random baselines.
``multi``: DSOL multi source (CIoU, AUC, NSA), AVGN style (per-source CIoU, CAP, PIAP), and a
class-agnostic silent-object score.
"""

from dsol_lite.metrics.multi import (avgn_multi_source, cluster_maps_to_classes, dsol_multi_source, pixel_ap,
                                     pixel_aps, silent_object_scores)
from dsol_lite.metrics.single import (THRESHOLDS, centre_prior, dsol_single_source, ezvsl, grid_oracle, iou,
                                      min_max_normalize, random_maps, relative_region, success_curve, upsample)

__all__ = ["THRESHOLDS", "upsample", "iou", "relative_region", "success_curve", "dsol_single_source",
           "min_max_normalize", "ezvsl", "centre_prior", "random_maps", "grid_oracle", "cluster_maps_to_classes",
           "dsol_multi_source", "avgn_multi_source", "pixel_ap", "pixel_aps",
           "silent_object_scores"]
