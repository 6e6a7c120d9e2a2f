"""The drawing page's files (mnistlab/serve/static/), put together for `mnistlab serve` or a static site.

One page and one app.js for both; what differs is the engine that answers: server.js posts the
drawing to `mnistlab serve`, browser.js runs the model in the browser with onnxruntime-web.
"""

from __future__ import annotations

import html as _html
from importlib import resources

SERVER_SCRIPTS = ("server.js",)
BROWSER_SCRIPTS = ("preprocess.js", "zip.js", "browser.js")


def asset(name: str) -> str:
    """The text of one of the page's files."""
    return resources.files("mnistlab.serve").joinpath("static", name).read_text(encoding="utf-8")


def page(scripts: list[str]) -> str:
    """index.html with these <script> tags (already written out) where its engine goes."""
    return asset("index.html").replace("<!--ENGINE-->", "\n".join(scripts))


def script(src: str, integrity: str | None = None) -> str:
    attrs = f' integrity="{integrity}" crossorigin="anonymous"' if integrity else ""
    return f'<script src="{_html.escape(src)}"{attrs}></script>'
