"""Vendor the book's JavaScript (require.js, the ipywidgets HTML manager, MathJax 3) so that it works offline.

Each package is fetched once from the npm registry with ``npm pack`` into ``<repo>/.cache/npm``, checked against
its pinned sha512 integrity, and the files the book needs are copied to ``book/_static/vendor/`` (gitignored).
``_config.yml`` points Sphinx (``mathjax_path``) and MyST-NB (``nb_ipywidgets_js``) at these copies.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NpmPackage:
    """A pinned npm package and what to copy out of it (``package/<src>`` -> ``vendor/<dst>``)."""

    name: str
    version: str
    integrity: str  # npm's dist.integrity (sha512, base64)
    copy: tuple[tuple[str, str], ...]  # (path inside the tarball's package/, destination under vendor/)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        """File name that ``npm pack`` writes."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


_FONTS = tuple((f"dist/*.{ext}", "html-manager/dist/") for ext in ("woff2", "woff", "ttf", "eot", "svg"))
# html-manager 1.0.x is the embedder for ipywidgets 8 (widget-state schema 2.0, @jupyter-widgets/controls 5.x).
PACKAGES = (
    NpmPackage("requirejs", "2.3.8",
               "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
               (("require.js", "require.js"),)),
    NpmPackage("@jupyter-widgets/html-manager", "1.0.15",
               "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
               (("dist/embed-amd.js", "html-manager/dist/embed-amd.js"), *_FONTS, ("package.json", "html-manager/package.json"))),
    NpmPackage("mathjax", "3.2.2",
               "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
               (("es5", "mathjax"), ("LICENSE", "mathjax/LICENSE"))),
)
MANIFEST = "VERSIONS.json"
SHIM = "widgets-offline.js"  # written by vendor(); _config.yml loads it between require.js and embed-amd.js
# The widget embedder (html-manager 1.0.x) needs two adjustments to run offline beside MathJax 3:
#  1. it finds its icon fonts next to the URL require.js gives its AMD module id; map that id to the vendored copy
#     (page-independent: the base is taken from this script's own URL).
#  2. ipywidgets 8 typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue); the book loads MathJax 3,
#     so provide a Hub.Queue that forwards to MathJax 3's typesetPromise.
SHIM_JS = """\
/* Written by srilib/vendor.py (python -m srilib vendor); loaded after require.js, before embed-amd.js. */
(function () {
  "use strict";
  var src = document.currentScript.src;
  var base = src.slice(0, src.lastIndexOf("/") + 1);
  window.requirejs.config({paths: {"@jupyter-widgets/html-manager/dist": base + "html-manager/dist"}});
  var hub = {Queue: function () {
    var mj = window.MathJax;
    if (!mj || !mj.typesetPromise || !mj.startup) { return; }  /* MathJax 3 not started: it typesets the page */
    for (var i = 0; i < arguments.length; i++) {
      var job = arguments[i];
      var el = Array.isArray(job) && job[0] === "Typeset" ? job[2] : undefined;
      mj.startup.promise = mj.startup.promise.then(function () { return mj.typesetPromise(el ? [el] : undefined); });
    }
  }};
  var mj = window.MathJax;
  if (!mj) { return; }                       /* no math on this page: the embedder skips typesetting */
  mj.Hub = hub;
  if (!mj.version) {                         /* still the configuration object: re-add Hub once MathJax 3 is up */
    mj.startup = mj.startup || {};
    var ready = mj.startup.ready;
    mj.startup.ready = function () {
      if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
      window.MathJax.Hub = hub;
    };
  }
})();
"""
# Paths (relative to the Sphinx static dir) that _config.yml refers to; checked after vendoring.
REQUIRED = ("vendor/require.js", f"vendor/{SHIM}", "vendor/html-manager/dist/embed-amd.js", "vendor/mathjax/tex-mml-chtml.js",
            "vendor/mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff")


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(pkg: NpmPackage, cache: Path) -> Path:
    """Tarball of ``pkg`` in ``cache`` (``npm pack`` on a miss), verified against its pinned integrity."""
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / pkg.tarball
    if not tgz.exists():
        if shutil.which("npm") is None:
            raise RuntimeError(f"npm is needed once to fetch {pkg.spec} into {cache}; install Node.js/npm "
                               f"(Debian: apt-get install npm) or copy {pkg.tarball} there by hand")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            r = subprocess.run(["npm", "pack", pkg.spec, "--silent", "--pack-destination", tmp],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"`npm pack {pkg.spec}` failed (exit {r.returncode}):\n{r.stderr.strip()}")
            (Path(tmp) / pkg.tarball).replace(tgz)
    got = _integrity(tgz)
    if got != pkg.integrity:
        tgz.unlink()
        raise RuntimeError(f"{tgz.name}: integrity {got} does not match the pinned {pkg.integrity}; "
                           f"the corrupt file was deleted, run `python -m srilib vendor` again")
    return tgz


def _copy_out(root: Path, src: str, dst: Path) -> int:
    """Copy ``root/src`` (a file, a directory or a ``dir/*.ext`` glob) to ``dst``; returns files copied."""
    if "*" in src:
        matches = sorted(root.glob(src))
        dst.mkdir(parents=True, exist_ok=True)
        for m in matches:
            shutil.copy2(m, dst / m.name)
        return len(matches)
    s = root / src
    if s.is_dir():
        shutil.copytree(s, dst, dirs_exist_ok=True)
        return sum(1 for p in s.rglob("*") if p.is_file())
    if not s.is_file():
        raise FileNotFoundError(f"{src} is missing from the npm package; was the pinned version changed?")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(s, dst)
    return 1


def vendor(static_dir: str | Path, cache: str | Path, *, force: bool = False, quiet: bool = False) -> Path:
    """Fill ``<static_dir>/vendor`` with the pinned packages; a no-op when its manifest already matches.

    Returns the vendor directory.
    """
    out = Path(static_dir) / "vendor"
    want = {**{p.name: p.version for p in PACKAGES}, SHIM: hashlib.sha256(SHIM_JS.encode()).hexdigest()[:12]}
    manifest = out / MANIFEST
    if (not force and manifest.is_file() and json.loads(manifest.read_text()) == want
            and all((Path(static_dir) / r).is_file() for r in REQUIRED)):
        if not quiet:
            print(f"vendor: {out} is up to date")
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for pkg in PACKAGES:
        tgz = fetch(pkg, Path(cache))
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(tgz) as tf:
            tf.extractall(tmp, filter="data")
            n = sum(_copy_out(Path(tmp) / "package", src, out / dst) for src, dst in pkg.copy)
        if not quiet:
            print(f"vendor: {pkg.spec}: {n} files")
    (out / SHIM).write_text(SHIM_JS)
    missing = [r for r in REQUIRED if not (Path(static_dir) / r).is_file()]
    if missing:
        raise RuntimeError(f"vendoring left out {missing}; check PACKAGES in srilib/vendor.py")
    manifest.write_text(json.dumps(want, indent=1, sort_keys=True) + "\n")
    return out


# ---------------------------------------------------------------------------------- Sphinx extension
def _is_thebe(js: object) -> bool:
    """True for sphinx-thebe's scripts (its loader names a CDN URL; launching code cells is off in this book)."""
    attrs = getattr(js, "attributes", {}) or {}
    return "sphinx-thebe" in str(getattr(js, "filename", js) or "") or "THEBE_JS_URL" in attrs.get("body", "")


def _drop_thebe(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = [js for js in context["script_files"] if not _is_thebe(js)]


def setup(app) -> dict:
    """Sphinx extension (``_config.yml``: ``extra_extensions: [srilib.vendor]``): drop the thebe loader that
    Jupyter Book always adds, so that no page refers to a CDN script."""
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
