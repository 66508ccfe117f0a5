"""The dataset driver's pipeline: reading ahead, scoring batch k while the model explains batch k + 1, writing on a
thread; results identical to doing one thing at a time, errors raised where they belong, pinned batches."""
import threading
import time
from unittest import mock

import pytest
import torch

from captum_ext.evaluation import evaluate
from captum_ext.evaluation._batch import SampleBatch, collate_samples, score_batch
from captum_ext.evaluation._pipeline import BackgroundStage, prefetched
from captum_ext.evaluation.data import Sample
from captum_ext.metrics.ground_truth import GroundTruth
from test_evaluate import outputs

DATA = "scenes:multi:12"


def test_a_stage_works_in_order_and_raises_its_error_at_the_next_submit_or_at_close():
    seen = []

    def work(item):
        if item == 3:
            raise RuntimeError("item 3 failed")
        seen.append((item, threading.current_thread().name))

    with BackgroundStage(work, "test-stage", depth=1) as stage:
        for item in range(3):
            stage.submit(item)
    assert seen == [(0, "test-stage"), (1, "test-stage"), (2, "test-stage")]
    stage = BackgroundStage(work, "test-stage", depth=1)
    with pytest.raises(RuntimeError, match="item 3 failed"):
        for item in range(3, 20):  # never blocks on the failed thread
            stage.submit(item)
        stage.close()
    assert [item for item, _ in seen] == [0, 1, 2]  # nothing after the failed item was worked on


def test_prefetched_items_come_in_order_with_an_error_in_its_place():
    produced = []

    def items(fail_at):
        for k in range(6):
            if k == fail_at:
                raise OSError(f"cannot read image {k}")
            produced.append(k)
            yield k

    assert list(prefetched(items(None), depth=2)) == list(range(6))
    got = []
    with pytest.raises(OSError, match="cannot read image 4"):
        for item in prefetched(items(4), depth=1):
            got.append(item)
    assert got == [0, 1, 2, 3]


def test_a_consumer_that_stops_early_stops_the_reader():
    produced = []

    def items():
        for k in range(1000):
            produced.append(k)
            yield k

    reader = prefetched(items(), depth=1)
    assert next(reader) == 0
    reader.close()  # joins the reader thread
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count <= 3


def _sample(index, size, classes=(1,), error=None):
    image = None if error else torch.full((3, *size), float(index))
    truths = [GroundTruth(c, torch.tensor([[0.0, 0.0, 2.0, 2.0]])) for c in classes]
    return Sample(index, index, image, truths, error)


def test_collated_batches_group_images_by_size_and_leave_out_unread_and_unannotated_ones():
    batch = collate_samples([_sample(0, (4, 4)), _sample(1, (4, 6)), _sample(2, (4, 4), error="x.png: broken"),
                             _sample(3, (4, 4), classes=()), _sample(4, (4, 4))])
    assert len(batch) == 5 and batch.skipped == ["x.png: broken"]
    assert [[s.index for s in group] for group, _ in batch.groups] == [[0, 4], [1]]
    assert all(s.image is None for group, _ in batch.groups for s in group)  # the images travel stacked only
    assert torch.equal(batch.groups[0][1][:, 0, 0, 0], torch.tensor([0.0, 4.0]))
    assert batch.groups[1][1].shape == (1, 3, 4, 6)


def test_a_pinned_batch_pins_each_stacked_group(monkeypatch):
    pinned = []

    def pin(tensor):  # this machine may have no accelerator to pin for: record the call instead
        pinned.append(tensor.shape)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    batch = collate_samples([_sample(0, (4, 4)), _sample(1, (4, 6))])
    copy = batch.pin_memory()
    assert isinstance(copy, SampleBatch) and pinned == [(1, 3, 4, 4), (1, 3, 4, 6)]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(batch.groups, copy.groups))


def test_batch_k_is_scored_while_the_model_explains_batch_k_plus_one_with_the_same_results(tmp_path):
    from captum_ext.evaluation.methods import build_method
    from captum_ext.evaluation.models import load_evaluation_model

    loaded = load_evaluation_model("zoo:scenes_vgg_multilabel")
    grad_cam = build_method("grad_cam", loaded.model, loaded.layers)
    second_batch_started = threading.Event()
    calls = []

    def method(images, targets):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            second_batch_started.set()
        return grad_cam(images, targets)

    overlapped = []

    def slow_scoring(explained, shared, runs):
        if not overlapped:  # batch 0: wait until the model is on batch 1 (it would never be, done in sequence)
            overlapped.append(second_batch_started.wait(timeout=60))
        return score_batch(explained, shared, runs)

    options = dict(batch_size=4, show_progress=False)
    with mock.patch("captum_ext.evaluation.runner.score_batch", side_effect=slow_scoring):
        evaluate(loaded, method, DATA, tmp_path / "overlapped", **options)
    assert overlapped == [True] and set(calls) == {threading.main_thread().name}
    evaluate(loaded, method, DATA, tmp_path / "plain", **options)
    mine, theirs = outputs(tmp_path / "overlapped"), outputs(tmp_path / "plain")
    assert mine[0] == theirs[0] and mine[1] == theirs[1] and (mine[2] == theirs[2]).all()


def test_a_scoring_error_stops_the_run_and_the_batches_before_it_stay_done(tmp_path):
    from captum_ext.evaluation.store import BatchRecords

    scored, before = [], set(threading.enumerate())

    def failing_scoring(explained, shared, runs):
        if len(scored) == 1:
            raise RuntimeError("scoring failed on the second batch")
        scored.append(1)
        return score_batch(explained, shared, runs)

    with mock.patch("captum_ext.evaluation.runner.score_batch", side_effect=failing_scoring):
        with pytest.raises(RuntimeError, match="scoring failed on the second batch"):
            evaluate("zoo:scenes_vgg", "grad_cam", DATA, tmp_path / "run", batch_size=4, show_progress=False)
    records = BatchRecords(tmp_path / "run" / "progress")
    assert [records.done(k) for k in range(3)] == [True, False, False]
    assert not any(t.name.startswith("captum-ext-") for t in set(threading.enumerate()) - before)  # all joined
    resumed = evaluate("zoo:scenes_vgg", "grad_cam", DATA, tmp_path / "run", batch_size=4, show_progress=False,
                       resume=True)
    whole = evaluate("zoo:scenes_vgg", "grad_cam", DATA, tmp_path / "whole", batch_size=4, show_progress=False)
    assert {k: v for k, v in resumed.items() if k != "settings"} == \
        {k: v for k, v in whole.items() if k != "settings"}
