"""Self-supervised pretraining of the segmentation backbone: SimCLR (Chen et al., 2020) on unlabelled images.

ProDA's distillation student starts from self-supervised (SimCLRv2) weights, not from its teacher. With
nothing to download, the ``ssl`` node learns such weights on the benchmark's unlabelled source + target
train images: two augmented views of each image, the backbone's pooled features through a small
projection MLP g, and the NT-Xent loss (:func:`nt_xent`), which pulls the two views of an image together
and pushes the other 2N − 2 views of the batch away. Only the backbone's weights are kept; the
segmentation head of a model that starts from them is always fresh.

The augmentations are SimCLR's, batched (one ``grid_sample``, per-sample choices by masks, all randomness
from one generator): random resized crop + flip (:func:`proda.data.augment.weak_view`), colour jitter
(brightness, contrast, saturation by :func:`proda.data.augment.photometric`, hue by a rotation of the
YIQ chroma plane) with probability 0.8 in a fixed order, grayscale with 0.2, Gaussian blur with 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proda import distributed as ddp
from proda.config import Config
from proda.data.augment import _rand, normalize, photometric, weak_view
from proda.data.stream import BatchStream, Split, to_device

_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR eq. 1) of projections z1, z2 (N, D) of two views of the same N images.

    With z = normalise([z1; z2]) (2N, D) and s_ij = z_i·z_j / t, the loss of anchor i whose positive is
    p(i) (its other view) is −log( exp(s_i,p(i)) / Σ_{k≠i} exp(s_ik) ), averaged over all 2N anchors.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    sim = z @ z.t() / temperature  # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # k ≠ i
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # p(i)
    return F.cross_entropy(sim, positive)


def _hue(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate the chroma (I, Q) of images x (N, 3, H, W) by ``angle`` (N,) radians; luma is kept."""
    m = x.new_tensor(_RGB_TO_YIQ)  # (3, 3)
    yiq = torch.einsum("ij,njhw->nihw", m, x)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), yiq).clamp(0, 1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel: int) -> Tensor:
    """Separable Gaussian blur of x (N, C, H, W) with a per-sample σ (N,) in pixels: one grouped conv per axis."""
    n, c, h, w = x.shape
    r = kernel // 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)  # (k,)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.to(x.dtype)[:, None] ** 2))  # (N, k)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N·C, k)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)  # along W
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)  # along H
    return y.view(n, c, h, w)


def simclr_view(images: Tensor, out_size: tuple[int, int], scale: tuple[float, float],
                generator: torch.Generator | None = None, jitter: float = 0.4, hue: float = 0.1) -> Tensor:
    """One SimCLR view (N, 3, h, w) in [0, 1] of images (N, 3, H, W) in [0, 1]."""
    n, dev = images.shape[0], images.device
    x, _ = weak_view(images, out_size, scale=scale, generator=generator)  # random resized crop + flip
    u = _rand((n, 8), generator, dev)  # jitter?, brightness, contrast, saturation, hue, gray?, blur?, σ
    jit = (u[:, 0] < 0.8).view(-1, 1, 1, 1)
    y = x
    for col, name in ((1, "brightness"), (2, "contrast"), (3, "color")):
        y = photometric(y, name, 1 - jitter + 2 * jitter * u[:, col])  # factor ∈ [1 − j, 1 + j]
    y = _hue(y, (2 * u[:, 4] - 1) * hue * 2 * math.pi)  # a shift of ±hue of the colour circle
    x = torch.where(jit, y, x)
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = torch.where((u[:, 5] < 0.2).view(-1, 1, 1, 1), gray, x)
    kernel = max(3, int(0.1 * min(out_size)) // 2 * 2 + 1)  # ~10 % of the side, odd (SimCLR)
    blurred = gaussian_blur(x, 0.1 + 1.9 * u[:, 7] * kernel / 23, kernel)  # σ ∈ [0.1, 2] at 224 px, scaled
    return torch.where((u[:, 6] < 0.5).view(-1, 1, 1, 1), blurred, x)


class ProjectionHead(nn.Module):
    """g: global-average-pooled backbone features (N, C, h, w) → (N, proj_dim) by Linear–BN–ReLU–Linear."""

    def __init__(self, in_channels: int, hidden: int, out: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out))

    def forward(self, feat: Tensor) -> Tensor:
        return self.mlp(feat.mean((2, 3)))


class _Net(nn.Module):
    def __init__(self, backbone: nn.Module, projector: ProjectionHead):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))


class SSLStage:
    """SimCLR on unlabelled source + target train images, as a stage :func:`proda.engine.trainer.run_stage`
    drives: each micro-batch takes half its images from each domain (labels are never read)."""

    name = "ssl"

    def __init__(self, cfg: Config, backbone: nn.Module, source: Split, target: Split, device: torch.device,
                 seed: int):
        s = cfg.ssl
        self.cfg, self.device = cfg, device
        self.net = _Net(backbone, ProjectionHead(backbone.out_channels, s.hidden_dim, s.proj_dim)).to(device)
        self.ddp_net = self.net
        if ddp.is_dist():
            ids = [device.index] if device.type == "cuda" else None
            self.ddp_net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        bs = s.batch_size // ddp.world_size() // cfg.optim.grad_accum
        if bs < 2:
            raise ValueError(f"ssl.batch_size={s.batch_size}: needs ≥ 2 images per micro-batch (one per domain) on "
                             f"{ddp.world_size()} ranks × optim.grad_accum={cfg.optim.grad_accum}")
        self.micro_bs = bs
        # half of each micro-batch from each domain: a split too small for its half names ssl.batch_size
        self.streams = {"source": BatchStream(source, bs // 2, seed=seed * 2 + 1, with_labels=False,
                                              batch_field="ssl.batch_size"),
                        "target": BatchStream(target, bs - bs // 2, seed=seed * 2 + 2, with_labels=False,
                                              batch_field="ssl.batch_size")}
        self.gen = torch.Generator().manual_seed(seed * 7919 + 17 * ddp.rank() + 1)
        self.last_loss = torch.tensor(float("nan"))  # NT-Xent of the last micro-batch (done.json)
        self.opt = torch.optim.Adam([{"params": self.net.parameters(), "lr": s.lr, "lr_mult": 1.0}], lr=s.lr,
                                    weight_decay=s.weight_decay)

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    @property
    def eval_model(self) -> nn.Module:
        return self.net

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"aug": self.gen}

    def set_lr(self, step: int, steps: int) -> None:
        from proda.method.stages import poly_lr  # noqa: PLC0415

        poly_lr(self.opt, self.cfg.ssl.lr, step, steps, self.cfg.optim.poly_power)

    def micro_step(self, accum: int) -> dict[str, Tensor]:
        # each uint8 batch copied from its pinned buffer and converted on the device, then joined
        x = torch.cat([to_device(self.streams[d].next()[1], None, self.device)[0]
                       for d in ("source", "target")])  # (n, 3, H, W) in [0, 1]
        s = self.cfg.ssl
        size = s.view_size or self.cfg.data.crop
        v1, v2 = (normalize(simclr_view(x, size, s.crop_scale, self.gen)) for _ in range(2))
        z = self.ddp_net(torch.cat([v1, v2]))  # both views in one batch: BN sees 2n images
        loss = nt_xent(z[: len(x)], z[len(x):], s.temperature)
        (loss / accum).backward()
        self.last_loss = loss.detach()
        return {"loss_ntxent": loss.detach(), "total": loss.detach()}

    def optimizer_step(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "last_loss": self.last_loss,
                "streams": {k: st.state_dict() for k, st in self.streams.items()}}

    def load_state_dict(self, st: dict) -> None:
        self.net.load_state_dict(st["net"])
        self.opt.load_state_dict(st["opt"])
        self.last_loss = st["last_loss"]
        for k, stream in self.streams.items():
            stream.load_state_dict(st["streams"][k])
