"""MetaSparsityTrainer: Algorithm 3 as a `keras.Model.train_step`.

Each meta-step takes `meta_batch_size` episodes. For each, the fast weights
start at the meta parameters, take `inner_steps` SGD steps on the support
batch (each followed by the differentiable prox), and the query batch gives
the meta-objective of Eq. 10: query loss + lam * R(theta_b*). The weights'
meta-gradient comes from the query loss (the penalty reaches them through the
prox); lambda's is the total derivative of Eq. 15 (explicit + implicit
terms). Gradients are averaged over the episodes and applied by the compiled
optimizer (lambda by its own); the `ProximalGroupLasso` callback then applies
the outer prox.
"""

import collections

import keras
import tensorflow as tf

from ms_keras import losses as losses_lib
from ms_keras.meta import inner_loop
from ms_keras.models import backbone_of
from ms_keras.models import head_of
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import prox as prox_lib
from ms_keras.training.multitask_trainer import MultiTaskTrainer
from ms_keras.training.multitask_trainer import replica_scale

MetaGradients = collections.namedtuple(
    "MetaGradients",
    ["weights", "lam", "query_loss", "objective", "task_losses",
     "backbone_statistics", "head_statistics"])
MetaGradients.__doc__ = """Meta-gradients of one episode, not yet applied.

Attributes:
    weights: one gradient per `trainer.meta_variables` entry.
    lam: gradient of the meta-objective w.r.t. lambda's raw weight (None
        without a learnable lambda).
    query_loss: the episode's loss on the query batch at the adapted weights.
    objective: query_loss + lam * R(theta_b*) (Eq. 10).
    task_losses: per-task query losses (0 for tasks outside the episode).
    backbone_statistics: backbone batch-norm moving statistics after one
        update from the query pass.
    head_statistics: the same per head (unchanged for inactive heads).
"""


class MetaSparsityTrainer(MultiTaskTrainer):
    """Meta-trains a multi-task model and its sparsity strength (Alg. 3).

    Args:
        network: a model from `build_multitask_model`.
        task_specs: TaskSpecs of its outputs.
        loss_weighting: `uncertainty` or `equal` (the episode loss F_c).
        sparsity: `channel`, `unstructured` or `none` (meta-learning
            baseline: no penalty, no prox, no lambda).
        lam: a `SparsityStrength` (required unless `sparsity` is `none`).
        inner_steps: SGD steps of the inner loop (k).
        inner_lr: inner learning rate (alpha_in).
        first_order: drop second derivatives (FOMAML).
        inner_prox: apply the prox after each inner step (needed for
            lambda's implicit gradient).
        regrow_prob: probability of re-initialising a zero group in the fast
            weights at the start of each episode.
        inner_clip_norm: if > 0, clip each inner gradient to this global
            norm. A conv kernel followed by batch norm is scale-invariant, so
            its gradient grows as the prox shrinks it; without a bound the
            inner step on an almost-zero kernel can be 100x its norm.
        seed: seed of the regrowth draws.

    Example:

    >>> trainer = MetaSparsityTrainer(network, specs, lam=SparsityStrength())
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3),
    ...                 lambda_optimizer=keras.optimizers.Adam(1e-3))
    >>> trainer.fit(meta_batches, callbacks=[ProximalGroupLasso()])
    """

    def __init__(self, network, task_specs, loss_weighting="uncertainty",
                 sparsity=groups_lib.CHANNEL, lam=None, inner_steps=1,
                 inner_lr=1e-2, first_order=False, inner_prox=True,
                 regrow_prob=0.0, inner_clip_norm=0.0, seed=0, **kwargs):
        if sparsity not in groups_lib.KINDS:
            raise ValueError(
                f"`sparsity` must be one of {groups_lib.KINDS}. Received: "
                f"sparsity={sparsity}")
        if sparsity != groups_lib.NONE and lam is None:
            raise ValueError(
                f"sparsity='{sparsity}' needs a sparsity strength `lam`.")
        if inner_steps < 1:
            raise ValueError(
                f"`inner_steps` must be >= 1. Received: inner_steps={inner_steps}")
        if inner_lr <= 0:
            raise ValueError(
                f"`inner_lr` must be positive. Received: inner_lr={inner_lr}")
        if inner_clip_norm < 0:
            raise ValueError(
                "`inner_clip_norm` must be >= 0. Received: "
                f"inner_clip_norm={inner_clip_norm}")
        if not 0.0 <= regrow_prob <= 1.0:
            raise ValueError(
                "`regrow_prob` must be in [0, 1]. Received: "
                f"regrow_prob={regrow_prob}")
        super().__init__(network, task_specs, loss_weighting,
                         lam=None if sparsity == groups_lib.NONE else lam,
                         **kwargs)
        self.sparsity = sparsity
        self.inner_steps = int(inner_steps)
        self.inner_lr = float(inner_lr)
        self.first_order = bool(first_order)
        self.inner_prox = bool(inner_prox)
        self.regrow_prob = float(regrow_prob)
        self.inner_clip_norm = float(inner_clip_norm)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.lambda_optimizer = None
        self.backbone = backbone_of(network)
        self.heads = [head_of(network, t.name) for t in self.task_specs]
        self.penalised = [k.index for k in
                          groups_lib.penalised_kernels(self.backbone)]
        self.objective_tracker = keras.metrics.Mean(name="objective")

    def compile(self, optimizer="adam", lambda_optimizer=None, **kwargs):
        """Like `keras.Model.compile`; `lambda_optimizer` updates lambda.

        Without one, lambda is updated by a copy of `optimizer`'s class and
        configuration. Both optimizers are built here so that the first
        traced step does not create variables (which would trace it twice).
        """
        super().compile(optimizer=optimizer, **kwargs)
        if lambda_optimizer is None and self.learns_lambda:
            lambda_optimizer = self.optimizer.__class__.from_config(
                self.optimizer.get_config())
        self.lambda_optimizer = lambda_optimizer
        self.optimizer.build(self.meta_variables)
        if self.learns_lambda:
            self.lambda_optimizer.build([self.lam.raw])

    @property
    def learns_lambda(self):
        return self.lam is not None and self.lam.learnable

    @property
    def meta_variables(self):
        """Variables updated by the outer optimizer (lambda excluded)."""
        variables = list(self.backbone.trainable_variables)
        for head in self.heads:
            variables.extend(head.trainable_variables)
        variables.extend(self.loss_weighting.trainable_variables)
        return variables

    @property
    def metrics(self):
        return [self.objective_tracker, *super().metrics]

    def _split(self, weights):
        """Flat fast weights -> (backbone, [head...], weighting) lists."""
        start = len(self.backbone.trainable_variables)
        backbone = weights[:start]
        heads = []
        for head in self.heads:
            end = start + len(head.trainable_variables)
            heads.append(weights[start:end])
            start = end
        return backbone, heads, weights[start:]

    def _episode_loss(self, weights, statistics, images, targets, episode):
        """Episode loss at fast `weights`; returns (loss, task losses, stats).

        Every head runs and tasks outside the episode are masked out: their
        losses and gradients are exactly zero. (Skipping them with `tf.cond`
        saves head compute but made tracing the second-order graph 4x slower
        and each step slower on the models measured.) Every call gets the
        meta model's moving statistics and returns updated ones.
        """
        backbone_stats, head_stats = statistics
        backbone_weights, head_weights, weighting_weights = self._split(
            weights)
        features, new_backbone_stats = self.backbone.stateless_call(
            backbone_weights, backbone_stats, images, training=True)
        losses, new_head_stats = [], []
        for i, (task, head) in enumerate(zip(self.task_specs, self.heads)):
            output, stats = head.stateless_call(
                head_weights[i], head_stats[i], features, training=True)
            loss = tf.cast(losses_lib.task_loss(task, targets[task.name],
                                                output), features.dtype)
            losses.append(tf.where(episode[i], loss, tf.zeros_like(loss)))
            new_head_stats.append(stats)
        task_losses = tf.stack(losses)
        total, _ = self.loss_weighting.stateless_call(
            weighting_weights, [], task_losses,
            tf.cast(episode, task_losses.dtype))
        return total, task_losses, (new_backbone_stats, new_head_stats)

    def _statistics(self):
        return ([v.value for v in self.backbone.non_trainable_variables],
                [[v.value for v in head.non_trainable_variables]
                 for head in self.heads])

    def _uniform(self, shape, minval, maxval):
        return keras.random.uniform(shape, minval=minval, maxval=maxval,
                                    seed=self.seed_generator)

    def compute_meta_gradients(self, support, query, episode):
        """Meta-gradients of one episode, without applying them.

        Args:
            support: `(images, targets)` batch for the inner loop.
            query: `(images, targets)` batch for the meta-objective.
            episode: bool vector over `task_specs`: the episode's tasks.

        Returns:
            A `MetaGradients`; `weights` aligns with `meta_variables`.
        """
        episode = tf.convert_to_tensor(episode, tf.bool)
        statistics = self._statistics()
        variables = self.meta_variables
        sparse = self.sparsity != groups_lib.NONE
        with tf.GradientTape(persistent=self.learns_lambda) as tape:
            lam = self.lam.value() if sparse else None
            weights = [v.value for v in variables]
            if sparse and self.regrow_prob > 0:
                weights = inner_loop.regrow(weights, self.penalised,
                                            self.regrow_prob, self._uniform)

            def support_loss(fast):
                return self._episode_loss(fast, statistics, *support,
                                          episode)[0]

            post_step = None
            if sparse and self.inner_prox:
                def post_step(fast):
                    return inner_loop.prox_at(fast, self.penalised,
                                              self.inner_lr, lam,
                                              self.sparsity)

            fast = inner_loop.adapt(support_loss, weights, self.inner_steps,
                                    self.inner_lr, self.first_order,
                                    post_step, outer_tape=tape,
                                    clip_norm=self.inner_clip_norm)
            query_loss, task_losses, new_stats = self._episode_loss(
                fast, statistics, *query, episode)
            objective = query_loss
            if sparse:
                kernels = [fast[i] for i in self.penalised]
                objective = query_loss + tf.cast(lam, query_loss.dtype) * (
                    prox_lib.penalty(kernels, self.sparsity))
        weight_grads = tape.gradient(
            query_loss, variables,
            unconnected_gradients=tf.UnconnectedGradients.ZERO)
        lam_grad = None
        if self.learns_lambda:
            lam_grad = tape.gradient(objective, self.lam.raw)
            del tape
        return MetaGradients(weight_grads, lam_grad, query_loss, objective,
                             task_losses, new_stats[0], new_stats[1])

    def _zero_sums(self):
        """Accumulators of one meta-batch, shaped like `MetaGradients`."""
        zeros = lambda variables: [tf.zeros_like(v.value) for v in variables]
        return {
            "weights": zeros(self.meta_variables),
            "lam": tf.zeros((), self.lam.raw.dtype) if self.learns_lambda
            else tf.zeros(()),
            "backbone": zeros(self.backbone.non_trainable_variables),
            "heads": [zeros(h.non_trainable_variables) for h in self.heads],
            "active": tf.zeros((len(self.heads),), self.compute_dtype),
        }

    def train_step(self, data):
        episodes = data["episodes"]
        meta_batch = tf.shape(episodes)[0]

        def episode_body(m, sums):
            pick = lambda t: t[m]
            support = (data["support_images"][m],
                       tf.nest.map_structure(pick, data["support_targets"]))
            query = (data["query_images"][m],
                     tf.nest.map_structure(pick, data["query_targets"]))
            result = self.compute_meta_gradients(support, query, episodes[m])
            active = tf.cast(episodes[m], self.compute_dtype)
            self.loss_tracker.update_state(result.query_loss)
            self.objective_tracker.update_state(result.objective)
            for i, tracker in enumerate(self.task_loss_trackers):
                tracker.update_state(result.task_losses[i],
                                     sample_weight=active[i])
            add = lambda a, b: [x + y for x, y in zip(a, b)]
            sums = {
                "weights": add(sums["weights"], result.weights),
                "lam": sums["lam"] + (0.0 if result.lam is None
                                      else result.lam),
                "backbone": add(sums["backbone"],
                                result.backbone_statistics),
                "heads": [add(total, [active[i] * s for s in stats])
                          for i, (total, stats) in enumerate(
                              zip(sums["heads"], result.head_statistics))],
                "active": sums["active"] + active,
            }
            return m + 1, sums

        # One traced body for every episode of the meta-batch.
        _, sums = tf.while_loop(lambda m, _: m < meta_batch, episode_body,
                                (tf.constant(0), self._zero_sums()))
        scale = 1.0 / tf.cast(meta_batch, self.compute_dtype)
        self.optimizer.apply(
            [replica_scale(g * tf.cast(scale, g.dtype))
             for g in sums["weights"]], self.meta_variables)
        if self.learns_lambda:
            self.lambda_optimizer.apply(
                [replica_scale(sums["lam"] * tf.cast(scale, sums["lam"].dtype))],
                [self.lam.raw])
        self._update_statistics(sums["backbone"], sums["heads"],
                                sums["active"], meta_batch)
        return self.logs([self.loss_tracker, self.objective_tracker,
                          *self.task_loss_trackers])

    def _update_statistics(self, backbone_sum, head_sums, head_counts,
                           meta_batch):
        """One moving-statistics update: the mean of the query passes'."""
        count = tf.cast(meta_batch, self.compute_dtype)
        for variable, total in zip(self.backbone.non_trainable_variables,
                                   backbone_sum):
            variable.assign(tf.stop_gradient(total / count))
        for i, head in enumerate(self.heads):
            count = head_counts[i]
            for variable, total in zip(head.non_trainable_variables,
                                       head_sums[i]):
                mean = total / tf.maximum(count, 1.0)
                variable.assign(tf.stop_gradient(
                    tf.where(count > 0, mean, variable.value)))
