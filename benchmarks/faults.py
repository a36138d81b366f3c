"""Fault tolerance and input checking in numbers: runs the fault suite (tests/faults) and the bad-input suite
(tests/bad_input) and counts faults injected and survived, bad inputs tried and refused cleanly, and results
lost (goal: 0).

    python benchmarks/faults.py            # without the multi-node test (marked slow)
    python benchmarks/faults.py --slow     # with it

Each fault test records the fault it injects (pytest ``record_property("fault", ...)``; several tests may
check one fault from different sides) and how many finished results it found lost or changed
(``results_lost``); a fault is survived when every test of it passed. Each bad-input test records the input
it tries (``bad_input``; positive controls are marked ``control`` and not counted); it is refused cleanly
when the test passed: one ``error:`` line naming the field or file, a non-zero exit, no traceback, nothing
started. A failed fault test that recorded no count is counted as one lost result.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(path: str, slow: bool) -> tuple[list[dict], float]:
    """Run one suite under pytest; one record per test case (name, outcome, properties), and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path, f"--junitxml={xml}",
                "-o", "junit_family=xunit1"]
        if not slow:
            args += ["-m", "not slow"]
        t0 = time.monotonic()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        wall = time.monotonic() - t0
        if not xml.is_file():
            sys.exit(f"error: pytest wrote no report for {path} (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
        cases = []
        for tc in ET.parse(xml).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if tc.find(tag) is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
            props = {p.get("name"): p.get("value") for p in tc.iter("property")}
            cases.append({"name": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome, "props": props,
                          "time": float(tc.get("time") or 0)})
        print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else f"{path}: no output", flush=True)
        return cases, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slow", action="store_true", help="include the multi-node test (a few minutes more)")
    args = ap.parse_args()

    faults, f_wall = run_suite("tests/faults", args.slow)
    bad, b_wall = run_suite("tests/bad_input", args.slow)

    by_fault: dict[str, list[dict]] = defaultdict(list)
    lost = 0
    for c in faults:
        if "fault" in c["props"]:
            by_fault[c["props"]["fault"]].append(c)
            if "results_lost" in c["props"]:
                lost += int(c["props"]["results_lost"])
            elif c["outcome"] in ("failed", "error"):
                lost += 1
    injected = {f: cs for f, cs in by_fault.items() if not all(c["outcome"] == "skipped" for c in cs)}
    survived = [f for f, cs in injected.items() if all(c["outcome"] in ("passed", "skipped") for c in cs)]
    tried = [c for c in bad if "bad_input" in c["props"] and c["outcome"] != "skipped"]
    refused = [c for c in tried if c["outcome"] == "passed"]
    skipped = [c["name"] for c in faults + bad if c["outcome"] == "skipped"]

    print(f"\n{'fault injected':<78} {'tests':>5} {'survived':>9}")
    for f, cs in sorted(injected.items()):
        print(f"{f[:78]:<78} {len(cs):>5} {'yes' if f in survived else 'NO':>9}")
    print(f"\nfault suite: {len(faults)} tests in {f_wall:.0f} s; bad-input suite: {len(bad)} tests in {b_wall:.0f} s")
    not_clean = [c["name"] for c in tried if c["outcome"] != "passed"]
    if not_clean:
        print("bad inputs NOT refused cleanly:\n  " + "\n  ".join(not_clean))
    if skipped:
        print("skipped here:\n  " + "\n  ".join(skipped))
    checks = [c["name"] for c in faults + bad if c["outcome"] in ("failed", "error")]
    if checks:
        print("failed:\n  " + "\n  ".join(checks))
    print(json.dumps({"faults_injected": len(injected), "faults_survived": len(survived),
                      "bad_inputs_tried": len(tried), "bad_inputs_refused_cleanly": len(refused),
                      "results_lost": lost}))


if __name__ == "__main__":
    main()
