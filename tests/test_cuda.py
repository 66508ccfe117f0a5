"""The attribution methods on a CUDA device give what they give on the CPU (run where a GPU exists:
``pytest -m cuda``; skipped elsewhere)."""
import pytest
import torch
import torchvision
from torch import nn

from captum_ext import MultiLayerClassDiffSaliency, NodeBacktrack, ROIAttentionResNet, SensitivityBBox, zoo
from captum_ext.datasets import scenes

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def full_precision():
    """Ampere and later GPUs run float32 convolutions in TF32 by default (10-bit mantissa): compare in full
    float32, then restore the user's setting."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _both(model: nn.Module):
    return model.eval(), _to_cuda(model)


def _to_cuda(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cuda().eval()


def test_node_backtrack_on_cuda_equals_cpu_on_the_zoo_vgg_and_a_resnet():
    batch = scenes.make_scenes(8, split="test", seed=3)
    x = scenes.normalize(batch.images)
    for model, inputs in ((zoo.load("scenes_vgg"), x),
                          (torchvision.models.resnet18(num_classes=10), torch.randn(4, 3, 64, 64))):
        cpu, gpu = _both(model)
        target = cpu(inputs).argmax(1)
        expected = NodeBacktrack(cpu).attribute(inputs, target=target)
        result = NodeBacktrack(gpu).attribute(inputs.cuda(), target=target.cuda())
        assert result.device.type == "cuda"
        # Ties between equal contributions may break differently on the GPU: compare where the paths land.
        agree = float((result.cpu() > 0).eq(expected > 0).float().mean())
        assert agree > 0.99, agree


def test_class_diff_saliency_and_sensitivity_on_cuda_match_cpu():
    model = zoo.load("scenes_vgg_multilabel")
    batch = scenes.make_scenes(4, mode="multi", split="test", seed=2)
    x = scenes.normalize(batch.images)
    cpu, gpu = _both(model)
    layers_cpu = [cpu.features[i] for i in (5, 7, 10)]
    layers_gpu = [gpu.features[i] for i in (5, 7, 10)]
    target = batch.object_labels[:, 0].tolist()
    expected = MultiLayerClassDiffSaliency(cpu, layers_cpu).attribute(x, target=target)
    result = MultiLayerClassDiffSaliency(gpu, layers_gpu).attribute(x.cuda(), target=target)
    assert torch.allclose(result.cpu(), expected, atol=1e-3)
    expected = SensitivityBBox(cpu).attribute(x, target=target)
    result = SensitivityBBox(gpu).attribute(x.cuda(), target=target)
    assert torch.allclose(result.cpu(), expected, atol=1e-4, rtol=1e-3)


def test_roi_net_explained_on_cuda_with_the_mask_as_an_additional_argument():
    torch.manual_seed(0)
    cpu, gpu = _both(ROIAttentionResNet(num_classes=5, depth=18, merge="all", mode="mul"))
    images, masks = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    expected = NodeBacktrack(cpu).attribute(images, target=1, additional_forward_args=(masks,))
    result = NodeBacktrack(gpu).attribute(images.cuda(), target=1, additional_forward_args=(masks.cuda(),))
    assert float((result.cpu() > 0).eq(expected > 0).float().mean()) > 0.99


def test_evaluate_on_cuda_scores_as_on_the_cpu(tmp_path):
    """The dataset driver on a GPU: same pairs, classes and recognition as on the CPU, maps equal up to float16
    rounding of GPU gradients, and the same input fingerprint (a resume may switch devices)."""
    import json

    import numpy as np
    import zarr

    from captum_ext.datasets import export_coco
    from captum_ext.evaluation import evaluate

    annotations, images = export_coco(scenes.make_scenes(12, mode="multi", split="test", seed=4), tmp_path / "coco")
    data = f"coco:{annotations}:{images}"
    results = {device: evaluate("zoo:scenes_vgg_multilabel", "grad_cam", data, tmp_path / device, batch_size=5,
                                device=device, show_progress=False) for device in ("cpu", "cuda")}
    cpu, gpu = results["cpu"], results["cuda"]
    assert cpu["n_pairs"] == gpu["n_pairs"] and cpu["accuracy"] == gpu["accuracy"]
    assert cpu["class_map"] == gpu["class_map"]
    for name in ("energy_pointing_game", "maxboxacc_v2", "pxap"):
        assert abs(cpu[name] - gpu[name]) < 0.02, name
    maps = [np.asarray(zarr.open_array(str(tmp_path / d / "maps.zarr" / "maps"), mode="r")[:], dtype=np.float32)
            for d in ("cpu", "cuda")]
    assert np.abs(maps[0] - maps[1]).max() < 0.01
    runs = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("cpu", "cuda")]
    assert runs[0]["inputs"] == runs[1]["inputs"]


def test_localisation_metrics_on_cuda_maps_equal_the_host_path_exactly():
    """Maps on a GPU are scored there (batched component labelling); every state delta and per-pair value equals
    the host path's, on saliency-like noisy maps and smooth CAM-like ones, with masks and several boxes."""
    from captum_ext.metrics import (CorLocMetric, EnergyPointingGameMetric, MaxBoxAccV2Metric, PointingGameMetric,
                                    PxAPMetric)
    from captum_ext.metrics.ground_truth import GroundTruth

    generator = torch.Generator().manual_seed(0)
    maps, truths = [], []
    for i in range(12):
        size = 48 if i < 8 else 40  # two sizes: scored in groups
        smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 1, size, size, generator=generator), 9, 1, 4)[0, 0]
        noisy = torch.randn(size, size, generator=generator).abs()
        raw = noisy if i % 2 else smooth
        maps.append((raw / raw.max()).half().float())
        x, y = torch.randint(0, size - 12, (2,), generator=generator).tolist()
        boxes = torch.tensor([[x, y, x + 12, y + 9], [2, 3, 10, 20]][: 1 + i % 2], dtype=torch.float32)
        mask = torch.zeros(size, size, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes.long().tolist():
            mask[y1:y2, x1:x2] = True
        truths.append(GroundTruth(i % 10, boxes, mask if i % 3 else None))
    for metric in (PointingGameMetric(10), PointingGameMetric(10, tolerance=3.0), EnergyPointingGameMetric(),
                   CorLocMetric(), MaxBoxAccV2Metric(), PxAPMetric()):
        host = metric.statistics(maps, truths)
        device = metric.statistics([m.cuda() for m in maps], truths)
        for part in (0, 1):
            assert host[part].keys() == device[part].keys()
            for key in host[part]:
                assert torch.equal(host[part][key].cpu(), device[part][key].cpu()), (type(metric).__name__, key)
