"""A table as text: github / markdown (pipe) / LaTeX through tabulate, or csv.

A table is ``(headers, rows)``, a list of dicts (one per row, the keys are the headers) or a DataFrame
(the numeric tables of :mod:`proda.ablation.results`: null cells print empty); :func:`render` takes one
or a mapping ``title → table``. Cells are printed as they are: numbers are never re-parsed.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import pandas as pd


def is_null(v: Any) -> bool:  # a scalar test: cells and axis values may be lists
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _as_table(t) -> tuple[list[str], list[list]]:
    if isinstance(t, pd.DataFrame):  # a numeric table: null cells empty
        return [str(c) for c in t.columns], [["" if is_null(v) else v for v in r] for r in t.itertuples(index=False)]
    if isinstance(t, tuple) and len(t) == 2:
        return list(t[0]), [list(r) for r in t[1]]
    if isinstance(t, list) and all(isinstance(r, dict) for r in t):
        headers = list(t[0]) if t else []
        return headers, [[r.get(h, "") for h in headers] for r in t]
    raise TypeError(f"not a table: {type(t).__name__} (expected (headers, rows), a list of dicts or a DataFrame)")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
          "–": "--"}


def _latex_escape(s: Any) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(s))


def render(tables, fmt: str = "github") -> str:
    """One table (``(headers, rows)`` or a list of dicts) or a mapping ``title → table``, as text."""
    from tabulate import tabulate  # noqa: PLC0415

    if fmt not in ("github", "latex", "csv", "markdown"):
        raise ValueError(f"format {fmt!r}: must be one of github, latex, csv, markdown")
    titled = list(tables.items()) if isinstance(tables, dict) else [(None, tables)]
    parts = []
    for title, t in titled:
        headers, rows = _as_table(t)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            if title:
                w.writerow([f"# {title}"])
            w.writerow(headers)
            w.writerows(rows)
            parts.append(buf.getvalue().rstrip("\n"))
            continue
        if fmt == "latex":
            text = tabulate([[_latex_escape(c) for c in r] for r in rows], [_latex_escape(h) for h in headers],
                            tablefmt="latex_raw", disable_numparse=True)
            head = f"% {title}\n" if title else ""
        else:
            text = tabulate(rows, headers, tablefmt="pipe" if fmt == "markdown" else "github",
                            disable_numparse=True)
            head = f"### {title}\n\n" if title else ""
        parts.append(head + (text if rows or headers else "(no rows)"))
    return "\n\n".join(parts)
