"""Task modules. Each registers itself on import; add one line per task."""

from trainer.tasks import text_classification  # noqa: F401
