"""The training stages of ProDA as step functions the engine drives.

Each stage owns its networks, optimisers and batch streams and exposes:
``micro_step(accum) -> dict[str, Tensor]`` (forward + backward of one micro-batch, losses detached, no
host sync), ``optimizer_step()``, ``after_step()`` (EMA, discriminator…), ``set_lr(step, steps)``,
``state_dict()/load_state_dict()`` and ``eval_model``. The engine (proda/engine/trainer.py) runs the
loop, evaluation, checkpoints and reporting.

Stages: :class:`SourceStage` (source-only CE), :class:`AdversarialWarmup` (+ output-space LSGAN),
:class:`Stage1` (ST / SCE / PD / SL / regulariser), :class:`DistillStage` (KD rounds).
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from proda import distributed as ddp
from proda.config import Config
from proda.data.augment import full_to_weak, normalize, strong_view, weak_view, weak_to_strong
from proda.data.stream import BatchStream, Split, to_device
from proda.method.discriminator import FCDiscriminator, lsgan_loss
from proda.method.losses import ce_loss, kd_loss, kl_consistency, regulariser, sce_loss, sce_scale
from proda.method.prototypes import (PrototypeBank, hard_label, proto_distances, proto_logits, proto_softmax,
                                     rectify)

IGNORE = 255


def make_optimizer(model: nn.Module, cfg: Config, lr: float, head_lr_mult: float | None = None,
                   kind: str | None = None) -> torch.optim.Optimizer:
    """``kind`` (sgd | adam; None: ``optim.optimizer``) with ``optim``'s momentum and weight decay."""
    o = cfg.optim
    groups = model.param_groups(lr, o.head_lr_mult if head_lr_mult is None else head_lr_mult)
    if (kind or o.optimizer) == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)


def poly_lr(opt: torch.optim.Optimizer, base: float, step: int, steps: int, power: float) -> None:
    factor = (1.0 - step / steps) ** power
    for g in opt.param_groups:
        g["lr"] = base * g.get("lr_mult", 1.0) * factor


def resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class StageBase:
    """Shared plumbing: device, autocast, gradient scaling, source stream, poly LR."""

    name = "stage"
    lr_field = "warmup"  # the config section whose `lr` is this stage's base learning rate

    def __init__(self, cfg: Config, model: nn.Module, source: Split, device: torch.device, seed: int):
        self.cfg, self.device = cfg, device
        if device.type == "cuda" and ddp.is_dist():  # BN statistics over the global batch (before the optimiser)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(device)
        self.net = self._wrap(self.model)
        section = getattr(cfg, self.lr_field)  # warmup / stage1 / distill: the stage's lr (stage1: its head multiplier)
        self.base_lr = section.lr
        self.opt = make_optimizer(self.model, cfg, self.base_lr, getattr(section, "head_lr_mult", None),
                                  getattr(section, "optimizer", None))
        self.frozen_bn = bool(getattr(section, "freeze_bn", False))  # stage 1 and warm-up+: stage1.freeze_bn
        bs = cfg.data.batch_size // ddp.world_size() // cfg.optim.grad_accum
        if bs < 1:
            raise ValueError(f"data.batch_size={cfg.data.batch_size}: too small for {ddp.world_size()} ranks "
                             f"× optim.grad_accum={cfg.optim.grad_accum}")
        self.micro_bs = bs
        self.src = BatchStream(source, bs, seed=seed * 2 + 1)
        # augmentation randomness: one generator per rank, seeded from (seed, rank)
        self.gen = torch.Generator().manual_seed(seed * 7919 + 17 * ddp.rank() + 1)
        amp = cfg.optim.amp
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("optim.amp='fp16': needs a CUDA device (use 'bf16' on CPU)")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not ddp.is_dist():
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def eval_model(self) -> nn.Module:
        return self.model

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"aug": self.gen}

    @property
    def streams(self) -> dict[str, BatchStream]:
        return {"source": self.src}

    def set_lr(self, step: int, steps: int) -> None:
        poly_lr(self.opt, self.base_lr, step, steps, self.cfg.optim.poly_power)

    def backward(self, loss: torch.Tensor, accum: int) -> None:
        self.scaler.scale(loss / accum).backward()

    def optimizer_step(self) -> None:
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    def after_step(self) -> None:
        pass

    def freeze_bn(self) -> None:
        """With ``frozen_bn``, BatchNorm layers in eval mode: they normalise with, and keep, their running statistics
        (the official ``--freeze_bn``, applied before every step as there, since evaluation puts the model back in
        train mode)."""
        if not self.frozen_bn:
            return
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def to_dev(self, img: torch.Tensor, lab: torch.Tensor | None = None):
        """A stream's uint8 batch on the device: (images float (n,3,H,W) in [0, 1], labels int64 or None)."""
        return to_device(img, lab, self.device)

    def source_batch(self):
        """Weak view of a source batch: (images (n,3,h,w) normalised, labels (n,h,w))."""
        _, img, lab = self.src.next()
        img, lab = self.to_dev(img, lab)
        xw, pw = weak_view(img, self.cfg.data.crop, scale=self.cfg.data.crop_scale, generator=self.gen)
        lw = full_to_weak(lab[:, None].float(), pw, self.cfg.data.crop, mode="nearest")[:, 0].long()
        return normalize(xw), lw

    def source_ce(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.net(x)["out"]
        return ce_loss(resize(out, y.shape[-2:]).float(), y)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
                "streams": {k: s.state_dict() for k, s in self.streams.items()}}

    def load_state_dict(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.scaler.load_state_dict(st["scaler"])
        for k, s in self.streams.items():
            s.load_state_dict(st["streams"][k])


class SourceStage(StageBase):
    """Source-only training: CE on labelled source crops (ignore 255)."""

    name = "source"

    def micro_step(self, accum: int) -> dict[str, torch.Tensor]:
        x, y = self.source_batch()
        with self.autocast():
            loss = self.source_ce(x, y)
        self.backward(loss, accum)
        return {"loss_src": loss.detach(), "total": loss.detach()}


class AdversarialWarmup(StageBase):
    """Warm-up: source CE + output-space adversarial alignment (AdaptSegNet, least-squares GAN)."""

    name = "warmup"

    def __init__(self, cfg, model, source, target, device, seed):
        super().__init__(cfg, model, source, device, seed)
        self.tgt = BatchStream(target, self.micro_bs, seed=seed * 2 + 2, with_labels=False)
        self.disc = FCDiscriminator(cfg.data.num_classes, ndf=cfg.warmup.disc_channels).to(device)
        self.disc_net = self._wrap(self.disc)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.warmup.disc_lr, betas=(0.9, 0.99))

    @property
    def streams(self):
        return {"source": self.src, "target": self.tgt}

    def set_lr(self, step, steps):
        super().set_lr(step, steps)
        poly_lr(self.disc_opt, self.cfg.warmup.disc_lr, step, steps, self.cfg.optim.poly_power)

    def micro_step(self, accum):
        x, y = self.source_batch()
        _, t_img, _ = self.tgt.next()
        t_img, _ = self.to_dev(t_img)
        xt, _ = weak_view(t_img, self.cfg.data.crop, scale=self.cfg.data.crop_scale, generator=self.gen)
        self.disc.requires_grad_(False)
        with self.autocast():
            out_s = self.net(x)["out"]
            loss_src = ce_loss(resize(out_s, y.shape[-2:]).float(), y)
            # the discriminator sees softmax maps at input resolution, as in AdaptSegNet
            out_s = resize(out_s, x.shape[-2:])
            out_t = resize(self.net(normalize(xt))["out"], xt.shape[-2:])
            # the generator wants target outputs judged "source"
            loss_adv = lsgan_loss(self.disc_net(F.softmax(out_t.float(), 1)), True)
            loss = loss_src + self.cfg.warmup.adv_weight * loss_adv
        self.backward(loss, accum)
        self.disc.requires_grad_(True)
        with self.autocast():
            d_s = self.disc_net(F.softmax(out_s.detach().float(), 1))
            d_t = self.disc_net(F.softmax(out_t.detach().float(), 1))
            loss_d = 0.5 * (lsgan_loss(d_s, True) + lsgan_loss(d_t, False))
        (loss_d / accum).backward()
        return {"loss_src": loss_src.detach(), "loss_adv": loss_adv.detach(), "loss_d": loss_d.detach(),
                "total": loss.detach()}

    def optimizer_step(self):
        super().optimizer_step()
        self.disc_opt.step()
        self.disc_opt.zero_grad(set_to_none=True)

    def state_dict(self):
        return {**super().state_dict(), "disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load_state_dict(self, st):
        super().load_state_dict(st)
        self.disc.load_state_dict(st["disc"])
        self.disc_opt.load_state_dict(st["disc_opt"])


class _TargetStage(StageBase):
    """A stage trained on target pseudo labels: the target stream and the soft labels of its images."""

    def __init__(self, cfg, model, source, target, soft, device, seed):
        super().__init__(cfg, model, source, device, seed)
        self.tgt = BatchStream(target, self.micro_bs, seed=seed * 2 + 2, with_labels=False)
        self.soft = soft  # (N_target, K, h0, w0) float16 — fixed soft pseudo labels p_{t,0} of target train
        c = cfg.data.crop
        self.res = (c[0] // 4, c[1] // 4)  # loss resolution: 1/4 of the crop, as in ProDA

    @property
    def streams(self):
        return {"source": self.src, "target": self.tgt}

    def target_batch(self):
        idx, t_img, _ = self.tgt.next()
        t_img, _ = self.to_dev(t_img)
        soft = self.soft[idx].to(self.device).float()  # (n, K, h0, w0)
        xw, pw = weak_view(t_img, self.cfg.data.crop, scale=self.cfg.data.crop_scale, generator=self.gen)
        return t_img, xw, pw, soft


class Stage1(_TargetStage):
    """Stage 1 of ProDA: self-training with prototypical denoising and structure learning (paper Sec. 3.2–3.3).

    l = l_ce^s + l_sce^t(ŷ) + γ1·l_kl + γ2·l_reg (eq. 12), and the switches of ``cfg.stage1``: ``source_ce``
    keeps l_ce^s; ``sce`` uses l_sce (eq. 8) instead of l_ce^t; ``pd`` takes ŷ = ξ(ω ⊙ p_{t,0}) (eq. 4) instead
    of ξ(p_{t,0}); ``sl`` adds γ1·l_kl (eq. 10); ``reg`` adds γ2·l_reg (eq. 11) when γ2 > 0. ŷ keeps the pixels
    whose maximum reaches ``stage1.threshold`` (every row's ŷ; ``pseudo.threshold`` is distillation's). A
    momentum (EMA) encoder provides f̃ for ω, for the SL teacher and for the moving prototypes.
    """

    name = "stage1"
    lr_field = "stage1"

    def __init__(self, cfg, model, source, target, soft, protos, counts, device, seed):
        super().__init__(cfg, model, source, target, soft, device, seed)
        s = cfg.stage1
        self.use_ema = s.pd or s.sl
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if self.use_ema else None
        self.bank = PrototypeBank(cfg.data.num_classes, self.model.feat_channels, momentum=s.proto_momentum,
                                  official_update=s.official_proto_update).to(device)
        self.bank.reset(protos.to(device), counts.to(device))  # classes never seen take their first centroid

    def micro_step(self, accum):
        s, res = self.cfg.stage1, self.res
        self.freeze_bn()
        losses = {}
        total = torch.zeros((), device=self.device)
        # the target side's weight: 1, or 1 / (α − β·log 1e-4) with sce_ce_scale (S8); ×1.0 is exact
        w = 1.0 / sce_scale(s.alpha, s.beta) if s.sce and s.sce_ce_scale else 1.0
        t_full, xw, pw, soft = self.target_batch()
        soft_w = full_to_weak(soft, pw, res)  # (n, K, h, w) p_{t,0} in the weak view
        if self.use_ema:
            with torch.no_grad():
                ema_full = self.ema(normalize(t_full))  # f̃ on the full image
                feat_w = full_to_weak(ema_full["feat"].float(), pw, res)  # (n, C, h, w)
                dist_w = proto_distances(feat_w, self.bank.protos)  # ‖f̃ − η‖ (n, K, h, w): ω and SL's teacher
        if s.pd:
            omega = proto_softmax(dist_w, s.tau)  # ω (n, K, h, w), eq. 5
            y_hat, _ = rectify(soft_w, omega, threshold=s.threshold, ignore_index=IGNORE)  # ŷ = ξ(ω ⊙ p)
        else:
            y_hat = hard_label(soft_w, s.threshold, IGNORE)  # ξ(p): the same threshold as ŷ, one change per row
        with self.autocast():
            if s.source_ce:
                x, y = self.source_batch()
                loss_src = self.source_ce(x, y)
                total = total + loss_src
                losses["loss_src"] = loss_src.detach()
            out_w = resize(self.net(normalize(xw))["out"], res).float()  # (n, K, h, w)
            loss_st = sce_loss(out_w, y_hat, s.alpha, s.beta) if s.sce else ce_loss(out_w, y_hat)
            total = total + w * loss_st
            losses["loss_st"] = loss_st.detach()
            if s.reg and s.gamma2 > 0:
                loss_reg = regulariser(out_w, s.regulariser)
                total = total + s.gamma2 * w * loss_reg
                losses["loss_reg"] = loss_reg.detach()
            if s.sl:
                xs, ps = strong_view(xw, generator=self.gen)
                with torch.no_grad():  # z = softmax_k(−d/τ) (eq. 9): the teacher's, weak frame
                    z_t, valid = weak_to_strong(proto_softmax(dist_w, s.tau), ps)  # replayed into the strong view
                feat_s = resize(self.net(normalize(xs))["feat"], res).float()
                student = proto_logits(proto_distances(feat_s, self.bank.protos), s.tau)  # its logits
                loss_sl = kl_consistency(z_t, student, valid, official_channel_norm=s.official_kl_norm)
                total = total + s.gamma1 * w * loss_sl
                losses["loss_sl"] = loss_sl.detach()
        self.backward(total, accum)
        if self.use_ema:  # moving prototypes: batch centroids of f̃ under the EMA model's own argmax
            with torch.no_grad():
                self.bank.update(ema_full["feat"].float(), ema_full["out"].max(1)[1])
        losses["total"] = total.detach()
        return losses

    def after_step(self):
        if self.ema is None:
            return
        m = self.cfg.stage1.ema_momentum
        with torch.no_grad():
            ema_p = list(self.ema.parameters())
            torch._foreach_mul_(ema_p, m)
            torch._foreach_add_(ema_p, [p.detach() for p in self.model.parameters()], alpha=1 - m)
            for b_e, b in zip(self.ema.buffers(), self.model.buffers()):
                b_e.copy_(b)  # BN statistics follow the student (as the official code)

    def state_dict(self):
        st = {**super().state_dict(), "bank": self.bank.state_dict()}
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        return st

    def load_state_dict(self, st):
        super().load_state_dict(st)
        self.bank.load_state_dict(st["bank"])
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"])


class DistillStage(_TargetStage):
    """Stages 2–3: a fresh student learns l_ce^s + l_ce^t(ξ(p_t)) + β·KL(p_t ‖ p_t†) from a frozen teacher.

    ξ(p_t) keeps the pixels whose maximum reaches ``pseudo.threshold`` (the distillation targets' rule).
    """

    name = "distill"
    lr_field = "distill"

    def __init__(self, cfg, student, teacher, source, target, soft, device, seed):
        super().__init__(cfg, student, source, target, soft, device, seed)
        self.teacher = teacher.to(device).eval().requires_grad_(False)

    def micro_step(self, accum):
        res = self.res
        _, xw, pw, soft = self.target_batch()
        y_t = hard_label(full_to_weak(soft, pw, res), self.cfg.pseudo.threshold, IGNORE)  # ξ(p_t), (n, h, w)
        if self.cfg.distill.strong_view:  # the official KD: both nets on the strong view, ξ(p_t) replayed into it
            xw, ps = strong_view(xw, generator=self.gen)
            y_t, _ = weak_to_strong(y_t.float(), ps, mode="nearest", fill=IGNORE)
            y_t = y_t.long()  # the KL stays on every pixel, as in the official code (its mask is always true)
        x, y = self.source_batch()
        with self.autocast():
            loss_src = self.source_ce(x, y)
            xw_n = normalize(xw)
            out = resize(self.net(xw_n)["out"], res).float()
            with torch.no_grad():
                t_out = resize(self.teacher(xw_n)["out"], res).float()
            loss_pl = ce_loss(out, y_t)
            loss_kd = kd_loss(out, t_out)
            total = loss_src + loss_pl + self.cfg.distill.beta * loss_kd
        self.backward(total, accum)
        return {"loss_src": loss_src.detach(), "loss_pl": loss_pl.detach(), "loss_kd": loss_kd.detach(),
                "total": total.detach()}
