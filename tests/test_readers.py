"""GTA5 / Cityscapes / SYNTHIA readers on tiny trees in the real layouts, and every error they report."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.io import write_png

from proda.data import DATASETS, DataError, open_dataset

# torchvision 0.29 deprecates its image codecs (for TorchCodec, not a dependency) and warns on every call.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

from trees import write_raw_png  # noqa: E402 - torchvision cannot write 16-bit or palette PNGs


def write_rgb(path: Path, h: int, w: int, seed: int = 0) -> torch.Tensor:
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(img, str(path))
    return img


def write_grey(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.as_tensor(np.asarray(ids, dtype=np.uint8))[None], str(path))


# Cityscapes label ids → expected 19-space train ids
CS_IDS = [[7, 26, 0, 255], [33, 8, 22, 27]]  # road car unlabeled void / bicycle sidewalk terrain truck
CS_TRAIN = [[0, 13, 255, 255], [18, 1, 9, 14]]
# SYNTHIA class ids → expected protocol indices under the 16 (0 road … 9 sky … 12 car … 15 bicycle) and
# 13 (0 road … 6 sky … 9 car … 12 bicycle) protocols
SY_IDS = [[3, 8, 16, 21], [5, 1, 22, 0]]  # road car terrain wall / fence sky lanemarking void
SY_16 = [[0, 12, 255, 3], [4, 9, 255, 255]]
SY_13 = [[0, 9, 255, 255], [255, 6, 255, 255]]


def make_gta5(root: Path, n: int = 2) -> Path:
    for i in range(n):
        write_rgb(root / "images" / f"{i:05d}.png", 2, 4, seed=i)
        write_raw_png(root / "labels" / f"{i:05d}.png", np.array(CS_IDS, np.uint8), palette=True)
    return root


def make_cityscapes(root: Path, split: str = "val") -> Path:
    for city, stem in (("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")):
        write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 2, 4)
        gt = root / "gtFine" / split / city
        write_grey(gt / f"{stem}_gtFine_labelIds.png", CS_IDS)
        write_grey(gt / f"{stem}_gtFine_instanceIds.png", np.zeros((2, 4)))  # siblings are not labels
    return root


def make_synthia(root: Path) -> Path:
    write_rgb(root / "RGB" / "0000000.png", 2, 4)
    lbl = np.zeros((2, 4, 3), np.uint16)
    lbl[..., 0] = SY_IDS
    lbl[..., 1] = 1000  # instance ids in the second channel: 16-bit values PIL would mangle
    write_raw_png(root / "GT" / "LABELS" / "0000000.png", lbl, bit_depth=16)
    return root


def raises(match: str):
    return pytest.raises(DataError, match=match)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- items -----------------------------------------------------------------------------------------


def test_gta5_item_maps_palette_label_ids_to_train_ids(tmp_path):
    ds = open_dataset("gta5", make_gta5(tmp_path))
    assert len(ds) == 2
    item = ds[1]
    assert item["image"].shape == (3, 2, 4) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    torch.testing.assert_close(item["image"], write_rgb(tmp_path / "x.png", 2, 4, seed=1).float() / 255)
    assert item["label"].dtype == torch.int64
    assert item["label"].tolist() == CS_TRAIN
    assert item["name"] == "images/00001.png"


def test_gta5_label_of_another_size_is_resized_to_the_image_by_nearest(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", 4, 4)
    write_grey(tmp_path / "labels" / "a.png", [[7, 26], [33, 8]])  # 2x2 label for a 4x4 image
    label = open_dataset("gta5", tmp_path)[0]["label"]
    assert label.tolist() == [[0, 0, 13, 13], [0, 0, 13, 13], [18, 18, 1, 1], [18, 18, 1, 1]]


def test_cityscapes_item_pairs_left_image_with_gtfine_label_ids(tmp_path):
    ds = open_dataset("cityscapes", make_cityscapes(tmp_path), split="val")
    assert [ds[i]["name"] for i in range(len(ds))] == [
        "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
        "leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png",
    ]
    assert ds[0]["label"].tolist() == CS_TRAIN
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 2, 4) and batch["label"].shape == (2, 2, 4)


def test_cityscapes_under_synthia_protocols_ignores_other_classes(tmp_path):
    make_cityscapes(tmp_path)
    # terrain and truck are outside the 16; car and bicycle are the 16's classes 12 and 15
    label = open_dataset("cityscapes", tmp_path, "val", 16)[0]["label"]
    assert label.tolist() == [[0, 12, 255, 255], [15, 1, 255, 255]]
    write_grey(tmp_path / "gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png", [[12, 13, 17, 7]] * 2)
    assert open_dataset("cityscapes", tmp_path, "val", 13)[1]["label"].tolist() == [[255, 255, 255, 0]] * 2
    assert open_dataset("cityscapes", tmp_path, "val", 16)[1]["label"].tolist() == [[3, 4, 5, 0]] * 2


def test_synthia_reads_16_bit_labels_under_16_and_13_classes(tmp_path):
    make_synthia(tmp_path)
    item = open_dataset("synthia", tmp_path, num_classes=16)[0]
    assert item["image"].shape == (3, 2, 4) and item["name"] == "RGB/0000000.png"
    assert item["label"].dtype == torch.int64 and item["label"].tolist() == SY_16
    assert open_dataset("synthia", tmp_path, num_classes=13)[0]["label"].tolist() == SY_13


def test_synthia_needs_a_synthia_protocol(tmp_path):
    with raises(r"num_classes=19 .*16, 13"):
        open_dataset("synthia", make_synthia(tmp_path), num_classes=19)


def test_synthetic_names_open_the_embedded_benchmark_without_generating_it_here(tmp_path, monkeypatch):
    made = []

    class FakeSynthetic(torch.utils.data.Dataset):
        def __init__(self, domain, split="train", spec=None, cache_dir=None):
            if split not in ("train", "val"):
                raise ValueError(f"split={split!r}: must be one of ['train', 'val']")
            made.append((domain, split, cache_dir))

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 1, 2), "label": torch.tensor([[9, 3]]), "name": "x"}

    monkeypatch.setitem(sys.modules, "proda.data.synthetic", types.SimpleNamespace(SyntheticDataset=FakeSynthetic))
    assert open_dataset("synthetic-source", None)[0]["label"].tolist() == [[9, 3]]
    assert open_dataset("synthetic-target", tmp_path, "val", num_classes=13)[0]["label"].tolist() == [[255, 255]]
    assert made == [("source", "train", None), ("target", "val", tmp_path)]
    with raises(r"synthetic-target: split='test'"):
        open_dataset("synthetic-target", None, "test")


# --- layout errors (constructor) -------------------------------------------------------------------


def test_unknown_dataset_lists_the_allowed_names(tmp_path):
    with raises("unknown dataset 'gta'") as err:
        open_dataset("gta", tmp_path)
    assert all(name in one_line(err) for name in DATASETS)


def test_unknown_split_lists_the_allowed_ones(tmp_path):
    with raises(r"unknown split 'training' \(allowed: train, val, test\)"):
        open_dataset("cityscapes", make_cityscapes(tmp_path), split="training")


def test_missing_root_and_missing_folder_name_the_layout(tmp_path):
    with raises(f"'{tmp_path / 'nope'}' is not a folder"):
        open_dataset("gta5", tmp_path / "nope")
    (tmp_path / "labels").mkdir()
    with raises(r"has no images/ folder \(expected GTA5 layout: images/, labels/\)") as err:
        open_dataset("gta5", tmp_path)
    assert f"data.root '{tmp_path}'" in one_line(err)
    with raises("has no leftImg8bit/train/ folder"):
        open_dataset("cityscapes", tmp_path)
    with raises("has no RGB/ folder"):
        open_dataset("synthia", tmp_path, num_classes=16)


def test_image_without_label_names_both_paths(tmp_path):
    make_gta5(tmp_path)
    (tmp_path / "labels" / "00001.png").unlink()
    with raises("has no label") as err:
        open_dataset("gta5", tmp_path)
    assert str(tmp_path / "images" / "00001.png") in one_line(err)
    assert str(tmp_path / "labels" / "00001.png") in one_line(err)


def test_cityscapes_city_without_gtfine_folder(tmp_path):
    make_cityscapes(tmp_path, "train")
    write_rgb(tmp_path / "leftImg8bit/train/ulm/ulm_000000_000019_leftImg8bit.png", 2, 4)
    with raises("has no gtFine/train/ulm/ folder"):
        open_dataset("cityscapes", tmp_path)


def test_no_images_found(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "labels").mkdir()
    with raises(f"data.root '{tmp_path}' has no images for split 'train'"):
        open_dataset("gta5", tmp_path)


# --- file errors (read time) ----------------------------------------------------------------------


def test_truncated_image_is_named(tmp_path):
    make_gta5(tmp_path)
    path = tmp_path / "images" / "00000.png"
    write_rgb(path, 64, 64)  # noise: incompressible, so half the file cuts the pixel data
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ds = open_dataset("gta5", tmp_path)  # the constructor does not read files
    with raises(f"cannot read image file '{path}'"):
        ds[0]
    assert ds[1]["label"].tolist() == CS_TRAIN


def test_corrupt_label_is_named(tmp_path):
    make_synthia(tmp_path)
    path = tmp_path / "GT" / "LABELS" / "0000000.png"
    path.write_bytes(b"not a png")
    with raises(f"cannot read label file '{path}'"):
        open_dataset("synthia", tmp_path, num_classes=16)[0]


def test_read_without_the_label_does_not_open_the_label_file(tmp_path):
    """A stream that drops the labels (the target's) asks for the image only: a label file it would
    fail on is never decoded."""
    make_synthia(tmp_path)
    (tmp_path / "GT" / "LABELS" / "0000000.png").write_bytes(b"not a png")
    ds = open_dataset("synthia", tmp_path, num_classes=16)
    img, lab = ds.read(0, label=False)
    assert lab is None and torch.equal(img, write_rgb(tmp_path / "again.png", 2, 4))  # the image written, seed 0
    with raises("cannot read label file"):
        ds.read(0)


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    make_cityscapes(tmp_path)
    lbl = tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    write_grey(lbl, np.zeros((3, 4)))
    with raises("is 4x2 but its label") as err:
        open_dataset("cityscapes", tmp_path, "val")[0]
    msg = one_line(err)
    assert "frankfurt_000000_000294_leftImg8bit.png" in msg and f"'{lbl}' is 4x3" in msg


def test_cityscapes_label_id_outside_the_table(tmp_path):
    make_cityscapes(tmp_path)
    lbl = tmp_path / "gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png"
    write_grey(lbl, [[7, 40, 34, 255]] * 2)
    ds = open_dataset("cityscapes", tmp_path, "val")
    with raises(f"label '{lbl}' holds id 34 outside the class table"):
        ds[1]


def test_colour_label_is_rejected(tmp_path):
    make_gta5(tmp_path, n=1)
    lbl = tmp_path / "labels" / "00000.png"
    write_rgb(lbl, 2, 4)
    with raises(f"label '{lbl}' has 3 channels"):
        open_dataset("gta5", tmp_path)[0]


def test_synthia_label_id_outside_the_table(tmp_path):
    make_synthia(tmp_path)
    lbl = tmp_path / "GT" / "LABELS" / "0000000.png"
    ids = np.zeros((2, 4, 3), np.uint16)
    ids[0, 0, 0] = 23
    ids[1, 1, 0] = 259  # 3 in the low byte: an 8-bit reader would take it for road
    write_raw_png(lbl, ids, bit_depth=16)
    with raises(rf"label '{lbl}' holds id 23 outside the class table \(ids found: \[23, 259\]"):
        open_dataset("synthia", tmp_path, num_classes=13)[0]
