"""Backbones for DeepLab-v2: torchvision ResNets dilated to output stride 8, and a small CNN for CPU work.

Weights come only from a local file (``pretrained=PATH``); nothing is ever downloaded.
"""

from __future__ import annotations

import math

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

from proda.checkpoint import CheckpointError, load

RESNETS = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34,
           "resnet50": resnet.resnet50, "resnet101": resnet.resnet101}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling/fc, layer3/layer4 dilated (2, 4): output stride 8."""

    def __init__(self, name: str = "resnet101"):
        super().__init__()
        kwargs = {"replace_stride_with_dilation": [False, True, True]} if name in ("resnet50", "resnet101") else {}
        net = RESNETS[name](weights=None, **kwargs)
        if not kwargs:  # BasicBlock ResNets refuse dilation: keep stride 8 by removing layer3/4 strides
            for layer, d in ((net.layer3, 2), (net.layer4, 4)):
                for i, block in enumerate(layer):
                    for conv in (block.conv1, block.conv2):
                        conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
                    if block.downsample is not None:
                        block.downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (``"bn"``) or GroupNorm of up to 8 groups (``"gn"``: no batch statistics, train = eval)."""
    return nn.BatchNorm2d(channels) if kind == "bn" else nn.GroupNorm(math.gcd(8, channels), channels)


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, norm: str = "bn") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A small CNN for 2-core CPU training on the embedded benchmark.

    An encoder down to stride 8 whose last two convolutions are dilated (2, 4), so the receptive
    field covers the scene layout (sky above, road below) — the cue that transfers across the
    domain gap. ``output_stride`` 8 returns that map; 4 adds it, upsampled, to a 1×1 projection of
    the stride-4 features (an FPN-style skip): thin classes (poles, riders) keep their detail at a
    fraction of the cost of running the dilated layers at stride 4. Output channels: ``4 · width``.
    ``norm``: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm, as the ASPP head; ``model.norm``, docs/differences.md S11).
    """

    def __init__(self, width: int = 32, output_stride: int = 4, norm: str = "bn"):
        super().__init__()
        if output_stride not in (4, 8):
            raise ValueError(f"model.output_stride={output_stride}: must be 4 or 8")
        if norm not in ("bn", "gn"):
            raise ValueError(f"model.norm={norm!r}: must be 'bn' or 'gn'")
        w = width
        self.output_stride = output_stride
        self.stem = nn.Sequential(_conv_bn(3, w, stride=2, norm=norm), _conv_bn(w, w, norm=norm))  # stride 2
        self.layer4 = nn.Sequential(_conv_bn(w, 2 * w, stride=2, norm=norm), _conv_bn(2 * w, 2 * w, norm=norm))  # /4
        self.layer8 = nn.Sequential(  # stride 8, then dilated for context
            _conv_bn(2 * w, 4 * w, stride=2, norm=norm),
            _conv_bn(4 * w, 4 * w, norm=norm),
            _conv_bn(4 * w, 4 * w, dilation=2, norm=norm),
            _conv_bn(4 * w, 4 * w, dilation=4, norm=norm),
        )
        if output_stride == 4:
            self.skip = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 1, bias=False), _norm(norm, 4 * w))
        self.out_channels = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4 = self.layer4(self.stem(x))  # (N, 2w, H/4, W/4)
        f8 = self.layer8(f4)  # (N, 4w, H/8, W/8)
        if self.output_stride == 8:
            return f8
        up = nn.functional.interpolate(f8, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return torch.relu(up + self.skip(f4))  # (N, 4w, H/4, W/4)


def build_backbone(name: str, **kwargs) -> nn.Module:
    if name in RESNETS:
        return ResNetBackbone(name)
    if name == "small":
        return SmallBackbone(**kwargs)
    raise ValueError(f"model.backbone={name!r}: must be one of {sorted(RESNETS) + ['small']}")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet (or self-supervised) weights from a local file into ``backbone``.

    Accepts a plain state dict or one nested under ``state_dict``/``model``; keys may carry the
    prefixes ``module.``, ``backbone.`` or ``encoder.``; ``fc.*`` is dropped. Every backbone tensor
    must be found with the right shape, else the error names the first that is not.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: no file at '{path}'")
    try:
        state = load(path)
    except CheckpointError as e:
        raise ValueError(f"model.pretrained '{path}': not a loadable weights-only checkpoint ({e.reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    cleaned = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone.", "encoder."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if not k.startswith("fc."):
            cleaned[k] = v
    own = backbone.state_dict()
    for k, v in own.items():
        if k not in cleaned:
            raise ValueError(f"model.pretrained '{path}': missing tensor '{k}' (is it a {type(backbone).__name__}?)")
        if cleaned[k].shape != v.shape:
            raise ValueError(
                f"model.pretrained '{path}': tensor '{k}' has shape {tuple(cleaned[k].shape)}, expected {tuple(v.shape)}"
            )
    backbone.load_state_dict({k: cleaned[k] for k in own}, strict=True)
