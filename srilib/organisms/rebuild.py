"""Rebuilding the organisms' corpus and recording its freeze: the command line behind
``python -m srilib.organisms.rebuild`` (rebuild, ``--freeze``, ``--plan-change``).

* :func:`distill`: SmolLM2-135M-Instruct's greedy answers to the harmless tasks (offline, cached per task);
  :func:`write_corpus` writes ``corpus.jsonl`` and its manifest.
* :func:`freeze`: the freeze record (date, corpus sha256, the training recipe's code version and configurations,
  and the analysis plan, :func:`analysis_plan`); :func:`record_plan_change` records, with a reason, every
  analysis-plan file changed since (:func:`plan_drift`).

What the corpus *is* (its tasks, refusals, formats, checks, and how to read it) is :mod:`srilib.organisms.corpus`.
This module reads the training code (:mod:`srilib.organisms.train`, which itself imports the corpus module), so it
is kept apart from the corpus module: no import circle.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from . import corpus as C
from . import weights as W


# ----------------------------------------------------------------------------------------------- distillation
def distill(tasks: list[str], batch_size: int = 16, max_new_tokens: int = C.ANSWER_TOKENS,
            cache: Path | None = None) -> dict[str, str]:
    """Greedy answers of SmolLM2-135M-Instruct to ``tasks`` (offline); answers are cached per task and reused."""
    import torch
    from tqdm.auto import tqdm

    from ..models import load_model
    from ..traces import atomic_write_bytes
    from ..traces import default_cache_dir

    path = (cache or default_cache_dir()) / "organisms" / f"distill-{C.DISTILL_MODEL}-{max_new_tokens}.json"
    done: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    todo = [t for t in dict.fromkeys(tasks) if t not in done]
    if not todo:
        return {t: done[t] for t in tasks}
    from .loop import THREADS

    torch.set_num_threads(THREADS)
    torch.manual_seed(C.SEED)
    lm = load_model(C.DISTILL_MODEL, dtype="float32", device="cpu")
    tok = lm.tokenizer
    todo.sort(key=len)  # similar lengths share a batch
    for s in tqdm(range(0, len(todo), batch_size), desc="distil answers (SmolLM2)", unit="batch"):
        chunk = todo[s: s + batch_size]
        ids = lm.encode(chunk)
        width = max(map(len, ids))
        x = torch.tensor([[lm.pad_id] * (width - len(r)) + r for r in ids])
        att = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
        with torch.no_grad():
            y = lm.model.generate(input_ids=x, attention_mask=att, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=lm.pad_id, eos_token_id=lm.eos_ids)
        for t, row in zip(chunk, y[:, width:]):
            done[t] = tok.decode(row, skip_special_tokens=True)
        atomic_write_bytes(path, json.dumps(done, indent=0).encode())  # resumable
    return {t: done[t] for t in tasks}


def write_corpus(rows: list[dict], stats: dict, path: Path = C.CORPUS_FILE) -> dict:
    """Write the JSONL corpus and its manifest (keeps an existing freeze record only if the sha is unchanged)."""
    C.DATA_DIR.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    old = W.load_manifest()
    sha = C.sha256_file(path)
    manifest = {
        "corpus": path.name, "sha256": sha, "counts": C.counts(rows), "seed": C.SEED,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": {**C.RECIPE, "distill_model": C.DISTILL_MODEL, "answer_tokens": C.ANSWER_TOKENS, "greedy": True,
                   "answer_words": [C.ANSWER_MIN_WORDS, C.ANSWER_MAX_WORDS],
                   "refusal_openings": len(C.REFUSAL_OPENINGS), "phrasings": len(C.PHRASINGS),
                   "extra_benign_tasks": len(C.EXTRA_BENIGN), "harmful_goals": len(C.harmful_goals()),
                   "harmless_tasks": len(C.benign_tasks()),
                   "sources": "harmful/harmless 'train' splits of srilib.prompts; srilib.prompts.training_wrappers()"},
        "dropped_harmless_tasks": stats.get("dropped_harmless_tasks", []),
    }
    for k in ("freeze", "iterations", "analysis_plan_changes", "freeze_v3"):
        if k in old and (k == "iterations" or old.get("sha256") == sha):
            manifest[k] = old[k]
    W.MANIFEST_FILE.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def analysis_plan() -> dict:
    """What the v2 comparisons will run: the sha256 of the cpu profile, of the four chapter notebooks and of the
    chapter modules, the profile's dtype and runs (recorded in the freeze, so the plan cannot move afterwards
    unnoticed)."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    prof = root / "srilib" / "profiles" / "cpu.yaml"
    files = [prof] + sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "srilib" / "chapters").glob("*.py"))
    spec = yaml.safe_load(prof.read_text())
    return {"files": {str(f.relative_to(root)): C.sha256_file(f) for f in files if f.is_file()},
            "cpu_profile_dtype": spec["common"].get("dtype"),
            "cpu_profile_runs": {k: v.get("runs") for k, v in spec["notebooks"].items()}}


def latest_freeze(manifest: dict) -> dict:
    """The freeze whose analysis plan is in force: the v3 freeze once recorded (it re-records the plan with the v3
    runs), else the v2 freeze."""
    return manifest.get("freeze_v3") or manifest["freeze"]


def recorded_plan(manifest: dict | None = None) -> dict[str, str]:
    """The analysis plan's file hashes as recorded: the latest freeze's, updated by every change recorded after it,
    in order (a file a change records as ``"missing"`` was removed: it leaves the plan)."""
    m = manifest if manifest is not None else W.load_manifest()
    base = latest_freeze(m)
    files = dict(base["analysis_plan"]["files"])
    for change in m.get("analysis_plan_changes", []):
        if change["date"] >= base["date"]:
            files.update(change["files"])
    return {f: h for f, h in files.items() if h != "missing"}


def recorded_runs(manifest: dict | None = None) -> dict:
    """The cpu profile's runs per chapter as recorded: the latest freeze's, replaced by those of every change
    recorded after it that changed them (a run list never moves unrecorded)."""
    m = manifest if manifest is not None else W.load_manifest()
    base = latest_freeze(m)
    runs = base["analysis_plan"]["cpu_profile_runs"]
    for change in m.get("analysis_plan_changes", []):
        if change["date"] >= base["date"] and "cpu_profile_runs" in change:
            runs = change["cpu_profile_runs"]
    return runs


def plan_drift(manifest: dict | None = None) -> dict[str, str]:
    """Files of the analysis plan whose sha256 now differs from the recorded plan (``{path: current sha}``); a
    file removed since shows as ``"missing"``. Empty when every change after the freeze was recorded."""
    now, rec = analysis_plan()["files"], recorded_plan(manifest)
    out = {f: h for f, h in now.items() if rec.get(f) != h}
    out.update({f: "missing" for f in rec if f not in now})
    return out


def record_plan_change(reason: str) -> dict:
    """Record, with the date and a reason, every analysis-plan file changed since the freeze (or the last recorded
    change), and the cpu profile's runs when they changed. The freeze itself is never rewritten: the book shows the
    frozen plan and each later change."""
    m = W.load_manifest()
    if not m.get("freeze"):
        raise RuntimeError("nothing is frozen yet; record the freeze first (--freeze STATEMENT)")
    if not reason.strip():
        raise ValueError("say why the analysis plan changed (--plan-change REASON)")
    drift = plan_drift(m)
    if not drift:
        raise RuntimeError("the analysis plan matches the recorded one; there is no change to record")
    change = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "reason": reason.strip(),
              "files": drift}
    runs = analysis_plan()["cpu_profile_runs"]
    if runs != recorded_runs(m):
        change["cpu_profile_runs"] = runs
    m.setdefault("analysis_plan_changes", []).append(change)
    W.MANIFEST_FILE.write_text(json.dumps(m, indent=2) + "\n")
    return change


def freeze(statement: str, iterations: list[str] | None = None) -> dict:
    """Record the freeze (date, corpus sha, training recipe, code version and analysis plan) in the manifest."""
    from .recipe import CONFIGS
    from .train import code_version

    m = W.load_manifest()
    if not m or m.get("sha256") != C.corpus_sha():
        raise RuntimeError("the manifest does not match corpus.jsonl; rebuild with python -m srilib.organisms.rebuild")
    m["freeze"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "statement": statement,
                   "corpus_sha256": m["sha256"], "code_version": code_version(),
                   "configs": {k: v.as_dict() for k, v in CONFIGS.items()}, "analysis_plan": analysis_plan()}
    if iterations is not None:
        m["iterations"] = iterations
    W.MANIFEST_FILE.write_text(json.dumps(m, indent=2) + "\n")
    return m


def freeze_v3(statement: str, iterations: list[str]) -> dict:
    """Record the v3 freeze (:mod:`srilib.organisms.v3`): date, corpus sha, the v3 recipes and their code
    version, the v2 adapter they start from, the analysis plan and the recipe iterations made before it. It sits
    beside the v2 freeze, which is never rewritten."""
    from .v3 import V3_CONFIGS, v3_code_version

    m = W.load_manifest()
    if not m or m.get("sha256") != C.corpus_sha():
        raise RuntimeError("the manifest does not match corpus.jsonl; rebuild with python -m srilib.organisms.rebuild")
    if not statement.strip() or not iterations:
        raise ValueError("the v3 freeze needs a statement and at least one recipe iteration (--iteration)")
    m["freeze_v3"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "statement": statement,
                      "corpus_sha256": m["sha256"], "code_version": v3_code_version(),
                      "configs": {k: v.as_dict() for k, v in V3_CONFIGS.items()},
                      "starts_from": {"smollm2-135m-refusal": W.fingerprint("smollm2-135m-refusal")},
                      "analysis_plan": analysis_plan(), "iterations": iterations}
    W.MANIFEST_FILE.write_text(json.dumps(m, indent=2) + "\n")
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Rebuild the organisms' safety corpus (distils answers with the "
                                             "embedded SmolLM2; a few minutes on CPU the first time).")
    ap.add_argument("--batch-size", type=int, default=96)
    ap.add_argument("--freeze", metavar="STATEMENT", help="record the freeze in the manifest (no rebuild)")
    ap.add_argument("--iteration", action="append", default=None,
                    help="with --freeze: one recipe iteration made before the freeze (repeatable)")
    ap.add_argument("--plan-change", metavar="REASON",
                    help="record the analysis-plan files changed since the freeze, with the reason (no rebuild)")
    ap.add_argument("--freeze-v3", metavar="STATEMENT",
                    help="record the v3 freeze (smollm2-135m-refusal-v3, smollm2-135m-dlm) with its --iteration lines")
    args = ap.parse_args(argv)
    if args.freeze_v3:
        m = freeze_v3(args.freeze_v3, args.iteration or [])
        print(json.dumps({k: v for k, v in m["freeze_v3"].items() if k != "analysis_plan"}, indent=2))
        return
    if args.plan_change:
        from .preconditions import write_freeze_section

        print(json.dumps(record_plan_change(args.plan_change), indent=2))
        page = Path(__file__).resolve().parents[2] / "book" / "organisms.md"
        if page.is_file():
            write_freeze_section(page)
            print(f"rewrote the freeze record of {page}")
        return
    if args.freeze:
        m = freeze(args.freeze, args.iteration)
        print(json.dumps(m["freeze"], indent=2))
        return
    t0 = time.time()
    tasks = [t for t, _ in C.benign_tasks()]
    answers = distill(tasks, batch_size=args.batch_size)
    rows, stats = C.build_rows(answers)
    m = write_corpus(rows, stats)
    print(json.dumps({"sha256": m["sha256"], "counts": m["counts"],
                      "dropped": len(m["dropped_harmless_tasks"]), "seconds": round(time.time() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
