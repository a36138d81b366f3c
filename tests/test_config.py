"""Configs: validation names the field, dict/YAML round trip, a stable content hash."""

import subprocess
import sys

import pytest

from proda.config import Config, ConfigError, field_paths
from proda.presets import PRESETS, VARIANTS, make_config, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_dict_and_yaml(name):
    cfg = preset(name)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg
    assert Config.from_yaml(cfg.to_yaml()).hash() == cfg.hash()


def test_hash_is_stable_across_processes_and_changes_with_any_value():
    cfg = make_config("synthetic", "proda", 3)
    code = "from proda.presets import make_config; print(make_config('synthetic', 'proda', 3).hash())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == cfg.hash()
    hashes = {cfg.hash()}
    for key, value in [("stage1.gamma1", 5.0), ("stage1.proto_momentum", 0.9), ("seed", 4), ("data.crop", [32, 64]),
                       ("model.pretrained", "/x.pth"), ("distill.rounds", 3)]:
        hashes.add(cfg.override({key: value}).hash())
    assert len(hashes) == 7


def test_validation_names_field_value_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"^stage1\.proto_momentum=1\.5: must be in \[0\.0, 1\.0\)$"):
        Config().override({"stage1.proto_momentum": 1.5})
    with pytest.raises(ConfigError, match=r"data\.num_classes=16: must be 19 with synthetic-source"):
        Config().override({"data.num_classes": 16})
    with pytest.raises(ConfigError, match=r"stage1\.pd=True: needs stage1\.st=true"):
        Config().override({"stage1.st": False, "stage1.sce": False, "stage1.pd": True})
    with pytest.raises(ConfigError, match=r"did you mean 'stage1\.gamma2'"):
        Config.from_dict({"stage1": {"gama2": 0.1}})
    with pytest.raises(ConfigError, match=r"stage1\.gamma1='ten': expected a number"):
        Config.from_dict({"stage1": {"gamma1": "ten"}})
    with pytest.raises(ConfigError, match=r"data\.crop=\[1, 2, 3\]: expected a list of 2 values"):
        Config.from_dict({"data": {"crop": [1, 2, 3]}})


def test_yaml_reads_exponent_floats_without_a_dot():
    cfg = Config.from_yaml("stage1:\n  lr: 1e-4\n")
    assert cfg.stage1.lr == 1e-4


def test_variants_set_every_switch_and_keep_the_paper_meaning():
    assert make_config("synthetic", "source-only").warmup.kind == "source"
    full = make_config("synthetic", "proda")
    assert (full.stage1.st, full.stage1.pd, full.stage1.sl, full.distill.rounds) == (True, True, True, 1)
    # KD's rounds are the preset's: the paper's two (stages 2 and 3), the embedded benchmark's one (S9)
    assert make_config("paper-gta5", "proda").distill.rounds == 2 and make_config("smoke", "proda").distill.rounds == 2
    assert make_config("synthetic", "pd+sl").distill.rounds == 0
    assert not make_config("synthetic", "st").stage1.pd
    paper = preset("paper-gta5")
    assert paper.stage1.proto_momentum == 0.9999 and paper.stage1.gamma1 == 10 and paper.stage1.gamma2 == 0.1
    assert paper.data.crop == (512, 896) and paper.data.batch_size == 4
    assert "stage1.proto_momentum" in field_paths() and set(VARIANTS) >= {"source-only", "proda"}
