"""Typed, validated, hashable configuration.

Every section is a frozen dataclass validated at construction; an error names the field, the value
and what is allowed (``stage1.proto_momentum=1.5: must be in [0, 1)``). Configs round-trip through
plain dicts (what Tune passes around) and YAML, and have a stable content hash.

Symbols follow the paper (DESIGN.md decision 4): ``proto_momentum`` is λ in η ← λη + (1−λ)η′
(0.9999; the official code stores 1−λ under the same name), ``gamma1`` the structure-learning weight,
``gamma2`` the regulariser weight, ``alpha``/``beta`` the SCE weights, ``tau`` the temperature.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the dotted field."""


@contextlib.contextmanager
def naming_file(path: Path | None):
    """A :class:`ConfigError` raised inside starts with the file's name (``path``; None: inline text, as is)."""
    try:
        yield
    except ConfigError as e:
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from e


def load_yaml(text: str, source: str | Path | None = None) -> Any:
    """``yaml.safe_load`` whose error is one line naming the file and line where the YAML breaks:
    ``grid.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow
    sequence started at line 1)``; ``source`` is the file the text came from (``None``: text given inline)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        where = (f"{source}:{line}" if line else str(source)) if source is not None else f"line {line}" if line else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and cmark is not None:
            context += f" started at line {cmark.line + 1}"
        msg = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        raise ConfigError(f"{where}: {msg}" if where else msg) from None


def _check(cond: bool, path: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{path}={value!r}: {allowed}")


def _in(path, v, lo, hi, lo_open=False, hi_open=False):
    ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    ok = ok and not (isinstance(v, float) and math.isnan(v))
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    _check(ok, path, v, f"must be in {lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}")


def _choice(path, v, options):
    _check(v in options, path, v, f"must be one of {sorted(options)}")


# the embedded benchmark's drawing (proda/data/synthetic_scene.py): bump whenever it changes what is drawn —
# image caches and the ids of nodes trained on it are keyed by it, so a study never reuses another drawing's nodes
SYNTHETIC_VERSION = "v5"
DATASETS_SOURCE = ("synthetic-source", "gta5", "synthia")
DATASETS_TARGET = ("synthetic-target", "cityscapes")


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic-source"
    target: str = "synthetic-target"
    source_root: str | None = None  # None: the embedded benchmark's cache (synthetic) / required (real)
    target_root: str | None = None
    num_classes: int = 19  # 19 (GTA5/synthetic), 16 or 13 (SYNTHIA protocols)
    full_size: tuple[int, int] = (64, 128)  # (H, W) images are resized to before cropping
    crop: tuple[int, int] = (64, 128)  # (h, w) of the weak view (random-sized crop + flip)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # area fraction of the random-sized crop
    batch_size: int = 8  # global batch: split over DDP ranks
    num_workers: int = 0  # DataLoader workers for real datasets
    synthetic_seed: int = 0  # seed of the embedded benchmark's images (not the run's seed)
    synthetic_scale: float = 1.0  # fraction of the embedded benchmark's default image counts (tests: < 1)

    def __post_init__(self):
        p = "data"
        _choice(f"{p}.source", self.source, DATASETS_SOURCE)
        _choice(f"{p}.target", self.target, DATASETS_TARGET)
        _choice(f"{p}.num_classes", self.num_classes, (19, 16, 13))
        if self.source == "synthia":
            _check(self.num_classes in (16, 13), f"{p}.num_classes", self.num_classes, "must be 16 or 13 with synthia")
        else:
            _check(self.num_classes == 19, f"{p}.num_classes", self.num_classes, f"must be 19 with {self.source}")
        for name in ("full_size", "crop"):
            v = getattr(self, name)
            _check(len(v) == 2 and all(x >= 8 for x in v), f"{p}.{name}", v, "must be (height, width), each >= 8")
        _check(all(c <= f for c, f in zip(self.crop, self.full_size)), f"{p}.crop", self.crop,
               f"must fit in data.full_size={self.full_size}")
        lo, hi = self.crop_scale
        _check(0 < lo <= hi <= 1, f"{p}.crop_scale", self.crop_scale, "must be (lo, hi) with 0 < lo <= hi <= 1")
        _in(f"{p}.batch_size", self.batch_size, 1, None)
        _in(f"{p}.num_workers", self.num_workers, 0, 64)
        _in(f"{p}.synthetic_seed", self.synthetic_seed, 0, 2**31 - 1)
        _in(f"{p}.synthetic_scale", self.synthetic_scale, 0.0, 10.0, lo_open=True)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet101"  # resnet18/34/50/101 (dilated, output stride 8) or small (CPU)
    pretrained: str | None = None  # local path to backbone weights; nothing is downloaded
    feat_channels: int = 256
    dilations: tuple[int, ...] = (6, 12, 18, 24)
    dropout: float = 0.1
    image_branch: bool = True  # the official head's extra 1×1 ASPP branch
    squeeze_excite: bool = True  # the official head's SE block before the bottleneck
    width: int = 32  # small backbone only
    output_stride: int = 4  # small backbone only
    norm: str = "bn"  # small backbone only: bn (BatchNorm) | gn (GroupNorm, no batch statistics; S11)
    init: str | None = None  # "ssl": every warm-up's backbone starts from the seed's ssl node (head fresh)

    def __post_init__(self):
        p = "model"
        _check(self.init in (None, "ssl"), f"{p}.init", self.init, "must be null or 'ssl'")
        _choice(f"{p}.backbone", self.backbone, ("resnet18", "resnet34", "resnet50", "resnet101", "small"))
        _in(f"{p}.feat_channels", self.feat_channels, 8, 4096)
        _check(self.feat_channels % min(32, self.feat_channels) == 0, f"{p}.feat_channels", self.feat_channels,
               "must be a multiple of 32 (GroupNorm groups)")
        _check(len(self.dilations) >= 1 and all(d >= 1 for d in self.dilations), f"{p}.dilations",
               self.dilations, "must be a non-empty list of positive ints")
        _in(f"{p}.dropout", self.dropout, 0.0, 1.0, hi_open=True)
        _in(f"{p}.width", self.width, 4, 512)
        _choice(f"{p}.output_stride", self.output_stride, (4, 8))
        _choice(f"{p}.norm", self.norm, ("bn", "gn"))
        _check(self.norm == "bn" or self.backbone == "small", f"{p}.norm", self.norm,
               "'gn' is for the small backbone (the ResNets keep BatchNorm, as their ImageNet weights)")


@dataclass(frozen=True)
class OptimConfig:
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 2e-4
    poly_power: float = 0.9  # lr = base · (1 − step/steps)^power
    optimizer: str = "sgd"  # sgd | adam
    grad_accum: int = 1  # micro-batches per optimiser step (memory option; off = 1)
    amp: str = "off"  # off | bf16 | fp16 (autocast; GPU only for fp16)

    def __post_init__(self):
        p = "optim"
        _in(f"{p}.head_lr_mult", self.head_lr_mult, 0.0, 1000.0, lo_open=True)
        _in(f"{p}.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _in(f"{p}.weight_decay", self.weight_decay, 0.0, 1.0)
        _in(f"{p}.poly_power", self.poly_power, 0.0, 10.0)
        _choice(f"{p}.optimizer", self.optimizer, ("sgd", "adam"))
        _in(f"{p}.grad_accum", self.grad_accum, 1, 1024)
        _choice(f"{p}.amp", self.amp, ("off", "bf16", "fp16"))


@dataclass(frozen=True)
class WarmupConfig:
    kind: str = "adversarial"  # source (source-only CE) | adversarial (+ output-space LSGAN, AdaptSegNet)
    steps: int = 20000
    lr: float = 2.5e-4  # backbone learning rate; the head gets optim.head_lr_mult × lr
    adv_weight: float = 0.01
    disc_lr: float = 1e-4
    disc_channels: int = 64  # ndf of the discriminator: ndf, 2ndf, 4ndf, 8ndf channels (AdaptSegNet: 64)
    # the control row: the warm-up continued for stage1.steps steps with a fresh stage-1 optimiser (node warmup+)
    extend: bool = False

    def __post_init__(self):
        p = "warmup"
        _choice(f"{p}.kind", self.kind, ("source", "adversarial"))
        _in(f"{p}.steps", self.steps, 1, None)
        _in(f"{p}.lr", self.lr, 0.0, 10.0, lo_open=True)
        _in(f"{p}.adv_weight", self.adv_weight, 0.0, 100.0)
        _in(f"{p}.disc_lr", self.disc_lr, 0.0, 10.0, lo_open=True)
        _in(f"{p}.disc_channels", self.disc_channels, 1, 1024)


@dataclass(frozen=True)
class PseudoConfig:
    # the hard labels ξ(p_t) of the distillation stages' targets (and the label accuracy a pseudo-label node
    # reports): pixels whose max probability is below it → ignore (0: none). Stage 1's ŷ: stage1.threshold
    threshold: float = 0.0
    flip: bool = True  # average the prediction with that of the flipped image

    def __post_init__(self):
        _in("pseudo.threshold", self.threshold, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class Stage1Config:
    """Stage 1: self-training with prototypical denoising (PD) and structure learning (SL)."""

    st: bool = True  # self-training on pseudo labels (off: the chain ends after the warm-up)
    sce: bool = True  # symmetric CE α·CE + β·RCE instead of plain CE
    pd: bool = True  # online rectification of the soft pseudo labels by prototypes
    sl: bool = True  # KL between weak-view (EMA) and strong-view prototypical assignments
    reg: bool = True  # the regulariser γ2·l_reg
    source_ce: bool = True  # keep the source CE term (paper's total loss and official code)
    steps: int = 30000
    lr: float = 1e-4
    alpha: float = 0.1  # SCE: weight of CE
    beta: float = 1.0  # SCE: weight of reverse CE
    sce_ce_scale: bool = False  # with sce: the target side ÷ (α − β·log 1e-4) ≈ 9.31, ST's weight vs l_ce^s (S8)
    proto_momentum: float = 0.9999  # λ: η ← λη + (1−λ)η′  (official `proto_momentum` is 1−λ)
    gamma1: float = 10.0  # weight of the SL KL loss
    gamma2: float = 0.1  # weight of the regulariser
    tau: float = 1.0  # temperature of the prototype softmax ω
    ema_momentum: float = 0.999  # momentum encoder: θ̃ ← m θ̃ + (1−m) θ
    # the stage-1 hard labels ŷ of every stage-1 row (ST, +SCE: ξ(p_{t,0}); PD: ξ(ω ⊙ p_{t,0}) normalised): pixels
    # whose maximum is below it → ignore (0: none). One rule for ST, +SCE and PD, so a row changes one thing;
    # the distillation stages' targets use pseudo.threshold
    threshold: float = 0.0
    head_lr_mult: float | None = None  # None: optim.head_lr_mult (the official stage 1: 1, no 10× head)
    # None: optim.optimizer; stage 1 and the control row warmup+ train with it (the paper's stage 1: SGD)
    optimizer: str | None = None
    # BatchNorm layers keep the warm-up's running statistics during stage 1 and warmup+ (the official --freeze_bn;
    # its stage-1 command trains them): target losses are then learnt under the statistics they are evaluated with
    freeze_bn: bool = False
    regulariser: str = "mrkld"  # mrkld (paper) | mrent (official option)
    official_kl_norm: bool = False  # official SL loss divides the per-pixel KL by K
    official_proto_update: bool = False  # official per-image sequential prototype EMA (λ^N)

    def __post_init__(self):
        p = "stage1"
        for sw in ("sce", "pd", "sl", "reg"):
            _check(not getattr(self, sw) or self.st, f"{p}.{sw}", True, "needs stage1.st=true")
        _in(f"{p}.steps", self.steps, 1, None)
        _in(f"{p}.lr", self.lr, 0.0, 10.0, lo_open=True)
        _in(f"{p}.alpha", self.alpha, 0.0, 100.0)
        _in(f"{p}.beta", self.beta, 0.0, 100.0)
        _in(f"{p}.proto_momentum", self.proto_momentum, 0.0, 1.0, hi_open=True)
        _in(f"{p}.gamma1", self.gamma1, 0.0, 1000.0)
        _in(f"{p}.gamma2", self.gamma2, 0.0, 1000.0)
        _in(f"{p}.tau", self.tau, 0.0, 1000.0, lo_open=True)
        _in(f"{p}.ema_momentum", self.ema_momentum, 0.0, 1.0, hi_open=True)
        _in(f"{p}.threshold", self.threshold, 0.0, 1.0, hi_open=True)
        if self.head_lr_mult is not None:
            _in(f"{p}.head_lr_mult", self.head_lr_mult, 0.0, 1000.0, lo_open=True)
        _check(self.optimizer in (None, "sgd", "adam"), f"{p}.optimizer", self.optimizer,
               "must be null, 'sgd' or 'adam'")
        _choice(f"{p}.regulariser", self.regulariser, ("mrkld", "mrent"))


@dataclass(frozen=True)
class DistillConfig:
    """Stages 2 and 3: knowledge distillation into a fresh student, ``rounds`` times."""

    rounds: int = 2  # 0: no distillation
    steps: int = 30000
    lr: float = 6e-4
    beta: float = 1.0  # weight of KL(p_t ‖ p_t†)
    strong_view: bool = False  # the official code's KD: student and teacher on the strong view, ξ(p_t) replayed
    # "ssl": the seed's ssl node (SimCLR on the benchmark's unlabelled images); a local self-supervised backbone
    # checkpoint; "teacher": the teacher's weights; None: model.pretrained (ImageNet) when set, else the teacher's
    student_init: str | None = None

    def __post_init__(self):
        _in("distill.rounds", self.rounds, 0, 10)
        _in("distill.steps", self.steps, 1, None)
        _in("distill.lr", self.lr, 0.0, 10.0, lo_open=True)
        _in("distill.beta", self.beta, 0.0, 1000.0)


@dataclass(frozen=True)
class SSLConfig:
    """The ``ssl`` node: SimCLR pretraining of the backbone on unlabelled source + target train images."""

    steps: int = 2000
    lr: float = 1e-3  # Adam, poly schedule
    weight_decay: float = 1e-6
    batch_size: int = 64  # images per step (half from each domain), two views each
    temperature: float = 0.2  # t of NT-Xent
    proj_dim: int = 64  # output of the projection MLP g
    hidden_dim: int = 256  # its hidden layer
    crop_scale: tuple[float, float] = (0.2, 1.0)  # area fraction of the random resized crop
    view_size: tuple[int, int] | None = None  # (h, w) of each view; None: data.crop

    def __post_init__(self):
        p = "ssl"
        if self.view_size is not None:
            _check(len(self.view_size) == 2 and all(x >= 8 for x in self.view_size), f"{p}.view_size",
                   self.view_size, "must be (height, width), each >= 8, or null")
        _in(f"{p}.steps", self.steps, 1, None)
        _in(f"{p}.lr", self.lr, 0.0, 10.0, lo_open=True)
        _in(f"{p}.weight_decay", self.weight_decay, 0.0, 1.0)
        _in(f"{p}.batch_size", self.batch_size, 2, None)
        _in(f"{p}.temperature", self.temperature, 0.0, 100.0, lo_open=True)
        _in(f"{p}.proj_dim", self.proj_dim, 1, 8192)
        _in(f"{p}.hidden_dim", self.hidden_dim, 1, 8192)
        lo, hi = self.crop_scale
        _check(0 < lo <= hi <= 1, f"{p}.crop_scale", self.crop_scale, "must be (lo, hi) with 0 < lo <= hi <= 1")


@dataclass(frozen=True)
class EvalConfig:
    interval: int = 1000  # steps between evaluations on target val (the last step is always evaluated)
    batch_size: int = 16
    max_images: int | None = None  # evaluate on the first N images only (None: all)

    def __post_init__(self):
        _in("eval.interval", self.interval, 1, None)
        _in("eval.batch_size", self.batch_size, 1, None)
        if self.max_images is not None:
            _in("eval.max_images", self.max_images, 1, None)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    deterministic: bool = False  # deterministic kernels (bit-exact resume on CPU holds either way)
    checkpoint_interval: int = 500  # steps between checkpoints
    log_interval: int = 50
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _in("seed", self.seed, 0, 2**31 - 1)
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _in("checkpoint_interval", self.checkpoint_interval, 1, None)
        _in("log_interval", self.log_interval, 1, None)

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        from proda.config_plain import to_plain  # noqa: PLC0415 - it imports ConfigError from here

        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        from proda.config_plain import from_plain  # noqa: PLC0415

        return from_plain(cls, d, "")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> "Config":
        """A config from YAML text or a file; an error about a file's content starts with the file's name."""
        text, path = str(text_or_path), None
        if isinstance(text_or_path, Path) or (("\n" not in text) and text.endswith((".yaml", ".yml"))):
            path = Path(text_or_path)
            if not path.is_file():
                raise ConfigError(f"config file '{path}' does not exist")
            text = path.read_text()
        d = load_yaml(text, path) or {}
        with naming_file(path):
            if not isinstance(d, dict):
                raise ConfigError(f"config YAML must be a mapping, got {type(d).__name__}")
            return cls.from_dict(d)

    def hash(self, n: int = 16) -> str:
        """Stable content hash: same config → same hash across processes and machines."""
        return stable_hash(self.to_dict(), n)

    def override(self, overrides: dict[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied (``{"stage1.gamma1": 5.0}``), validated."""
        d = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            node = d
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config field '{key}'{_did_you_mean(key, d)}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config field '{key}'{_did_you_mean(key, d)}")
            node[parts[-1]] = value
        return Config.from_dict(d)


def stable_hash(obj: Any, n: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def field_paths(d: dict | None = None, prefix: str = "") -> list[str]:
    """All dotted leaf field names of a config dict (default: of ``Config()``)."""
    d = Config().to_dict() if d is None else d
    out = []
    for k, v in d.items():
        out.extend(field_paths(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return out


def _did_you_mean(key: str, d: dict) -> str:
    close = difflib.get_close_matches(key, field_paths(d), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
