"""Command line: ``python -m srilib {run,book,vendor,bench,profiles}``.

Examples
--------
python -m srilib book --profile cpu            # vendor JS, execute the notebooks, build, offline check
python -m srilib run --profile smoke --only sri_geometry --force
python -m srilib profiles                      # list the shipped profiles
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import build, execute, record
from .bench import run_benchmarks
from .offline import check_offline
from .experiment import available_profiles, load_profile


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m srilib", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None,
                   help="repository root (default: the working directory, else the folder above srilib/)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add_run_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--profile", default="cpu",
                        help=f"profile name ({', '.join(available_profiles())}) or path to a .yaml (default: cpu)")
        sp.add_argument("--force", action="store_true", help="re-execute even when the stamp matches")
        sp.add_argument("--timeout", type=int, default=execute.DEFAULT_TIMEOUT,
                        help=f"papermill execution timeout per cell in seconds (default {execute.DEFAULT_TIMEOUT})")
        sp.add_argument("--skip-preflight", action="store_true",
                        help="do not check first what the profile needs (python -m srilib check-profile)")

    r = sub.add_parser("run", help="execute the profile's notebooks with papermill into book/executed/PROFILE/")
    add_run_args(r)
    r.add_argument("--only", nargs="+", metavar="NAME", help="execute only these notebooks of the profile")
    r.add_argument("--log-output", action="store_true", help="stream the notebooks' cell output")

    b = sub.add_parser("book", help="vendor JS, run, jupyter-book build -W, check the book works offline")
    add_run_args(b)
    b.add_argument("--toc", type=Path, default=None, help="table of contents to build (default: _toc.yml)")
    b.add_argument("--incremental", action="store_true",
                   help="re-read only changed pages (faster; warnings of unchanged pages are not repeated)")

    v = sub.add_parser("vendor", help="copy require.js, the widget manager and MathJax into book/_static/vendor")
    v.add_argument("--force", action="store_true", help="re-copy even when up to date")

    c = sub.add_parser("check", help="fail if the built HTML loads any script, style or image from the network")
    c.add_argument("html", nargs="?", type=Path, default=None,
                   help="built HTML folder (default: the --profile's, _build/PROFILE/html)")
    c.add_argument("--profile", default="cpu", help="whose built book to check (default: cpu)")

    cb = sub.add_parser("colab", help="write the repository URL into the notebooks' Colab cells and _config.yml")
    cb.add_argument("--repo", default=None, help="repository URL (default: srilib.colab.REPO_URL; with --dry-run: "
                    "this checkout's committed HEAD)")
    cb.add_argument("--dry-run", type=Path, default=None, metavar="DIR",
                    help="instead: open each notebook as a fresh Colab runtime would (new venv with only torch, "
                         "install cell as written, papermill) under DIR; needs PyPI")
    cb.add_argument("--profile", default="smoke", help="parameters for --dry-run (default: smoke)")

    pl = sub.add_parser("plan", help="list the traces the profile's chapters read (the trace plan); --compute "
                                     "computes them into the cache in this process")
    pl.add_argument("--profile", default="cpu", help="profile name or path to a .yaml (default: cpu)")
    pl.add_argument("--only", nargs="+", metavar="NAME", help="only these notebooks of the profile")
    pl.add_argument("--compute", action="store_true", help="compute every trace set of the plan (cached ones are "
                                                           "skipped)")

    sub.add_parser("trace", add_help=False,
                   help="generate traces, sharded over GPUs with accelerate (python -m srilib trace -h)")

    s = sub.add_parser("bench", help="run benchmarks/*.py (or the named ones)")
    s.add_argument("names", nargs="*", help="benchmark file stems")

    sub.add_parser("profiles", help="list the shipped profiles")
    cp = sub.add_parser("check-profile", help="check everything a profile needs (packages, models, prompt sets, "
                                              "GPU, disk, parameters) without running anything")
    cp.add_argument("profile", help="profile name or path to a .yaml")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["trace"]:  # forwarded whole: `python -m srilib trace ...` == `python -m srilib.distributed ...`
        from .distributed import main as trace_main
        return trace_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "profiles":
            for name in available_profiles():
                prof = load_profile(name)
                print(f"{name:6s} [{prof.hardware}] notebooks: {', '.join(prof.notebooks)}\n       {prof.description}")
            return 0
        root = build.find_root(args.root)
        if args.cmd == "colab":
            from . import colab
            if args.dry_run is not None:
                results = colab.dry_run(root, args.dry_run, repo=args.repo, profile=args.profile)
                for r in results:
                    print(f"{r['notebook']}: {'OK' if r['ok'] else 'FAILED'} (exit {r['returncode']}); torch "
                          f"{r['torch_before']} -> {r['torch_after']}; srilib preinstalled: {r['srilib_before']}; "
                          f"kernel {r['kernel']}; runtime {r['runtime_setup_s']} s, install cell "
                          f"{r['install_cell_s']} s, notebook {r['notebook_s']} s")
                    if not r["ok"]:
                        print(r["log_tail"])
                (args.dry_run / "dry_run.json").write_text(json.dumps(results, indent=1) + "\n")
                return 0 if all(r["ok"] for r in results) else 1
            changed = colab.sync(root, args.repo or colab.REPO_URL)
            print("updated: " + (", ".join(changed) or "nothing (already in sync)"))
            return 0
        if args.cmd == "check-profile":
            from .preflight import preflight, table
            checks = preflight(load_profile(args.profile), root)
            print(table(checks))
            return 0 if all(c.ok for c in checks) else 1
        if args.cmd in ("run", "book") and not args.skip_preflight:
            from .preflight import PreflightError, require
            try:
                require(load_profile(args.profile), root)
            except PreflightError as e:
                print(f"srilib {args.cmd}: {e}", file=sys.stderr)
                return 1
        if args.cmd == "run":
            summary = execute.run_profile(load_profile(args.profile), root, only=args.only, force=args.force,
                                          timeout=args.timeout, log_output=args.log_output)
            failed = record.failure_summary(summary)
            if failed:
                print(f"srilib run: not everything ran: {failed}", file=sys.stderr)
                return 1
        elif args.cmd == "book":
            build.make_book(load_profile(args.profile), root, toc=args.toc, force=args.force,
                            timeout=args.timeout, all_pages=not args.incremental)
        elif args.cmd == "vendor":
            build.vendor_js(root, force=args.force)
        elif args.cmd == "check":
            html = args.html or build.html_dir(root, args.profile)
            if not (html / "index.html").is_file():
                raise FileNotFoundError(f"{html}/index.html does not exist; build the book first (make book)")
            remote = check_offline(html)
            print("\n".join(remote) or f"check: {html} loads nothing from the network")
            return 1 if remote else 0
        elif args.cmd == "plan":
            from .plan import build_plan
            plan = build_plan(load_profile(args.profile), root, args.only)
            for r in plan.describe():
                print(f"{r['chapter']:28s} {r['run']:40s} {r['set']:48s} {r['prompts']}")
            if args.compute:
                report = plan.run()
                print(f"plan: {report['distinct']} distinct trace sets, {report['computed']} computed, "
                      f"{report['cached']} from the cache, {len(report['failed'])} failed, {report['seconds']:.0f} s")
                return 1 if report["failed"] else 0
        elif args.cmd == "bench":
            return 1 if run_benchmarks(root, args.names) else 0
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
        print(f"srilib {args.cmd}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
