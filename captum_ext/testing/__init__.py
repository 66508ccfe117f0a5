"""Reference implementations for testing, as ``captum.testing`` keeps Captum's: straightforward, slow versions of
the library's vectorised algorithms, written independently so that tests (yours too) can compare against them.

- :func:`backtrack_loop`: node backtracking one node at a time (the paper's Algorithms 1–3), for
  ``nn.Sequential`` stacks; the reference for :class:`captum_ext.NodeBacktrack`.
- :func:`count_ops`: the ATen operations and host synchronisations a piece of code dispatches, the same on the
  CPU as on a GPU (a CPU test can guard GPU behaviour with it); :func:`accelerator_code_paths` makes the CPU take
  the code paths chosen for GPUs (fewer, larger operations), so that their counts can be checked without one.
- :func:`iou_curve_by_regions`: MaxBoxAccV2's best IoU per threshold, labelling each thresholded region with SciPy;
  the reference for the component tree the metric uses where Numba is installed.
- :func:`road_impute_sparse`: ROAD's linear imputation of one image, its sparse system built pixel by pixel and
  solved directly with SciPy; the reference for :func:`captum_ext.metrics.road.road_impute`.
"""
from captum_ext._utils.chunking import accelerator_code_paths
from captum_ext.metrics.wsol import iou_curve_by_regions
from captum_ext.testing.node_backtrack_reference import backtrack_loop
from captum_ext.testing.op_counts import OpCounts, count_ops, ops_of
from captum_ext.testing.road_reference import road_impute_sparse

__all__ = ["OpCounts", "accelerator_code_paths", "backtrack_loop", "count_ops", "iou_curve_by_regions", "ops_of",
           "road_impute_sparse"]
