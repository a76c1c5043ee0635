"""Hides TensorFlow's start-up noise on stderr; every other line passes through.

TensorFlow writes a few lines to file descriptor 2 from C++ before absl's
logging is initialised, so `TF_CPP_MIN_LOG_LEVEL` and Python's logging cannot
silence them (the absl pre-init warning, the CUDA stub and cuInit messages on a
machine without a GPU, the CPU-feature and oneDNN notices). `install()` arms an
import hook: when `tensorflow` is first imported, fd 2 is pointed at a pipe read
by a small filter process that drops exactly those lines and copies everything
else, byte for byte, to the original stderr. A separate process (not a thread)
so nothing is lost when the trainer exits with `os._exit` or crashes; it ignores
SIGINT/SIGTERM and ends when the last writer closes the pipe.

`seqtrain -v` does not install it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# One pattern per known line; anything else is shown.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics"
    r"|cpu_feature_guard|port|cuda_dnn|cuda_fft|cuda_blas|computation_placer)\.cc:\d+\] .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with "
    r"the appropriate compiler flags\.)$"
)
# Only these messages of the files above count as noise (a cuda_executor line about an
# out-of-memory GPU is real).
NOISE_TEXT = (
    "Could not find cuda drivers", "failed call to cuInit", "This TensorFlow binary is optimized",
    "oneDNN custom operations are on", "Unable to register", "computation placer already",
    "absl::InitializeLog", "To enable the following instructions",
    "could not open file to read NUMA node", "kernel driver does not appear to be running",
    "retrieving CUDA diagnostic information", "no NVIDIA GPU device is present",
    "CUDA_VISIBLE_DEVICES", "hostname:", "libcuda reported version",
)


def is_noise(line: str) -> bool:
    """Whether one stderr line (without its newline) is known TensorFlow start-up noise."""
    line = line.rstrip("\r\n")
    return bool(NOISE.match(line)) and any(text in line for text in NOISE_TEXT)


def install() -> None:
    """Filters fd 2 from the moment TensorFlow is first imported (idempotent)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _Hook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Hook())


def start_filter() -> None:
    """Points fd 2 at a filter process now (for callers that import TensorFlow directly)."""
    sys.stderr.flush()
    child = subprocess.Popen(
        [sys.executable, "-S", "-c", _FILTER], stdin=subprocess.PIPE, stdout=2,
        stderr=subprocess.DEVNULL, close_fds=True,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))},
    )
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()  # fd 2 is now the only writer end this process holds


class _Hook:
    """A meta-path finder that only starts the filter; the import proceeds normally."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            sys.meta_path.remove(self)
            start_filter()
        return None


# The filter process: line by line, drop noise, flush every line (stderr is unbuffered).
_FILTER = """
import signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from trainer.quiet import is_noise
out = sys.stdout.buffer
for raw in sys.stdin.buffer:
    if not is_noise(raw.decode("utf-8", "replace")):
        out.write(raw)
        out.flush()
"""
