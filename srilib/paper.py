"""The paper's published numbers as Markdown tables, for the book's page on the paper (book/paper.md).

The numbers themselves live in one module, where the chapters read them: :mod:`srilib.chapters.paper_numbers`;
this module only lays them out, so the page and the chapters can never disagree. The book's run
(:mod:`srilib.execute`) writes the result to the profile's ``book/executed/<profile>/paper_numbers.md``, staged as
``book/executed/paper_numbers.md``, which the page includes.
"""
from __future__ import annotations

from .chapters import md_table


def published_tables() -> str:
    """Every published number the chapters compare with, one Markdown table per paper table or figure."""
    from .chapters.paper_numbers import (METHOD_LABELS, PAPER_ABLATION, PAPER_AR_IRR_MAX, PAPER_CANVAS,
                                         PAPER_COLUMNS, PAPER_DEFENSES, PAPER_DLM_IRR_LOOSE, PAPER_FAMILY,
                                         PAPER_IRR_LOSS, PAPER_LAMBDA_R_LOOSE, PAPER_OVERHEAD_WORDS,
                                         PAPER_POOLED_ATTACKS, PAPER_SRI_OVERHEAD_RANGE, PAPER_TABLE1, PAPER_TABLE2,
                                         PAPER_TABLE3, count_word, paper_sizes, paper_table2_min)

    out = []

    def section(title: str, rows: list[dict], note: str = "") -> None:
        out.append(f"### {title}\n\n{md_table(rows)}\n" + (f"\n{note}\n" if note else ""))

    section("Table 1: recovery by revision (diffusion models)",
            [{"model": m, "HRR": h, "FRR": f} for m, (h, f) in PAPER_TABLE1.items()],
            "HRR: among generations whose intermediate full prediction is judged harmful at some step, the share "
            "later revised; FRR: the share whose final output is then not harmful.")
    cols = list(next(iter(PAPER_TABLE2.values())))
    low_model, low_col, low_metric, low = paper_table2_min()
    n_models = count_word(len(PAPER_FAMILY))
    section("Table 2: same weights, AR sampling to diffusion remasking (points gained, RR up / ASR down)",
            [{"model": m, **{c: f"+{v[c][0]} / +{v[c][1]}" for c in cols}} for m, v in PAPER_TABLE2.items()],
            ("No value is negative; " if low >= 0 else "")
            + f"the smallest is {low_model}'s {low} {low_metric} points on {low_col}.")
    section(f"Table 3: refusal rate / attack success rate in % ({paper_sizes()} models)",
            [{"model": m, "family": PAPER_FAMILY[m], **{c: f"{rr:g} / {asr:g}" for c, (rr, asr) in v.items()}}
             for m, v in PAPER_TABLE3.items()],
            f"Columns: {', '.join(PAPER_COLUMNS)}; 'all jailbreaks' pools the paper's "
            f"{count_word(len(PAPER_POOLED_ATTACKS))} attacks.")
    section("Figures 5-6: internal recovery rate (IRR), read from the figures",
            [{"what": "AR models, every threshold", "IRR": f"below ~{PAPER_AR_IRR_MAX:g}"},
             {"what": f"diffusion models, loosest threshold (λ_r = {PAPER_LAMBDA_R_LOOSE:g})",
              "IRR": f"~{PAPER_DLM_IRR_LOOSE[0]:g}-{PAPER_DLM_IRR_LOOSE[1]:g}"},
             {"what": "IRR lost by LLaDA / LLaDA-1.5 weights under AR sampling",
              "IRR": f"{PAPER_IRR_LOSS[0]:g}-{PAPER_IRR_LOSS[1]:g}"}])
    section(f"Table 4: jailbreak-detection AUROC, mean ± std over {n_models} models",
            [{"detector": METHOD_LABELS[k], "AUROC": f"{m:.3f} ± {s:.3f}"} for k, (m, s) in PAPER_ABLATION.items()])
    section(f"Table 13: defenses, mean over {n_models} models",
            [{"defense": d, "overhead %": o, "false positives % (harmless refused, defense in place)": fp,
              "jailbreak RR %": rr, "jailbreak ASR %": asr}
             for d, (o, fp, rr, asr) in PAPER_DEFENSES.items()],
            f"SRI Guard's overhead per model: {PAPER_SRI_OVERHEAD_RANGE[0]:g}-{PAPER_SRI_OVERHEAD_RANGE[1]:g}%; in the "
            f"paper's words ({PAPER_OVERHEAD_WORDS[1]}), “{PAPER_OVERHEAD_WORDS[0]}” than the other defenses. "
            f"Jailbreak RR and ASR pool the paper's {count_word(len(PAPER_POOLED_ATTACKS))} attacks "
            f"({', '.join(PAPER_POOLED_ATTACKS)}).")
    section("Table 14: attack success on LLaDA under diffusion-specific attacks",
            [{"attack": name, "undefended": u, "DiffuGuard": d, "SRI Guard": g}
             for name, u, d, g in PAPER_CANVAS.values()])
    return "\n".join(out)
