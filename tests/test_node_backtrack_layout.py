"""NodeBacktrack's forward pass on the CPU runs on a channels-last copy of 4-D inputs, unless the model reads
memory layout; rules read channels-last values in place."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from captum_ext import NodeBacktrack
from captum_ext._utils import graph as G
from captum_ext.attr._backtrack_core import at_nodes, take


class ViewFlatten(nn.Module):
    """A classic CNN head that flattens with ``view``, which fails on a channels-last map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


class Resized(nn.Module):
    """Convolutions, max-pooling and a bilinear resize: every rule that reads values at kept nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.last = nn.Sequential(nn.Conv2d(6, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.interpolate(self.first(x), scale_factor=2, mode="bilinear"))


def recorded_layouts(monkeypatch, model: nn.Module, x: torch.Tensor) -> list:
    seen = []
    record = G.record

    def spy(graph_module, args, keep=None):
        seen.append(args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous())
        return record(graph_module, args, keep)

    monkeypatch.setattr(G, "record", spy)
    NodeBacktrack(model).attribute(x, target=0)
    return seen


def test_the_forward_runs_channels_last_where_the_model_reads_no_layout(monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    before = x.clone()
    assert G.layout_free(NodeBacktrack(model).graph_module)
    assert recorded_layouts(monkeypatch, model, x) == [True]
    assert torch.equal(x, before) and x.is_contiguous()  # the caller's tensor is untouched


def test_a_model_flattening_with_view_runs_channels_first_and_is_explained(monkeypatch):
    torch.manual_seed(0)
    model = ViewFlatten().eval()
    x = torch.randn(2, 3, 6, 6)
    assert not G.layout_free(NodeBacktrack(model).graph_module)
    assert recorded_layouts(monkeypatch, model, x) == [False]
    hits = NodeBacktrack(model).attribute(x, target=1)
    assert hits.shape == x.shape and float(hits.sum()) > 0


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 1, 2, 2), (1, 6, 1, 1)])
def test_values_at_kept_nodes_read_in_place_from_channels_last_maps(shape):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=generator)
    b = torch.randn(shape, generator=generator)
    numel = a[0].numel()
    batch = torch.randint(0, shape[0], (50,), generator=generator)
    flat = torch.randint(0, numel, (50,), generator=generator)
    expected = [a.reshape(shape[0], -1)[batch, flat], b.reshape(shape[0], -1)[batch, flat]]
    last = [t.contiguous(memory_format=torch.channels_last) for t in (a, b)]
    for got, want in zip(at_nodes(last, batch, flat), expected):
        assert torch.equal(got, want)
    for got, want in zip(at_nodes([a, b], batch, flat), expected):
        assert torch.equal(got, want)

    pairs = torch.randint(0, numel, (50, 4), generator=generator)  # broadcast against P×1 examples
    assert torch.equal(at_nodes(last[:1], batch[:, None], pairs)[0], a.reshape(shape[0], -1)[batch[:, None], pairs])
    whole = torch.randint(0, a.numel(), (7, 3), generator=generator)
    assert torch.equal(take(last[0], whole), a.reshape(-1)[whole])
    assert torch.equal(take(a, whole), a.reshape(-1)[whole])


def test_the_tensor_paths_walk_a_channels_last_forward_as_a_channels_first_one(monkeypatch):
    """Without the compiled kernels the rules read the channels-last values in place and give the hits of the
    same values laid out channels-first (small integers: both forward passes compute them exactly)."""
    from captum_ext.attr import _backtrack_kernels

    monkeypatch.setattr(_backtrack_kernels, "ENABLED", False)
    torch.manual_seed(0)
    model = Resized().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randint(-3, 4, parameter.shape))
    x = torch.randint(0, 4, (2, 3, 12, 12)).float()
    explainer = NodeBacktrack(model, **NodeBacktrack.TWO_CHANNEL_RULES)
    channels_last = explainer.attribute(x, target=[0, 2])
    explainer._records_channels_last = False
    assert torch.equal(channels_last, explainer.attribute(x, target=[0, 2]))
