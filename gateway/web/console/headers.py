"""Security headers for every console response: what a browser may run, frame, sniff or refer.

The console's few lines of script are written inline in its templates. Rather than allow every
inline script (`'unsafe-inline'`, which would let an injected one run too), the policy lists
the sha256 of each inline `<script>` body and `on…="…"` handler found in the templates when the
gateway starts: exactly those run, nothing else. A script whose text is filled in by Jinja has
no fixed hash and is blocked, so scripts must stay static (data belongs in `data-` attributes).
"""
from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

from flask import Flask, Response, request

#: Inline script bodies and event-handler attributes, as they stand in the template source.
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_EVENT_HANDLER = re.compile(r"""\son[a-z]+="([^"]*)\"""")


def inline_script_hashes(templates_dir: Path) -> list[str]:
    """CSP hash sources for every static inline script and handler in the templates."""
    hashes: set[str] = set()
    for template in sorted(templates_dir.glob("*.html")):
        source = template.read_text(encoding="utf-8")
        scripts = _INLINE_SCRIPT.findall(source) + [html.unescape(v) for v in _EVENT_HANDLER.findall(source)]
        for script in scripts:
            if "{{" in script or "{%" in script:
                continue
            digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
            hashes.add(f"'sha256-{digest}'")
    return sorted(hashes)


def content_security_policy(script_hashes: list[str]) -> str:
    """Our own stylesheet and scripts, requests and forms to us only; no frames, plugins or <base>."""
    scripts = " ".join(["'self'", "'unsafe-hashes'", *script_hashes])
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",  # live pages refresh themselves from the same pages
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def init_app(app: Flask, path_prefix: str, templates_dir: Path) -> None:
    """Stamp the headers on every response under `path_prefix`, error pages and 503s included."""
    headers = {
        "Content-Security-Policy": content_security_policy(inline_script_hashes(templates_dir)),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }

    @app.after_request
    def _console_headers(response: Response) -> Response:
        if request.path == path_prefix or request.path.startswith(path_prefix + "/"):
            for name, value in headers.items():
                response.headers.setdefault(name, value)
        return response
