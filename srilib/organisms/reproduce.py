"""``make organisms``: retrain the shipped organisms from the committed corpus and recorded recipe, and compare.

1. Trains organism-ar, organism-dlm and smollm2-135m-refusal, and the v3 pair (smollm2-135m-refusal-v3, then
   smollm2-135m-dlm: :mod:`srilib.organisms.v3`, from the shipped v2 adapter) into ``$SRILIB_CACHE/models/``, two
   processes at a time (the AR organism; the SmolLM2 adapter, then the DLM, which continues from the AR organism's
   shared snapshot; the v3 pair), with progress bars in ``$SRILIB_CACHE/organisms/train-<name>.log``.
2. Says, per model, whether the retrained weight files are bit-identical to the shipped ones (they are on the
   machine kind that trained them; another CPU's floating-point arithmetic gives other weights).
3. Measures the retrained models' preconditions (:mod:`srilib.organisms.check`, every sampler once the recipe
   is frozen) and prints them
   beside the shipped models' recorded reports (``data/preconditions.json``; the v3 pair's
   ``data/preconditions_v3.json``, on the same prompt counts).
4. ``--install`` replaces the shipped weights by the retrained ones and records their sha256 in the manifest;
   ``--record`` writes this run's record (CPU, wall time, bit-identity) to ``data/retrain.json``, which the book's
   organisms page shows.

Not part of ``make book`` or CI. About an hour on two cores (see book/organisms.md for the measured time).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from ..timing import cpu_model
from .preconditions import RECORD_FILE, REPORT_FILE, REPORT_V3_FILE

# The v3 pair starts from the *shipped* v2 adapter, so its group is independent of the v2 retraining.
GROUPS = (("organism-ar",), ("smollm2-135m-refusal", "organism-dlm"), ("smollm2-135m-refusal-v3", "smollm2-135m-dlm"))


def compare(shipped: dict, retrained: dict) -> str:
    """Markdown: the shipped and retrained models' precondition figures side by side."""
    from .preconditions import frac

    lines = ["| model | sampler | measure | shipped | retrained |", "|---|---|---|---|---|"]
    for m, e in retrained["models"].items():
        for s, r in e["samplers"].items():
            old = ((shipped.get("models") or {}).get(m) or {}).get("samplers", {}).get(s, {})
            rows = [("RR harmful", "attacks", "none", "refused")]
            rows += [(f"RR {k}", k, None, "refused") for k in ("harmless", "broad")]
            rows += [(f"coherent {k}", k, None, "coherent") for k in ("harmless", "broad")]
            rows += [(f"ASR {a}", "attacks", a, "harmful") for a in r["attacks"] if a != "none"]
            for label, key, sub, field in rows:
                def cell(rep):
                    x = rep.get(key, {})
                    x = x.get(sub, {}) if sub else x
                    return frac(x[field], x["n"]) if x else "-"
                lines.append(f"| {m} | {s} | {label} | {cell(old)} | {cell(r)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--install", action="store_true", help="replace the shipped weights by the retrained ones")
    ap.add_argument("--skip-check", action="store_true", help="train and compare files only")
    ap.add_argument("--record", action="store_true", help="write this run's record to data/retrain.json")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    from .parallel import train_in_processes
    from . import weights as W
    from ..samplers import native_samplers
    from .check import run
    from .preconditions import table
    from . import ensure
    from .v3 import V3_NAMES

    t0 = time.time()
    train_in_processes([list(g) for g in GROUPS], Path.cwd(), jobs=args.jobs)
    minutes = (time.time() - t0) / 60
    print(f"trained in {minutes:.1f} min (wall clock, {args.jobs} processes, {cpu_model()}, "
          f"{os.cpu_count()} logical CPUs)")
    names = [n for g in GROUPS for n in g]
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
              "cpus": os.cpu_count(), "jobs": args.jobs, "wall_minutes": round(minutes, 1), "models": {}}
    for n in names:
        path = ensure(n)
        shipped = W.shipped_dir(n, verify=False)
        same = W.same_files(path, shipped) if shipped else {}
        log = json.loads((path / "train_log.json").read_text())
        record["models"][n] = {"train_seconds": log["train_seconds"], "bit_identical": same or None}
        print(f"{n}: retrained into {path} ({log['train_seconds'] / 60:.1f} min of training); bit-identical to "
              f"the shipped weights: {same if same else 'no shipped weights to compare'}")
    from ..traces import atomic_write_bytes
    from ..traces import default_cache_dir

    atomic_write_bytes(default_cache_dir() / "organisms" / "retrain.json", json.dumps(record, indent=1).encode())
    if args.record:
        RECORD_FILE.write_text(json.dumps(record, indent=1) + "\n")
    if not args.skip_check:  # each report on the prompt sets its shipped report was measured on
        for models, shipped in (([n for n in names if n not in V3_NAMES], REPORT_FILE),
                                ([n for n in names if n in V3_NAMES], REPORT_V3_FILE)):
            old = json.loads(shipped.read_text()) if shipped.is_file() else {}
            sizes = {"n_harmful": old.get("n_goals"), "n_harmless": old.get("n_harmless")} if old else {}
            rep = run(models, weights="trained", samplers_for=native_samplers, **sizes)
            print(table(rep))
            if old:
                print("\nShipped (recorded) vs retrained:\n" + compare(old, rep))
    if args.install:
        for n in names:
            print(n, W.install(n, ensure(n)))
        print(f"shipped weights now total {W.total_mb():.1f} MB; rerun the check with "
              "`python -m srilib.organisms.check --book --out srilib/organisms/data/preconditions.json`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
