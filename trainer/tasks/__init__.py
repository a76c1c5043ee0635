"""Task modules. Each registers itself on import; add one line per task."""

from trainer.tasks import text_classification  # noqa: F401
from trainer.tasks import forecasting  # noqa: F401
from trainer.tasks import multistep_forecasting  # noqa: F401
from trainer.tasks import text_generation  # noqa: F401
from trainer.tasks import translation  # noqa: F401
