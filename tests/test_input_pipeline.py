"""The input pipeline on real-layout trees: a DataLoader with worker processes delivers exactly the
batches of the in-thread path, a chain stopped mid-epoch and resumed is bit-identical with workers,
and a bad file is still one line naming it when a worker finds it."""

import numpy as np
import pytest
import torch

import trees
from proda import checkpoint as ckpt
from proda.data import DataError
from proda.data import stream as data
from proda.data.stream import BatchStream, eval_batches, open_split, to_device, unit_float
from proda.presets import make_config
from proda.train import run_chain

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    trees.make_gta5(root / "gta5", n=10)
    trees.make_cityscapes(root / "cityscapes", n_train=8, n_val=4)
    return root


def gta5_config(root, workers=0, variant="pd+sl", **over):
    base = {"data.source": "gta5", "data.target": "cityscapes", "data.num_classes": 19,
            "data.source_root": str(root / "gta5"), "data.target_root": str(root / "cityscapes"),
            "data.full_size": [32, 64], "data.crop": [32, 64], "data.batch_size": 2, "data.num_workers": workers,
            "warmup.steps": 7, "stage1.steps": 4, "checkpoint_interval": 1, "log_interval": 2,
            "eval.interval": 1000, "eval.batch_size": 4, "optim.optimizer": "sgd"}
    return make_config("smoke", variant, 0, {**base, **over})


def _drain(stream, n):
    return [stream.next() for _ in range(n)]


def test_workers_deliver_the_in_thread_batches_in_the_stream_order(data_root):
    """10 images, batches of 3: 3 per epoch; 8 batches cross two epoch boundaries."""
    batches = {}
    for workers in (0, 2):
        split = open_split(gta5_config(data_root, workers), "source", "train")
        assert split.num_workers == workers and split.images is None
        batches[workers] = _drain(BatchStream(split, 3, seed=5), 8)
    for (i0, x0, y0), (i2, x2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(i0, i2) and torch.equal(x0, x2) and torch.equal(y0, y2)
        assert x0.shape == (3, 3, 32, 64) and x0.dtype == torch.uint8 and y0.dtype == torch.uint8
    # what the loader delivers is what Split.get (one batch, in this thread) reads
    split = open_split(gta5_config(data_root, 0), "source", "train")
    img, lab = split.get(batches[0][4][0])
    assert torch.equal(img, batches[0][4][1]) and torch.equal(lab, batches[0][4][2])
    # every train id is in the tree and comes through (the resized last label included)
    seen = torch.cat([y.flatten() for _, _, y in batches[0]]).unique().tolist()
    assert seen == [*range(19), 255]


def test_batches_leave_the_stream_as_uint8_and_reach_the_device_as_todays_floats(data_root):
    """The stream ships uint8 (a quarter of float32's bytes); to_device makes the float images in [0, 1]
    (x / 255 in float32) and int64 labels the stages have always trained on."""
    split = open_split(gta5_config(data_root, 2), "source", "train")
    stream = BatchStream(split, 3, seed=5)
    _, x, y = stream.next()
    stream.close()
    xd, yd = to_device(x, y, torch.device("cpu"))
    assert xd.dtype == torch.float32 and torch.equal(xd, x.double().div(255).float())
    assert yd.dtype == torch.int64 and torch.equal(yd, y.long())
    assert to_device(x, None, torch.device("cpu"))[1] is None


def test_the_device_conversion_gives_the_cpus_bits_for_every_uint8_value():
    """Off the CPU, x / 255 is a gather from a table divided on the CPU: CUDA would multiply by the
    reciprocal of a Python scalar divisor, which is not the CPU's quotient for 126 of the 256 values."""
    every = torch.arange(256, dtype=torch.uint8)
    cpu = every.float().div_(255.0)
    assert torch.equal(unit_float(every), cpu) and torch.equal(data._UNIT, cpu)
    reciprocal = every.float() * torch.tensor(255.0).reciprocal()
    assert int((reciprocal != cpu).sum()) == 126
    img = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    gathered = data._unit_table(torch.device("cpu")).index_select(0, img.reshape(-1).int()).view(img.shape)
    assert torch.equal(gathered, img.float().div_(255.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_batches_are_pinned_and_convert_on_the_device_to_the_cpus_bits(data_root):
    split = open_split(gta5_config(data_root, 2, device="cuda"), "source", "train")
    stream = BatchStream(split, 3, seed=5)
    _, x, y = stream.next()
    stream.close()
    assert x.dtype == torch.uint8 and x.is_pinned() and y.is_pinned()
    xd, yd = to_device(x, y, torch.device("cuda"))
    assert xd.is_cuda and torch.equal(xd.cpu(), x.float().div_(255.0)) and torch.equal(yd.cpu(), y.long())
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unit_float(every.cuda()).cpu(), every.float().div_(255.0))


def test_a_stream_without_labels_never_decodes_a_label_file(tmp_path):
    """The target stream drops the labels: its workers do not read them, so a corrupt target label
    stops only a stream that wants it."""
    trees.make_gta5(tmp_path / "gta5", n=4)
    root = trees.make_cityscapes(tmp_path / "cityscapes", n_train=4, n_val=2)
    bad = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))[1]
    bad.write_bytes(b"not a png")
    split = open_split(gta5_config(tmp_path, workers=2, **{"data.batch_size": 4}), "target", "train")
    idx, x, y = BatchStream(split, 4, seed=0, with_labels=False).next()
    assert sorted(idx.tolist()) == [0, 1, 2, 3] and y is None and x.shape == (4, 3, 32, 64)
    with pytest.raises(DataError, match=f"cannot read label file '{bad}'"):
        BatchStream(split, 4, seed=0).next()


def test_stream_restarts_its_loader_at_the_restored_position(data_root):
    split = open_split(gta5_config(data_root, 2), "source", "train")
    straight = _drain(BatchStream(split, 3, seed=1), 6)
    first = BatchStream(split, 3, seed=1)
    _drain(first, 4)  # mid-epoch 1; its loader has read ahead
    resumed = BatchStream(split, 3, seed=1)
    resumed.load_state_dict(first.state_dict())
    for (ia, xa, _), (ib, xb, _) in zip(straight[4:], _drain(resumed, 2)):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)
    first.close()


def test_eval_batches_through_workers_keep_the_labels_at_the_files_size(data_root):
    val = open_split(gta5_config(data_root, 2), "target", "val")
    out = list(eval_batches(val, 3))
    assert [len(i) for i, _, _ in out] == [3, 1]
    assert out[0][1].shape == (3, 3, 32, 64) and out[0][2].shape == (3, 48, 96)
    ref = list(eval_batches(open_split(gta5_config(data_root, 0), "target", "val"), 3))
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[1], b[1]) for a, b in zip(out, ref))


@pytest.mark.slow
def test_chain_stopped_mid_epoch_and_resumed_with_workers_is_bit_identical(tmp_path, data_root):
    """warm-up (7 steps of 2 from 10 images: epochs of 5 batches) stopped after 3 and 6, then
    stage 1 stopped after 3 of 4: the same weights as a straight run, and as a straight run with 0 workers."""
    log = lambda s: None  # noqa: E731
    cfg = gta5_config(data_root, workers=2)
    run_chain(cfg, tmp_path / "straight", log=log)
    run_chain(gta5_config(data_root, workers=0), tmp_path / "in-thread", log=log)
    out = tmp_path / "interrupted"
    run_chain(cfg, out, log=log, stop_after_steps=3)  # warm-up: mid-epoch 1 (3 of 5 batches)
    run_chain(cfg, out, resume=True, log=log, stop_after_steps=3)  # warm-up: 6, mid-epoch 2
    assert not (out / "warmup" / "done.json").exists()
    run_chain(cfg, out, resume=True, log=log, stop_after_steps=3)  # warm-up ends (7), stage 1 stops at 3 of 4
    assert (out / "warmup" / "done.json").exists() and not (out / "stage1" / "done.json").exists()
    run_chain(cfg, out, resume=True, log=log)
    for node in ("warmup", "stage1"):
        a = ckpt.load(tmp_path / "straight" / node / "model.pt")["model"]
        for other in ("interrupted", "in-thread"):
            b = ckpt.load(tmp_path / other / node / "model.pt")["model"]
            for k in a:
                assert torch.equal(a[k], b[k]), f"{other}/{node}: {k} differs"


def test_a_bad_label_found_by_a_worker_is_one_line_naming_the_file(tmp_path):
    root = trees.make_gta5(tmp_path / "gta5", n=4)
    trees.make_cityscapes(tmp_path / "cityscapes", n_train=4, n_val=2)
    bad = root / "labels" / "00002.png"
    trees.write_raw_png(bad, np.full((40, 72), 40, np.uint8), palette=True)
    split = open_split(gta5_config(tmp_path, workers=2, **{"data.batch_size": 4}), "source", "train")
    with pytest.raises(DataError) as err:
        BatchStream(split, 4, seed=0).next()
    assert str(err.value) == (f"label '{bad}' holds id 40 outside the class table "
                              f"(ids found: [40]; expected a 1-channel PNG of label ids 0..33 or 255)")


def test_the_input_pipeline_benchmark_runs_at_a_tiny_size(tmp_path, capsys):
    """benchmarks/input_pipeline.py end to end on 64×128 trees: 0 and 1 worker, one batch each, so the
    script cannot rot; its last line is one JSON object with every figure the README section quotes."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "input_pipeline.py"
    spec = importlib.util.spec_from_file_location("input_pipeline_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    assert bench.main(["--workers", "0,1", "--images", "4", "--distinct", "2", "--batches", "1", "--steps", "1",
                       "--batch", "2", "--full-size", "64,128", "--crop", "32,56", "--gta-size", "66,120",
                       "--cs-size", "64,128", "--gpu-step-s", "0.02", "--gpu-step-batch", "2",
                       "--data-dir", str(tmp_path / "trees"), "--cpu"]) == 0
    assert torch.get_num_threads() == threads  # the benchmark gives the process its threads back
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for n in (0, 1):
        for k in ("source", "target", "loop"):
            assert out[f"w{n}_{k}_images_per_s"] > 0
        assert out[f"w{n}_thread_ms_per_image"] > 0
    assert out["batch"] == 2 and out["full_size"] == [64, 128] and out["device"] == "cpu"
    assert out["gpu_step_images_per_s"] == pytest.approx(2 * 2 / 0.02, rel=1e-3)  # source + target images per step
    assert out["cpu_step_images_per_s"] == pytest.approx(2 / 200.2, rel=1e-3)  # RESULTS.md's R101 step, batch 1
    assert 0 <= out["wait_share_at_3x"] <= 1 and 0 <= out["wait_share_at_gpu_step_here"] <= 1
    assert 0 <= out["stream_wait_share_at_3x"] <= out["wait_share_at_3x"]  # next() is part of the wait
    for k in ("cores_11", "cores_smt_half"):
        assert out[f"projected_{k}_min_step_s"] > 0 and out[f"projected_{k}_headroom_at_gpu_step"] > 0
    # the trees are in the real layouts at the sizes asked, kept for a rerun
    from torchvision.io import read_image
    assert tuple(read_image(str(tmp_path / "trees" / "gta5" / "images" / "00003.png")).shape) == (3, 66, 120)
    assert (tmp_path / "trees" / "cityscapes" / "gtFine" / "train" / "bremen"
            / "bremen_000003_000019_gtFine_labelIds.png").is_file()
