"""Every cluster config of the project passes Ray's own checks, offline, and keeps the security rules.

Ray's launcher does ``prepare_config`` (fill in the provider's packaged defaults, merge the setup
commands, set per-node-type worker counts) and then ``validate_config`` (the JSON schema in
``ray/autoscaler/ray-schema.json`` plus cross-field checks); the tests do the same. Neither step contacts
a cloud — for AWS, boto3 is first used by ``bootstrap_aws``, which `ray up` runs after them — and the
``offline`` fixture makes any network connection an error, so that stays true.

The template used by tests/cluster/rayup_e2e.sh (``*.yaml.in``) is rendered as that script renders it
(its default values, this interpreter as ``@PYBIN@``) and then checked like the other configs.
"""

import copy
import re
import socket
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
E2E_SCRIPT = ROOT / "tests" / "cluster" / "rayup_e2e.sh"
CONFIGS = [ROOT / "cluster.yaml", *sorted((ROOT / "experiments" / "clusters").glob("*.yaml")),
           *sorted((ROOT / "experiments" / "clusters").glob("*.yaml.in"))]
AWS, ONPREM, LOOPBACK = ROOT / "cluster.yaml", ROOT / "experiments/clusters/onprem.yaml", \
    ROOT / "experiments/clusters/loopback.yaml.in"
# what rayup_e2e.sh fills in with its defaults (WORK=/tmp/proda-rayup-e2e, RAYUP_PORT=6390, the other ports
# derived from it as the script derives them) and PYBIN, the directory of the interpreter it is given
WORK, PORT = "/tmp/proda-rayup-e2e", 6390
PYBIN = str(Path(sys.executable).parent)
RENDERED = {"CLUSTER": "proda-rayup-e2e", "USER": "proda-rayup", "KEY": f"{WORK}/ssh/id_ed25519", "PYBIN": PYBIN,
            "REPO": str(ROOT), "TOKEN": f"{WORK}/auth_token", "PORT": str(PORT),
            "DASHBOARD_PORT": str(PORT + 1900), "CLIENT_PORT": str(PORT + 2),
            "AGENT_PORT_HEAD": str(PORT + 46000), "AGENT_PORT_WORKER": str(PORT + 46002)}
PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def raw_text(path: Path) -> str:
    """The YAML text; a template rendered as rayup_e2e.sh's ``sed`` renders it (every line, comments too)."""
    text = path.read_text()
    if path.suffix != ".in":
        return text
    for name, value in RENDERED.items():
        text = text.replace(f"@{name}@", value)
    unfilled = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#") and PLACEHOLDER.search(ln)]
    assert not unfilled, f"unfilled fields in the rendered {path.name}: {unfilled}"
    return text


def load(path: Path) -> dict:
    return yaml.safe_load(raw_text(path))


def ray_checked(config: dict) -> dict:
    """What `ray up` does before it contacts anything: prepare, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def start_commands(config: dict, which: str) -> str:
    return " ".join(config.get(f"{which}_start_ray_commands", []))


def walk(node, key):
    """Every value stored under ``key`` anywhere in a nested YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


# -- Ray's own checks ----------------------------------------------------------------------------
def test_the_project_has_the_three_cluster_configs():
    assert {AWS, ONPREM, LOOPBACK} <= set(CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_config_passes_rays_prepare_and_validate_offline(path):
    prepared = ray_checked(load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_setup_commands_are_explicit_so_rays_defaults_inject_nothing(path):
    raw = load(path)
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert key in raw, f"{key} missing: Ray's provider defaults would supply their own"
    prepared = ray_checked(raw)
    injected = " ".join(prepared["head_setup_commands"] + prepared["worker_setup_commands"])
    assert "ray-wheels" not in injected and "anaconda3/envs" not in injected


@pytest.mark.parametrize("mutate, error", [
    (lambda c: c.update(max_worker=2), jsonschema.ValidationError),  # unknown top-level key (typo)
    (lambda c: c.update(idle_timeout_minutes="ten"), jsonschema.ValidationError),  # wrong type
    (lambda c: c.update(cluster_synced_files="~/proda"), jsonschema.ValidationError),  # not a list
    (lambda c: c["auth"].update(ssh_port=2222), jsonschema.ValidationError),  # not an auth option
    (lambda c: c.update(head_start_ray_commands="ray start --head"), jsonschema.ValidationError),
], ids=["unknown-key", "wrong-type", "synced-files-not-a-list", "unknown-auth-key", "commands-not-a-list"])
@pytest.mark.parametrize("path", [AWS, ONPREM], ids=ids([AWS, ONPREM]))
def test_broken_variants_are_rejected(path, mutate, error):
    config = load(path)
    mutate(config)
    with pytest.raises(error):
        ray_checked(config)


def test_aws_head_type_must_be_one_of_the_node_types():
    config = load(AWS)
    config["head_node_type"] = "ray.head.default"
    with pytest.raises(ValueError, match="head_node_type"):
        ray_checked(config)


def test_aws_docker_option_typo_is_rejected():
    config = load(AWS)
    config["docker"]["run_option"] = config["docker"].pop("run_options")
    with pytest.raises(jsonschema.ValidationError):
        ray_checked(config)


# -- security ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_no_port_but_ssh_is_opened_to_the_outside(path):
    config = load(path)
    for permissions in walk(config, "IpPermissions"):
        for rule in permissions:
            assert (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")) == ("tcp", 22, 22), rule
            cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + \
                    [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
            assert cidrs and not {"0.0.0.0/0", "::/0"} & set(cidrs), f"SSH open to the world: {rule}"
    assert "--dashboard-host=0.0.0.0" not in start_commands(config, "head")
    assert "--dashboard-host=127.0.0.1" in start_commands(config, "head")


def test_aws_uses_the_named_ssh_only_group_not_rays_default():
    config = load(AWS)
    group = config["provider"]["security_group"]
    assert group["GroupName"] and group["IpPermissions"]
    # any SecurityGroupIds key, even an empty list, makes Ray skip the group above
    for name, node_type in config["available_node_types"].items():
        assert "SecurityGroupIds" not in node_type["node_config"], name


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_token_authentication_stays_on(path):
    config, text = load(path), raw_text(path)
    remote_paths = [p.replace("$HOME", "~") for p in config["file_mounts"]]
    assert "~/.ray/auth_token" in remote_paths, "the cluster's token is not shipped to the nodes"
    assert "RAY_AUTH_MODE=token" in text
    assert not re.search(r"RAY_AUTH_MODE=(?!token)", text), "token authentication is switched off somewhere"


# -- shape -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_head_offers_no_cpus_to_trials(path):
    config = load(path)
    # the local provider ignores node-type resources: `ray start --num-cpus=0` is what counts everywhere
    assert "--num-cpus=0" in start_commands(config, "head")
    if "available_node_types" in config:
        assert config["available_node_types"][config["head_node_type"]]["resources"].get("CPU") == 0


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_ray_on_the_cluster_is_the_launchers_ray(path):
    config = load(path)
    if "docker" in config:
        image = config["docker"]["image"]
        assert image.split(":")[1].startswith(f"{ray.__version__}-"), image
    elif path == LOOPBACK:
        # the cluster runs the launcher's own interpreter: its directory first on PATH, with a `ray` in it
        commands = " ".join(config["setup_commands"])
        assert f'export PATH="{PYBIN}:$PATH"' in commands, "the launcher's interpreter is not first on PATH"
        assert (Path(PYBIN) / "ray").is_file(), f"no 'ray' next to {sys.executable}: `ray start` would find another"
    else:
        commands = " ".join(config["setup_commands"])
        assert f"=={ray.__version__}" in commands, "pin ray to the launcher's version"


def test_aws_gpu_workers_autoscale_from_zero_on_spot():
    config = load(AWS)
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert workers and config["idle_timeout_minutes"] > 0
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["resources"]["GPU"] > 0, name
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
    head = config["available_node_types"][config["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"], "the head should not be a spot instance"


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=ids([AWS, ONPREM]))
def test_project_is_synced_and_installed(path):
    config = load(path)
    assert config["file_mounts"]["~/proda"] == "."
    assert any("pip install" in c and "-e ~/proda" in c for c in config["setup_commands"])


def test_loopback_worker_never_stops_ray_on_the_shared_machine():
    config = load(LOOPBACK)
    assert "ray stop" not in start_commands(config, "worker")
    assert config["provider"]["head_ip"] != "127.0.0.1" and "127.0.0.1" not in config["provider"]["worker_ips"]


def test_loopback_template_fields_are_the_ones_the_e2e_script_fills_in():
    template = {m.group(1) for ln in LOOPBACK.read_text().splitlines() if not ln.lstrip().startswith("#")
                for m in PLACEHOLDER.finditer(ln)}
    filled = set(re.findall(r's\|@([A-Z_]+)@\|', E2E_SCRIPT.read_text()))
    assert template == filled == set(RENDERED)


def test_cluster_smoke_grid_is_a_single_node():
    from proda.ablation.grid import AblationSpec, expand

    plan = expand(AblationSpec.from_yaml(ROOT / "experiments" / "grids" / "cluster-smoke.yaml"))
    assert (len(plan.rows), len(plan.nodes)) == (1, 1)
