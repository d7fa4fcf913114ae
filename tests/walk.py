"""The walk of one run from the profile to its figure (issue 25): the srilib modules whose functions run while the
sampling chapter is built from a profile (:func:`srilib.experiment.notebook_params`), analyses one run (its traces
generated when the cache is cold) and draws that run's pooled-ASR figure. Module and class bodies do not count:
every srilib module is imported before the walk starts.

``python tests/walk.py PROFILE RUN`` prints the count and each module's functions (set ``SRILIB_CACHE`` to an empty
directory for a cold walk); ``tests/test_walk.py`` bounds the count on the smoke profile.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

CHAPTER = "sampling_vs_representation"


def walk(profile: str, run: str) -> dict[str, set[str]]:
    """{module path under srilib/: the names of its functions that ran} for one run of the sampling chapter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import srilib
    for m in pkgutil.walk_packages(srilib.__path__, "srilib."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    from srilib.chapters.chapter import SamplingChapter
    from srilib.chapters.sampling import family_asr_panel
    from srilib.figures import plot_family_rates
    from srilib.experiment import load_profile, notebook_params

    seen: dict[str, set[str]] = {}

    def record(frame, event, arg):
        f = frame.f_code.co_filename
        if event == "call" and frame.f_code.co_name != "<module>" and "/srilib/" in f and "site-packages" not in f:
            seen.setdefault(f.split("/srilib/", 1)[1], set()).add(frame.f_code.co_name)

    sys.setprofile(record)
    try:
        params = {**notebook_params(load_profile(profile), CHAPTER), "runs": [run], "random_search": None,
                  "pair": None, "seeds": [0], "seed_runs": None, "block_lengths": []}
        chapter = SamplingChapter(params)
        result = chapter.run(run)
        fig, ax = plt.subplots()
        plot_family_rates(ax, **family_asr_panel([result]), metric="ASR", title=run)
    finally:
        sys.setprofile(None)
    plt.close("all")
    return seen


if __name__ == "__main__":
    modules = walk(sys.argv[1], sys.argv[2])
    print(f"{len(modules)} srilib modules")
    for path in sorted(modules):
        print(f"  {path}: {', '.join(sorted(modules[path]))}")
