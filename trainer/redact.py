"""Redaction of secrets that ride inside URLs (signed-URL tokens, user:password@).

`redact()` takes a string, or a list/tuple/dict of them (nested), and returns a copy
in which every URL's query string and user info are replaced by `REDACTED`. Use it
on anything a run writes or logs that may hold user-supplied URLs: argv in
runtime.json, the config text in TensorBoard, error messages.
"""

from __future__ import annotations

import re

REDACTED = "REDACTED"

# scheme://[userinfo@]rest-of-url; the URL ends at whitespace or a quote.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s'\"@?#]*@)?"
                  r"(?P<rest>[^\s'\"]*)")


def redact(value):
    """A copy of `value` with URL query strings and user info replaced by REDACTED."""
    if isinstance(value, str):
        return _URL.sub(_one, value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def _one(m: re.Match) -> str:
    user = f"{REDACTED}@" if m.group("user") else ""
    rest = m.group("rest")
    if "?" in rest:
        path, _, query = rest.partition("?")
        fragment = "#" + query.partition("#")[2] if "#" in query else ""
        rest = f"{path}?{REDACTED}{fragment}"
    return f"{m.group('scheme')}{user}{rest}"
