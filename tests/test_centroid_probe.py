"""benchmarks/centroid_probe.py's item-5 check: the verdict on a probe result (no model: the probe's figures
are given; the probe itself runs on real studies, benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "centroid_probe.py"


@pytest.fixture(scope="module")
def probe_mod():
    spec = importlib.util.spec_from_file_location("centroid_probe", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _res(classifier, centroid, **precision):
    return {"classifier": classifier, "nearest_gt_centroid": centroid,
            "frequent": {k: {"share": 10.0, "precision": v, "recall": 80.0, "confident_precision": 95.0}
                         for k, v in precision.items()}}


def test_check_passes_when_centroids_win_and_frequent_labels_are_right(probe_mod):
    assert probe_mod.check(_res(75.0, 78.0, road=92.0, car=80.0)) == []


def test_check_names_each_failure(probe_mod):
    fails = probe_mod.check(_res(75.65, 73.66, road=89.3, sidewalk=57.7, car=67.3))
    assert len(fails) == 3, fails
    assert "73.66" in fails[0] and "75.65" in fails[0]
    assert fails[1].startswith("sidewalk: pseudo labels 57.7 %") and fails[2].startswith("car:")
    assert probe_mod.check(_res(75.0, 76.0, sidewalk=57.7), min_precision=50) == []
