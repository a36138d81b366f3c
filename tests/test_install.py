"""The installed environment runs what the cluster configs run on a head node.

``ray up`` ends in each config's ``head_start_ray_commands``; tests/cluster/rayup_e2e.sh runs the loopback one
for real. These tests run the same ``ray start --head`` command (every config's own flags) with the ``ray``
of the interpreter running the tests, so an environment installed from pyproject alone that lacks what a flag
needs — the Ray Client server behind ``--ray-client-server-port``, the dashboard and its job API — fails
here, in seconds, with Ray's own message.

Each head gets free ports, its own RAY_TMPDIR and token, and ``--block``: the test stops it by signalling
that one process (Ray then stops its own services) and never runs ``ray stop``, which would stop every Ray
of this user on the machine.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
HEAD_CONFIGS = [ROOT / "cluster.yaml", ROOT / "experiments/clusters/onprem.yaml",
                ROOT / "experiments/clusters/loopback.yaml.in"]
# flags whose values are this machine's business: a free port each, so no other Ray here is touched
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--object-manager-port")
LAUNCHER_ONLY = ("--autoscaling-config",)  # a file `ray up` writes on the head; not ours to give
PLACEHOLDER = re.compile(r"@([A-Z_]+)@")  # a template's fields: ports get 0 (replaced below), others a word


def fill(match: re.Match) -> str:
    return "0" if match.group(1).endswith("PORT") or "_PORT_" in match.group(1) else "filled"


def head_start_flags(config: Path) -> list[str]:
    """The flags of the config's `ray start --head` command (after any `ulimit ...;`), templates filled."""
    commands = yaml.safe_load(PLACEHOLDER.sub(fill, config.read_text()))["head_start_ray_commands"]
    starts = [c for c in commands if "ray start --head" in c]
    assert len(starts) == 1, f"{config}: expected one `ray start --head` in head_start_ray_commands"
    command = starts[0].split(";")[-1]
    words = shlex.split(command)
    assert words[:3] == ["ray", "start", "--head"], f"{config}: {command!r}"
    return words[3:]


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free port never handed out before in this session: the kernel may give a just-closed port out again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def local_flags(flags: list[str]) -> tuple[list[str], dict[str, int]]:
    """The config's flags with a free port for each port flag (added where the config leaves Ray's default)."""
    ports = {flag: free_port() for flag in PORT_FLAGS if flag != "--ray-client-server-port"}
    out = []
    for word in flags:
        name = word.split("=", 1)[0]
        if name in LAUNCHER_ONLY:
            continue
        if name in PORT_FLAGS:
            ports[name] = ports.get(name) or free_port()
            word = f"{name}={ports[name]}"
        out.append(word)
    out += [f"{flag}={port}" for flag, port in ports.items() if not any(w.startswith(flag + "=") for w in out)]
    return out, ports


def our_processes(marker: str) -> list[int]:
    """Pids of the processes whose command line names ``marker`` (our RAY_TMPDIR): the head we started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_head_start_flags_are_read_from_the_configs():
    flags = head_start_flags(ROOT / "experiments/clusters/loopback.yaml.in")
    assert "--num-cpus=0" in flags and "--dashboard-host=127.0.0.1" in flags
    local, ports = local_flags(flags)
    assert f"--ray-client-server-port={ports['--ray-client-server-port']}" in local
    assert not any(w.startswith("--autoscaling-config") for w in local)
    assert len(set(ports.values())) == len(ports)
    cluster, _ = local_flags(head_start_flags(ROOT / "cluster.yaml"))
    assert "--object-manager-port=8076" not in cluster and sum(w.startswith("--port=") for w in cluster) == 1


@pytest.mark.slow
@pytest.mark.parametrize("config", HEAD_CONFIGS, ids=lambda p: p.name)
def test_ray_start_head_with_the_configs_flags(config):
    assert RAY.is_file(), f"no `ray` next to {sys.executable}: install the project (pip install -e .)"
    flags, ports = local_flags(head_start_flags(config))
    tmp = tempfile.mkdtemp(prefix="proda-head-", dir="/tmp")  # short: Ray's socket paths live under it
    token = os.urandom(32).hex()
    Path(tmp, "auth_token").write_text(token)
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": f"{tmp}/auth_token",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    log = open(Path(tmp, "ray-start.log"), "w+")
    head = subprocess.Popen([str(RAY), "start", "--head", *flags, "--block"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    client_port = ports.get("--ray-client-server-port") if any(
        w.startswith("--ray-client-server-port") for w in head_start_flags(config)) else None
    try:
        # `ray start` prints "Ray runtime started." once its services run; the dashboard follows within seconds
        deadline, ready = time.monotonic() + 120, False
        while time.monotonic() < deadline and head.poll() is None:
            if "Ray runtime started" in Path(log.name).read_text():
                deadline = min(deadline, time.monotonic() + 30)
            try:
                status, body = http_get(f"{dashboard}/api/authentication_mode")
                ready = status == 200 and (client_port is None or accepts("127.0.0.1", client_port))
            except OSError:
                ready = False
            if ready:
                break
            time.sleep(1)
        log.seek(0)
        output = log.read()[-3000:]
        assert head.poll() is None, f"ray start --head {' '.join(flags)} exited {head.returncode}:\n{output}"
        assert ready, f"the head's dashboard (ray[default]) / client server (ray[client]) did not come up:\n{output}"
        assert json.loads(body)["authentication_mode"] == "token"
        assert http_get(f"{dashboard}/api/jobs/")[0] in (401, 403), "the job API answered without the token"
        assert http_get(f"{dashboard}/api/jobs/", token)[0] == 200
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)  # --block: Ray stops the services it started
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                head.kill()
        deadline = time.monotonic() + 30
        while our_processes(tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = our_processes(tmp)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert not left, f"processes of the head left after it was stopped: {left}"
