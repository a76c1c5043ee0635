"""TensorBoard writing and console progress.

Event files go to MODEL_DIR/train and MODEL_DIR/eval (local or gs://). With
`runtime.log_sync=local_then_sync` they are written to a local dir and
uploaded periodically instead (see trainer/logsync.py). Non-chief workers get
no-op writers.
"""

from __future__ import annotations

import sys
import time

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from trainer.redact import redact


def read_scalars(log_dir: str, tag: str) -> dict[int, float]:
    """{step: value} of a scalar `tag` in the event files of `log_dir` (local or gs://)."""
    values = {}
    for path in sorted(tf.io.gfile.glob(f"{log_dir.rstrip('/')}/events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag == tag:
                    values[event.step] = float(tf.make_ndarray(v.tensor))
    return values


class Writers:
    """The train and eval summary writers of a run."""

    def __init__(self, log_root: str | None, *, eval_only: bool = False):
        if log_root is not None and eval_only:  # a side-car evaluator: eval/ only
            self.train = tf.summary.create_noop_writer()
            self.eval = tf.summary.create_file_writer(f"{log_root.rstrip('/')}/eval")
            self._session = tf.summary.create_noop_writer()
        elif log_root is None:
            self.train = tf.summary.create_noop_writer()
            self.eval = tf.summary.create_noop_writer()
            self._session = tf.summary.create_noop_writer()
        else:
            self.train = tf.summary.create_file_writer(f"{log_root.rstrip('/')}/train")
            self.eval = tf.summary.create_file_writer(f"{log_root.rstrip('/')}/eval")
            # The HParams session lives in the log root, so TensorBoard counts the scalars of
            # both train/ and eval/ (its sub-runs) as the session's metrics: the HParams tab
            # then compares runs by eval/accuracy, eval/mse... and not only train scalars.
            self._session = tf.summary.create_file_writer(log_root)

    def write_config(self, config, step: int) -> None:
        self.text("config", "```\n" + config.to_yaml() + "\n```", step)
        with self._session.as_default(step=step):
            hp.hparams(_flat_hparams(redact(config.to_dict())), trial_id=None)
        self._session.flush()

    def text(self, name: str, markdown: str, step: int) -> None:
        """A Markdown text in the train run (TensorBoard's Text tab)."""
        with self.train.as_default(step=step):
            tf.summary.text(name, redact(markdown))
        self.train.flush()

    def scalars(self, writer, values: dict, step: int) -> None:
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def close(self) -> None:
        self.train.close()
        self.eval.close()
        self._session.close()


def _flat_hparams(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_hparams(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        elif v is not None:
            out[key] = str(v)
    return out


class Progress:
    """Step, loss, steps/s and ETA: a live line on a TTY, plain lines otherwise."""

    def __init__(self, total_steps: int, start_step: int, log_every: int, enabled: bool,
                 stream=None):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.total = total_steps
        self.log_every = log_every
        self._t0 = time.monotonic()
        self._start = start_step
        self._last_logged = start_step

    def update(self, step: int, loss: float, steps_per_sec: float) -> None:
        if not self.enabled:
            return
        remaining = (self.total - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
        line = (f"step {step}/{self.total}  loss {loss:.4f}  {steps_per_sec:.1f} steps/s  "
                f"ETA {_fmt_secs(remaining)}")
        if self.tty:
            self.stream.write("\r" + line.ljust(78))
            self.stream.flush()
        elif step - self._last_logged >= self.log_every or step == self.total:
            self._last_logged = step
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * 78 + "\r")
        print(text, file=self.stream, flush=True)

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_secs(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
