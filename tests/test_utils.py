"""Private helpers: argument validation, the box convention, box IoU, map normalisation, image standardisation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_ext._utils.boxes import box_areas, box_iou_matrix, boxes_to_masks, masks_to_boxes
from captum_ext._utils.images import denormalize, normalize
from captum_ext._utils.maps import mask_iou_rows, max_normalise, minmax_normalise, safe_div
from captum_ext._utils.images import as_image_batch
from captum_ext._utils.validation import check_boxes, check_finite, check_in_choices, check_same_length, check_tensor


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


@pytest.mark.parametrize("check", [
    lambda t: check_tensor(t, "x"),
    lambda t: check_tensor(t, "x", finite=False),  # no values to read for any later check either
    lambda t: check_finite(t, "x"),
    lambda t: check_boxes(t, "x"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
def test_meta_tensors_are_refused_naming_the_argument(check, dtype):
    # Was "Tensor.item() cannot be called on meta tensors" (from the NaN check), naming neither argument nor cause.
    with pytest.raises(ValueError, match=r"^`x` is a meta tensor \(device='meta'\): it has a shape but no values"):
        check(torch.empty(3, 4, dtype=dtype, device="meta"))
    with pytest.raises(ValueError, match=r"^`image` is a meta tensor"):
        as_image_batch(torch.empty(1, 3, 4, 4, device="meta"))


def test_check_finite_passes_real_values_and_names_nan():
    check_finite(torch.tensor([1.0, -2.0]), "x")
    check_finite(torch.tensor([1, 2]), "x")  # integers cannot hold NaN
    with pytest.raises(ValueError, match="^`x` contains NaN or inf values$"):
        check_finite(torch.tensor([1.0, float("inf")]), "x")


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


def test_box_iou_matrix_hand_values_and_degenerate_boxes():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 0, 0], [0, 0, 10, 10]])
    iou = box_iou_matrix(a, b)
    torch.testing.assert_close(iou, torch.tensor([[1 / 3, 0.0, 1.0], [0.0, 0.0, 0.0]]))  # 0/0 -> 0, not NaN
    assert box_areas(b).tolist() == [100.0, 0.0, 100.0]


def test_minmax_normalise_per_image():
    maps = torch.tensor([[[4.0, 2.0], [0.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]], [[-1.0, 1.0], [0.0, 3.0]]])
    out = minmax_normalise(maps)
    assert out.dtype == torch.float64 and out.shape == maps.shape
    assert out.tolist() == [[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.5], [0.25, 1.0]]]
    assert torch.equal(minmax_normalise(maps.flatten(1)), out.flatten(1))  # rows of a flattened batch alike


def test_max_normalise_keeps_zero_level():
    maps = torch.tensor([[[[4.0, 2.0], [0.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])  # N×1×H×W
    out = max_normalise(maps)
    assert out.shape == maps.shape and out.dtype == torch.float32
    assert out.tolist() == [[[[1.0, 0.5], [0.0, 0.25]]], [[[0.0, 0.0], [0.0, 0.0]]]]  # all-zero map stays zero


def test_safe_div_and_mask_iou_rows():
    assert safe_div(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 0.0, 4.0])).tolist() == [0.5, 0.0, 0.75]
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]]], dtype=torch.bool)
    truth = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 1]]], dtype=torch.bool)
    assert mask_iou_rows(pred, truth).tolist() == [0.5, 1.0, 0.0]  # both empty -> 1


def test_image_normalize_round_trip():
    batch = torch.tensor([[[[0.5]], [[0.0]], [[1.0]]]])
    out = normalize(batch, (0.5, 0.5, 0.5), (0.25, 0.5, 2.0))
    assert out.flatten().tolist() == [0.0, -1.0, 0.25]
    torch.testing.assert_close(denormalize(out, (0.5, 0.5, 0.5), (0.25, 0.5, 2.0)), batch)


@pytest.mark.parametrize("name", ["captum_ext._utils.validation", "captum_ext._utils.graph"])
def test_private_helpers_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(0, 30), k=st.integers(1, 4), fractional=st.booleans())
def test_paired_box_iou_equals_the_iou_matrix_exactly(seed, m, k, fractional):
    """Each box against its own boxes gives the matrix's values bit for bit (degenerate and disjoint boxes too)."""
    from captum_ext._utils.boxes import box_iou_matrix, paired_box_iou

    generator = torch.Generator().manual_seed(seed)

    def boxes(count):
        corner = torch.randint(0, 20, (count, 2), generator=generator).double()
        size = torch.randint(0, 8, (count, 2), generator=generator).double()  # zero width or height included
        if fractional:
            corner = corner + torch.rand(count, 2, generator=generator, dtype=torch.float64)
        return torch.cat([corner, corner + size], dim=1)

    mine, theirs = boxes(m), boxes(k)
    assert torch.equal(paired_box_iou(mine, theirs.expand(m, k, 4)), box_iou_matrix(mine, theirs))
