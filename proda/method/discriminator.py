"""Output-space discriminator for the adversarial warm-up (AdaptSegNet, Tsai et al. 2018) and its LSGAN loss.

ProDA's warm-up model is trained with output-space adversarial alignment before self-training. The
discriminator sees softmax maps (N, K, H, W) and returns a patch map of domain scores (N, 1, h, w).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FCDiscriminator(nn.Module):
    """Fully convolutional discriminator on class probabilities (N, K, H, W) → scores (N, 1, H/32, W/32).

    ``arch="adaptsegnet"`` (default): four 4×4 stride-2 convolutions with ndf, 2ndf, 4ndf, 8ndf channels,
    each followed by LeakyReLU(0.2), then a 4×4 stride-2 convolution to one channel (AdaptSegNet).
    ``arch="official"``: the released ProDA variant, 3×3 stride-2 convolutions with ReLU after the first
    three and LeakyReLU(0.2) after the fourth, then a 1×1 classifier (output stride 16).
    """

    def __init__(self, num_classes: int, ndf: int = 64, arch: str = "adaptsegnet"):
        super().__init__()
        chans = [num_classes, ndf, 2 * ndf, 4 * ndf, 8 * ndf]
        layers: list[nn.Module] = []
        if arch == "adaptsegnet":
            for cin, cout in zip(chans[:-1], chans[1:]):
                layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            layers.append(nn.Conv2d(chans[-1], 1, 4, stride=2, padding=1))
        elif arch == "official":
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
                act = nn.LeakyReLU(0.2, inplace=True) if i == 3 else nn.ReLU(inplace=True)
                layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), act]
            layers.append(nn.Conv2d(chans[-1], 1, 1))
        else:
            raise ValueError(f"arch must be 'adaptsegnet' or 'official', got {arch!r}")
        self.net = nn.Sequential(*layers)

    def forward(self, probs: Tensor) -> Tensor:
        return self.net(probs)


SOURCE_LABEL, TARGET_LABEL = 0.0, 1.0  # as AdaptSegNet and the official code


def lsgan_loss(pred: Tensor, target_is_source: bool) -> Tensor:
    """Least-squares GAN loss: mean (D(·) − c)², c = 0 for "source" and 1 for "target".

    The discriminator is trained with (source, True) and (target, False); the segmentation network
    fools it with (target, True).
    """
    c = SOURCE_LABEL if target_is_source else TARGET_LABEL
    return F.mse_loss(pred, pred.new_full(pred.shape, c))
