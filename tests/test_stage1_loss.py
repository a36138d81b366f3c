"""Stage 1's total loss, eq. 12: l = l_ce^s + l_sce^t(ŷ) + γ1·l_kl + γ2·l_reg, and what each switch means.

One micro step of a tiny Stage1 per switch combination: the returned terms are exactly the switched-on
ones, and ``total`` is their weighted sum.
"""

import math

import pytest
import torch

from conftest import tiny_config
from proda.data.stream import open_split
from proda.engine.nodes import new_model
from proda.method import stages

K = 19


def _step(cache, other=None, **switches):
    """One stage-1 micro step on the tiny smoke slice (fixed weights, soft labels and prototypes); ŷ keeps
    every pixel unless ``threshold`` is given (as the smoke preset's stage1.threshold 0)."""
    switches.setdefault("threshold", 0.0)
    cfg = tiny_config(cache, "pd+sl", **{f"stage1.{k}": v for k, v in switches.items()}, **(other or {}))
    torch.manual_seed(0)
    model = new_model(cfg)
    tgt = open_split(cfg, "target", "train")
    g = torch.Generator().manual_seed(5)
    soft = torch.rand(tgt.size, K, 16, 32, generator=g).softmax(1).half()  # p_{t,0}: max ≈ 0.1 everywhere
    protos = torch.randn(K, cfg.model.feat_channels, generator=g)
    st = stages.Stage1(cfg, model, open_split(cfg, "source", "train"), tgt, soft, protos, torch.ones(K),
                       torch.device("cpu"), 0)
    return cfg.stage1, st.micro_step(1)


# (sce, pd, sl, reg, source_ce, γ2) → the loss terms the step returns
SWITCHES = [
    ((False, False, False, False, True, 0.1), {"loss_src", "loss_st"}),  # ST: l_ce^s + l_ce^t(ξ(p))
    ((True, False, False, False, True, 0.1), {"loss_src", "loss_st"}),  # +SCE: l_ce^t → l_sce^t
    ((True, True, False, False, True, 0.1), {"loss_src", "loss_st"}),  # PD: ŷ = ξ(ω ⊙ p), no new term
    ((True, False, True, False, True, 0.1), {"loss_src", "loss_st", "loss_sl"}),  # SL: + γ1·l_kl
    ((True, True, True, True, True, 0.1), {"loss_src", "loss_st", "loss_sl", "loss_reg"}),  # eq. 12 in full
    ((True, True, True, True, True, 0.0), {"loss_src", "loss_st", "loss_sl"}),  # γ2 = 0: no l_reg
    ((True, True, True, True, False, 0.1), {"loss_st", "loss_sl", "loss_reg"}),  # source_ce off: no l_ce^s
]


@pytest.mark.parametrize("ce_scale", [False, True], ids=["paper", "sce_ce_scale"])
@pytest.mark.parametrize("switches,terms", SWITCHES)
def test_total_is_eq12_over_the_switched_on_terms(synthetic_cache, switches, terms, ce_scale):
    sce, pd, sl, reg, source_ce, gamma2 = switches
    s, losses = _step(synthetic_cache, sce=sce, pd=pd, sl=sl, reg=reg, source_ce=source_ce, gamma2=gamma2,
                      sce_ce_scale=ce_scale)
    assert set(losses) == terms | {"total"}
    # the same sum in the same order: l_ce^s + w·(l_sce^t(ŷ) + γ2·l_reg + γ1·l_kl), exactly; w = 1 / (α − β·log 1e-4)
    # with sce_ce_scale and SCE on (S8), else 1
    w = 1.0 / (s.alpha - s.beta * math.log(1e-4)) if ce_scale and sce else 1.0
    expected = torch.zeros(())
    for name, weight in (("loss_src", 1.0), ("loss_st", w), ("loss_reg", s.gamma2 * w), ("loss_sl", s.gamma1 * w)):
        if name in losses:
            expected = expected + (losses[name] if name == "loss_src" else weight * losses[name])
    assert torch.equal(losses["total"], expected)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())


def test_sce_with_alpha_1_beta_0_is_the_plain_ce_of_the_st_row(synthetic_cache):
    """l_sce = α·l_ce + β·l_rce (eq. 8): at α = 1, β = 0 the +SCE row trains on exactly the ST row's l_ce^t."""
    _, ce = _step(synthetic_cache, sce=False, pd=False, sl=False, reg=False)
    _, sce = _step(synthetic_cache, sce=True, alpha=1.0, beta=0.0, pd=False, sl=False, reg=False)
    assert torch.equal(ce["loss_st"], sce["loss_st"]) and torch.equal(ce["total"], sce["total"])


def test_stage1_threshold_sets_y_hat_and_pseudo_threshold_does_not_touch_stage1(synthetic_cache):
    """stage1.threshold applies to ŷ of every stage-1 row; pseudo.threshold is the distillation targets'."""
    off = dict(sce=False, pd=False, sl=False, reg=False)
    _, base = _step(synthetic_cache, **off)
    _, all_ignored = _step(synthetic_cache, threshold=0.9, **off)  # no pixel of p_{t,0} reaches 0.9
    assert base["loss_st"] > 0 and all_ignored["loss_st"] == 0  # no valid pixel: a zero loss
    assert torch.equal(base["loss_src"], all_ignored["loss_src"])  # the source term is untouched
    _, distill_threshold = _step(synthetic_cache, {"pseudo.threshold": 0.9}, **off)
    assert all(torch.equal(base[k], distill_threshold[k]) for k in base)


def _bn_stats(model):
    return [b.clone() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_bn_keeps_the_running_statistics_of_stage1_and_of_its_control(synthetic_cache, freeze):
    """``stage1.freeze_bn`` (the official --freeze_bn): BatchNorm normalises with, and keeps, the warm-up's running
    statistics in stage 1 and in warm-up+; off, a step moves them towards its batches'."""
    cfg = tiny_config(synthetic_cache, "pd+sl", **{"stage1.freeze_bn": freeze, "stage1.threshold": 0.0})
    torch.manual_seed(0)
    model = new_model(cfg)
    before = _bn_stats(model)
    tgt = open_split(cfg, "target", "train")
    soft = torch.full((tgt.size, K, 16, 32), 1.0 / K).half()
    st = stages.Stage1(cfg, model, open_split(cfg, "source", "train"), tgt, soft,
                       torch.randn(K, cfg.model.feat_channels), torch.ones(K), torch.device("cpu"), 0)
    st.micro_step(1)
    same = [torch.equal(a, b) for a, b in zip(before, _bn_stats(model))]
    assert before and all(same) is freeze and any(same) is freeze
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.Dropout2d))  # dropout stays on

    from proda.method.control import ContinuedAdversarial
    from proda.method.discriminator import FCDiscriminator

    ctl = new_model(cfg)
    before = _bn_stats(ctl)
    disc = FCDiscriminator(K, ndf=cfg.warmup.disc_channels).state_dict()
    ContinuedAdversarial(cfg, ctl, open_split(cfg, "source", "train"), tgt, torch.device("cpu"), 0, disc).micro_step(1)
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(ctl))) is freeze
