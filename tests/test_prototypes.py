"""Prototypes η, weights ω, hard labels ξ, rectified labels ŷ, the moving-prototype bank: hand-checked tensors."""

import io

import pytest
import torch
import torch.nn.functional as F

from proda.method.prototypes import (
    CentroidAccumulator,
    PrototypeBank,
    class_sums,
    hard_label,
    proto_distances,
    proto_logits,
    proto_softmax,
    proto_weights,
    rectify,
)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_distances_equal_naive_broadcasting():
    feat, protos = rand(2, 8, 5, 7, seed=1), rand(4, 8, seed=2)
    naive = (feat[:, None] - protos[None, :, :, None, None]).norm(dim=2)  # (N, K, H, W)
    assert torch.allclose(proto_distances(feat, protos), naive, atol=1e-5)


def test_distances_by_hand_two_classes_in_2d():
    feat = torch.tensor([[3.0, 0.0], [4.0, 0.0]]).view(1, 2, 1, 2)  # pixel 0: (3, 4); pixel 1: (0, 0)
    protos = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    expect = torch.tensor([[5.0, 0.0], [4.0, 3.0]]).view(1, 2, 1, 2)  # ‖(3,4)‖, ‖(0,4)‖, ‖(3,0)‖
    assert torch.allclose(proto_distances(feat, protos), expect, atol=1e-5)


def test_distance_gradient_is_finite_on_a_prototype():
    protos = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    feat = protos[0].view(1, 2, 1, 1).clone().requires_grad_(True)
    proto_distances(feat, protos).sum().backward()
    assert torch.isfinite(feat.grad).all()


def test_weights_are_a_softmax_of_negative_distances_and_sum_to_one():
    feat, protos = rand(2, 6, 4, 4, seed=3), rand(5, 6, seed=4)
    w = proto_weights(feat, protos, tau=2.0)
    assert torch.allclose(w.sum(1), torch.ones(2, 4, 4), atol=1e-6)
    assert torch.allclose(w, torch.softmax(-proto_distances(feat, protos) / 2.0, 1))
    official = proto_weights(feat, protos, tau=2.0, official_temperature=True)  # official multiplies by τ
    assert torch.allclose(official, torch.softmax(-proto_distances(feat, protos) * 2.0, 1))
    assert torch.allclose(proto_weights(feat, protos, 1.0), proto_weights(feat, protos, 1.0, True))


def test_prototype_logits_are_minus_distance_over_tau_and_their_softmax_is_eq_9():
    d = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    assert torch.equal(proto_logits(d, 0.5), torch.tensor([-2.0, -4.0, -8.0]).view(1, 3, 1, 1))
    assert torch.equal(proto_logits(d, 0.5, official_temperature=True), -d * 0.5)  # the official code multiplies
    z = torch.exp(torch.tensor([-2.0, -4.0, -8.0]))
    assert torch.allclose(proto_softmax(d, 0.5).flatten(), z / z.sum())
    # SL's student reads its log-softmax: the same z as the teacher's for the same distances
    assert torch.allclose(F.log_softmax(proto_logits(d, 0.5), 1).exp(), proto_softmax(d, 0.5))


def test_rectified_label_follows_nearest_prototype():
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0]])  # A = 0, B = 1
    feat = torch.tensor([10.0, 0.0]).view(1, 2, 1, 1)  # sits on prototype B
    soft = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1)  # the soft label says A
    hard, probs = rectify(soft, proto_weights(feat, protos, tau=0.5))
    assert hard.item() == 1 and probs[0, 1].item() > 0.99
    hard, probs = rectify(soft, proto_weights(feat, protos, tau=1e4))  # ω ≈ uniform: the soft label wins
    assert hard.item() == 0 and probs[0, 0].item() == pytest.approx(0.8, abs=1e-3)
    assert torch.allclose(probs.sum(1), torch.ones(1, 1, 1))


def test_hard_label_is_the_argmax_and_a_threshold_ignores_pixels_below_it():
    probs = torch.tensor([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]]).T.reshape(1, 2, 1, 3)  # three pixels
    assert hard_label(probs).tolist() == [[[0, 1, 0]]]  # ξ(p); a tie goes to the first class
    assert hard_label(probs, threshold=0.6, ignore_index=255).tolist() == [[[0, 1, 255]]]  # 0.6 ≥ 0.6 is kept
    assert hard_label(probs, threshold=0.95, ignore_index=7).tolist() == [[[7, 7, 7]]]


def test_rectify_threshold_and_empty_pixels_are_ignored():
    soft = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.0, 0.0]]).T.reshape(1, 2, 1, 3)  # three pixels
    ones = torch.ones_like(soft)
    hard, _ = rectify(soft, ones, threshold=0.7, ignore_index=255)
    assert hard.tolist() == [[[255, 0, 255]]]  # 0.6 < 0.7; 0.9 kept; all-zero mass ignored
    hard, _ = rectify(soft, ones, threshold=0.0)
    assert hard.tolist() == [[[0, 0, 255]]]


def test_class_sums_equal_a_naive_loop():
    feat = rand(3, 4, 5, 6, seed=5)
    labels = torch.randint(0, 5, (3, 5, 6), generator=torch.Generator().manual_seed(6))
    labels[0, :2] = 255
    sums, counts = class_sums(feat, labels, num_classes=6)
    for k in range(6):
        mask = labels == k  # (N, H, W)
        assert counts[k].item() == mask.sum().item()
        assert torch.allclose(sums[k], feat.permute(0, 2, 3, 1)[mask].sum(0), atol=1e-5)
    assert counts[5].item() == 0 and sums[5].abs().sum().item() == 0
    with pytest.raises(ValueError, match="resolution"):
        class_sums(feat, labels[:, :4], 6)


def test_centroid_accumulator_over_batches():
    acc = CentroidAccumulator(3, 2)
    feat1 = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # pixels (1, 0), (3, 0)
    feat2 = torch.tensor([[5.0, 7.0], [2.0, 4.0]]).view(1, 2, 1, 2)  # pixels (5, 2), (7, 4)
    acc.add(feat1, torch.tensor([[[0, 0]]]))
    acc.add(feat2, torch.tensor([[[0, 1]]]))
    protos, counts = acc.compute()
    assert torch.allclose(protos, torch.tensor([[3.0, 2 / 3], [7.0, 4.0], [0.0, 0.0]]))
    assert counts.tolist() == [3.0, 1.0, 0.0]
    official = CentroidAccumulator(3, 2, official=True, min_pixels=2)  # mean of per-image centroids
    official.add(feat1, torch.tensor([[[0, 0]]]))
    official.add(feat2, torch.tensor([[[0, 0]]]))
    protos, counts = official.compute()
    assert torch.allclose(protos[0], torch.tensor([(2.0 + 6.0) / 2, (0.0 + 3.0) / 2]))
    assert counts.tolist() == [2.0, 0.0, 0.0]


def one_pixel_per_class_batch():
    """Two images (1×2 pixels), features in 1-D: image 0 = class 0 at 2 and 4; image 1 = class 0 at 6, class 1 at 8."""
    feat = torch.tensor([[2.0, 4.0], [6.0, 8.0]]).view(2, 1, 1, 2)
    labels = torch.tensor([[[0, 0]], [[0, 1]]])
    return feat, labels


def test_bank_update_by_hand_with_lambda_half():
    bank = PrototypeBank(3, 1, momentum=0.5)
    bank.reset(torch.tensor([[10.0], [20.0], [30.0]]), counts=torch.tensor([5.0, 0.0, 5.0]))
    feat, labels = one_pixel_per_class_batch()
    bank.update(feat, labels)
    # class 0: η′ = (2 + 4 + 6)/3 = 4 → 0.5·10 + 0.5·4 = 7; class 1 not initialised: takes η′ = 8;
    # class 2 absent: unchanged
    assert bank.protos[:, 0].tolist() == [7.0, 8.0, 30.0]
    assert bank.initialised.tolist() == [True, True, True]
    assert bank.counts.tolist() == [8.0, 1.0, 5.0]


def test_bank_official_update_decays_by_lambda_to_the_n_per_image():
    feat, labels = one_pixel_per_class_batch()
    bank = PrototypeBank(3, 1, momentum=0.5, official_update=True, min_pixels=1)
    bank.reset(torch.tensor([[10.0], [20.0], [30.0]]))
    bank.update(feat, labels)
    # class 0 is in both images: image 0 centroid 3, image 1 centroid 6, in order:
    # 10 → 0.5·10 + 0.5·3 = 6.5 → 0.5·6.5 + 0.5·6 = 6.25, i.e. λ²·10 + (1−λ)(λ·3 + 6)
    # class 1 only in image 1: 0.5·20 + 0.5·8 = 14; class 2 absent: 30
    assert bank.protos[:, 0].tolist() == [6.25, 14.0, 30.0]
    skip = PrototypeBank(3, 1, momentum=0.5, official_update=True, min_pixels=2)  # < 2 pixels: skipped
    skip.reset(torch.tensor([[10.0], [20.0], [30.0]]))
    skip.update(feat, labels)
    assert skip.protos[:, 0].tolist() == [6.5, 20.0, 30.0]


def test_bank_official_update_matches_a_sequential_loop():
    g = torch.Generator().manual_seed(7)
    feat, labels = torch.randn(5, 3, 4, 4, generator=g), torch.randint(0, 4, (5, 4, 4), generator=g)
    labels[1] = 0  # class 0 everywhere in image 1, absent classes elsewhere
    bank = PrototypeBank(4, 3, momentum=0.9, official_update=True, min_pixels=3)
    start = torch.randn(4, 3, generator=g)
    bank.reset(start)
    bank.update(feat, labels)
    expect = start.clone()
    for n in range(5):
        for k in range(4):
            mask = labels[n] == k
            if mask.sum() >= 3:
                expect[k] = 0.9 * expect[k] + 0.1 * feat[n].permute(1, 2, 0)[mask].mean(0)
    assert torch.allclose(bank.protos, expect, atol=1e-5)


def test_bank_state_dict_round_trip():
    bank = PrototypeBank(3, 2, momentum=0.9)
    feat = rand(2, 2, 3, 3, seed=8)
    bank.update(feat, torch.randint(0, 2, (2, 3, 3), generator=torch.Generator().manual_seed(9)))
    buf = io.BytesIO()
    torch.save(bank.state_dict(), buf)
    buf.seek(0)
    other = PrototypeBank(3, 2, momentum=0.9)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert set(bank.state_dict()) == {"protos", "counts", "initialised"}
    for key, value in bank.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)
    assert other.initialised.tolist() == [True, True, False]


def test_distances_stay_float32_under_autocast():
    feat, protos = rand(2, 64, 4, 4, seed=10) * 3 + 5, rand(7, 64, seed=11) + 5  # large ‖f‖²: cancellation
    naive = (feat[:, None] - protos[None, :, :, None, None]).norm(dim=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = proto_distances(feat, protos)
    assert d.dtype == torch.float32 and torch.allclose(d, naive, atol=1e-3)
