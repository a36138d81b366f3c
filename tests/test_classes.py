"""Class tables: the 19 Cityscapes classes, the SYNTHIA 16/13 protocols and the id → train-id LUTs."""

import numpy as np
import pytest
from torchvision.datasets import Cityscapes

from proda.data.classes import (
    CITYSCAPES_19,
    IGNORE_INDEX,
    LABEL_ID_TO_TRAIN_ID,
    PALETTE_19,
    SYNTHIA_13,
    SYNTHIA_16,
    SYNTHIA_ID_TO_TRAIN_ID,
    class_names,
    protocol_class_ids,
    protocol_lut,
    sub_protocol,
)

NAMES_19 = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
            "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
            "motorcycle", "bicycle")


def test_names_are_torchvision_train_classes_in_train_id_order():
    tv = {c.train_id: c.name for c in Cityscapes.classes if 0 <= c.train_id < 255}
    assert CITYSCAPES_19 == tuple(tv[i] for i in range(19)) == NAMES_19


def test_palette_holds_cityscapes_colours():
    assert PALETTE_19.shape == (19, 3) and PALETTE_19.dtype == np.uint8
    assert tuple(PALETTE_19[0]) == (128, 64, 128)  # road
    assert tuple(PALETTE_19[10]) == (70, 130, 180)  # sky
    assert tuple(PALETTE_19[13]) == (0, 0, 142)  # car
    assert tuple(PALETTE_19[18]) == (119, 11, 32)  # bicycle


def test_tables_are_read_only():
    with pytest.raises(ValueError):
        LABEL_ID_TO_TRAIN_ID[0] = 1


def test_synthia_16_drops_terrain_truck_train():
    assert set(range(19)) - set(SYNTHIA_16) == {9, 14, 16}
    assert len(SYNTHIA_16) == 16 and list(SYNTHIA_16) == sorted(SYNTHIA_16)


def test_synthia_13_further_drops_wall_fence_pole():
    assert set(SYNTHIA_16) - set(SYNTHIA_13) == {3, 4, 5}
    assert class_names(13) == ("road", "sidewalk", "building", "traffic light", "traffic sign",
                               "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle")


def test_protocol_class_ids_and_names():
    assert protocol_class_ids(19) == tuple(range(19))
    assert protocol_class_ids(16) == SYNTHIA_16 and protocol_class_ids(13) == SYNTHIA_13
    assert class_names(19) == NAMES_19 and len(class_names(16)) == 16


@pytest.mark.parametrize("bad", [0, 12, 18, 20, "19"])
def test_protocol_class_ids_rejects_other_counts(bad):
    with pytest.raises(ValueError, match=r"num_classes.*19, 16, 13"):
        protocol_class_ids(bad)


def test_protocol_lut_maps_train_ids_to_positions_in_the_protocol():
    lut = protocol_lut(16)
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert lut[0] == 0 and lut[8] == 8 and lut[10] == 9 and lut[13] == 12  # road, vegetation, sky, car
    assert lut[17] == 14 and lut[18] == 15  # motorcycle, bicycle: the last of the 16
    assert lut[9] == lut[14] == lut[16] == 255  # terrain, truck, train
    assert (lut[19:] == 255).all()
    assert [int(lut[c]) for c in SYNTHIA_16] == list(range(16))
    assert [int(protocol_lut(13)[c]) for c in SYNTHIA_13] == list(range(13))
    assert protocol_lut(19)[:19].tolist() == list(range(19))


def test_sub_protocol_picks_the_13_out_of_the_16():
    pos = sub_protocol(16, 13)
    assert len(pos) == 13 and [class_names(16)[i] for i in pos] == list(class_names(13))
    assert set(range(16)) - set(pos) == {3, 4, 5}  # wall, fence, pole
    assert sub_protocol(19, 16) == SYNTHIA_16
    with pytest.raises(ValueError, match="protocol 19 is not part of protocol 16"):
        sub_protocol(16, 19)


def test_cityscapes_label_id_lut():
    lut = LABEL_ID_TO_TRAIN_ID
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert lut[7] == 0  # road
    assert lut[26] == 13  # car
    assert lut[33] == 18  # bicycle
    for void in (0, 1, 6, 9, 14, 29, 30, 34, 254, 255):  # unlabeled, ego vehicle, ground, parking, ...
        assert lut[void] == IGNORE_INDEX
    assert sorted(set(lut.tolist()) - {255}) == list(range(19))


def test_synthia_lut_matches_official_valid_classes():
    # data/synthia_dataset.py of the ProDA release: SYNTHIA ids in 19-class train-id order
    official_19 = [3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11]
    lut = SYNTHIA_ID_TO_TRAIN_ID
    for train_id, sid in enumerate(official_19):
        assert lut[sid] == (train_id if train_id in SYNTHIA_16 else 255)
    assert lut[3] == 0 and lut[8] == 13  # road, car
    assert lut[16] == lut[18] == lut[20] == 255  # terrain, truck, train: outside the 16
    assert lut[0] == lut[13] == lut[14] == lut[22] == 255  # void, parking-slot, road-work, lanemarking
    assert (lut[23:] == 255).all()
