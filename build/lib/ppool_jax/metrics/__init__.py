"""Segmentation metrics (confusion-matrix, boundary F-score, small-structure IoU)."""

from ppool_jax.metrics.segmentation import (PROTOCOLS, boundary_counts, boundary_scores,
                                            confusion_matrix, confusion_scores, fill_void,
                                            gt_boundary, invalid_prediction_count,
                                            segmentation_counts, segmentation_scores,
                                            trimap_mask, void_band_trimap)

__all__ = ["PROTOCOLS", "boundary_counts", "boundary_scores", "confusion_matrix",
           "confusion_scores", "fill_void", "gt_boundary", "invalid_prediction_count",
           "segmentation_counts", "segmentation_scores", "trimap_mask", "void_band_trimap"]
