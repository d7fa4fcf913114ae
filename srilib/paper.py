"""The paper's published numbers as Markdown tables, for the book's page on the paper (book/paper.md).

The numbers themselves live where the chapters use them (``srilib.chapters.*``: ``PAPER_TABLE1``,
``PAPER_TABLE2``, ``PAPER_TABLE3``, ``PAPER_ABLATION``, ``PAPER_DEFENSES``, ``PAPER_CANVAS`` and the IRR ranges
of Figures 5-6); this module only lays them out, so the page and the chapters can never disagree. The runner
writes the result to ``book/executed/paper_numbers.md``, which the page includes.
"""
from __future__ import annotations

from .chapters import md_table


def published_tables() -> str:
    """Every published number the chapters compare with, one Markdown table per paper table or figure."""
    from .chapters.detector import (METHOD_LABELS, PAPER_ABLATION, PAPER_CANVAS, PAPER_DEFENSES,
                                    PAPER_SRI_OVERHEAD_RANGE)
    from .chapters.recovery import PAPER_AR_IRR_MAX, PAPER_DLM_IRR_LOOSE, PAPER_TABLE1
    from .chapters.sampling import PAPER_COLUMNS, PAPER_FAMILY, PAPER_IRR_LOSS, PAPER_TABLE2, PAPER_TABLE3

    out = []

    def section(title: str, rows: list[dict], note: str = "") -> None:
        out.append(f"### {title}\n\n{md_table(rows)}\n" + (f"\n{note}\n" if note else ""))

    section("Table 1: recovery by revision (diffusion models)",
            [{"model": m, "HRR": h, "FRR": f} for m, (h, f) in PAPER_TABLE1.items()],
            "HRR: among generations whose intermediate full prediction is judged harmful at some step, the share "
            "later revised; FRR: the share whose final output is then not harmful.")
    cols = list(next(iter(PAPER_TABLE2.values())))
    section("Table 2: same weights, AR sampling to diffusion remasking (points gained, RR up / ASR down)",
            [{"model": m, **{c: f"+{v[c][0]} / +{v[c][1]}" for c in cols}} for m, v in PAPER_TABLE2.items()],
            "No value is negative; the smallest is LLaDA-1.5's 0 RR points on PAIR.")
    section("Table 3: refusal rate / attack success rate in % (7-8B models)",
            [{"model": m, "family": PAPER_FAMILY[m], **{c: f"{rr:g} / {asr:g}" for c, (rr, asr) in v.items()}}
             for m, v in PAPER_TABLE3.items()],
            f"Columns: {', '.join(PAPER_COLUMNS)}; 'all jailbreaks' pools the paper's five attacks.")
    section("Figures 5-6: internal recovery rate (IRR), read from the figures",
            [{"what": "AR models, every threshold", "IRR": f"below ~{PAPER_AR_IRR_MAX:g}"},
             {"what": "diffusion models, loosest threshold (λ_r = 0.5)",
              "IRR": f"~{PAPER_DLM_IRR_LOOSE[0]:g}-{PAPER_DLM_IRR_LOOSE[1]:g}"},
             {"what": "IRR lost by LLaDA / LLaDA-1.5 weights under AR sampling",
              "IRR": f"{PAPER_IRR_LOSS[0]:g}-{PAPER_IRR_LOSS[1]:g}"}])
    section("Table 4: jailbreak-detection AUROC, mean ± std over six models",
            [{"detector": METHOD_LABELS[k], "AUROC": f"{m:.3f} ± {s:.3f}"} for k, (m, s) in PAPER_ABLATION.items()])
    section("Table 13: defenses, mean over six models",
            [{"defense": d, "overhead %": o, "false positives % (harmless refused, defense in place)": fp,
              "jailbreak RR %": rr, "jailbreak ASR %": asr}
             for d, (o, fp, rr, asr) in PAPER_DEFENSES.items()],
            f"SRI Guard's overhead per model: {PAPER_SRI_OVERHEAD_RANGE[0]:g}-{PAPER_SRI_OVERHEAD_RANGE[1]:g}%.")
    section("Table 14: attack success on LLaDA under diffusion-specific attacks",
            [{"attack": name, "undefended": u, "DiffuGuard": d, "SRI Guard": g}
             for name, u, d, g in PAPER_CANVAS.values()])
    return "\n".join(out)
