"""ProDA's losses, each once, under the paper's names (arXiv 2101.10979, Sec. 3).

All take logits (N, K, H, W) and targets at the same resolution and average over valid pixels
(label ≠ ``ignore_index``, or ``valid`` True). With no valid pixel they return a zero that still has a
``grad_fn`` (the divisor is clamped, never tested on the host), so a step never synchronises.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _masked_mean(per_pixel: Tensor, valid: Tensor) -> Tensor:
    """Σ over valid pixels / max(#valid, 1); per_pixel (N, H, W), valid broadcastable bool."""
    valid = valid.expand_as(per_pixel)
    total = torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / valid.sum().clamp_min(1)


def _valid_of(valid: Tensor | None, like: Tensor) -> Tensor:
    """valid given as (N, 1, H, W) / (N, H, W) bool or None (all valid) → (N, H, W) bool."""
    if valid is None:
        return torch.ones(like.shape[0], *like.shape[2:], dtype=torch.bool, device=like.device)
    return valid[:, 0] if valid.dim() == 4 else valid


def ce_loss(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Pixel-wise cross-entropy −Σ_k y^(i,k) log p^(i,k) (eqs. 1, 2: l_ce^s on source, l_ce^t on ŷ_t).

    logits (N, K, H, W), target (N, H, W) int64. Mean over non-ignored pixels.
    """
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp_min(1)


def rce_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, log_zero: float = math.log(1e-4)) -> Tensor:
    """Reverse cross-entropy l_ce(ŷ, p) = −Σ_k p^(i,k) log ŷ^(i,k), the second term of eq. 8.

    ŷ is one-hot, so log 1 = 0 on the label and log 0 is clamped to ``log_zero`` = log(1e-4) elsewhere:
    the loss is −log_zero · (1 − p_y) ≈ 9.2103 · (1 − p_y). Mean over non-ignored pixels.
    """
    valid = target != ignore_index  # (N, H, W)
    p = F.softmax(logits, dim=1)  # (N, K, H, W)
    p_y = p.gather(1, torch.where(valid, target, 0)[:, None])[:, 0]  # (N, H, W)
    return _masked_mean(-log_zero * (1 - p_y), valid)


def sce_loss(logits: Tensor, target: Tensor, alpha: float = 0.1, beta: float = 1.0, ignore_index: int = 255) -> Tensor:
    """Symmetric cross-entropy l_sce^t = α l_ce(p_t, ŷ_t) + β l_ce(ŷ_t, p_t) (eq. 8), α = 0.1, β = 1."""
    return alpha * ce_loss(logits, target, ignore_index) + beta * rce_loss(logits, target, ignore_index)


def sce_scale(alpha: float = 0.1, beta: float = 1.0, log_zero: float = math.log(1e-4)) -> float:
    """α − β·log_zero ≈ 9.31: how much larger l_sce's gradient on a confident pixel's label logit is than l_ce's.

    ∂l_sce/∂z_y = (α − β·log_zero·p_y)·∂l_ce/∂z_y, so at p_y → 1 the ratio is α − β·log_zero, and smaller on
    doubtful pixels (p_y small) — which is the robustness SCE is for (eq. 8).
    """
    return alpha - beta * log_zero


def regulariser(logits: Tensor, kind: str = "mrkld") -> Tensor:
    """The regulariser l_reg^t on target predictions (eq. 11), averaged over all pixels.

    ``"mrkld"``: KL(u ‖ p) to the uniform distribution u up to a constant, −(1/K) Σ_k log p^(i,k)
    (the paper's −Σ_i Σ_k log p_t^(i,k), normalised by pixels and classes as the official code).
    ``"mrent"`` (official option): the negative entropy Σ_k p^(i,k) log p^(i,k).
    """
    logp = F.log_softmax(logits, dim=1)  # (N, K, H, W)
    if kind == "mrkld":
        return -logp.mean()
    if kind == "mrent":
        return (logp.exp() * logp).sum(1).mean()
    raise ValueError(f"regulariser kind must be 'mrkld' or 'mrent', got {kind!r}")


def kl_consistency(teacher_probs: Tensor, student_logits: Tensor, valid: Tensor | None = None,
                   official_channel_norm: bool = False) -> Tensor:
    """Structure learning l_kl^t = KL(z_T ‖ z_T') per pixel (eq. 10), mean over valid pixels.

    teacher_probs: z_T (N, K, H, W), the soft prototypical assignment of the weak view T (eq. 9) by the
    momentum encoder, replayed into the strong frame (detached here). student_logits: the student's
    −‖f(T'(x)) − η‖/τ on the strong view T' (N, K, H, W). valid: (N, 1, H, W) / (N, H, W) bool.
    ``official_channel_norm=True`` divides by K, as the official code's per-channel mask does.
    """
    t = teacher_probs.detach().float()
    logs = F.log_softmax(student_logits.float(), dim=1)
    kl = (torch.xlogy(t, t) - t * logs).sum(1)  # (N, H, W), 0 log 0 = 0
    loss = _masked_mean(kl, _valid_of(valid, student_logits))
    return loss / student_logits.shape[1] if official_channel_norm else loss


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, valid: Tensor | None = None,
            official: bool = False) -> Tensor:
    """Self-distillation term KL(p_t ‖ p_t†) of l_KD (eq. 13): teacher p_t (detached), student p_t†.

    Both (N, K, H, W) logits; mean over valid pixels. ``official=True`` reproduces the official call
    ``F.kl_div(softmax(student), softmax(teacher))``, which takes the student's *probabilities* where
    log-probabilities are expected: Σ_k p_t (log p_t − p_t†), averaged over pixels and classes.
    """
    logt = F.log_softmax(teacher_logits.detach().float(), dim=1)  # (N, K, H, W)
    t = logt.exp()
    if official:
        per_pixel = (t * (logt - F.softmax(student_logits.float(), dim=1))).sum(1) / t.shape[1]
    else:
        per_pixel = (t * (logt - F.log_softmax(student_logits.float(), dim=1))).sum(1)  # (N, H, W)
    return _masked_mean(per_pixel, _valid_of(valid, student_logits))
