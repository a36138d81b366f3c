import os

import pytest
import torch

# tests share one small embedded-benchmark cache and stay on few threads (2-core CI machine)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    """A per-session cache folder for the embedded benchmark (its images are generated on first use)."""
    path = os.environ.get("PRODA_TEST_CACHE") or str(tmp_path_factory.mktemp("synthetic-cache"))
    return path


@pytest.fixture(scope="session")
def ray_address():
    """The session's local Ray, for studies run as `ablation.py --address ADDR`: each study's driver joins it
    instead of starting (and stopping) a Ray of its own. Started by ray.init in this process, so that
    ray.shutdown at the end stops exactly the processes it started; a driver must inherit this process's
    environment (ray.init sets RAY_AUTH_MODE=token there: without it the cluster refuses the driver)."""
    import ray

    ray.init(address="local", log_to_driver=False, configure_logging=False, dashboard_host="127.0.0.1")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def tiny_config(synthetic_cache, variant="pd+sl", **overrides):
    """The smoke preset on a small slice of the embedded benchmark: fast enough for unit tests."""
    from proda.presets import make_config

    base = {"data.source_root": synthetic_cache, "data.target_root": synthetic_cache,
            "data.synthetic_scale": 0.05, "data.batch_size": 4, "warmup.steps": 4, "stage1.steps": 4,
            "distill.steps": 4, "checkpoint_interval": 1, "log_interval": 2, "eval.interval": 1000,
            "eval.max_images": 8, "eval.batch_size": 8,
            # SGD: one step is linear in the gradient, so DDP / accumulation comparisons are tight
            "optim.optimizer": "sgd", "optim.momentum": 0.9}
    return make_config("smoke", variant, 0, {**base, **overrides})


def tensorboard_scalars(run_dir):
    """The scalars (tag → [(step, value)]) of the TensorBoard event files in ``run_dir``, read as TFRecords of
    Event protos (tensorboardX's own protobuf classes; the tensorboard package is not a dependency)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4  # length, its crc, the record, its crc
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out
