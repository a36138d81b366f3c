"""Presets (whole configs) and variants (the component switches of one ablation row).

Presets: ``paper-gta5`` / ``paper-synthia`` (the paper's crop, batch, learning rates and iteration
counts), ``synthetic`` (the embedded benchmark sized for 2 CPU cores) and ``smoke`` (the embedded
benchmark, a whole variant chain in about a minute, for tests).

Variants follow the paper's Table 3 rows: source-only < warm-up < ST < +SCE < PD < PD+SL < +KD, plus the
control row ``warmup+`` (the warm-up continued for as many steps as stage 1).
"""

from __future__ import annotations

from proda.config import Config, ConfigError

# -- variants: dotted overrides that set every switch explicitly ----------------------------------
_OFF = {"warmup.extend": False, "stage1.st": False, "stage1.sce": False, "stage1.pd": False, "stage1.sl": False, "stage1.reg": False,
        "distill.rounds": 0}
_KD = {k: v for k, v in _OFF.items() if k != "distill.rounds"}  # KD on: the preset's rounds (paper: 2, stages 2–3)
VARIANTS: dict[str, dict] = {
    "source-only": {**_OFF, "warmup.kind": "source"},
    "warmup": {**_OFF, "warmup.kind": "adversarial"},
    # the control row: the warm-up continued for stage1.steps with a fresh stage-1 optimiser — more training,
    # no ProDA component, so each component's gain can be read against it
    "warmup+": {**_OFF, "warmup.kind": "adversarial", "warmup.extend": True},
    "st": {**_OFF, "warmup.kind": "adversarial", "stage1.st": True},
    "st+sce": {**_OFF, "warmup.kind": "adversarial", "stage1.st": True, "stage1.sce": True},
    "pd": {**_OFF, "warmup.kind": "adversarial", "stage1.st": True, "stage1.sce": True, "stage1.pd": True},
    "pd+sl": {**_OFF, "warmup.kind": "adversarial", "stage1.st": True, "stage1.sce": True, "stage1.pd": True,
              "stage1.sl": True, "stage1.reg": True},
    "proda": {**_KD, "warmup.kind": "adversarial", "stage1.st": True, "stage1.sce": True, "stage1.pd": True,
              "stage1.sl": True, "stage1.reg": True},
}
# component names usable in ablation specs, and the config switch each one sets
COMPONENTS = {"st": "stage1.st", "sce": "stage1.sce", "pd": "stage1.pd", "sl": "stage1.sl", "reg": "stage1.reg",
              "kd": "distill.rounds", "warmup": "warmup.kind", "extend": "warmup.extend"}


def _paper(source: str, num_classes: int) -> dict:
    return {
        "data": {"source": source, "target": "cityscapes", "num_classes": num_classes,
                 "full_size": [1024, 2048], "crop": [512, 896], "crop_scale": [0.5, 1.0], "batch_size": 4,
                 "num_workers": 6},
        "model": {"backbone": "resnet101"},
        "optim": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 2e-4, "head_lr_mult": 10.0},
        "warmup": {"steps": 20000, "lr": 2.5e-4, "adv_weight": 0.01},
        "pseudo": {"threshold": 0.95, "flip": True},
        # the official stage 1 trains the head at the backbone's learning rate (no 10× head), and keeps every
        # rectified pixel (no threshold) — in the ST rows too, so each row changes one thing
        "stage1": {"steps": 30000, "lr": 1e-4, "proto_momentum": 0.9999, "gamma1": 10.0, "gamma2": 0.1,
                   "tau": 1.0, "alpha": 0.1, "beta": 1.0, "head_lr_mult": 1.0, "threshold": 0.0},
        "distill": {"rounds": 2, "steps": 30000, "lr": 6e-4, "beta": 1.0},
        "eval": {"interval": 1000, "batch_size": 2},
        "checkpoint_interval": 1000,
    }


_SYNTHETIC = {  # sized for 2 CPU cores: the default study (33 nodes) within 20 minutes
    "data": {"source": "synthetic-source", "target": "synthetic-target", "num_classes": 19,
             "full_size": [64, 128], "crop": [64, 128], "crop_scale": [0.5, 1.0], "batch_size": 8},
    "model": {"backbone": "small", "width": 16, "output_stride": 4, "feat_channels": 32,
              "dilations": [1, 2, 4, 6], "dropout": 0.1},
    "optim": {"optimizer": "adam", "weight_decay": 1e-4, "head_lr_mult": 1.0},
    # discriminator ndf 16, not AdaptSegNet's 64: at 64 it costs ~3× the 275 k-parameter segmentation model
    # (240 M vs 93 M multiply-adds per image) and the adversarial warm-up ran at 8.9 img/s on one core, 21.1 at 16
    "warmup": {"steps": 400, "lr": 2e-3, "adv_weight": 0.01, "disc_lr": 1e-4, "disc_channels": 16},
    # hard pseudo labels of distillation keep pixels with confidence ≥ 0.9 (the paper presets: 0.95)
    "pseudo": {"threshold": 0.9, "flip": True},
    # Stage 1, scaled from the paper's 30k-step, 256-channel setting by stated rules (docs/differences.md S1–S6, S10):
    #  600 steps after the 400-step warm-up, the paper's proportion (30k after 20k: 1.5×, S10);
    #  the hard labels of every row keep every pixel (ST: ξ(p), PD: ξ(ω ⊙ p)), as the official stage 1 (and eq. 4's
    #  ŷ = ξ(ω ⊙ p), written without one): one rule, one change per row (S1: a 0.9 threshold made ST's labels as
    #  good as PD's);
    #  λ: (1 − λ)·steps = 3, as (1 − 0.9999)·30k: 0.995 at 600 steps;  EMA encoder: the paper's per-step momentum
    #  0.999 (S3);
    #  τ = √(C / 256) = 0.354 for C = 32 channels: distances between GroupNorm'd features grow as √C;
    #  SL: the official KL ÷ K (γ1 = 10 on the per-class-channel mean, effective 10/19);
    #  SCE rows: the target side ÷ (α − β·log 1e-4) ≈ 9.31, so it weighs against l_ce^s as ST's does (S8)
    #  BatchNorm frozen in stage 1 and its control (the official --freeze_bn, S12): with it trained, the target CE
    #  is learnt under target-batch statistics while every evaluation uses the running ones
    "stage1": {"steps": 600, "lr": 5e-4, "proto_momentum": 0.995, "gamma1": 10.0, "gamma2": 0.1, "tau": 0.354,
               "ema_momentum": 0.999, "threshold": 0.0, "official_kl_norm": True, "sce_ce_scale": True,
               "freeze_bn": True},
    # the student starts from the seed's ssl node (SimCLR on the unlabelled train images), not from its teacher,
    # at the warm-up's learning rate (S7); one round of 2000 steps, twice its teacher's training (warm-up 400 +
    # stage 1 600), where the paper has two rounds: at this budget two students of half the length each ended
    # below their teacher, one twice as long above it (S9, benchmarks/RESULTS.md)
    "distill": {"rounds": 1, "steps": 2000, "lr": 2e-3, "beta": 1.0, "student_init": "ssl"},
    # SimCLR at half resolution: 32×64 views cost ~1/4 of 64×128 ones, 0.31 s per step of 64 images (128 views)
    # on one core, so the node (one per seed) costs ~80 s; t = 0.2 for a batch of 128 views
    "ssl": {"steps": 250, "lr": 1e-3, "batch_size": 64, "temperature": 0.2, "proj_dim": 64, "hidden_dim": 128,
            "view_size": [32, 64]},
    # one evaluation per node at its end (the 2000-step student also at 1000): the 500 val images cost 3.2 s of
    # CPU, 18 % of a source-only warm-up when evaluated every 100 steps (benchmarks/eval_speed.py). Evaluating
    # does not change what is trained (tests/test_engine.py); set eval.interval lower for learning curves
    "eval": {"interval": 1000, "batch_size": 100},
    "checkpoint_interval": 50,
    "log_interval": 50,
}

_SMOKE = {
    **_SYNTHETIC,
    "data": {**_SYNTHETIC["data"], "synthetic_scale": 0.25},
    "warmup": {**_SYNTHETIC["warmup"], "steps": 40},
    "stage1": {**_SYNTHETIC["stage1"], "steps": 20},
    "distill": {**_SYNTHETIC["distill"], "steps": 20, "rounds": 2},  # two rounds: tests see the paper's chain
    "ssl": {**_SYNTHETIC["ssl"], "steps": 20, "batch_size": 32},
    "eval": {"interval": 1000, "batch_size": 64, "max_images": 64},
    "checkpoint_interval": 10,
    "log_interval": 10,
}

PRESETS: dict[str, dict] = {
    "paper-gta5": _paper("gta5", 19),
    "paper-synthia": _paper("synthia", 16),
    "synthetic": _SYNTHETIC,
    "smoke": _SMOKE,
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r}: must be one of {sorted(PRESETS)}")
    return Config.from_dict(PRESETS[name])


def variant_overrides(name: str) -> dict:
    if name not in VARIANTS:
        raise ConfigError(f"variant={name!r}: must be one of {list(VARIANTS)}")
    return dict(VARIANTS[name])


def make_config(preset_name: str = "synthetic", variant: str = "proda", seed: int = 0,
                overrides: dict | None = None) -> Config:
    """Preset ⊕ variant switches ⊕ seed ⊕ extra dotted overrides, validated."""
    cfg = preset(preset_name).override({**variant_overrides(variant), "seed": seed, **(overrides or {})})
    return cfg
