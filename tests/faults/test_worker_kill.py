"""A worker process killed mid-node (SIGKILL): Tune retries the trial, the node resumes from its last checkpoint
in a new process, and its final weights and metrics equal those of an undisturbed run, bit for bit (CPU).

A 1-worker CPU node runs in Ray Train's local mode inside its Tune trial actor (``ray::ImplicitFunc``): that
actor is the worker process killed (see the ``interrupted_study`` fixture, which afterwards also kills the
driver)."""

import json
import re

import pytest

from .conftest import same_weights

pytestmark = [pytest.mark.ray]
WORKER_KILL = "SIGKILL of the worker process running a node"


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(interrupted_study, record_property):
    k = interrupted_study
    record_property("fault", WORKER_KILL)
    nid = k["stage1"][:8]
    resumed = re.findall(rf"pid=(\d+)\)\S* \[{nid}\] \[stage1\] resumed from step (\d+)", k["first"])
    assert len(resumed) == 1, "the killed node was not retried from its checkpoint"
    pid, step = int(resumed[0][0]), int(resumed[0][1])
    assert pid != k["victim"] and step >= 5 and step % 5 == 0  # a new process, from a checkpoint
    assert re.search(rf"pid={k['victim']}\)\S* \[{nid}\] \[stage1\] step 5/40", k["first"])


def test_node_resumed_after_a_worker_kill_ends_bit_identical_to_an_undisturbed_run(interrupted_study,
                                                                                  record_property):
    k = interrupted_study
    record_property("fault", WORKER_KILL)
    assert k["rc"] == 0, k["second"][-3000:]
    got, ref = k["study"] / "nodes" / k["stage1"], k["reference"] / "nodes" / k["stage1"]
    differ = same_weights(got / "model.pt", ref / "model.pt")
    done, want = json.loads((got / "done.json").read_text()), json.loads((ref / "done.json").read_text())
    record_property("results_lost", int(bool(differ) or done["miou"] != want["miou"]))
    assert differ == [], f"weights differ after the resume: {differ[:5]}"
    assert done["miou"] == want["miou"] and done["iou"] == want["iou"]
