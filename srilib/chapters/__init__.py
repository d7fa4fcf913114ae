"""The computations behind each book chapter, so that notebooks only set parameters, call these and plot.

One module per chapter: geometry (SRI geometry), sampling (sampling vs representation), recovery (incomplete
recovery), detector (SRI Guard and detector transfer). Shared helpers for tables live here.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def fmt(x, digits: int = 2) -> str:
    """Format a number (or a metrics Rate / Estimate via its own str) for a table cell."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def md_table(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2) -> str:
    """A Markdown table from a list of dicts (columns: the union of keys in first-seen order)."""
    if not rows:
        return "_(no rows)_"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "\n".join("| " + " | ".join(fmt(r.get(c), digits).replace("|", "\\|") for c in cols) + " |"
                     for r in rows)
    return head + body


def show_table(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2, caption: str = ""):
    """Display a Markdown table (with an optional caption line) in a notebook."""
    from IPython.display import Markdown, display
    display(Markdown((f"**{caption}**\n\n" if caption else "") + md_table(rows, columns, digits)))


def show_summary(text: str, glue_name: str | None = None):
    """Display a Markdown summary; with ``glue_name`` also glue it (as HTML, which Jupyter Book can paste into
    another page, e.g. the landing page) under that name."""
    from IPython.display import HTML, Markdown, display
    display(Markdown(text))
    if glue_name:
        from markdown_it import MarkdownIt  # a dependency of Jupyter Book's MyST parser
        from myst_nb import glue
        glue(glue_name, HTML(MarkdownIt("commonmark").render(text)), display=False)
