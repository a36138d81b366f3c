"""ProDA's method pieces: prototypes (η, ω, ξ, ŷ), losses, the warm-up discriminator; the stages use them."""

from proda.method.discriminator import FCDiscriminator, lsgan_loss
from proda.method.losses import ce_loss, kd_loss, kl_consistency, rce_loss, regulariser, sce_loss
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

__all__ = [
    "CentroidAccumulator",
    "FCDiscriminator",
    "PrototypeBank",
    "ce_loss",
    "class_sums",
    "hard_label",
    "kd_loss",
    "kl_consistency",
    "lsgan_loss",
    "proto_distances",
    "proto_logits",
    "proto_softmax",
    "proto_weights",
    "rce_loss",
    "rectify",
    "regulariser",
    "sce_loss",
]
