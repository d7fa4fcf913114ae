"""Does the built book load anything from the network? (It must work offline: ``python -m srilib check``.)

Scans every HTML page for tags that would load a remote script, stylesheet, image, frame or widget module, inline
styles and stylesheets, and script/style URLs spelled out in inline JavaScript (a lazy loader would fetch them
later); and every CSS file for remote ``url()`` / ``@import``. Links a reader may click are not loads.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

_REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)
_CSS_URL = re.compile(r"""(?:@import\s+(?:url\()?|url\()\s*['"]?((?:https?:)?//[^'")\s]+)""", re.I)
_LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest"}
# a script or stylesheet URL spelled out inside inline JavaScript (a lazy loader would fetch it later)
_INLINE_ASSET = re.compile(r"""(?:https?:)?//[^\s'"`<>]+?\.(?:m?js|css)(?:\?[^\s'"`<>]*)?(?=['"`\s]|$)""", re.I)


class _RemoteRefs(HTMLParser):
    """Collects the URLs a page would *load* (scripts, styles, images, frames) that point off the machine."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.remote: list[str] = []
        self._in_style = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: (v or "") for k, v in attrs}
        urls = []
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed", "track", "input"):
            urls.append(a.get("src", ""))
        if tag == "link" and _LOADING_RELS & set(a.get("rel", "").lower().split()):
            urls.append(a.get("href", ""))
        if tag == "object":
            urls.append(a.get("data", ""))
        urls.append(a.get("data-jupyter-widgets-cdn", ""))  # html-manager's fallback for unknown widget modules
        urls.extend(_CSS_URL.findall(a.get("style", "")))
        self.remote += [f"<{tag}> {u}" for u in urls if u and _REMOTE.match(u)]
        self._in_style = tag == "style"
        self._in_script = tag == "script" and a.get("type", "text/javascript").endswith("javascript")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.remote += [f"<style> {u}" for u in _CSS_URL.findall(data)]
        if self._in_script:
            self.remote += [f"<script> (inline) {u}" for u in _INLINE_ASSET.findall(data)]


def check_offline(html_dir: str | Path) -> list[str]:
    """Every remote (http/https/protocol-relative) script, stylesheet, image or frame the built book loads.

    Scans each HTML page (tags that load something, inline styles, script/style URLs inside inline scripts) and
    each CSS file under ``html_dir``; returns ``"<file>: <tag> <url>"`` problems.
    """
    html_dir = Path(html_dir)
    problems = []
    for f in sorted(html_dir.rglob("*.html")):
        parser = _RemoteRefs()
        parser.feed(f.read_text(errors="replace"))
        problems += [f"{f.relative_to(html_dir)}: {r}" for r in parser.remote]
    for f in sorted(html_dir.rglob("*.css")):
        problems += [f"{f.relative_to(html_dir)}: url() {u}" for u in _CSS_URL.findall(f.read_text(errors="replace"))]
    return problems
