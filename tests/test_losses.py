"""ProDA's losses on small hand-checked tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from proda.method.discriminator import FCDiscriminator, lsgan_loss
from proda.method.losses import ce_loss, kd_loss, kl_consistency, rce_loss, regulariser, sce_loss, sce_scale

LOG_1E4 = -math.log(1e-4)  # 9.2103…


def batch(seed=0, n=2, k=4, h=3, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, requires_grad=True)
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[0, 0, :2] = 255
    return logits, target


def test_ce_equals_torch_cross_entropy_with_ignore():
    logits, target = batch()
    assert torch.allclose(ce_loss(logits, target), F.cross_entropy(logits, target, ignore_index=255))


def test_rce_is_log_1e4_times_one_minus_p_label_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)  # pixel 0: (2, 0); pixel 1: (0, 0)
    target = torch.tensor([[[0, 1]]])
    p0 = math.exp(2) / (math.exp(2) + 1)  # p_y at pixel 0
    expect = LOG_1E4 * ((1 - p0) + (1 - 0.5)) / 2
    assert rce_loss(logits, target).item() == pytest.approx(expect, rel=1e-6)
    assert rce_loss(logits, target).item() == pytest.approx(9.2103 * ((1 - p0) + 0.5) / 2, rel=1e-4)
    target[0, 0, 1] = 255  # ignored pixel drops out of the mean
    assert rce_loss(logits, target).item() == pytest.approx(LOG_1E4 * (1 - p0), rel=1e-6)


def test_sce_is_alpha_ce_plus_beta_rce():
    logits, target = batch(1)
    expect = 0.3 * ce_loss(logits, target) + 0.7 * rce_loss(logits, target)
    assert torch.allclose(sce_loss(logits, target, alpha=0.3, beta=0.7), expect)
    assert torch.allclose(sce_loss(logits, target), 0.1 * ce_loss(logits, target) + rce_loss(logits, target))


def test_sce_gradient_is_ce_gradient_times_alpha_plus_beta_log_1e4_p_label():
    """∂l_sce/∂z_y = (α − β·log 1e-4·p_y)·∂l_ce/∂z_y: ≈ sce_scale() = 9.31× CE's on a confident pixel, less on a
    doubtful one (what S8's sce_ce_scale divides the target side by)."""
    def grad(logits, loss):
        z = torch.tensor(logits).view(1, 3, 1, 1).requires_grad_(True)
        loss(z, torch.zeros(1, 1, 1, dtype=torch.long)).backward()
        return z.grad[0, 0, 0, 0].item()
    assert sce_scale() == pytest.approx(0.1 + LOG_1E4) and sce_scale(0.3, 2.0) == pytest.approx(0.3 + 2 * LOG_1E4)
    for z in ([8.0, 0.0, 0.0], [0.0, 0.0, 0.0]):  # p_y ≈ 0.9993 and 1/3
        p_y = F.softmax(torch.tensor(z), 0)[0].item()
        assert grad(z, sce_loss) == pytest.approx((0.1 + LOG_1E4 * p_y) * grad(z, ce_loss), rel=1e-4)
    assert grad([8.0, 0.0, 0.0], sce_loss) / sce_scale() == pytest.approx(grad([8.0, 0.0, 0.0], ce_loss), rel=1e-3)


def test_regulariser_kinds_by_hand_on_one_pixel_two_classes():
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # p = (0.75, 0.25)
    mrkld = -(math.log(0.75) + math.log(0.25)) / 2
    mrent = 0.75 * math.log(0.75) + 0.25 * math.log(0.25)
    assert regulariser(logits, "mrkld").item() == pytest.approx(mrkld, rel=1e-6)
    assert regulariser(logits, "mrent").item() == pytest.approx(mrent, rel=1e-6)
    with pytest.raises(ValueError, match="mrkld"):
        regulariser(logits, "entropy")


def test_kl_consistency_by_hand_and_zero_for_identical_distributions():
    t = torch.tensor([0.5, 0.5, 0.0]).view(1, 3, 1, 1)
    s_logits = torch.log(torch.tensor([0.25, 0.5, 0.25])).view(1, 3, 1, 1)
    expect = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.5)  # 0 log 0 = 0
    assert kl_consistency(t, s_logits).item() == pytest.approx(expect, rel=1e-6)
    assert kl_consistency(t, s_logits, official_channel_norm=True).item() == pytest.approx(expect / 3, rel=1e-6)
    logits, _ = batch(2)
    assert kl_consistency(F.softmax(logits, 1), logits).abs().item() < 1e-6
    # an invalid pixel does not count, whatever its teacher holds
    t2 = torch.cat([t, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)], 3)
    s2 = torch.cat([s_logits, torch.tensor([-9.0, 0.0, 0.0]).view(1, 3, 1, 1)], 3)
    valid = torch.tensor([[[[True, False]]]])
    assert kl_consistency(t2, s2, valid).item() == pytest.approx(expect, rel=1e-6)


def test_kd_loss_is_kl_teacher_to_student_and_official_variant():
    s = torch.log(torch.tensor([0.25, 0.75])).view(1, 2, 1, 1)
    t = torch.log(torch.tensor([0.5, 0.5])).view(1, 2, 1, 1)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kd_loss(s, t).item() == pytest.approx(kl, rel=1e-6)
    official = (0.5 * (math.log(0.5) - 0.25) + 0.5 * (math.log(0.5) - 0.75)) / 2  # kl_div(probs, probs)
    assert kd_loss(s, t, official=True).item() == pytest.approx(official, rel=1e-6)
    logits, _ = batch(3)
    ref = F.kl_div(F.log_softmax(logits, 1), F.softmax(logits.detach() + 1.0, 1), reduction="none").sum(1).mean()
    assert torch.allclose(kd_loss(logits, logits.detach() + 1.0), ref, atol=1e-6)  # shift: same softmax → 0
    assert kd_loss(logits, logits.detach() + 1.0).abs().item() < 1e-6


def test_all_ignored_gives_zero_with_grad():
    logits, target = batch(4)
    target.fill_(255)
    valid = torch.zeros(2, 1, 3, 5, dtype=torch.bool)
    for loss in (ce_loss(logits, target), rce_loss(logits, target), sce_loss(logits, target),
                 kl_consistency(F.softmax(logits.detach(), 1), logits, valid), kd_loss(logits, logits + 1, valid)):
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_gradients_flow_to_the_student_only():
    logits, target = batch(5)
    teacher = torch.randn(2, 4, 3, 5, requires_grad=True)
    total = (sce_loss(logits, target) + regulariser(logits) + kl_consistency(F.softmax(teacher, 1), logits)
             + kd_loss(logits, teacher))
    total.backward()
    assert logits.grad.abs().sum() > 0 and teacher.grad is None


def test_discriminator_shapes_and_lsgan_targets():
    probs = F.softmax(torch.randn(2, 19, 64, 96), 1)
    assert FCDiscriminator(19, ndf=8)(probs).shape == (2, 1, 2, 3)
    assert FCDiscriminator(19, ndf=8, arch="official")(probs).shape == (2, 1, 4, 6)
    pred = torch.tensor([0.0, 1.0, 0.5])
    assert lsgan_loss(pred, True).item() == pytest.approx((0 + 1 + 0.25) / 3)  # source label 0
    assert lsgan_loss(pred, False).item() == pytest.approx((1 + 0 + 0.25) / 3)  # target label 1
