"""The tasks' config modules: dataclasses and a `SPEC` per task, importable without TensorFlow."""

from __future__ import annotations

import os

# The data files shipped with seqtrain (the data modules read them; configs only list them).
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "bundled")


def bundled_names(prefix: str, suffix: str, *, strip_prefix: bool) -> list[str]:
    """Names of the bundled files `<prefix>...<suffix>`, without the suffix (and prefix)."""
    start = len(prefix) if strip_prefix else 0
    return sorted(f[start:-len(suffix)] for f in os.listdir(BUNDLED_DIR)
                  if f.startswith(prefix) and f.endswith(suffix))
