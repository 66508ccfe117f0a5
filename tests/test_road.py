"""ROAD (Rong et al., ICML 2022): the batched imputation against the sparse reference, hand-computed cases, the
curves' order, and the evaluation driver."""
import csv

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext.evaluation import evaluate
from captum_ext.metrics.road import road_curves, road_impute
from captum_ext.testing import road_impute_sparse


def test_one_removed_pixel_takes_the_weighted_mean_of_its_neighbours():
    image = torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3)
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    # Direct neighbours 1, 3, 5, 7 weigh 1/6, diagonals 0, 2, 6, 8 weigh 1/12: (16 / 6 + 16 / 12) = 4.
    assert float(road_impute(image, removed, noise=0.0)[0, 0, 1, 1]) == pytest.approx(4.0, abs=1e-12)
    # In a corner only three neighbours lie inside the image: (1 / 6 · 1 + 1 / 6 · 3 + 1 / 12 · 4) / (5 / 12) = 2.4.
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    assert float(road_impute(image, corner, noise=0.0)[0, 0, 0, 0]) == pytest.approx(2.4, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 9), st.integers(2, 9), st.floats(0.05, 0.95))
def test_the_batched_solve_equals_the_direct_sparse_solve(seed, height, width, fraction):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 2, height, width, generator=generator, dtype=torch.float64)
    removed = torch.rand(3, height, width, generator=generator) < fraction
    removed[:, 0, 0] = False  # each image keeps a pixel
    got = road_impute(images, removed, noise=0.0, tolerance=1e-12)
    for i in range(3):
        assert torch.allclose(got[i], road_impute_sparse(images[i], removed[i]), atol=1e-9)
        assert torch.equal(got[i][:, ~removed[i]], images[i][:, ~removed[i]])  # kept pixels untouched


def test_noise_is_added_to_the_imputed_pixels_only_and_comes_from_the_generator():
    images, removed = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8) < 0.5
    quiet = road_impute(images, removed, noise=0.0)
    noisy = road_impute(images, removed, torch.Generator().manual_seed(1), noise=0.05)
    again = road_impute(images, removed, torch.Generator().manual_seed(1), noise=0.05)
    assert torch.equal(noisy, again)
    assert torch.equal(noisy.permute(0, 2, 3, 1)[~removed], images.permute(0, 2, 3, 1)[~removed])
    difference = (noisy - quiet).permute(0, 2, 3, 1)[removed]
    assert 0.03 < float(difference.std()) < 0.07


def test_the_curves_remove_the_evidence_first_for_morf_and_last_for_lerf():
    # The class score is the sum of the top-left quadrant; a map pointing there is faithful.
    model = nn.Sequential(nn.Conv2d(1, 1, 4, bias=False), nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0, :2, :2] = 5.0
        model[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, :2, :2] = 1.0  # the evidence (a constant image would be imputed unchanged)
    faithful = torch.zeros(1, 4, 4)
    faithful[0, :2, :2] = 1.0
    faithful += torch.linspace(0, 0.1, 16).view(1, 4, 4)  # no ties
    args = dict(fractions=(0.25, 0.5, 0.75), generator=torch.Generator().manual_seed(0))
    morf = road_curves(model, images, faithful, torch.tensor([0]), "morf", **args)[0]
    lerf = road_curves(model, images, faithful, torch.tensor([0]), "lerf", **args)[0]
    assert float(morf.max()) < 0.9 < float(lerf.min())
    with pytest.raises(ValueError, match="`order` must be one of"):
        road_curves(model, images, faithful, torch.tensor([0]), "random")
    with pytest.raises(ValueError, match="`fractions`"):
        road_curves(model, images, faithful, torch.tensor([0]), fractions=(1.0,))
    with pytest.raises(ValueError, match="at least one kept pixel"):
        road_impute(images, torch.ones(1, 4, 4, dtype=torch.bool))


def test_the_driver_scores_road_per_pair(tmp_path):
    summary = evaluate("zoo:scenes_vgg", "grad_cam", "scenes:multi:4", tmp_path / "run", batch_size=4,
                       show_progress=False, metrics=["road_morf", "road_lerf"])
    rows = list(csv.DictReader((tmp_path / "run" / "pairs.csv").read_text().splitlines()))
    for key in ("road_morf", "road_lerf"):
        values = [float(row[key]) for row in rows]
        assert all(0 <= v <= 1 for v in values)
        assert abs(sum(values) / len(values) - summary[key]) < 1e-9
    assert summary["settings"]["road"]["fractions"][0] == 0.1
    assert summary["road_morf"] < summary["road_lerf"]  # a trained net's Grad-CAM points at its evidence
