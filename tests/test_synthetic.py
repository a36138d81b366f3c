"""The embedded synthetic benchmark: deterministic, well-formed, two domains that really differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proda.data import synthetic
from proda.data.synthetic import (
    SYNTHETIC_VERSION,
    SyntheticDataset,
    SyntheticSpec,
    generate,
    load_split,
)

ROAD, SKY, PERSON, TRUCK, BUS, BICYCLE = 0, 10, 11, 14, 15, 18
N = 40  # images per domain in the shared sample
SPEC = SyntheticSpec(n_source_train=N, n_target_train=N, n_target_val=4, seed=0)
TINY = SyntheticSpec(height=32, width=64, n_source_train=3, n_target_train=2, n_target_val=2, seed=1)


@pytest.fixture(scope="module")
def sample() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {d: generate(SPEC, d, "train") for d in ("source", "target")}


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    a, b = generate(TINY, "target", "train"), generate(TINY, "target", "train")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = generate(SyntheticSpec(**{**TINY.__dict__, "seed": 2}), "target", "train")
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_an_image_does_not_depend_on_how_many_are_generated():
    small = generate(TINY, "source", "train")
    more = generate(SyntheticSpec(**{**TINY.__dict__, "n_source_train": 5}), "source", "train")
    np.testing.assert_array_equal(small[0], more[0][:3])
    np.testing.assert_array_equal(small[1], more[1][:3])


def test_splits_and_domains_are_different_images():
    src, tgt = generate(TINY, "source", "train"), generate(TINY, "target", "train")
    val = generate(TINY, "target", "val")
    assert not np.array_equal(tgt[1], val[1]) and not np.array_equal(src[1][:2], tgt[1])


def test_shapes_and_dtypes(sample):
    images, labels = sample["source"]
    assert images.shape == (N, 3, SPEC.height, SPEC.width) and images.dtype == np.uint8
    assert labels.shape == (N, SPEC.height, SPEC.width) and labels.dtype == np.uint8


@pytest.mark.parametrize("domain", ["source", "target"])
def test_all_19_classes_appear_and_labels_are_train_ids(sample, domain):
    labels = sample[domain][1]
    values = set(np.unique(labels).tolist())
    assert values <= set(range(19)) | {255}
    assert set(range(19)) <= values, f"missing classes in {domain}: {sorted(set(range(19)) - values)}"


@pytest.mark.parametrize("domain", ["source", "target"])
def test_sky_lies_above_road(sample, domain):
    labels = sample[domain][1]
    rows = np.arange(SPEC.height)[None, :, None]
    rows = np.broadcast_to(rows, labels.shape)
    assert rows[labels == SKY].mean() + 10 < rows[labels == ROAD].mean()


def test_road_keeps_its_colour_across_domains(sample):
    """v3+: road keeps its hue across domains (frequent classes stay separable across the shift)."""
    def road_rgb(domain):
        images, labels = sample[domain]
        return images.transpose(0, 2, 3, 1)[labels == ROAD].astype(float)  # (n, 3)

    src, tgt = road_rgb("source"), road_rgb("target")
    assert 2 < np.abs(src.mean(0) - tgt.mean(0)).sum() < 30  # shifted, not swapped


def test_class_frequencies_differ_between_domains(sample):
    # the target ("real") has more persons and bicycles, the source ("rendered") more trucks and buses
    freq = {d: np.bincount(sample[d][1].ravel(), minlength=256)[:19] / sample[d][1].size for d in sample}
    assert freq["target"][PERSON] > 1.5 * freq["source"][PERSON]
    assert freq["target"][BICYCLE] > 1.5 * freq["source"][BICYCLE]
    assert freq["source"][TRUCK] + freq["source"][BUS] > 1.5 * (freq["target"][TRUCK] + freq["target"][BUS])


def test_target_is_noisier_than_source(sample):
    # sensor noise: the mean absolute difference between horizontal neighbours inside flat sky regions
    def roughness(domain):
        images, labels = sample[domain]
        inside = (labels[:, :, 1:] == SKY) & (labels[:, :, :-1] == SKY)
        diff = np.abs(np.diff(images.astype(np.int16), axis=-1)).mean(1)  # (N, H, W-1)
        return diff[inside].mean()

    assert roughness("target") > 1.5 * roughness("source")


def test_cache_writes_once_and_reuses(tmp_path, monkeypatch):
    images, labels = load_split("target", "val", TINY, cache_dir=tmp_path)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 64) and labels.shape == (2, 32, 64)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(SYNTHETIC_VERSION in f and f.endswith(".npy") for f in files), files
    np.testing.assert_array_equal(images.numpy(), generate(TINY, "target", "val")[0])

    def no_generation(*args, **kwargs):
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(synthetic, "generate", no_generation)
    again = load_split("target", "val", TINY, cache_dir=tmp_path)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)


def test_default_cache_folder_follows_proda_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODA_CACHE", str(tmp_path))
    folder = synthetic.cache_folder(TINY)
    assert folder.parent == tmp_path / "synthetic" and folder.name.startswith(SYNTHETIC_VERSION + "-")
    assert synthetic.cache_folder(SyntheticSpec(**{**TINY.__dict__, "seed": 7})) != folder


def test_dataset_items(tmp_path):
    ds = SyntheticDataset("source", "train", spec=TINY, cache_dir=tmp_path)
    assert len(ds) == 3 and ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.uint8
    item = ds[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 64)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["label"].dtype == torch.int64 and item["label"].shape == (32, 64)
    assert isinstance(item["name"], str) and item["name"] != ds[0]["name"]


@pytest.mark.parametrize("domain, split, word", [("real", "train", "domain"), ("target", "test", "split"),
                                                 ("source", "validation", "split")])
def test_unknown_domain_or_split_is_refused(tmp_path, domain, split, word):
    with pytest.raises(ValueError, match=word):
        SyntheticDataset(domain, split, spec=TINY, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=word):
        generate(TINY, domain, split)
