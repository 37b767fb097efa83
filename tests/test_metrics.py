"""Whole-set confusion-matrix metrics, checked against brute-force formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segrobust.metrics import ConfusionMatrix, confusion_matrix, per_image_pixel_accuracy


def _brute_force(pred, target, k, ignore=255):
    p, t = pred.numpy().ravel(), target.numpy().ravel()
    keep = t != ignore
    p, t = p[keep], t[keep]
    ious = []
    for c in range(k):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)), float(np.mean(p == t))


@given(seed=st.integers(0, 10_000), k=st.integers(2, 6))
@settings(max_examples=30, deadline=None)
def test_miou_and_accuracy_equal_brute_force(seed, k):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (3, 5, 6), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    pred = torch.randint(0, k, (3, 5, 6), generator=g)
    cm = ConfusionMatrix(k)
    cm.update(pred, target)
    scores = cm.compute()
    miou, acc = _brute_force(pred, target, k)
    assert scores.miou == pytest.approx(miou)
    assert scores.pixel_accuracy == pytest.approx(acc)
    assert scores.num_pixels == int((target != 255).sum())


def test_whole_set_matrix_is_the_sum_of_batches_not_a_mean_of_scores():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (6, 4, 4), generator=g)
    pred = torch.randint(0, 3, (6, 4, 4), generator=g)
    whole = ConfusionMatrix(3)
    whole.update(pred, target)
    parts = [ConfusionMatrix(3) for _ in range(3)]
    for i, part in enumerate(parts):
        part.update(pred[2 * i : 2 * i + 2], target[2 * i : 2 * i + 2])
    summed = parts[0] + parts[1] + parts[2]
    assert torch.equal(summed.matrix, whole.matrix)
    assert summed.compute().miou == whole.compute().miou


def test_logits_are_argmaxed_and_bad_ids_rejected():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 2] = 1
    assert torch.equal(confusion_matrix(logits, torch.full((1, 2, 2), 2), 3).diagonal(), torch.tensor([0, 0, 4]))
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(logits, torch.full((1, 2, 2), 5), 3)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(logits, torch.zeros(1, 2, 2), 3)


def test_per_image_accuracy_ignores_void_and_empty_images_score_one():
    pred = torch.tensor([[[0, 1]], [[1, 1]]])
    target = torch.tensor([[[0, 0]], [[255, 255]]])
    torch.testing.assert_close(per_image_pixel_accuracy(pred, target), torch.tensor([0.5, 1.0]))


def _reduce_worker(rank, world, port, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (4, 6, 6), generator=g)
    pred = torch.randint(0, 4, (4, 6, 6), generator=g)
    cm = ConfusionMatrix(4)
    cm.update(pred[rank::world], target[rank::world])
    cm.all_reduce()
    results[rank] = cm.matrix.tolist()
    dist.destroy_process_group()


def test_all_reduce_across_two_processes_equals_single_process():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_reduce_worker, args=(2, port, results), nprocs=2, join=True)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (4, 6, 6), generator=g)
    pred = torch.randint(0, 4, (4, 6, 6), generator=g)
    single = ConfusionMatrix(4)
    single.update(pred, target)
    assert results[0] == results[1] == single.matrix.tolist()
