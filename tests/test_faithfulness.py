"""Deletion and insertion AUC (RISE): exact curves on hand-built models, the trapezoid, stable tie order, batching
independence, a faithful map beating a reversed one, and the metrics in the dataset driver (columns, summary,
class-label-only data, resume)."""
import csv
import json

import pytest
import torch
from torch import nn

from captum_ext.evaluation import evaluate
from captum_ext.metrics import FaithfulnessAUCMetric, curve_auc, deletion_insertion_curves
from captum_ext.metrics.faithfulness import baseline_images


def linear_model(weight: torch.Tensor) -> nn.Module:
    """Class 0 scores ``Σ w·x``, class 1 scores 0: the probability of class 0 is ``sigmoid(Σ w·x)``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.numel(), 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = weight.flatten()
    return model.eval()


def test_deletion_curve_is_exact_with_steps_equal_to_one_pixel():
    weight = torch.arange(1.0, 10.0).view(1, 3, 3)  # pixel k carries evidence k + 1
    model, image = linear_model(weight), torch.ones(1, 1, 3, 3)
    ranking = weight.clone()  # the true order of the evidence
    curve = deletion_insertion_curves(model, image, ranking, torch.tensor([0]), "deletion", steps=4,
                                      baseline="zero")[0]
    # 9 pixels in 4 steps: floor(9k / 4) = 0, 2, 4, 6, 9 removed, the strongest first.
    remaining = torch.tensor([45.0, 45 - (9 + 8), 45 - (9 + 8 + 7 + 6), 45 - 39, 0.0])
    assert torch.allclose(curve, torch.sigmoid(remaining), atol=1e-6)
    insertion = deletion_insertion_curves(model, image, ranking, torch.tensor([0]), "insertion", steps=4,
                                          baseline="zero")[0]
    assert torch.allclose(insertion, torch.sigmoid(torch.tensor([0.0, 17, 30, 39, 45])), atol=1e-6)


def test_ties_are_broken_by_pixel_position():
    weight = torch.tensor([[[1.0, 2.0], [4.0, 8.0]]])
    curve = deletion_insertion_curves(linear_model(weight), torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2),
                                      torch.tensor([0]), steps=4, baseline="zero")[0]
    assert torch.allclose(curve, torch.sigmoid(torch.tensor([15.0, 14, 12, 8, 0])), atol=1e-6)


def test_curve_auc_is_the_trapezoid():
    curves = torch.tensor([[1.0, 0.5, 0.0], [0.25, 0.25, 0.25], [0.0, 1.0, 0.0]])
    assert torch.equal(curve_auc(curves), torch.tensor([0.5, 0.25, 0.5], dtype=torch.float64))


def test_results_do_not_depend_on_the_forward_batch_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    images, maps = torch.rand(3, 3, 8, 8), torch.rand(3, 8, 8)
    targets = torch.tensor([0, 3, 4])
    for mode in ("deletion", "insertion"):
        one = deletion_insertion_curves(model, images, maps, targets, mode, steps=8, batch_size=1)
        many = deletion_insertion_curves(model, images, maps, targets, mode, steps=8, batch_size=64)
        assert torch.allclose(one, many, atol=1e-6)


def test_a_faithful_map_deletes_faster_and_inserts_faster_than_its_reverse():
    torch.manual_seed(1)
    weight = torch.randn(1, 6, 6)
    image = torch.rand(1, 1, 6, 6)
    model = linear_model(weight)
    contribution = weight * image[0]  # exactly what each pixel adds to the class-0 score
    target = torch.tensor([0])
    faithful = {m: curve_auc(deletion_insertion_curves(model, image, contribution, target, m, steps=6,
                                                       baseline="zero")) for m in ("deletion", "insertion")}
    reverse = {m: curve_auc(deletion_insertion_curves(model, image, -contribution, target, m, steps=6,
                                                      baseline="zero")) for m in ("deletion", "insertion")}
    assert faithful["deletion"] < reverse["deletion"] and faithful["insertion"] > reverse["insertion"]


def test_baselines_and_bad_arguments():
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(baseline_images(images, "zero"), torch.zeros_like(images))
    assert torch.allclose(baseline_images(images, "mean")[:, :, 3, 5], images.mean(dim=(2, 3)))
    blurred = baseline_images(images, "blur")
    assert blurred.shape == images.shape and float(blurred.std()) < float(images.std())
    model = linear_model(torch.ones(1, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        deletion_insertion_curves(model, images[:, :1], torch.rand(2, 16, 16), torch.tensor([0, 0]), "both")
    with pytest.raises(ValueError, match="baseline"):
        deletion_insertion_curves(model, images[:, :1], torch.rand(2, 16, 16), torch.tensor([0, 0]),
                                  baseline="noise")
    with pytest.raises(ValueError, match="maps"):
        deletion_insertion_curves(model, images[:, :1], torch.rand(2, 8, 8), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion_curves(model, images[:, :1], torch.rand(2, 16, 16), torch.tensor([0, 0]), steps=0)


def test_the_streaming_metric_sums_in_fixed_point():
    metric = FaithfulnessAUCMetric("insertion")
    metric.update(torch.tensor([0.1, 0.2], dtype=torch.float64))
    metric.update(torch.tensor([0.3], dtype=torch.float64))
    assert abs(float(metric.compute()) - 0.2) < 2**-32
    with pytest.warns(UserWarning, match="called before"):  # torchmetrics' own notice for a metric never updated
        assert torch.isnan(FaithfulnessAUCMetric("deletion").compute())


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def test_evaluate_reports_deletion_and_insertion_per_pair_and_resumes_exactly(tmp_path):
    summary = evaluate(tiny_model(), "saliency", "scenes:single:6", tmp_path / "run", batch_size=2,
                       metrics=["pointing_game", "deletion", "insertion"], faithfulness_steps=8,
                       show_progress=False)
    assert set(summary) >= {"pointing_game", "deletion_auc", "insertion_auc"} and "corloc" not in summary
    rows = list(csv.DictReader((tmp_path / "run" / "pairs.csv").read_text().splitlines()))
    for key in ("deletion_auc", "insertion_auc"):
        values = [float(r[key]) for r in rows]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert abs(sum(values) / len(values) - summary[key]) < 1e-8
    (tmp_path / "run" / "progress" / "batch-00000001.json").unlink()  # as if killed before batch 1 was recorded
    resumed = evaluate(tiny_model(), "saliency", "scenes:single:6", tmp_path / "run", batch_size=2,
                       metrics=["pointing_game", "deletion", "insertion"], faithfulness_steps=8, resume=True,
                       show_progress=False)
    assert {k: resumed[k] for k in ("deletion_auc", "insertion_auc")} == \
        {k: summary[k] for k in ("deletion_auc", "insertion_auc")}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["settings"]["faithfulness"] == {"steps": 8, "baseline": None}


def test_faithfulness_needs_no_annotations_and_bad_options_are_named(tmp_path):
    from PIL import Image

    from captum_ext.datasets import scenes

    batch = scenes.make_scenes(3, mode="single", split="test", seed=4)
    for i, label in enumerate(batch.labels.tolist()):
        folder = tmp_path / "folder" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((batch.images[i].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(folder / f"{i}.png")
    summary = evaluate(tiny_model(), "saliency", f"folder:{tmp_path / 'folder'}", tmp_path / "run",
                       metrics=["deletion"], faithfulness_steps=4, show_progress=False)
    assert 0.0 <= summary["deletion_auc"] <= 1.0 and "pointing_game" not in summary
    with pytest.raises(ValueError, match="faithfulness_baseline"):
        evaluate(tiny_model(), "saliency", "scenes:single:2", tmp_path / "bad", metrics=["insertion"],
                 faithfulness_baseline="noise", show_progress=False)
    with pytest.raises(ValueError, match="`metrics` must name some of"):
        evaluate(tiny_model(), "saliency", "scenes:single:2", tmp_path / "bad2", metrics=["ssim"],
                 show_progress=False)


@pytest.mark.parametrize("steps", [3, 12, 16, 32, 64])
def test_the_curve_reaches_the_baseline_at_its_last_step_only(steps):
    """Before: ceil(H·W / steps) pixels per step replaced a 4×4 image's 16 pixels by x = 0.5 with 32 steps, and the
    curve stayed flat for the rest, changing what the AUC measures."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    image, ranking = torch.rand(1, 1, 4, 4) + 0.5, torch.rand(1, 4, 4)
    curve = deletion_insertion_curves(model, image, ranking, torch.tensor([0]), steps=steps, baseline="zero")[0]
    fully_replaced = torch.softmax(model(torch.zeros(1, 1, 4, 4)), dim=1)[0, 0]
    assert torch.allclose(curve[-1], fully_replaced)
    assert not torch.allclose(curve[-2], fully_replaced)  # one pixel at least is still there a step before
