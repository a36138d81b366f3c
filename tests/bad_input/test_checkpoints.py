"""Checkpoints from another architecture or class count, truncated ones, and pickles that carry code: each
is refused in one line naming the file — and the code in a pickle never runs."""

import json
import os

import pytest
import torch

from conftest import tiny_config
from proda import checkpoint as ckpt
from proda.checkpoint import CheckpointError
from proda.engine.nodes import new_model
from proda.models import build_model

from .conftest import assert_refused


class Payload:
    """Unpickling this runs a shell command: the kind of file a checkpoint loader must refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _evil(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker), "step": 3}, path)
    return path


def _small(num_classes=19, **kw):
    return build_model("small", num_classes, feat_channels=32, width=8, dilations=(1, 2), **kw)


def _one_line(e):
    msg = str(e)
    assert msg and "\n" not in msg, repr(msg)
    return msg


@pytest.mark.control
def test_the_payload_is_live_when_loaded_without_weights_only(tmp_path):
    """The test file really carries code: a plain torch.load runs it (which is why nothing here may)."""
    marker = tmp_path / "pwned"
    torch.load(_evil(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_checkpoint_carrying_code_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = _evil(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError) as e:
        ckpt.load(path)
    assert f"checkpoint '{path}' refused by weights_only loading" in _one_line(e.value)
    assert not marker.exists()


def test_pretrained_backbone_file_carrying_code_is_refused(tmp_path):
    from proda.models.backbones import load_backbone_weights

    marker = tmp_path / "pwned"
    path = _evil(tmp_path / "backbone.pt", marker)
    with pytest.raises(ValueError) as e:
        load_backbone_weights(_small().backbone, path)
    assert f"model.pretrained '{path}': not a loadable weights-only checkpoint" in _one_line(e.value)
    assert not marker.exists()


def test_official_checkpoint_carrying_code_is_refused(tmp_path):
    from proda.models.official import import_official

    marker = tmp_path / "pwned"
    path = _evil(tmp_path / "official.pth", marker)
    with pytest.raises(CheckpointError, match="refused by weights_only loading"):
        import_official(build_model("resnet101", 19), path)
    assert not marker.exists()


def test_checkpoint_of_another_class_count_names_the_tensor(tmp_path):
    with pytest.raises(CheckpointError) as e:
        ckpt.load_model_state(_small(19), _small(16).state_dict(), "ck.pt")
    msg = _one_line(e.value)
    assert "checkpoint 'ck.pt': tensor" in msg and "(16," in msg and "(19," in msg and "class count" in msg


def test_checkpoint_of_another_architecture_counts_the_missing_keys(tmp_path):
    with pytest.raises(CheckpointError) as e:
        ckpt.load_model_state(_small(), _small(image_branch=False, squeeze_excite=False).state_dict(), "ck.pt")
    assert "does not fit the model" in _one_line(e.value) and "missing keys" in str(e.value)
    with pytest.raises(CheckpointError, match="has shape .* another architecture"):
        ckpt.load_model_state(_small(), build_model("small", 19, feat_channels=64, width=8,
                                                    dilations=(1, 2)).state_dict(), "ck.pt")


def test_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "model.pt"
    ckpt.save(path, {"model": _small().state_dict()})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"checkpoint '{path}' is unreadable"):
        ckpt.load(path)


# -- the same through `python -m proda.train --resume` on a run folder whose files were replaced -------
@pytest.fixture
def run_dir(tmp_path, synthetic_cache):
    """A pd+sl run folder (config.yaml, a finished warm-up) and the CLI arguments that resume it."""
    cfg = tiny_config(synthetic_cache, "pd+sl")
    out = tmp_path / "run"
    (out / "warmup").mkdir(parents=True)
    (out / "config.yaml").write_text(cfg.to_yaml())
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    (out / "warmup" / "done.json").write_text(json.dumps({"stage": "warmup", "kind": "warmup", "miou": 1.0}))
    ckpt.save(out / "warmup" / "model.pt", {"model": new_model(cfg).state_dict()})
    return cfg, out, ["--variant", "pd+sl", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out), "--resume"]


def _resume(args, capsys):
    from proda.train import main

    rc = main(args)
    return rc, capsys.readouterr().err


def test_resume_refuses_an_upstream_model_of_another_class_count(run_dir, capsys):
    cfg, out, args = run_dir
    small16 = build_model("small", 16, feat_channels=cfg.model.feat_channels, width=cfg.model.width,
                          dilations=cfg.model.dilations)
    ckpt.save(out / "warmup" / "model.pt", {"model": small16.state_dict()})
    rc, err = _resume(args, capsys)
    assert_refused(rc, err, f"{out / 'warmup' / 'model.pt'}'", "another architecture or class count")


def test_resume_refuses_a_checkpoint_carrying_code(run_dir, capsys, tmp_path):
    cfg, out, args = run_dir
    marker = tmp_path / "pwned"
    (out / "warmup" / "done.json").unlink()  # the warm-up resumes from its checkpoint.pt
    _evil(out / "warmup" / "checkpoint.pt", marker)
    rc, err = _resume(args, capsys)
    assert_refused(rc, err, f"{out / 'warmup' / 'checkpoint.pt'}' refused by weights_only loading")
    assert not marker.exists()


def test_pseudo_label_file_carrying_code_is_refused(run_dir, capsys, tmp_path):
    cfg, out, args = run_dir
    marker = tmp_path / "pwned"
    (out / "pseudo0").mkdir()
    (out / "pseudo0" / "done.json").write_text(json.dumps({"stage": "pseudo0", "kind": "pseudo"}))
    _evil(out / "pseudo0" / "pseudo.pt", marker)
    rc, err = _resume(args, capsys)
    assert_refused(rc, err, f"{out / 'pseudo0' / 'pseudo.pt'}' refused by weights_only loading")
    assert not marker.exists()
