"""The paper's published numbers that the chapters print beside ours, all of them in this one module.

Nothing here is measured: every value is copied from the paper's tables or read from its figures (marked
approximate), and is only ever shown labelled "paper". The chapters compare with them and :mod:`srilib.paper`
lays them out as the book's page on the paper, so the page and the chapters can never disagree. Prose that cites
one of these numbers formats it from here, never re-types it.

This module imports nothing from srilib, so every chapter and :mod:`srilib.paper` can import it without an import
circle.
"""
from __future__ import annotations

# the paper's Table 3 column that pools its five attacks; our pooled evaluation set of template attacks reuses the
# name (its label names its own members: srilib.chapters.sampling.pooled_label)
ALL_JAILBREAKS = "all jailbreaks"

# ---- the paper's models
PAPER_MODEL = {"llama-3.1-8b-instruct": "LLaMA-3", "qwen-2.5-7b-instruct": "Qwen-2.5", "gemma-7b-it": "Gemma",
               "llada-8b-instruct": "LLaDA", "llada-1.5": "LLaDA-1.5", "dream-v0-instruct-7b": "Dream"}
PAPER_FAMILY = {"LLaMA-3": "AR", "Qwen-2.5": "AR", "Gemma": "AR", "LLaDA": "DLM", "LLaDA-1.5": "DLM", "Dream": "DLM"}
PAPER_MODEL_SIZE_B = (7, 8)  # billions of parameters, smallest and largest of the paper's models

# ---- sampling chapter: Tables 2-3 and Figure 6
PAPER_COLUMNS = ("raw harmful", ALL_JAILBREAKS, "Flip Attack", "PAIR", "Refusal Suppression", "Random Search",
                 "WildJailbreak")
# Table 3: (RR %, ASR %) per model and column
PAPER_TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    m: dict(zip(PAPER_COLUMNS, v)) for m, v in {
        "LLaMA-3": [(83, 13), (23.4, 59.2), (1, 98), (70, 24), (41, 48), (3, 29), (2, 97)],
        "Qwen-2.5": [(53, 26), (11.4, 62.2), (2, 91), (33, 44), (18, 46), (4, 31), (0, 99)],
        "Gemma": [(88, 8), (46.2, 48.2), (10, 86), (76, 20), (74, 17), (65, 26), (6, 92)],
        "LLaDA": [(83, 6), (67.4, 18.4), (69, 24), (92, 5), (79, 8), (36, 26), (61, 29)],
        "LLaDA-1.5": [(84, 9), (59.6, 21.0), (59, 17), (92, 2), (71, 15), (27, 34), (49, 37)],
        "Dream": [(89, 1), (44.4, 9.4), (42, 18), (86, 0), (46, 5), (34, 4), (14, 20)],
    }.items()}
# Table 2: points gained going from AR sampling to diffusion remasking (RR up, ASR down)
PAPER_TABLE2: dict[str, dict[str, tuple[int, int]]] = {
    "LLaDA": {"WildJailbreak": (14, 18), "Flip Attack": (33, 36), "PAIR": (7, 5), "Refusal Suppression": (55, 26),
              "Random Search": (21, 16)},
    "LLaDA-1.5": {"WildJailbreak": (15, 21), "Flip Attack": (38, 60), "PAIR": (0, 2),
                  "Refusal Suppression": (52, 20), "Random Search": (19, 8)},
}
PAPER_IRR_LOSS = (0.29, 0.48)  # Figures 5-6: IRR the LLaDA weights lose under AR sampling
# the paper's "all jailbreaks" column pools its five attacks (every column but raw and the pool itself)
PAPER_POOLED_ATTACKS = tuple(c for c in PAPER_COLUMNS if c not in ("raw harmful", ALL_JAILBREAKS))
PAPER_ALL_JAILBREAKS = f"all jailbreaks, paper (its {len(PAPER_POOLED_ATTACKS)}: {', '.join(PAPER_POOLED_ATTACKS)})"
# columns of the paper's pool that none of our attacks reproduces, with why: our `roleplay` templates are written
# in WildJailbreak's style (its paper column is "WildJailbreak"), but they are ours, not the WildJailbreak data
# set, so a pool "shared with the paper's" leaves them out (Refusal Suppression and Flip Attack are the same
# technique as the paper's, Random Search and PAIR the same search, on a far smaller budget)
PAPER_POOL_NOT_SHARED = {"WildJailbreak": "our roleplay templates are WildJailbreak-like, not the WildJailbreak "
                                          "data set"}


def shared_with_paper_pool(columns) -> list[str]:
    """The paper columns among ``columns`` (one per attack of ours, None where it has none) that count as shared
    with the paper's five-attack pool: in :data:`PAPER_POOLED_ATTACKS` and not in :data:`PAPER_POOL_NOT_SHARED`."""
    return [c for c in columns if c in PAPER_POOLED_ATTACKS and c not in PAPER_POOL_NOT_SHARED]

# ---- recovery chapter: Table 1 and Figures 2, 5
PAPER_TABLE1 = {"LLaDA": (0.81, 0.63), "Dream": (0.96, 0.73), "LLaDA-1.5": (0.92, 0.65)}  # HRR, FRR
PAPER_AR_IRR_MAX = 0.15  # Figure 5: AR models stay below ~0.15 at every threshold
PAPER_LAMBDA_R_LOOSE = 0.5  # Figure 5: the loosest refusal threshold lambda_r of the paper's IRR
PAPER_DLM_IRR_LOOSE = (0.4, 0.6)  # Figure 5: DLMs at the loosest threshold (lambda_r = PAPER_LAMBDA_R_LOOSE)
PAPER_FIG2_MIN_SIGMA = 0.44  # the paper's Figure 2 example: its deepest σ (approximate, read from the figure)

# ---- geometry chapter: Section 2
PAPER_ANCHOR_SEPARATION = (0.08, 0.17)  # cosine distance between LLaDA's released anchors (paper, Section 2)

# ---- the detector chapter (Tables 4, 13 and 14)
# the rows of Table 4 (the detector ablation), by our method ids (srilib.chapters.detector.METHODS)
METHOD_LABELS = {"text": "text-based signal", "static": "static activations (first step only)",
                 "sri_first": "SRI, first layer", "sri_middle": "SRI, middle layer",
                 "sri_last": "SRI, last layer (SRI Guard)"}
# paper Table 4: jailbreak-detection AUROC, mean and std over the six models
PAPER_ABLATION = {"text": (0.573, 0.221), "static": (0.584, 0.138), "sri_first": (0.566, 0.101),
                  "sri_middle": (0.864, 0.062), "sri_last": (0.920, 0.047)}
# paper Table 13: mean over six models, (overhead %, false positives %, jailbreak RR %, jailbreak ASR %)
PAPER_DEFENSES = {"undefended": (0.0, 2.8, 42.1, 36.4), "perplexity filter": (4.26, 4.8, 42.6, 35.7),
                  "Self-Examine": (5.86, 2.8, 48.4, 30.1), "LlamaGuard 3": (8.45, 3.3, 58.4, 28.6),
                  "SRI Guard": (0.02, 5.0, 59.5, 27.9)}
PAPER_SRI_OVERHEAD_RANGE = (0.01, 0.04)  # per model, %
# paper Table 13, SRI Guard's overhead per model (paper model name -> %). Only the range above is on file; the
# six values go here when copied from the table, and defenses.paper_overhead_factor then uses them, not the range
PAPER_SRI_OVERHEAD_PER_MODEL: dict[str, float] = {}
# how the paper itself states SRI Guard's cost against the other defenses (its abstract), quoted as written; the
# ratio of Table 13's rounded means (4.26 / 0.02) is a number the paper never prints
PAPER_OVERHEAD_WORDS = ("over 100× lower inference overhead", "abstract")
# paper Table 14 (LLaDA): our canvas attack -> (the paper's attack it stands for, ASR undefended, after DiffuGuard,
# after SRI Guard); PAD and DIJA, ours their canvas analogues
PAPER_CANVAS = {"prefill_affirmative": ("PAD", 0.53, 0.45, 0.29), "interleaved_template": ("DIJA", 0.76, 0.59, 0.29)}

_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count_word(n: int) -> str:
    """A count as prose writes it: 'five' for 5 (numerals above ten)."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def paper_sizes() -> str:
    """The size range of the paper's models as prose writes it ('7-8B')."""
    lo, hi = PAPER_MODEL_SIZE_B
    return f"{lo:g}-{hi:g}B"


def paper_family_asr(fam: str) -> tuple[float, float]:
    """(min, max) of the paper's all-jailbreaks ASR (Table 3, as a share) over its models of family ``fam``."""
    v = [PAPER_TABLE3[m][ALL_JAILBREAKS][1] / 100 for m in PAPER_TABLE3 if PAPER_FAMILY[m] == fam]
    return min(v), max(v)


def paper_table2_max() -> tuple[int, int]:
    """The paper's largest Table 2 gains (RR points, ASR points) over both models and every attack."""
    vals = [v for m in PAPER_TABLE2.values() for v in m.values()]
    return max(v[0] for v in vals), max(v[1] for v in vals)


def paper_table2_min() -> tuple[str, str, str, int]:
    """The paper's smallest Table 2 gain: (model, column, 'RR' or 'ASR', points); the first in table order on
    ties."""
    cells = [(m, c, k, v[i]) for m, cols in PAPER_TABLE2.items() for c, v in cols.items()
             for i, k in enumerate(("RR", "ASR"))]
    return min(cells, key=lambda x: x[3])


# paper Tables 4 and 13 report means over the paper's six 7-8B models
PAPER_N_MODELS = len(PAPER_MODEL)
PAPER_MODELS_TEXT = f"{count_word(PAPER_N_MODELS)} {paper_sizes()} models"
