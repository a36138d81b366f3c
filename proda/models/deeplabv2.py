"""DeepLab-v2 as ProDA uses it: a dilated backbone (output stride 8) and an ASPP head.

The head follows the released ProDA model (``Classifier_Module2``): parallel 3×3 convolutions at
dilations 6/12/18/24 (optionally plus a 1×1 branch and a squeeze-excitation block, as in the official
code), each followed by GroupNorm(32) and ReLU, concatenated, a 3×3 bottleneck to ``feat_channels``
with GroupNorm, then dropout and a 1×1 classifier without bias.

``forward`` returns ``{'feat': (N, C, h, w), 'out': (N, K, h, w)}`` at the backbone's resolution:
``feat`` is the bottleneck output (the representation prototypes live in), ``out`` the logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels), num_channels=channels)


class SqueezeExcite(nn.Module):
    """Channel gating by global average pooling (the official head's ``SEBlock``, r = 16)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.se = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.se(self.pool(x).flatten(1))  # (N, C)
        return x * w[:, :, None, None]


class ASPPHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dilations: Sequence[int] = (6, 12, 18, 24),
        feat_channels: int = 256,
        dropout: float = 0.1,
        image_branch: bool = True,
        squeeze_excite: bool = True,
    ):
        super().__init__()
        branches = []
        if image_branch:  # the official code's extra 1×1 branch
            branches.append(self._branch(in_channels, feat_channels, 1, 1))
        for d in dilations:
            branches.append(self._branch(in_channels, feat_channels, 3, d))
        self.branches = nn.ModuleList(branches)
        cat = feat_channels * len(branches)
        self.se = SqueezeExcite(cat) if squeeze_excite else nn.Identity()
        self.bottleneck = nn.Sequential(
            nn.Conv2d(cat, feat_channels, 3, padding=1, bias=True),
            _gn(feat_channels),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(feat_channels, num_classes, 1, bias=False)
        self._init()

    @staticmethod
    def _branch(cin: int, cout: int, k: int, d: int) -> nn.Sequential:
        pad = d if k == 3 else 0
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, padding=pad, dilation=d, bias=True), _gn(cout), nn.ReLU(inplace=True)
        )

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.classifier:
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cat = torch.cat([b(x) for b in self.branches], dim=1)  # (N, B·C, h, w)
        feat = self.bottleneck(self.se(cat))  # (N, C, h, w)
        return {"feat": feat, "out": self.classifier(self.dropout(feat))}


class DeepLabV2(nn.Module):
    """A backbone returning one (N, C_b, h, w) map, and an :class:`ASPPHead` on top of it."""

    def __init__(self, backbone: nn.Module, head: ASPPHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.classifier.out_channels

    @property
    def feat_channels(self) -> int:
        return self.head.classifier.in_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(x))

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """1× learning rate for the backbone, ``head_lr_mult``× for the head (DeepLab-v2 convention)."""
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr, "lr_mult": 1.0},
            {
                "params": [p for p in self.head.parameters() if p.requires_grad],
                "lr": lr * head_lr_mult,
                "lr_mult": head_lr_mult,
            },
        ]
