"""Images/s the input pipeline delivers at the paper's sizes, with 0 and N loader workers side by side,
against the images/s a paper-size stage-1 step consumes; and the share of a step the training loop
waits for its next batches (issue 13; RESULTS.md "Input pipeline at the paper's sizes").

    python benchmarks/input_pipeline.py [--workers 0,1,2] [--images 24] [--batches 8] [--steps 12]
        [--gpu-step-s S --gpu-step-batch B] [--measure-cpu-step] [--data-dir DIR]

Data: GTA5-like (1052×1914) and Cityscapes-like (1024×2048) trees by tests/trees.py, ``--distinct`` pairs
written and hard-linked to ``--images`` names (page-cached: disk reads are not measured). The pipeline is the
stages': ``open_split`` + ``BatchStream`` of ``paper-gta5`` (source with labels, target without),
``data.num_workers`` = each ``--workers`` value per stream.
1. delivery, each stream alone: images/s after the read-ahead; the training thread's CPU ms per image.
2. the loop: both streams per step, moved to the device (``to_device``), then a fake step (``time.sleep``) of
   0 s (steps/s sustained), of the length the pipeline has 3× headroom for, and of ``--gpu-step-s``: the
   share of the loop's wall time spent waiting for data, and the part of it in the streams' ``next``.
3. consumption: 2·batch images per step; the CPU step of R101 is RESULTS.md §6's (memory.py, batch 1) unless
   ``--measure-cpu-step`` runs memory.py's child (~200 s, ~13 GB); the GPU step from ``--gpu-step-s``.
4. a projection (not a measurement) to ``--vcpus`` (g5.12xlarge: 12): the 0-worker CPU cost per step over
   vCPUs − 1 cores, and over half of them (should SMT threads give no more than one core).
The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit, machine, now, parser, run_child, say, sync, table, timed  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
# figure of benchmarks/RESULTS.md §6 (memory.py, 2026-11-26, 2 threads): one paper-gta5 stage-1 step, batch 1
RESULTS_CPU_STEP = {"step_s": 200.2, "batch": 1,
                    "source": "benchmarks/RESULTS.md §6 (memory.py, 2026-11-26, 2 threads)"}
CITIES = ("aachen", "bremen")  # the cities tests/trees.py writes, alternately


def make_trees(root: Path, n: int, distinct: int, gta_size, cs_size) -> None:
    """GTA5 and Cityscapes trees of ``n`` train images each under ``root`` (``distinct`` written, the rest hard
    links); kept and reused when ``root/tree.json`` says the same sizes."""
    import trees

    spec = {"n": n, "distinct": distinct, "gta5": list(gta_size), "cityscapes": list(cs_size)}
    marker = root / "tree.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return
    for d in ("gta5", "cityscapes"):
        shutil.rmtree(root / d, ignore_errors=True)
    k = min(distinct, n)
    gta = trees.make_gta5(root / "gta5", n=k, size=tuple(gta_size))
    cs = trees.make_cityscapes(root / "cityscapes", n_train=k, n_val=0, size=tuple(cs_size))
    for i in range(k, n):
        for sub in ("images", "labels"):
            os.link(gta / sub / f"{i % k:05d}.png", gta / sub / f"{i:05d}.png")
        j, city = i % k, CITIES[i % k % 2]
        for sub, kind in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
            folder = cs / sub / "train" / city
            os.link(folder / f"{city}_{j:06d}_000019_{kind}.png", folder / f"{city}_{i:06d}_000019_{kind}.png")
    marker.write_text(json.dumps(spec))


def png_mb(root: Path) -> dict:
    paths = {"gta5": root / "gta5/images/00000.png",
             "cityscapes": root / "cityscapes/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"}
    return {k: round(p.stat().st_size / 1e6, 2) for k, p in paths.items()}


def pipeline_config(root: Path, workers: int, a):
    from proda.presets import make_config

    return make_config("paper-gta5", "pd+sl", 0, {
        "data.source_root": str(root / "gta5"), "data.target_root": str(root / "cityscapes"),
        "data.num_workers": workers, "data.full_size": list(a.full_size), "data.crop": list(a.crop),
        **({"data.batch_size": a.batch} if a.batch else {})})


def streams(cfg):
    """The two streams of a Stage1, as it opens them: source with labels, target without."""
    from proda.data.stream import BatchStream, open_split

    bs = cfg.data.batch_size
    return (BatchStream(open_split(cfg, "source", "train"), bs, seed=1),
            BatchStream(open_split(cfg, "target", "train"), bs, seed=2, with_labels=False))


def read_ahead(stream) -> int:  # batches the workers read ahead of the training thread
    return stream.split.prefetch_factor * stream.split.num_workers


def deliver(stream, batches: int) -> dict:
    """One stream alone: first batch (workers starting), the read-ahead drained, then ``batches``."""
    t0 = now()
    stream.next()
    startup = now() - t0
    for _ in range(read_ahead(stream)):
        stream.next()
    c0, t0 = time.thread_time(), now()
    for _ in range(batches):
        stream.next()
    wall, cpu, n = now() - t0, time.thread_time() - c0, batches * stream.batch_size
    stream.close()
    return {"startup_s": startup, "images_per_s": n / wall, "thread_ms_per_image": 1000 * cpu / n}


def loop(cfg, steps: int, step_s: float, device) -> dict:
    """The training loop's view: per step the next source and target batches, on the device, then a fake step
    of ``step_s`` seconds. The wait is the time from asking for the batches to having them."""
    from proda.data.stream import to_device

    src, tgt = streams(cfg)

    def data():  # returns the seconds in the streams' ``next`` (the rest: to the device, as the stages do)
        t0 = now()
        _, x, y = src.next()
        _, xt, _ = tgt.next()
        t1 = now()
        to_device(x, y, device), to_device(xt, None, device)
        sync(device)
        return t1 - t0

    for _ in range(1 + read_ahead(src)):
        data()
    waits, in_streams, t0 = [], [], now()
    for _ in range(steps):
        w0 = now()
        in_streams.append(data())
        waits.append(now() - w0)
        time.sleep(step_s)
    wall = now() - t0
    src.close(), tgt.close()
    return {"step_s": step_s, "steps_per_s": steps / wall, "images_per_s": steps * 2 * cfg.data.batch_size / wall,
            "wait_share": sum(waits) / wall, "stream_wait_share": sum(in_streams) / wall,
            "wait_median_s": statistics.median(waits), "wait_max_s": max(waits)}


def transforms_s(cfg, device, reps: int = 3) -> float:
    """Seconds per step of the stage's data transforms on ``device`` (inside the step, not the pipeline):
    source weak view + its labels, target weak view + strong view, normalised."""
    import torch

    from proda.data.augment import full_to_weak, normalize, strong_view, weak_view

    d, g = cfg.data, torch.Generator().manual_seed(0)
    x = torch.rand(d.batch_size, 3, *d.full_size, generator=g).to(device)
    y = torch.randint(0, 19, (d.batch_size, *d.full_size), generator=g).to(device)

    def run():
        xw, pw = weak_view(x, d.crop, scale=d.crop_scale, generator=g)
        full_to_weak(y[:, None].float(), pw, d.crop, mode="nearest")
        normalize(xw)
        tw, _ = weak_view(x, d.crop, scale=d.crop_scale, generator=g)
        normalize(strong_view(tw, generator=g)[0])

    run()
    return statistics.median(timed(run, device) for _ in range(reps))


def measure(root: Path, a, device) -> dict:
    B, N = pipeline_config(root, 0, a).data.batch_size, a.workers[-1]
    res = {"device": str(device), "batch": B, "png_mb": png_mb(root), "workers": {}}
    for n in a.workers:
        cfg = pipeline_config(root, n, a)
        src, tgt = streams(cfg)
        res["workers"][n] = {"source": deliver(src, a.batches), "target": deliver(tgt, a.batches),
                             "loop": loop(cfg, a.batches, 0.0, device)}
    res["full_size"], wn = list(cfg.data.full_size), res["workers"][N]

    # consumption: 2·batch images per step
    if a.measure_cpu_step:  # one paper-size Stage1 step (R101, batch 1) on this CPU, by memory.py's child
        kw = {"crop": [512, 896], "full": [1024, 2048], "batch": 1, "amp": "off", "accum": 1, "early": False}
        step = run_child(str(ROOT / "benchmarks" / "memory.py"), ["--child", "paper", "--args", json.dumps(kw)])
        res["steps"] = {"cpu": {"step_s": step["seconds"], "batch": 1, "source": "measured in this run (memory.py)"}}
    else:
        res["steps"] = {"cpu": dict(RESULTS_CPU_STEP)}
    if a.gpu_step_s:
        res["steps"]["gpu"] = {"step_s": a.gpu_step_s, "batch": a.gpu_step_batch or B, "source": a.gpu_step_source}
    for st in res["steps"].values():
        st["images_per_s"] = 2 * st["batch"] / st["step_s"]
        st["headroom_here"] = wn["loop"]["images_per_s"] / st["images_per_s"]
    res["transforms_s_per_step"] = transforms_s(cfg, device)

    # wait share: a fake step the measured pipeline (N workers) has 3× headroom for, and the GPU step
    gpu_s = a.gpu_step_s * B / res["steps"]["gpu"]["batch"] if a.gpu_step_s else None  # at this batch
    res["wait"] = {"headroom_3x": loop(cfg, a.steps, a.headroom / wn["loop"]["steps_per_s"], device)}
    if gpu_s:
        res["wait"]["gpu_step"] = loop(cfg, a.steps, gpu_s, device)

    # projection: single-core cost per image (0 workers: the training thread does it all)
    if 0 in res["workers"]:
        ms_step = B * sum(res["workers"][0][k]["thread_ms_per_image"] for k in ("source", "target"))
        thread_ms = B * sum(wn[k]["thread_ms_per_image"] for k in ("source", "target"))
        res["projection"] = proj = {"cpu_ms_per_step": ms_step, "training_thread_ms_per_step": thread_ms}
        for key, cores in (("cores_11", a.vcpus - 1), ("cores_smt_half", a.vcpus // 2 - 1)):
            sps = cores * 1000 / ms_step
            proj[key] = {"cores": cores, "images_per_s": 2 * B * sps, "min_step_s_for_headroom": a.headroom / sps}
            if gpu_s:
                proj[key].update(headroom_at_gpu_step=sps * gpu_s, thread_share_at_gpu_step=thread_ms / 1000 / gpu_s)
    res["load_avg_end"] = os.getloadavg()[0]  # other processes on this machine slow the wall-clock figures
    return res


def report(res: dict, a) -> None:
    B, N, W = res["batch"], a.workers[-1], res["workers"]
    say(f"\ndelivery (full size {res['full_size']}, batch {B}; loop = both streams per step, no step):")
    say(table(["workers/stream", "GTA5 img/s", "Cityscapes img/s", "loop img/s", "loop steps/s", "GTA5 thread ms/img",
               "CS thread ms/img", "start s"],
              [[n, v["source"]["images_per_s"], v["target"]["images_per_s"], v["loop"]["images_per_s"],
                v["loop"]["steps_per_s"], v["source"]["thread_ms_per_image"], v["target"]["thread_ms_per_image"],
                max(v["source"]["startup_s"], v["target"]["startup_s"])] for n, v in W.items()]))
    say(f"\nconsumption (2·batch images per step; headroom = the loop's img/s at {N} workers/stream ÷ need):")
    say(table(["step", "s/step", "batch", "img/s needed", f"headroom here ({N} w)", "figure from"],
              [[k, v["step_s"], v["batch"], v["images_per_s"], v["headroom_here"], v["source"]]
               for k, v in res["steps"].items()]))
    say(f"transforms (crop {a.crop}, weak + strong views) on {res['device']}: {res['transforms_s_per_step']:.3f} s "
        f"per step of batch {B} (inside the step, not the pipeline); load average at the end {res['load_avg_end']:.2f}")
    say(f"\nwait share of the loop ({N} workers per stream, {a.steps} steps after the read-ahead is drained):")
    say(table(["fake step", "step s", "wait share", "of it in next()", "median wait s", "max wait s", "steps/s"],
              [[k, v["step_s"], v["wait_share"], v["stream_wait_share"], v["wait_median_s"], v["wait_max_s"],
                v["steps_per_s"]] for k, v in res["wait"].items()]))
    p = res.get("projection")
    if p:
        say(f"\nPROJECTION to {a.vcpus} vCPUs (not measured): {p['cpu_ms_per_step']:.0f} ms of one core here per "
            f"step of batch {B} (source + target), {p['training_thread_ms_per_step']:.0f} ms of it stays on the "
            f"training thread with workers")
        say(table(["cores for workers", "cores", "img/s", f"min step s for {a.headroom:g}×", "headroom at GPU step",
                   "thread share at GPU step"],
                  [[k, v["cores"], v["images_per_s"], v["min_step_s_for_headroom"],
                    v.get("headroom_at_gpu_step", "-"), v.get("thread_share_at_gpu_step", "-")]
                   for k, v in p.items() if isinstance(v, dict)]))


def parse(argv=None):
    def pair(s: str) -> tuple[int, int]:
        return tuple(int(v) for v in s.split(","))

    ap = parser(__doc__)
    ap.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2],
                    help="data.num_workers values, per stream (ascending; include 0 for the projection)")
    ap.add_argument("--images", type=int, default=24, help="train images per dataset")
    ap.add_argument("--distinct", type=int, default=8, help="of them written; the others hard links")
    ap.add_argument("--batches", type=int, default=8, help="measured batches per delivery figure")
    ap.add_argument("--steps", type=int, default=12, help="measured steps per wait-share figure")
    ap.add_argument("--batch", type=int, default=None, help="data.batch_size (default: the preset's)")
    ap.add_argument("--full-size", type=pair, default=(1024, 2048))
    ap.add_argument("--crop", type=pair, default=(512, 896))
    ap.add_argument("--gta-size", type=pair, default=(1052, 1914))
    ap.add_argument("--cs-size", type=pair, default=(1024, 2048))
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the trees here (default: a temp dir)")
    ap.add_argument("--gpu-step-s", type=float, default=None, help="seconds of a GPU step (none measured here)")
    ap.add_argument("--gpu-step-batch", type=int, default=None, help="the batch of that step (default --batch)")
    ap.add_argument("--gpu-step-source", default="--gpu-step-s (given)", help="where the GPU figure comes from")
    ap.add_argument("--measure-cpu-step", action="store_true", help="measure the R101 CPU step (~200 s, 13 GB)")
    ap.add_argument("--vcpus", type=int, default=12, help="vCPUs per GPU for the projection (g5.12xlarge: 12)")
    ap.add_argument("--headroom", type=float, default=3.0, help="the delivery goal, × what the step needs")
    ap.add_argument("--cpu", action="store_true", help="keep batches on the CPU even with a GPU")
    a = ap.parse_args(argv)
    if a.workers != sorted(a.workers) or min(a.workers) < 0:
        ap.error(f"--workers: {a.workers} must be ascending and ≥ 0")
    return a


def sig(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits: fixed decimals round a sub-millisecond figure at a tiny size to 0."""
    return float(f"{x:.{digits}g}")


def main(argv=None) -> int:
    import torch

    a = parse(argv)
    say(machine())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the training thread as a worker runs (proda.data.stream._one_thread)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.cpu else "cpu")
    tmp = None if a.data_dir else Path(tempfile.mkdtemp(prefix="proda-input-pipeline-"))
    try:
        t0 = now()
        make_trees(a.data_dir or tmp, a.images, a.distinct, a.gta_size, a.cs_size)
        say(f"trees in {a.data_dir or tmp}: {a.images} images per dataset ({a.distinct} distinct), GTA5 "
            f"{a.gta_size}, Cityscapes {a.cs_size}; {now() - t0:.1f} s")
        res = measure(a.data_dir or tmp, a, device)
    finally:
        torch.set_num_threads(threads)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report(res, a)
    w = res["wait"]["headroom_3x"]
    out = {"batch": res["batch"], "full_size": res["full_size"], "png_mb": res["png_mb"], "device": res["device"],
           **{f"w{n}_{k}_images_per_s": round(v[k]["images_per_s"], 2)
              for n, v in res["workers"].items() for k in ("source", "target", "loop")},
           **{f"w{n}_thread_ms_per_image": sig((v["source"]["thread_ms_per_image"]
                                                + v["target"]["thread_ms_per_image"]) / 2)
              for n, v in res["workers"].items()},
           **{f"{k}_step_images_per_s": round(v["images_per_s"], 6) for k, v in res["steps"].items()},
           **{f"{k}_step_headroom_here": round(v["headroom_here"], 2) for k, v in res["steps"].items()},
           "transforms_s_per_step": round(res["transforms_s_per_step"], 4),
           "wait_share_at_3x": round(w["wait_share"], 4), "step_s_at_3x": round(w["step_s"], 3),
           "stream_wait_share_at_3x": round(w["stream_wait_share"], 4), "load_avg_end": round(res["load_avg_end"], 2)}
    if "gpu_step" in res["wait"]:
        out["wait_share_at_gpu_step_here"] = round(res["wait"]["gpu_step"]["wait_share"], 4)
    for k, v in res.get("projection", {}).items():
        if isinstance(v, dict):
            out[f"projected_{k}_min_step_s"] = sig(v["min_step_s_for_headroom"])  # tiny sizes: < 1 ms
            if "headroom_at_gpu_step" in v:
                out[f"projected_{k}_headroom_at_gpu_step"] = sig(v["headroom_at_gpu_step"])
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
