"""Private helpers: argument validation and the box convention."""
import numpy as np
import pytest
import torch

from captum_ext._utils.boxes import boxes_to_masks, masks_to_boxes
from captum_ext._utils.validation import check_boxes, check_in_choices, check_same_length, check_tensor


def test_check_tensor_converts_and_checks():
    assert torch.equal(check_tensor(np.ones((2, 3)), "x", ndim=2, kind="float"), torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="`x` must be 4-D"):
        check_tensor(torch.zeros(2, 3), "x", ndim=4)
    with pytest.raises(TypeError, match="`x` must have a float dtype"):
        check_tensor(torch.zeros(2, dtype=torch.int64), "x", kind="float")
    with pytest.raises(ValueError, match="`x` contains NaN"):
        check_tensor(torch.tensor([1.0, float("nan")]), "x")
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        check_tensor("abc", "x")
    with pytest.raises(ValueError, match="last dimension 4"):
        check_tensor(torch.zeros(2, 3), "x", last_dim=4)


def test_check_boxes_and_lengths_and_choices():
    with pytest.raises(ValueError, match="x1 <= x2"):
        check_boxes([[5.0, 0.0, 1.0, 4.0]], "boxes")
    assert check_boxes([[0, 0, 1, 1]], "boxes").dtype == torch.float32
    with pytest.raises(ValueError, match="same length"):
        check_same_length("a", torch.zeros(2), "b", torch.zeros(3))
    with pytest.raises(ValueError, match="`mode` must be one of"):
        check_in_choices("x", "mode", ["a", "b"])


def test_box_convention_exclusive_edges_round_trip():
    masks = torch.zeros(3, 6, 7, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4, 6] = True  # a single pixel has area 1
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[2.0, 1.0, 5.0, 3.0], [6.0, 4.0, 7.0, 5.0], [0.0, 0.0, 0.0, 0.0]]
    assert torch.equal(boxes_to_masks(boxes, 6, 7), masks)
