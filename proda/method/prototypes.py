"""Prototypes η, prototype weights ω, the hard label ξ and the rectified pseudo label ŷ (Sec. 3.2, eqs. 4–7).

Notation (arXiv 2101.10979): f̃(x_t) the momentum encoder's feature, η^(k) the prototype of class k,
τ the temperature, λ the prototype momentum, p_{t,0} the fixed soft pseudo label of the warm-up model,
ξ the one-hot argmax. Everything is vectorised over pixels and classes: distances are one batched
matmul, class sums one one-hot ``bmm``; no ``.item()`` or Python branch on tensor values, so nothing
here synchronises the host. Cross-rank sums use ``all_reduce`` only under an initialised process
group with more than one rank, so every rank holds the same prototypes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: Tensor) -> Tensor:
    """In-place sum over ranks (a no-op in one process); returns ``t``."""
    if _is_dist():
        dist.all_reduce(t)
    return t


def proto_distances(feat: Tensor, protos: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances ‖f^(i) − η^(k)‖ of features feat (N, C, H, W) to prototypes protos (K, C).

    Returns (N, K, H, W). One batched matmul: ‖f‖² − 2 η·f + ‖η‖², clamped before the square root
    (at ``eps`` so the gradient stays finite where a feature sits on a prototype). Computed in float32.
    """
    n, c, h, w = feat.shape
    with torch.autocast(feat.device.type, enabled=False):  # ‖f‖² − 2η·f cancels: never in half precision
        f = feat.float().flatten(2)  # (N, C, HW)
        p = protos.float()  # (K, C)
        sq = (f * f).sum(1, keepdim=True) + (p * p).sum(1)[None, :, None]  # (N, K, HW)
        d2 = torch.baddbmm(sq, p.expand(n, *p.shape), f, alpha=-2.0)  # (N, K, HW)
        return d2.clamp_min(eps).sqrt().view(n, -1, h, w)


def proto_logits(dist: Tensor, tau: float = 1.0, official_temperature: bool = False) -> Tensor:
    """−d_k / τ over distances dist (N, K, H, W): the logits of ω (eq. 5) and of the soft assignment z (eq. 9),
    which SL's student takes as they are (its KL reads log-softmax of them).

    ``official_temperature=True`` multiplies by τ as the official code does (identical at τ = 1).
    """
    return -dist * tau if official_temperature else -dist / tau


def proto_softmax(dist: Tensor, tau: float = 1.0, official_temperature: bool = False) -> Tensor:
    """softmax_k(−d_k / τ) over distances dist (N, K, H, W): ω (eq. 5) and the soft assignment z (eq. 9)."""
    return F.softmax(proto_logits(dist, tau, official_temperature), dim=1)


def proto_weights(feat: Tensor, protos: Tensor, tau: float = 1.0, official_temperature: bool = False) -> Tensor:
    """Prototype weights ω_t^(i,k) = softmax_k(−‖f̃(x_t)^(i) − η^(k)‖ / τ) (eq. 5), (N, K, H, W)."""
    return proto_softmax(proto_distances(feat, protos), tau, official_temperature)


def hard_label(probs: Tensor, threshold: float = 0.0, ignore_index: int = 255) -> Tensor:
    """The hard label ξ(p): argmax_k p^(i,k) of class probabilities probs (N, K, H, W) → (N, H, W) int64.

    With ``threshold`` > 0 a pixel whose maximum probability is below it gets ``ignore_index`` (the
    confidence rule of stage 1's ŷ, ``stage1.threshold``, and of distillation's targets, ``pseudo.threshold``).
    """
    conf, hard = probs.max(1)  # (N, H, W)
    if threshold <= 0:
        return hard
    return torch.where(conf >= threshold, hard, torch.full_like(hard, ignore_index))


def rectify(soft: Tensor, weights: Tensor, threshold: float = 0.0, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """The rectified pseudo label ŷ_t = ξ(ω_t ⊙ p_{t,0}) (eq. 4).

    soft: p_{t,0} (N, K, H, W); weights: ω (N, K, H, W). Returns (hard (N, H, W) int64, the rectified
    probabilities (N, K, H, W) normalised over K). A pixel whose normalised maximum is below
    ``threshold`` (:func:`hard_label`), or whose ω ⊙ p is all zero (e.g. padding), gets ``ignore_index``.
    """
    r = weights * soft  # (N, K, H, W)
    total = r.sum(1, keepdim=True)  # (N, 1, H, W)
    r = r / total.clamp_min(torch.finfo(r.dtype).tiny)
    hard = hard_label(r, threshold, ignore_index)  # (N, H, W)
    return torch.where(total[:, 0] > 0, hard, torch.full_like(hard, ignore_index)), r


def _image_class_sums(feat: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-image class feature sums (N, K, C) and pixel counts (N, K); labels outside [0, K) are dropped."""
    if labels.shape[-2:] != feat.shape[-2:]:
        raise ValueError(f"labels {tuple(labels.shape)} must be at the features' resolution {tuple(feat.shape[-2:])}")
    classes = torch.arange(num_classes, device=labels.device)
    onehot = (labels.flatten(1)[:, None, :] == classes[None, :, None]).float()  # (N, K, HW)
    with torch.autocast(feat.device.type, enabled=False):
        f = feat.float().flatten(2)  # (N, C, HW)
        return torch.bmm(onehot, f.transpose(1, 2)), onehot.sum(2)  # (N, K, C), (N, K)


def class_sums(feat: Tensor, labels: Tensor, num_classes: int, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Σ_i f^(i)·1[y^(i) = k] and Σ_i 1[y^(i) = k] over a batch: the numerator and denominator of eq. 6.

    feat (N, C, H, W), labels (N, H, W) at the same resolution (``ignore_index`` and any label outside
    [0, K) count nowhere). Returns sums (K, C) and counts (K,), float32, local to this rank.
    """
    sums, counts = _image_class_sums(feat, labels, num_classes)
    return sums.sum(0), counts.sum(0)


class CentroidAccumulator:
    """Initial prototypes η^(k) (eq. 6): class centroids of features under given labels over a dataset.

    Feed it every batch of this rank's shard with :meth:`add`; :meth:`compute` all-reduces the sums and
    counts and returns (protos (K, C), counts (K,)). A class never seen keeps zeros and count 0.
    ``official=True`` reproduces ``calc_prototype.py`` up to its count cap: the mean over images of
    per-image centroids, skipping a class in an image where it has fewer than 10 pixels; ``counts`` are
    then numbers of images.
    """

    def __init__(self, num_classes: int, channels: int, device: torch.device | str | None = None,
                 official: bool = False, min_pixels: int = 10):
        self.num_classes, self.official, self.min_pixels = num_classes, official, min_pixels
        self.sums = torch.zeros(num_classes, channels, dtype=torch.float64, device=device)  # (K, C)
        self.counts = torch.zeros(num_classes, dtype=torch.float64, device=device)  # (K,)

    @torch.no_grad()
    def add(self, feat: Tensor, labels: Tensor) -> None:
        """Accumulate a batch: feat (N, C, H, W), labels (N, H, W) at feat's resolution."""
        sums, counts = _image_class_sums(feat, labels, self.num_classes)  # (N, K, C), (N, K)
        if self.official:
            use = (counts >= self.min_pixels).float()  # (N, K)
            sums = sums / counts.clamp_min(1)[..., None] * use[..., None]  # per-image centroids
            counts = use
        self.sums += sums.sum(0).to(self.sums)
        self.counts += counts.sum(0).to(self.counts)

    def compute(self) -> tuple[Tensor, Tensor]:
        """All-reduce over ranks and return (protos (K, C) float32, counts (K,) float32)."""
        both = _all_reduce_sum(torch.cat([self.sums, self.counts[:, None]], 1))  # (K, C + 1)
        sums, counts = both[:, :-1], both[:, -1]
        return (sums / counts.clamp_min(1)[:, None]).float(), counts.float()


class PrototypeBank(nn.Module):
    """The moving prototypes η^(k), updated by η ← λ η + (1 − λ) η′ (eq. 7), λ = ``momentum`` (0.9999).

    η′ are the batch centroids of the features under the given labels, with sums and counts all-reduced
    across ranks, so every rank holds identical prototypes. Only classes present in the (global) batch
    move; a class not yet initialised takes η′ directly. Buffers ``protos`` (K, C), ``counts`` (K,) (pixels
    seen) and ``initialised`` (K,) are in ``state_dict()``.

    ``official_update=True`` follows the official ``update_objective_SingleVector`` loop: one EMA step per
    (image, class) in batch order (rank-major across ranks), so a class present in all N images decays by
    λᴺ; a class with fewer than ``min_pixels`` (10) pixels in an image is skipped there; and an
    uninitialised class is averaged into its stored value (zeros) like any other. Evaluated in closed
    form: η ← λ^m η + (1 − λ) Σ_j λ^(m − j) η′_j over the m images j (in order) where the class counts.
    """

    def __init__(self, num_classes: int, channels: int, momentum: float = 0.9999, official_update: bool = False,
                 min_pixels: int = 10):
        super().__init__()
        self.num_classes, self.momentum = num_classes, momentum
        self.official_update, self.min_pixels = official_update, min_pixels
        self.register_buffer("protos", torch.zeros(num_classes, channels))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("initialised", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def reset(self, protos: Tensor, counts: Tensor | None = None) -> None:
        """Start from given prototypes (K, C), e.g. :class:`CentroidAccumulator`; classes with count 0 stay
        uninitialised (all are initialised when ``counts`` is None)."""
        self.protos.copy_(protos)
        if counts is None:
            self.counts.zero_()
            self.initialised.fill_(True)
        else:
            self.counts.copy_(counts)
            self.initialised.copy_(counts > 0)

    @torch.no_grad()
    def update(self, feat: Tensor, labels: Tensor) -> None:
        """One EMA step from a batch: feat (N, C, H, W) (detached), labels (N, H, W) at feat's resolution."""
        if self.official_update:
            return self._update_official(feat, labels)
        sums, counts = class_sums(feat, labels, self.num_classes)  # (K, C), (K,)
        both = _all_reduce_sum(torch.cat([sums, counts[:, None]], 1))  # (K, C + 1)
        sums, counts = both[:, :-1], both[:, -1]
        present = (counts > 0)[:, None]  # (K, 1)
        centroid = sums / counts.clamp_min(1)[:, None]  # η′ (K, C)
        lam = self.momentum
        moved = torch.where(self.initialised[:, None], lam * self.protos + (1 - lam) * centroid, centroid)
        self.protos.copy_(torch.where(present, moved, self.protos))
        self.initialised |= present[:, 0]
        self.counts += counts.to(self.counts)

    def _update_official(self, feat: Tensor, labels: Tensor) -> None:
        sums, counts = _image_class_sums(feat, labels, self.num_classes)  # (N, K, C), (N, K)
        use = counts >= self.min_pixels  # (N, K)
        centroids = sums / counts.clamp_min(1)[..., None]  # η′ per image (N, K, C)
        m_local = use.sum(0).double()  # (K,) EMA steps this rank takes, per class
        after = torch.zeros_like(m_local)  # steps taken by later ranks (their images come after ours)
        if _is_dist():
            every = [torch.empty_like(m_local) for _ in range(dist.get_world_size())]
            dist.all_gather(every, m_local)  # R × (K,)
            after = torch.stack(every[dist.get_rank() + 1:] + [torch.zeros_like(m_local)]).sum(0)
        lam = torch.tensor(self.momentum, dtype=torch.float64, device=feat.device)
        order = use.double().cumsum(0)  # (N, K): 1-based position of image n among this rank's steps
        weight = torch.where(use, (1 - lam) * lam ** (m_local - order + after), 0.0)  # (N, K)
        moved = (weight[..., None] * centroids.double()).sum(0)  # (K, C) this rank's share, already decayed
        pixels = torch.where(use, counts, 0.0).sum(0).double()  # (K,)
        both = _all_reduce_sum(torch.cat([moved, m_local[:, None], pixels[:, None]], 1))  # (K, C + 2)
        moved, m, pixels = both[:, :-2], both[:, -2], both[:, -1]  # m: EMA steps in the global batch
        self.protos.copy_((lam ** m[:, None] * self.protos.double() + moved).to(self.protos))
        self.initialised |= m > 0
        self.counts += pixels
