"""What does merging shared prefixes save? Nodes and estimated compute of the built-in `paper` and
`sensitivity` studies (3 seeds), merged DAG vs. one independent chain per variant × axis value × seed.

    python benchmarks/dag_savings.py

Nothing is trained: costs are the plan's estimates (`proda.chain.est_cost`: images × network passes,
so the kinds' units are comparable). The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from proda.ablation.grid import builtin_spec, expand  # noqa: E402


def adversarial_warmups_per_seed(plan) -> int:
    per_seed = Counter(n.seed for n in plan.nodes.values()
                       if n.kind == "warmup" and n.config["warmup"]["kind"] == "adversarial")
    return max(per_seed.values(), default=0)


def main() -> None:
    out, warmups, lines = {}, 0, []
    header = (f"{'study':<12} {'rows':>5} {'nodes':>6} {'naive':>6} {'cost (merged)':>14} {'cost (naive)':>14}"
              f" {'saved':>7}")
    for name in ("paper", "sensitivity"):
        spec = builtin_spec(name)
        assert len(spec.seeds) == 3, spec.seeds
        plan = expand(spec)
        cost = plan.cost
        saved = 1 - cost / plan.naive_cost
        lines.append(f"{name:<12} {len(plan.rows):>5} {len(plan.nodes):>6} {plan.naive_nodes:>6} {cost:>14,.0f}"
                     f" {plan.naive_cost:>14,.0f} {100 * saved:>6.1f}%")
        out[f"{name}_saved_fraction"] = round(saved, 4)
        warmups = max(warmups, adversarial_warmups_per_seed(plan))
    print(header)
    print("\n".join(lines))
    out["warmups_per_seed"] = warmups
    print(json.dumps(out))


if __name__ == "__main__":
    main()
