"""Defaults live in the profiles: no default of a function on the chapters' path (srilib.experiment and
srilib.chapters) contradicts the cpu profile, the embedded default whose values the notebooks' parameters cells
carry (tests/test_plan.py checks those cells)."""
import importlib
import inspect
import json
import pkgutil

import srilib.chapters
from srilib.experiment import load_profile

MODULES = ["srilib.experiment", "srilib.chapters"] + [f"srilib.chapters.{m.name}"
                                                     for m in pkgutil.iter_modules(srilib.chapters.__path__)]
# (callable, parameter) -> why its name matches a profile parameter without being one
NOT_A_PROFILE_PARAMETER = {
    ("Finding.__init__", "runs"): "the runs behind one glance row",
    ("Comparison.__init__", "attacks"): "the attacks one comparison found",
    ("DetectorResult.__init__", "diffuguard"): "DiffuGuard's results on one run",
    ("Adaptive.__init__", "pair"): "PAIR's per-run searches (a cache), not the PAIR section",
    ("seed_stability", "runs"): "the runs of the seed study (the profile's seed_runs); None: all",
    ("analyse_recovery", "batch_size"): "the judge's batch size",
}


def _json(x):
    return json.dumps(list(x) if isinstance(x, tuple) else x, sort_keys=True, default=str)


def profile_values() -> dict[str, set[str]]:
    prof = load_profile("cpu")
    out: dict[str, set[str]] = {}
    for nb in prof.notebooks:
        for k, v in prof.params_for(nb).items():
            out.setdefault(k, set()).add(_json(v))
    return out


def contradicting_defaults() -> list[str]:
    values, out = profile_values(), []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            fns = [(attr, obj)] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                fns = [(f"{attr}.{k}", v) for k, v in vars(obj).items()
                       if inspect.isfunction(v) and (k == "__init__" or not k.startswith("_"))]
            for label, fn in fns:
                for p in inspect.signature(fn).parameters.values():
                    if (p.name in values and p.default is not inspect.Parameter.empty
                            and (label, p.name) not in NOT_A_PROFILE_PARAMETER
                            and _json(p.default) not in values[p.name]):
                        out.append(f"{name}.{label}({p.name}={p.default!r}); cpu profile: {sorted(values[p.name])}")
    return out


def test_no_default_on_the_chapters_path_contradicts_the_profile():
    assert contradicting_defaults() == []


def test_the_exceptions_still_name_real_parameters():
    """Each entry of NOT_A_PROFILE_PARAMETER is a parameter that exists and shares a profile parameter's name."""
    values, found = profile_values(), set()
    for name in MODULES:
        for attr, obj in vars(importlib.import_module(name)).items():
            if inspect.isfunction(obj):
                fns = [(attr, obj)]
            else:
                fns = [(f"{attr}.{k}", v) for k, v in vars(obj).items() if inspect.isfunction(v)] \
                    if inspect.isclass(obj) else []
            found |= {(label, p) for label, fn in fns for p in inspect.signature(fn).parameters if p in values}
    assert set(NOT_A_PROFILE_PARAMETER) <= found
