"""Imports point down: a module of proda imports its own package and the layers below it, never one above
(docs/architecture.md, "Layers"). Imports inside functions count too: a lazy import up is still a cycle."""

import ast
from pathlib import Path

import pytest

PRODA = Path(__file__).resolve().parents[1] / "proda"

# Bottom first. A unit is a top-level module or package of proda; units of one layer do not import each other.
LAYERS = [
    ["config", "checkpoint", "distributed"],  # typed configs; the checkpoint format; DDP helpers (torch only)
    ["data", "evaluation", "presets"],  # datasets and the batch stream; the confusion matrix; named configs
    ["models", "chain"],  # DeepLab-v2 and backbones; a variant's chain of nodes
    ["method"],  # ProDA's stages, losses, prototypes, pseudo labels
    ["engine"],  # a node and the training loop
    ["train", "ablation"],  # one chain in this process; the Ray runner and the tables
]
SAME_UNIT = {"config_plain": "config"}  # config.py and config_plain.py import each other: one concept
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """'proda.data.stream' → 'data'; 'proda.config_plain' → 'config'; 'proda' → ''."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return SAME_UNIT.get(top, top)


def module_name(path: Path) -> str:
    rel = path.relative_to(PRODA.parent).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in ``tree``, relative ones resolved against ``module``.
    ``from proda import checkpoint`` yields 'proda.checkpoint' (the names may be modules)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "proda":
                found += [(node.lineno, f"proda.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
    return found


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """'file:line: a imports b (layer j > i)' for every import of ``source`` that points up or sideways."""
    own = unit_of(module)
    bad = []
    for line, name in imported(ast.parse(source), module, is_package):
        if name != "proda" and not name.startswith("proda."):
            continue
        other = unit_of(name)
        if other in ("", own):
            continue
        if LAYER[other] >= LAYER[own]:
            bad.append(f"{module}:{line} imports {name} (layer {LAYER[other]} '{other}', not below layer "
                       f"{LAYER[own]} '{own}')")
    return bad


def modules():
    return sorted(PRODA.rglob("*.py"))


def test_every_unit_of_proda_has_a_layer():
    units = {unit_of(module_name(p)) for p in modules()} - {""}
    assert units - set(LAYER) == set(), "a new top-level module or package: give it a layer in LAYERS"


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for p in modules():
        bad += upward_imports(p.read_text(), module_name(p), p.name == "__init__.py")
    assert bad == []


def test_only_the_ablation_package_imports_ray():
    """The core (proda minus proda.ablation) runs without Ray: in tests, under torchrun (proda.train)."""
    users = [module_name(p) for p in modules() if unit_of(module_name(p)) != "ablation"
             and any(n == "ray" or n.startswith("ray.") for _, n in
                     imported(ast.parse(p.read_text()), module_name(p), p.name == "__init__.py"))]
    assert users == []


@pytest.mark.parametrize("source, module, expected", [
    ("from proda.engine import checkpoint", "proda.models.official", ["engine"]),  # the old models → engine
    ("from proda.engine.data import Split", "proda.method.stages", ["engine"]),  # the old method → engine
    ("def f():\n    from proda.method import stages", "proda.data.stream", ["method"]),  # lazy, still up
    ("from proda import method", "proda.chain", ["method"]),
    ("from proda.data import augment", "proda.evaluation", ["data"]),  # sideways: same layer
    ("from ..engine import nodes", "proda.method.pseudo", ["engine"]),  # relative
    ("from . import synthetic", "proda.data", []),  # own package (an __init__)
    ("from proda.config import Config\nfrom proda import distributed", "proda.data.stream", []),
    ("from proda.config_plain import to_plain", "proda.config", []),
    ("import torch\nfrom proda.method.stages import Stage1", "proda.engine.nodes", []),
])
def test_the_check_flags_imports_up_and_sideways(source, module, expected):
    is_package = module == "proda.data"
    flagged = upward_imports(source, module, is_package)
    assert [f.split("'")[1] for f in flagged] == expected
