"""srilib.traces: atomic file writes and atomic directory builds leave either the whole result or nothing."""
import os

import pytest

from srilib import traces as sio


def test_atomic_write_bytes_replaces_and_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "a" / "f.bin"
    sio.atomic_write_bytes(p, b"one")
    sio.atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(p.parent) == ["f.bin"]
    monkeypatch.setattr(sio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        sio.atomic_write_bytes(p, b"three")
    assert p.read_bytes() == b"two" and os.listdir(p.parent) == ["f.bin"]  # old content kept, no temp file


def test_atomic_replace_dir_builds_once_and_never_half(tmp_path):
    out = tmp_path / "models" / "m"

    def build(tmp):
        assert not out.exists() and tmp.parent == out.parent
        (tmp / "w.bin").write_bytes(b"w")
        (tmp / "DONE").write_text("ok")

    assert sio.atomic_replace_dir(out, build) == out
    assert sorted(os.listdir(out)) == ["DONE", "w.bin"] and os.listdir(out.parent) == ["m"]

    def broken(tmp):
        (tmp / "w.bin").write_bytes(b"partial")
        raise RuntimeError("killed mid-build")

    other = tmp_path / "models" / "n"
    with pytest.raises(RuntimeError, match="mid-build"):
        sio.atomic_replace_dir(other, broken)
    assert not other.exists() and os.listdir(out.parent) == ["m"]  # no partial directory, no temp left


def test_atomic_replace_dir_keeps_the_first_finisher(tmp_path):
    out = tmp_path / "m"

    def build(tmp):  # another process finishes while this one is still building
        out.mkdir()
        (out / "DONE").write_text("first")
        (tmp / "DONE").write_text("second")

    sio.atomic_replace_dir(out, build)
    assert (out / "DONE").read_text() == "first" and os.listdir(tmp_path) == ["m"]
