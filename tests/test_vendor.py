"""Vendoring: pinned npm tarballs are verified, unpacked into book/_static/vendor, and re-used when current."""
from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import ipywidgets
import pytest

from srilib import vendor as v


def _tarball(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def fake_pkg(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    pkg = v.NpmPackage("@scope/thing", "1.2.3", "", (("dist/main.js", "thing/main.js"), ("dist/*.woff", "thing/"),
                                                      ("assets", "thing/assets")))
    tgz = cache / pkg.tarball
    _tarball(tgz, {"dist/main.js": b"main()", "dist/a.woff": b"A", "dist/b.woff": b"B", "dist/skip.map": b"",
                   "assets/x/y.js": b"y"})
    pkg = v.NpmPackage(pkg.name, pkg.version, v._integrity(tgz), pkg.copy)
    monkeypatch.setattr(v, "PACKAGES", (pkg,))
    monkeypatch.setattr(v, "REQUIRED", ("vendor/thing/main.js", f"vendor/{v.SHIM}"))
    return pkg, cache


def test_vendor_copies_selected_files_and_is_idempotent(fake_pkg, tmp_path):
    pkg, cache = fake_pkg
    assert pkg.tarball == "scope-thing-1.2.3.tgz"
    out = v.vendor(tmp_path / "static", cache)
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["VERSIONS.json", "thing/a.woff", "thing/assets/x/y.js", "thing/b.woff", "thing/main.js", v.SHIM]
    assert "requirejs.config" in (out / v.SHIM).read_text()
    (out / "thing/main.js").write_text("edited")
    v.vendor(tmp_path / "static", cache)
    assert (out / "thing/main.js").read_text() == "edited"  # untouched when the manifest matches
    v.vendor(tmp_path / "static", cache, force=True)
    assert (out / "thing/main.js").read_text() == "main()"


def test_corrupt_tarball_is_rejected_and_deleted(fake_pkg, tmp_path):
    pkg, cache = fake_pkg
    (cache / pkg.tarball).write_bytes(b"not the pinned file")
    with pytest.raises(RuntimeError, match="does not match the pinned"):
        v.vendor(tmp_path / "static", cache)
    assert not (cache / pkg.tarball).exists()


def test_missing_npm_is_named(fake_pkg, tmp_path, monkeypatch):
    pkg, cache = fake_pkg
    (cache / pkg.tarball).unlink()
    monkeypatch.setattr(v.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="npm is needed"):
        v.fetch(pkg, cache)


def test_pins_match_ipywidgets_8():
    pins = {p.name: p.version for p in v.PACKAGES}
    assert int(ipywidgets.__version__.split(".")[0]) == 8
    assert pins["@jupyter-widgets/html-manager"].startswith("1.0.")  # the embedder for ipywidgets 8 state
    assert pins["mathjax"].startswith("3.")
    assert all(p.integrity.startswith("sha512-") for p in v.PACKAGES)


def test_sphinx_hook_drops_only_thebe():
    keep = SimpleNamespace(filename="vendor/require.js", attributes={})
    loader = SimpleNamespace(filename=None, attributes={"body": 'const THEBE_JS_URL = "https://x/y.js"'})
    thebe = SimpleNamespace(filename="sphinx-thebe.js", attributes={"async": "async"})
    ctx = {"script_files": [keep, loader, thebe]}
    v._drop_thebe(None, "p", "page.html", ctx, None)
    assert ctx["script_files"] == [keep]
