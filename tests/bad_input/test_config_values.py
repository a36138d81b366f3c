"""Every bounded config field refuses values outside its range, with one line naming the field, the value
and the allowed range; wrong types, unknown keys and unknown names are refused the same way."""

import math

import pytest

from proda.config import Config, ConfigError
from proda.presets import make_config, preset, variant_overrides

INF, NAN = math.inf, math.nan

# field → values outside its range (below, above, NaN where a float); the paper's symbols first
OUT_OF_RANGE = {
    "stage1.proto_momentum": [-0.1, 1.0, NAN],  # λ in [0, 1)
    "stage1.gamma1": [-1.0, 1000.5, INF],  # γ1
    "stage1.gamma2": [-0.1, 1001.0, NAN],  # γ2
    "stage1.tau": [0.0, -1.0, 1e4],  # τ > 0
    "stage1.alpha": [-0.1, 100.5],  # α
    "stage1.beta": [-0.1, 100.5],  # β
    "distill.beta": [-1.0, 1000.5],
    "stage1.ema_momentum": [-0.1, 1.0],
    "pseudo.threshold": [-0.1, 1.0],
    "stage1.threshold": [-0.5, 1.0],
    "warmup.lr": [0.0, -1e-4, 10.5, INF, NAN],
    "warmup.disc_lr": [0.0, 11.0],
    "warmup.disc_channels": [0, 1025],
    "stage1.lr": [0.0, 10.5],
    "distill.lr": [0.0, -0.1, 10.5],
    "optim.head_lr_mult": [0.0, 1000.5],
    "optim.momentum": [-0.1, 1.0],
    "optim.weight_decay": [-1e-4, 1.5],
    "optim.poly_power": [-1.0, 10.5],
    "optim.grad_accum": [0, 1025],
    "data.batch_size": [0, -4],
    "eval.batch_size": [0],
    "warmup.steps": [0, -1],
    "stage1.steps": [0],
    "distill.steps": [0],
    "distill.rounds": [-1, 11],
    "warmup.adv_weight": [-0.01, 100.5],
    "model.dropout": [-0.1, 1.0],
    "model.feat_channels": [4, 5000, 48],
    "model.width": [3, 513],
    "model.dilations": [[], [0, 2]],
    "data.synthetic_scale": [0.0, 10.5],
    "data.synthetic_seed": [-1, 2**31],
    "data.num_workers": [-1, 65],
    "data.full_size": [[4, 128], [64, 4]],
    "data.crop": [[4, 96], [128, 128]],  # the second does not fit in full_size (64, 128)
    "data.crop_scale": [[0.0, 1.0], [0.8, 0.5], [0.5, 1.5]],
    "ssl.steps": [0],
    "ssl.lr": [0.0, 10.5, NAN],
    "ssl.weight_decay": [-1e-4, 1.5],
    "ssl.batch_size": [1, 0],  # two images at least: one per domain
    "ssl.temperature": [0.0, -0.1, 100.5],
    "ssl.proj_dim": [0, 8193],
    "ssl.hidden_dim": [0, 8193],
    "ssl.crop_scale": [[0.0, 1.0], [0.8, 0.5]],
    "ssl.view_size": [[4, 64], [64, 0]],
    "eval.interval": [0],
    "eval.max_images": [0],
    "checkpoint_interval": [0],
    "log_interval": [0],
    "seed": [-1, 2**31],
}
# numeric fields without a range to test: every other numeric field must appear in OUT_OF_RANGE
NO_RANGE = {"data.num_classes", "model.output_stride"}  # choices, tested below with the named options

CASES = [(f, v) for f, vs in OUT_OF_RANGE.items() for v in vs]


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _nested(field, value):
    d = {}
    node = d
    *parents, leaf = field.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return d


def _one_line(e: Exception) -> str:
    msg = str(e)
    assert "\n" not in msg and msg.strip() == msg and msg, repr(msg)
    return msg


@pytest.mark.control
def test_every_numeric_field_is_covered_by_a_range_case():
    numeric = {k for k, v in _leaves(Config().to_dict())
               if (isinstance(v, (int, float)) and not isinstance(v, bool)) or isinstance(v, list)}
    assert numeric - set(OUT_OF_RANGE) - NO_RANGE == set()


@pytest.mark.parametrize("field,value", CASES, ids=[f"{f}={v!r}" for f, v in CASES])
def test_value_outside_its_range_is_refused_naming_the_field(field, value):
    for build in (lambda: Config().override({field: value}), lambda: Config.from_dict(_nested(field, value))):
        with pytest.raises(ConfigError) as e:
            build()
        msg = _one_line(e.value)
        assert msg.startswith(f"{field}="), msg
        assert "must" in msg, msg  # says what is allowed


@pytest.mark.control
@pytest.mark.parametrize("field,value", [("stage1.proto_momentum", 0.9999), ("stage1.proto_momentum", 0.0),
                                         ("pseudo.threshold", 0.0), ("stage1.gamma1", 1000.0), ("warmup.lr", 10.0),
                                         ("data.batch_size", 1), ("stage1.tau", 1e-3), ("distill.rounds", 0)])
def test_values_at_the_edge_of_the_range_are_accepted(field, value):
    assert Config().override({field: value}).to_dict() is not None


@pytest.mark.parametrize("field,value,expected", [
    ("stage1.gamma1", "ten", "expected a number"),
    ("stage1.gamma1", [10], "expected a number"),
    ("data.batch_size", 4.5, "expected an integer"),
    ("data.batch_size", True, "expected an integer"),
    ("warmup.steps", INF, "expected an integer"),
    ("stage1.pd", "yes", "expected true or false"),
    ("stage1.pd", 1, "expected true or false"),
    ("data.crop", 64, "expected a list"),
    ("data.crop", [48, 96, 3], "expected a list of 2 values"),
    ("model.backbone", 101, "expected a string"),
    ("stage1", 5, "expected a mapping"),
])
def test_wrong_type_is_refused_naming_the_field_and_the_type(field, value, expected):
    with pytest.raises(ConfigError) as e:
        Config().override({field: value}) if "." in field else Config.from_dict({field: value})
    msg = _one_line(e.value)
    assert msg.startswith(f"{field}=") and expected in msg, msg


@pytest.mark.parametrize("text,expected", [
    ("stage1:\n  gama1: 3\n", "unknown config field 'stage1.gama1' (did you mean 'stage1.gamma1'?)"),
    ("stag1:\n  gamma1: 3\n", "unknown config field 'stag1' (did you mean 'stage1'?)"),
    ("data:\n  batchsize: 3\n", "(did you mean 'data.batch_size'?)"),
    ("zzz: 1\n", "unknown config field 'zzz' (known: "),
    ("- 1\n- 2\n", "config YAML must be a mapping"),
])
def test_unknown_yaml_key_is_named_with_a_suggestion(text, expected):
    with pytest.raises(ConfigError) as e:
        Config.from_yaml(text)
    assert expected in _one_line(e.value)


def test_unknown_override_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config field 'stage1.gama1' \(did you mean 'stage1.gamma1'\?\)"):
        Config().override({"stage1.gama1": 3.0})
    with pytest.raises(ConfigError, match=r"unknown config field 'stage.gamma1' \(did you mean 'stage1.gamma1'\?\)"):
        Config().override({"stage.gamma1": 3.0})


@pytest.mark.parametrize("build,expected", [
    (lambda: preset("smok"), "preset='smok': must be one of"),
    (lambda: variant_overrides("pd+sll"), "variant='pd+sll': must be one of"),
    (lambda: make_config("smoke", "nope"), "variant='nope'"),
    (lambda: Config().override({"data.source": "gta6"}), "data.source='gta6': must be one of"),
    (lambda: Config().override({"data.target": "citiscapes"}), "data.target='citiscapes': must be one of"),
    (lambda: Config().override({"data.num_classes": 20}), "data.num_classes=20: must be one of"),
    (lambda: Config().override({"data.source": "synthia"}), "data.num_classes=19: must be 16 or 13 with synthia"),
    (lambda: Config().override({"model.backbone": "resnet152"}), "model.backbone='resnet152': must be one of"),
    (lambda: Config().override({"model.output_stride": 16}), "model.output_stride=16: must be one of"),
    (lambda: Config().override({"optim.optimizer": "adamw"}), "optim.optimizer='adamw': must be one of"),
    (lambda: Config().override({"stage1.regulariser": "kl"}), "stage1.regulariser='kl': must be one of"),
    (lambda: Config().override({"warmup.kind": "adv"}), "warmup.kind='adv': must be one of"),
    (lambda: Config().override({"model.init": "simclr"}), "model.init='simclr': must be null or 'ssl'"),
    (lambda: Config().override({"device": "tpu"}), "device='tpu': must be one of"),
    (lambda: Config().override({"stage1.st": False}), "stage1.sce=True: needs stage1.st=true"),
])
def test_unknown_name_lists_the_allowed_ones(build, expected):
    with pytest.raises(ConfigError) as e:
        build()
    assert expected in _one_line(e.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' does not exist"):
        Config.from_yaml(tmp_path / "nope.yaml")
