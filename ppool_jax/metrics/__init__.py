"""Segmentation metrics (confusion-matrix, boundary F-score, small-structure IoU)."""

from ppool_jax.metrics.segmentation import (boundary_counts, boundary_scores, confusion_matrix,
                                            confusion_scores, gt_boundary, segmentation_counts,
                                            segmentation_scores, trimap_mask)

__all__ = ["boundary_counts", "boundary_scores", "confusion_matrix", "confusion_scores",
           "gt_boundary", "segmentation_counts", "segmentation_scores", "trimap_mask"]
