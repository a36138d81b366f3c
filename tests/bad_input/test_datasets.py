"""A bad dataset tree is refused in one line naming the file or folder, before anything starts: no study
folder, no Ray, no run folder — by `experiments/ablation.py` and by `python -m proda.train` alike."""

import numpy as np
import pytest
import yaml

from proda.config import Config
from proda.data import DataError
from proda.data.stream import check_data

from .conftest import GOOD_IDS, ablation_main, assert_refused, make_cityscapes, make_gta5, run_cli, write_label

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_body(path):  # the end chunk stays: only decoding the file finds the damage
    data = bytearray(path.read_bytes())
    for i in range(40, len(data) - 12):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _label_ids(ids):
    return lambda root: write_label(root / "gta5" / "labels" / "00002.png", np.asarray(ids, np.uint8))


# name → (how the good tree is broken, what the one line must name)
BREAKS = {
    "no-labels-folder": (lambda r: __import__("shutil").rmtree(r / "gta5" / "labels"),
                         ["gta5' has no labels/ folder", "expected GTA5 layout"]),
    "image-without-label": (lambda r: (r / "gta5" / "labels" / "00001.png").unlink(),
                            ["images/00001.png' has no label", "labels/00001.png"]),
    "truncated-png": (lambda r: _truncate(r / "gta5" / "images" / "00001.png"),
                      ["images/00001.png' is truncated"]),
    "not-a-png": (lambda r: (r / "gta5" / "labels" / "00002.png").write_text("GIF89a"),
                  ["labels/00002.png' is not a PNG"]),
    "corrupt-png": (lambda r: _corrupt_body(r / "gta5" / "images" / "00002.png"),
                    ["images/00002.png'", "corrupt"]),
    "label-id-outside-the-table": (_label_ids([[7, 40, 0, 0], [0, 0, 0, 0]]),
                                   ["labels/00002.png' holds id 40 outside the class table"]),
    "target-without-val-split": (lambda r: __import__("shutil").rmtree(r / "cityscapes" / "leftImg8bit" / "val"),
                                 ["cityscapes' has no leftImg8bit/val/ folder"]),
    "label-of-another-size": (lambda r: write_label(
        next((r / "cityscapes" / "gtFine" / "val").rglob("*_labelIds.png")), np.zeros((3, 4), np.uint8)),
        ["is 4x2 but its label", "_gtFine_labelIds.png' is 4x3"]),
}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    make_gta5(root / "gta5")
    make_cityscapes(root / "cityscapes")
    return root


def _config(root) -> Config:
    return Config.from_dict({"data": {"source": "gta5", "target": "cityscapes", "source_root": str(root / "gta5"),
                                      "target_root": str(root / "cityscapes")},
                             "model": {"backbone": "small"}})


@pytest.mark.control
def test_a_good_tree_passes_the_check(tree):
    check_data(_config(tree))


@pytest.mark.parametrize("name", list(BREAKS))
def test_study_command_refuses_a_bad_tree_before_anything_starts(tree, tmp_path, capsys, name):
    import ray

    breaks, needles = BREAKS[name]
    breaks(tree)
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\npreset: smoke\nvariants: [source-only]\nseeds: [0]\n")
    storage = tmp_path / "studies"
    rc = ablation_main()(["--grid", str(grid), "--dataset", "gta5", "--data-root", str(tree),
                          "--storage", str(storage)])
    assert_refused(rc, capsys.readouterr().err, *needles)
    assert not storage.exists() and not ray.is_initialized()


@pytest.mark.parametrize("name", ["no-labels-folder", "image-without-label", "corrupt-png",
                                  "label-id-outside-the-table"])
def test_train_command_refuses_a_bad_tree_before_the_run_folder_exists(tree, tmp_path, capsys, name):
    from proda.train import main

    breaks, needles = BREAKS[name]
    breaks(tree)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(_config(tree).to_yaml())
    out = tmp_path / "run"
    rc = main(["--variant", "source-only", "--config", str(cfg), "--out", str(out)])
    assert_refused(rc, capsys.readouterr().err, *needles)
    assert not out.exists()


def test_train_command_as_a_subprocess_names_a_truncated_png(tree, tmp_path):
    _truncate(tree / "cityscapes" / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(tree).to_dict()))
    out = tmp_path / "run"
    p = run_cli(["-m", "proda.train", "--variant", "source-only", "--config", str(cfg), "--out", str(out)])
    assert_refused(p.returncode, p.stderr, "aachen_000001_000019_gtFine_labelIds.png' is truncated")
    assert not out.exists()


def test_missing_data_root_is_named(tmp_path, capsys):
    rc = ablation_main()(["--grid", "smoke", "--dataset", "gta5", "--data-root", str(tmp_path / "nope"),
                          "--storage", str(tmp_path / "s")])
    assert_refused(rc, capsys.readouterr().err, f"--data-root '{tmp_path / 'nope'}' does not exist")


def test_data_root_without_the_dataset_folders_is_named(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    rc = ablation_main()(["--grid", "smoke", "--dataset", "gta5", "--data-root", str(tmp_path / "data"),
                          "--storage", str(tmp_path / "s")])
    assert_refused(rc, capsys.readouterr().err, "has none of the folders ['gta5', 'GTA5', 'gta5']")


def test_unknown_dataset_name_is_refused(tmp_path, capsys):
    rc = ablation_main()(["--grid", "smoke", "--dataset", "gta6", "--storage", str(tmp_path / "s")])
    assert_refused(rc, capsys.readouterr().err, "--dataset 'gta6': must be one of ['synthetic', 'gta5', 'synthia']")


@pytest.mark.control
def test_the_check_names_a_bad_file_deep_in_a_big_split_only_when_read(tmp_path):
    """Documented limit: only the PNG envelope of every file is checked up front; the ids of a label
    outside the decoded sample are checked when its batch is read (the same one-line DataError)."""
    from proda.data import open_dataset

    root = make_gta5(tmp_path / "gta5", n=20)
    write_label(root / "labels" / "00003.png", np.full_like(GOOD_IDS, 40))
    ds = open_dataset("gta5", root)
    ds.check_files(decode=2)  # items 0 and 19 only
    with pytest.raises(DataError, match="00003.png' holds id 40"):
        ds[3]
