"""ConfusionMatrix against a plain numpy computation: per-class IoU, NaN for absent classes, mIoU."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from proda.data.classes import SYNTHIA_13, SYNTHIA_16
from proda.evaluation import ConfusionMatrix, nanmean, protocol_iou


def numpy_iou(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """The textbook way: per class, |pred = c ∧ gt = c| / |pred = c ∨ gt = c| over non-ignored pixels."""
    keep = target != 255
    p, t = pred[keep], target[keep]
    iou = np.full(k, np.nan)
    for c in range(k):
        union = np.sum((p == c) | (t == c))
        if union:
            iou[c] = np.sum((p == c) & (t == c)) / union
    return iou


def random_maps(k: int, shape, absent=(), seed=0):
    """Random (pred, target) over ``k`` classes, ~20 % ignore pixels in target, ``absent`` classes in neither."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c not in absent]
    pred = rng.choice(present, size=shape)
    target = np.where(rng.random(shape) < 0.2, 255, rng.choice(present, size=shape))
    # make a third of the pixels correct so IoUs are not all ~1/k
    target = np.where((rng.random(shape) < 0.33) & (target != 255), pred, target)
    return pred, target


def test_iou_matches_numpy_with_ignore_pixels():
    pred, target = random_maps(19, (2, 17, 23))
    cm = ConfusionMatrix(19)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_allclose(cm.iou().numpy(), numpy_iou(pred, target, 19), rtol=1e-12)
    assert cm.mat.sum() == np.sum(target != 255)  # ignore pixels counted nowhere


def test_absent_class_is_nan_and_left_out_of_miou():
    pred, target = random_maps(19, (40, 40), absent=(3, 16))
    cm = ConfusionMatrix(19)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    iou = cm.iou()
    assert math.isnan(iou[3]) and math.isnan(iou[16]) and int(torch.isnan(iou).sum()) == 2
    ref = numpy_iou(pred, target, 19)
    assert cm.miou() == pytest.approx(np.nanmean(ref), rel=1e-12)
    assert cm.miou() == pytest.approx(ref[~np.isnan(ref)].sum() / 17, rel=1e-12)


def test_class_predicted_but_not_in_ground_truth_scores_zero():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 1]))
    assert cm.iou().tolist() == [1.0, 2 / 3, 0.0]
    assert cm.miou() == pytest.approx((1 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("protocol", [SYNTHIA_16, SYNTHIA_13])
def test_miou_over_protocol_class_ids(protocol):
    pred, target = random_maps(19, (30, 30), seed=1)
    target = np.where(np.isin(target, protocol), target, 255)  # ground truth outside the protocol: 255
    cm = ConfusionMatrix(19)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    ref = numpy_iou(pred, target, 19)
    np.testing.assert_allclose(protocol_iou(cm.iou(), protocol).numpy(), ref[list(protocol)], rtol=1e-12)
    assert cm.miou(protocol) == pytest.approx(np.nanmean(ref[list(protocol)]), rel=1e-12)
    # the 19-class mIoU also averages the non-protocol classes (predicted, never true: IoU 0)
    assert cm.miou(protocol) != pytest.approx(cm.miou())


def test_update_accepts_any_shape_and_accumulates():
    pred, target = random_maps(5, (3, 4, 6, 7), seed=2)
    ref = ConfusionMatrix(5)
    ref.update(torch.from_numpy(pred), torch.from_numpy(target))
    for shape in [(-1,), (12, 42), (3, 4, 6, 7), (1, 504, 1)]:
        cm = ConfusionMatrix(5)
        cm.update(torch.from_numpy(pred).reshape(shape), torch.from_numpy(target).reshape(shape))
        assert torch.equal(cm.mat, ref.mat)
    split = ConfusionMatrix(5)  # batch by batch = all at once
    for p, t in zip(pred, target):
        split.update(torch.from_numpy(p), torch.from_numpy(t).to(torch.uint8))
    assert torch.equal(split.mat, ref.mat)
    split.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))  # empty batch
    split.update(torch.tensor(2), torch.tensor(2))  # a 0-d "image"
    assert split.mat.sum() == ref.mat.sum() + 1
    split.reset()
    assert split.mat.sum() == 0 and math.isnan(split.miou()) and math.isnan(split.pixel_accuracy())


def test_update_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"pred shape \(2, 3\) != target shape \(3, 2\)"):
        ConfusionMatrix(4).update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_pixel_accuracy():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 1, 1, 2, 255]))
    assert cm.pixel_accuracy() == pytest.approx(3 / 4)


def test_all_reduce_is_a_no_op_in_one_process(tmp_path):
    pred, target = random_maps(4, (10, 10), seed=3)
    cm = ConfusionMatrix(4)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    before = cm.mat.clone()
    assert not dist.is_initialized()
    cm.all_reduce()  # no process group at all
    assert torch.equal(cm.mat, before)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm.all_reduce()  # a group of one
    finally:
        dist.destroy_process_group()
    assert torch.equal(cm.mat, before)


def test_nanmean_of_all_nan_is_nan():
    assert math.isnan(nanmean(torch.full((3,), math.nan)))
    assert nanmean(torch.tensor([1.0, math.nan, 3.0])) == 2.0
