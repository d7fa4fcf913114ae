"""The detector chapter's trace plan (:mod:`srilib.plan`): what its notebook reads, declared from its parameters.

Kept apart from :mod:`srilib.chapters.detector` because it names the traces of every part of the chapter (the
detectors, the shift section, DiffuGuard), whose modules import the core module: declared here, above them all,
the import graph keeps no circle.
"""
from __future__ import annotations

from ..experiment import selected, setup_from
from ..judges import make_judge
from ..plan import Need, each_run_needs, needs_for, standard_needs
from .adaptive import Adaptive, AdaptiveConfig, adaptive_needs
from .detector import CANVAS, guard_demo_prompts, guard_prompts
from ..models import masked_diffusion
from .detector_diffuguard import diffuguard_run
from .shift import shift_order, shift_prompts


def trace_needs(params: dict) -> list:
    """The traces this chapter reads for its notebook's parameters (:mod:`srilib.plan`): per run, the anchor split,
    every evaluation set, the guard's harmless training prompts, the harmless families of the shift section (runs
    of ``shift_runs``, all when absent) and the adaptive-attack sets; on diffusion runs the canvas attacks, also under DiffuGuard (with
    ``diffuguard_rates`` its harmless and jailbreak sets too); the usage example's two prompts on the first run."""
    chapter = "detector_transfer"
    exp, sets = setup_from(params)
    train = guard_prompts(params["n_train_harmless"], seed=params["seed"], source=params["source"])
    family = [p for *_, p in shift_order(shift_prompts(params["n_per_family"], seed=params["seed"]))]
    adv = Adaptive(exp, sets, make_judge(params["judge"]),
                   AdaptiveConfig.from_params(params.get("random_search"), params.get("pair"), params["gen_length"]))
    dg_on, canvas = params.get("diffuguard"), list(params.get("canvas_attacks") or [])

    def needs(run):
        out = standard_needs(chapter, exp, run, sets)
        out += needs_for(chapter, exp, run, {"guard/harmless-train": train, **(
            {"shift/harmless-families": family} if selected(run, params.get("shift_runs")) else {})})
        out += adaptive_needs(chapter, adv, run) if adv.cfg.any_on else []
        if run.kind == "dlm" and masked_diffusion(run.model, run.kind):  # canvas attacks and DiffuGuard need masks
            dg = diffuguard_run(exp, run)
            for r in [run, dg] if dg_on else [run]:
                out += [Need(chapter, r, f"{CANVAS}{a}", exp, sets.requests, canvas_attack=a) for a in canvas]
            if dg_on and params.get("diffuguard_rates"):  # jailbreaks audited against their requests (run_diffuguard)
                out += needs_for(chapter, exp, dg, {"harmless": sets.eval_harmless})
                out += [Need(chapter, dg, a, exp, p, references=sets.requests) for a, p in sets.attacked.items()]
        return out

    out = each_run_needs(chapter, params["runs"], needs)
    first = next((n.run for n in out if n.error is None), None)
    if first is not None:
        out.append(Need(chapter, first, "guard/demo", exp, guard_demo_prompts(sets)))
    return out
