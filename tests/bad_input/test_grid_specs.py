"""Ablation grid files: unknown keys, names, empty grids, repeated seeds and out-of-range values are refused
with one line naming the key and what is expected — before anything is planned or run."""

import pytest

from proda.ablation.grid import AblationSpec, builtin_spec
from proda.config import ConfigError

GOOD = "name: g\npreset: smoke\nvariants: [source-only, pd+sl]\nseeds: [0]\n"


def refused(text: str, tmp_path) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        AblationSpec.from_yaml(path)
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


@pytest.mark.control
def test_the_good_grid_is_accepted(tmp_path):
    (tmp_path / "grid.yaml").write_text(GOOD)
    assert list(AblationSpec.from_yaml(tmp_path / "grid.yaml").variants) == ["source-only", "pd+sl"]


@pytest.mark.parametrize("text,expected", [
    # unknown keys, with a suggestion where one is close
    (GOOD.replace("variants:", "variant:"), "unknown key 'variant' (did you mean 'variants'?)"),
    (GOOD.replace("seeds:", "sedes:"), "unknown key 'sedes' (did you mean 'seeds'?)"),
    (GOOD + "overrides: {stage1.gama1: 3}\n", "unknown config field 'stage1.gama1' (did you mean 'stage1.gamma1'?)"),
    (GOOD + "axes: {stage1.gama1: [1, 2]}\n", "unknown config field 'stage1.gama1' (did you mean 'stage1.gamma1'?)"),
    (GOOD + "overrides: {seed: 3}\n", "'seed' is set per row"),
    (GOOD + "overrides: {stage1.sl: false}\n", "'stage1.sl' is a variant switch"),
    # unknown names
    (GOOD.replace("variants: [source-only, pd+sl]", "variants: [source-only, pd+sll]"),
     "unknown variant 'pd+sll' (did you mean 'pd+sl'?)"),
    (GOOD.replace("variants: [source-only, pd+sl]", "variants: {no-sl: {sll: false}}"),
     "variant 'no-sl': unknown component 'sll' (did you mean 'sl'?)"),
    (GOOD.replace("variants: [source-only, pd+sl]", "variants: {no-sl: {base: prda, sl: false}}"),
     "unknown base variant 'prda' (did you mean 'proda'?)"),
    (GOOD.replace("preset: smoke", "preset: smok"), "unknown preset (did you mean 'smoke'?)"),
    (GOOD + "overrides: {data.source: gta6}\n", "data.source='gta6': must be one of"),
    # empty grids
    (GOOD.replace("variants: [source-only, pd+sl]", "variants: []"), "ablation variants: none given"),
    (GOOD + "axes: {stage1.gamma1: []}\n", "stage1.gamma1 has an empty list of values"),
    (GOOD + "axes: [{}]\n", "a sweep in the list is empty"),
    (GOOD.replace("seeds: [0]", "seeds: []"), "expected a non-empty list of integers"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    # seeds that repeat, seeds of the wrong kind
    (GOOD.replace("seeds: [0]", "seeds: [0, 1, 0]"), "a seed is repeated"),
    (GOOD.replace("seeds: [0]", "seeds: [0, -1]"), "-1 is not an integer in [0, 2^31)"),
    (GOOD.replace("seeds: [0]", "seeds: [zero]"), "'zero' is not an integer"),
    (GOOD + "axes: {stage1.gamma1: [1.0, 1.0]}\n", "stage1.gamma1 repeats a value"),
    (GOOD + "axes: {stage1.gamma1: [1, 2]}\noverrides: {stage1.gamma1: 3}\n", "also set in overrides"),
    # values outside their range, named with the row they break
    (GOOD + "overrides: {stage1.tau: 0}\n", "stage1.tau=0.0: must be in (0.0, 1000.0]"),
    (GOOD + "axes: {stage1.proto_momentum: [0.9, 1.5]}\n",
     "stage1.proto_momentum=1.5): stage1.proto_momentum=1.5: must be in [0.0, 1.0)"),
    (GOOD + "overrides: {data.batch_size: 0}\n", "data.batch_size=0: must be in [1, inf]"),
    # not YAML, not a mapping
    ("variants: [a\n", "not valid YAML"),
    ("- a\n- b\n", "ablation spec must be a mapping, got list"),
])
def test_bad_grid_is_refused_in_one_line(tmp_path, text, expected):
    msg = refused(text, tmp_path)
    assert expected in msg, msg


def test_grid_file_that_is_not_yaml_names_the_file_and_line(tmp_path):
    msg = refused(GOOD.replace("seeds: [0]", "seeds: [0]\n  - 1"), tmp_path)
    assert msg.startswith(f"{tmp_path / 'grid.yaml'}:5: not valid YAML: "), msg


def test_an_error_in_a_grid_file_starts_with_the_file(tmp_path):
    msg = refused(GOOD.replace("variants:", "variant:"), tmp_path)
    assert msg.startswith(f"{tmp_path / 'grid.yaml'}: ablation spec: unknown key 'variant'"), msg


def test_missing_grid_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="ablation spec file '.*nope.yaml' does not exist"):
        AblationSpec.from_yaml(tmp_path / "nope.yaml")


def test_unknown_builtin_spec_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown built-in spec \(did you mean 'smoke'\?\)"):
        builtin_spec("smok")
