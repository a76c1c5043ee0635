"""The compiled parts of the custom training/eval loop.

Keras 3 `model.fit` does not work under MultiWorkerMirroredStrategy, so the
step is ours: `train_steps` is one `tf.function` that runs N steps, each
calling `strategy.run` on a per-replica slice of a global batch.

Training input (`TrainInput`): the examples of global batch `s` are a pure
function of (seed, s) (trainer/data/sampling.py). Each worker's input pipeline,
built by `strategy.distribute_datasets_from_function`, computes and gathers
only the ids of its own replicas' slices, so a worker materialises B / W
examples per step. The data position is the step: a resumed run builds its
pipeline at the restored step, nothing about the input is checkpointed, and a
resume with another replica or worker count reads the same examples per
global batch.

Evaluation input stays a whole global batch `[replicas, per_replica_batch, ...]`
on every worker, each replica taking its slice with
`experimental_distribute_values_from_function`.

Whether the per-replica step is XLA-compiled is decided here too
(`resolve_jit_compile`), beside the step functions it compiles.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.data import input_log, sampling
from trainer.errors import ConfigError

SUM = tf.distribute.ReduceOp.SUM


class StepFunctions:
    """Builds the train and eval `tf.function`s for a task, model and strategy."""

    def __init__(self, *, task, model, optimizer, strategy, global_batch: int,
                 clipnorm: float | None, clipvalue: float | None, jit_compile: bool,
                 stop_variable: tf.Variable | None = None):
        self.task = task
        # Read at every step inside the compiled loop: a stop request (SIGTERM)
        # ends the loop at the next step instead of after the whole loop.
        self.stop_variable = stop_variable
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.global_batch = global_batch
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        replicas = strategy.num_replicas_in_sync
        # Keras clips per replica *before* its all-reduce, which is not a global
        # norm; and its LossScaleOptimizer assumes all-reduced grads for a
        # consistent finite check. In those cases we all-reduce first ourselves.
        self.reduce_first = replicas > 1 and bool(clipnorm or clipvalue or self.loss_scaled)
        self.replicas = replicas
        self._grad_fn = tf.function(self._loss_and_grads, jit_compile=jit_compile,
                                    reduce_retracing=True)
        self._train_steps_fn = tf.function(self._train_steps)
        self.eval_batch = tf.function(self._eval_batch)

    # With distribution strategies, the replica functions run on devices.
    def _loss_and_grads(self, features, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            per_example = tf.cast(self.task.loss(self.model, features, labels), tf.float32)
            loss = tf.reduce_sum(per_example) / self.global_batch
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaled else loss
        grads = tape.gradient(scaled, variables)
        return loss, grads

    def _replica_train_step(self, batch):
        features, labels = batch
        loss, grads = self._grad_fn(features, labels)
        grads = self._aggregate_and_clip(grads)
        self.optimizer.apply(grads, self.model.trainable_variables)
        stop = (tf.cast(self.stop_variable, tf.float32) if self.stop_variable is not None
                else tf.constant(0.0))
        # Summed across replicas and workers with the loss in one all-reduce:
        # every worker sees the same value and stops after the same step.
        return tf.stack([tf.cast(loss, tf.float32), stop])

    def _aggregate_and_clip(self, grads):
        # Embedding gradients arrive as IndexedSlices with one row per token
        # occurrence. Densify them on every path, not only before the explicit
        # all-reduce: Keras 3's Adam squares an IndexedSlices row by row
        # without summing duplicate indices, so its second moment gets
        # sum(g_i^2) instead of (sum g_i)^2, and the default strategy would
        # train differently from Mirrored + mixed_float16 or clipping.
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                 for g in grads]
        if self.reduce_first:
            ctx = tf.distribute.get_replica_context()
            grads = ctx.all_reduce(SUM, grads)
        # Thresholds scale with the loss scale, so clipping scaled gradients
        # equals clipping the true ones.
        scale = tf.cast(self.optimizer.dynamic_scale, tf.float32) if self.loss_scaled else 1.0
        if self.clipnorm:
            grads, _ = tf.clip_by_global_norm(grads, self.clipnorm * scale)
        if self.clipvalue:
            limit = self.clipvalue * scale
            grads = [tf.clip_by_value(g, -limit, limit) for g in grads]
        if self.reduce_first:
            # The Keras optimizer all-reduces (sums) again in replica context.
            grads = [g / self.replicas for g in grads]
        return grads

    def _distribute(self, batch):
        def slice_for(ctx):
            i = ctx.replica_id_in_sync_group
            return tf.nest.map_structure(lambda t: t[i], batch)

        return self.strategy.experimental_distribute_values_from_function(slice_for)

    def train_steps(self, data, num_steps):
        """Runs up to `num_steps` steps; returns (mean loss, steps run, stop requested).

        `data` is the run's `TrainInput` (its iterator is made at the current
        step on first use), or any iterator of per-replica `(features, labels, ...)`.
        """
        iterator = data.iterator() if isinstance(data, TrainInput) else data
        return self._train_steps_fn(iterator, num_steps)

    def _train_steps(self, iterator, num_steps):
        total = tf.constant(0.0)
        done = tf.constant(0)
        stop = tf.constant(False)
        while tf.logical_and(done < num_steps, tf.logical_not(stop)):
            batch = next(iterator)  # (features, labels, example ids), per replica
            per_replica = self.strategy.run(
                self._replica_train_step, args=((batch[0], batch[1]),))
            reduced = self.strategy.reduce(SUM, per_replica, axis=None)
            total += reduced[0]
            stop = reduced[1] > 0
            done += 1
        return total / tf.cast(tf.maximum(done, 1), tf.float32), done, stop

    def _replica_eval(self, batch):
        features, labels, weights = batch
        out = self.task.eval_metrics(self.model, features, labels, weights)
        return {k: (tf.cast(n, tf.float32), tf.cast(d, tf.float32)) for k, (n, d) in out.items()}

    def _eval_batch(self, batch):
        per_replica = self.strategy.run(self._replica_eval, args=(self._distribute(batch),))
        return tf.nest.map_structure(
            lambda t: self.strategy.reduce(SUM, t, axis=None), per_replica)


class TrainInput:
    """A run's training input: per-replica batches of the stateless order.

    Built with the run; `iterator()` makes the distributed iterator the first
    time it is asked for, at the step the run is at then (after a restore).
    Each element is `(features, labels, ids)` per replica, `ids` being the
    example ids that replica trains on (kept for inspection and tests).
    """

    def __init__(self, examples: sampling.Examples, strategy, *, global_batch: int,
                 seed: int, step: tf.Variable):
        self.examples = examples
        self.strategy = strategy
        self.global_batch = global_batch
        self.seed = seed
        self.step = step
        self._iterator = None

    def iterator(self):
        if self._iterator is None:
            self._iterator = iter(self.distributed_dataset(int(self.step.numpy())))
        return self._iterator

    def distributed_dataset(self, first_step: int):
        """Batches from global batch `first_step` on, one input pipeline per worker."""
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: self.pipeline(ctx, first_step))

    def pipeline(self, ctx: tf.distribute.InputContext, first_step: int) -> tf.data.Dataset:
        """The dataset of input pipeline `ctx.input_pipeline_id`: its replicas' slices.

        Pipeline p of P feeds the R / P replicas p * R/P .. (p + 1) * R/P - 1, in
        that order within each step (the order the strategy deals them out).
        Under MultiWorkerMirrored, pipeline p is worker p and its local replica j
        is global replica p * local + j (TF 2.21 collective_all_reduce_strategy.py,
        `_get_replica_id_in_sync_group`); under Mirrored there is one pipeline.
        """
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        first = ctx.input_pipeline_id * local
        return sampling.replica_dataset(
            self.examples, seed=self.seed, global_batch=self.global_batch,
            first_step=first_step, replica_ids=list(range(first, first + local)),
            num_replicas=ctx.num_replicas_in_sync,
            observe=input_log.recorder(ctx.input_pipeline_id))


def make_eval_dataset(ds: tf.data.Dataset, *, per_replica_batch: int, replicas: int,
                      max_batches: int = 0) -> tf.data.Dataset:
    """The whole eval split as global batches, with a weight per example.

    The last partial batch is filled with copies of the first example at weight
    0, so every example is evaluated exactly once and shapes stay static.
    """
    global_batch = per_replica_batch * replicas
    real = ds.map(lambda f, l: (f, l, tf.constant(1.0)))
    filler = ds.take(1).map(lambda f, l: (f, l, tf.constant(0.0))).repeat(global_batch - 1)
    ds = real.concatenate(filler)
    ds = ds.batch(per_replica_batch, drop_remainder=True).batch(replicas, drop_remainder=True)
    if max_batches:
        ds = ds.take(max_batches)
    return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    # Every worker reads the same eval stream and keeps its replicas' slices (see
    # the module docstring), so tf.data must not auto-shard it.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return options


def resolve_jit_compile(setting, report: list[dict], *, xla_on_cpu: bool,
                        on_tpu: bool) -> tuple[bool, str]:
    """Whether the per-replica loss/gradient function is XLA-compiled, and why.

    Args:
      setting: `runtime.jit_compile` (True, False or "auto").
      report: `kernels.cudnn_report` of the built model.
      xla_on_cpu: the task's measured preference on CPU (`Task.xla_on_cpu`).
      on_tpu: running under TPUStrategy, which compiles the whole step itself.

    Raises:
      ConfigError: `true` on a GPU where a layer takes the cuDNN kernel, which
        XLA cannot compile (tensorflow/tensorflow#99385, keras-team/keras#18456).
    """
    if on_tpu:
        return False, "TPUStrategy compiles the whole step with XLA itself"
    gpu = bool(tf.config.list_logical_devices("GPU"))
    cudnn = [r["layer"] for r in report if r["eligible"]]
    if gpu and cudnn:
        if setting is True:
            raise ConfigError(
                "runtime.jit_compile=true, but on a GPU these layers take the fused cuDNN "
                f"kernel, which XLA cannot compile (CudnnRNNV3): {', '.join(cudnn)}. Use "
                "runtime.jit_compile=auto (cuDNN without XLA, usually the faster choice), or "
                "model.use_cudnn=false to compile the generic kernel with XLA.")
        return False, f"cuDNN kernel in {len(cudnn)} layer(s), which XLA cannot compile"
    if setting is not True and setting is not False:  # auto
        if gpu:
            return False, "auto: XLA is not enabled automatically on GPU (not measured)"
        if xla_on_cpu:
            return True, "auto: this task's step measured faster with XLA on CPU"
        return False, "auto: this task's step measured faster without XLA on CPU"
    return setting, f"runtime.jit_compile={str(setting).lower()}"
