"""DeepLab-v2 models: :func:`build_model` → ``{'feat': (N,C,h,w), 'out': (N,K,h,w)}``."""

from __future__ import annotations

from typing import Sequence

from proda.models.backbones import build_backbone, load_backbone_weights
from proda.models.deeplabv2 import ASPPHead, DeepLabV2

__all__ = ["ASPPHead", "DeepLabV2", "build_model"]


def build_model(
    backbone: str = "resnet101",
    num_classes: int = 19,
    *,
    pretrained: str | None = None,
    dilations: Sequence[int] = (6, 12, 18, 24),
    feat_channels: int = 256,
    dropout: float = 0.1,
    image_branch: bool = True,
    squeeze_excite: bool = True,
    width: int = 32,
    output_stride: int = 4,
    norm: str = "bn",
) -> DeepLabV2:
    """Build DeepLab-v2. ``width``/``output_stride``/``norm`` apply to the ``small`` backbone only."""
    kwargs = {"width": width, "output_stride": output_stride, "norm": norm} if backbone == "small" else {}
    net = build_backbone(backbone, **kwargs)
    if pretrained:
        load_backbone_weights(net, pretrained)
    head = ASPPHead(net.out_channels, num_classes, dilations, feat_channels, dropout, image_branch, squeeze_excite)
    return DeepLabV2(net, head)
