"""Reference implementations for testing, as ``captum.testing`` keeps Captum's: straightforward, slow versions of
the library's vectorised algorithms, written independently so that tests (yours too) can compare against them.

- :func:`backtrack_loop`: node backtracking one node at a time (the paper's Algorithms 1–3), for
  ``nn.Sequential`` stacks; the reference for :class:`captum_ext.NodeBacktrack`.
"""
from captum_ext.testing.node_backtrack_reference import backtrack_loop

__all__ = ["backtrack_loop"]
