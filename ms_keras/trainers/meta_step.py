"""One episode's meta-gradients (Eq. 10, 15): the inner loop on fast
weights and the reverse pass through it, for `MetaSparsityTrainer`."""

import collections
import contextlib

import keras
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras.config import INNER_PROX
from ms_keras.meta import inner_loop
from ms_keras.sparsity import prox as prox_lib
from ms_keras.trainers.multitask import gradients as multitask_gradients
from ms_keras.trainers.multitask import loss_scale
from ms_keras.trainers.multitask import task_losses as multitask_losses

INNER_PROX_MODES = INNER_PROX

MetaGradients = collections.namedtuple(
    "MetaGradients",
    ["weights", "lam", "query_loss", "objective", "task_losses", "penalty",
     "active"])
MetaGradients.__doc__ = """Meta-gradients of one episode, not yet applied.

Attributes:
    weights: one gradient per `trainer.meta_variables` entry.
    lam: gradient of the meta-objective w.r.t. lambda's raw weight (None
        without a learnable lambda).
    query_loss: the episode's loss on the query batch at the adapted weights.
    objective: query_loss + lam * R(theta_b*) (Eq. 10).
    task_losses: per-task query losses (0 for tasks outside the episode).
    penalty: R(theta_b*), the explicit term of lambda's gradient (Eq. 14);
        0 without sparsity.
    active: 1 for the tasks of the episode the query batch labels.
"""


class MetaStep:
    """The meta-gradient part of `MetaSparsityTrainer` (a mixin: it uses the
    trainer's network, heads, tasks, lambda and inner-loop settings)."""

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
        """Episode loss at fast `weights`: `(loss, task losses, active)`.

        Every head runs and tasks outside the episode are masked out: their
        losses and gradients are exactly zero. (Skipping them with `tf.cond`
        saves head compute but made tracing the second-order graph 4x slower
        and each step slower on the models measured.) A single-task episode's
        loss is that task's loss (Alg. 3); the weighting F_c (Eq. 2) combines
        the tasks of multi-task episodes. Batch norm uses batch statistics;
        the moving statistics are not touched here.
        """
        backbone_stats, head_stats = statistics
        backbone_weights, head_weights, weighting_weights = self._split(
            weights)
        features, _ = self.backbone.stateless_call(
            backbone_weights, backbone_stats, images, training=True)
        outputs = {}
        for i, (task, head) in enumerate(zip(self.task_specs, self.heads)):
            outputs[task.name], _ = head.stateless_call(
                head_weights[i], head_stats[i], features, training=True)
        # A task the batch does not label takes no part in the episode.
        losses, labelled = multitask_losses(self.task_specs, targets,
                                            outputs)
        active = tf.logical_and(episode, labelled > 0)
        task_losses = tf.where(active, losses, tf.zeros_like(losses))
        mask = tf.cast(active, task_losses.dtype)
        weighted, _ = self.loss_weighting.stateless_call(
            weighting_weights, [], task_losses, mask)
        single = tf.equal(tf.reduce_sum(mask), 1.0)
        total = tf.where(single, tf.reduce_sum(task_losses), weighted)
        return total, task_losses, mask

    def _statistics(self):
        return ([v.value for v in self.backbone.non_trainable_variables],
                [[v.value for v in head.non_trainable_variables]
                 for head in self.heads])

    def _uniform(self, shape, minval, maxval):
        return keras.random.uniform(shape, minval=minval, maxval=maxval,
                                    seed=self.seed_generator)

    def _inner_prox(self, lam):
        """The post-step map of the inner loop, or None."""
        if self.sparsity == config_lib.NONE or self.inner_prox == "off":
            return None
        straight_through = self.inner_prox == "straight_through"

        def post_step(fast):
            out = inner_loop.prox_at(fast, self.penalised, self.inner_lr,
                                     lam, self.sparsity)
            if straight_through:
                out = inner_loop.straight_through_zeroed(
                    fast, out, self.penalised, self.sparsity)
            return out

        return post_step

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
        sparse = self.sparsity != config_lib.NONE
        # mixed_float16: the query loss is differentiated times the dynamic
        # loss scale (no underflow in 16 bits) and its gradients divided by
        # it. The inner loop's is not: an overflow there would reach the
        # query loss itself, not only a gradient the optimizer can skip.
        scale = loss_scale(getattr(self, "optimizer", None))
        # Lambda's explicit term (Eq. 15) goes through a tape that records
        # only what depends on lambda: the prox ops (and, for k > 1, the
        # inner steps after the first). Asked of the outer tape, the same
        # gradient would walk back through the whole second-order graph to
        # find them (measured: a fifth of the step's tracing).
        lam_tape = (tf.GradientTape(watch_accessed_variables=False)
                    if self.learns_lambda else contextlib.nullcontext())
        with tf.GradientTape() as tape, lam_tape:
            if self.learns_lambda:
                lam_tape.watch(self.lam.raw.value)
            lam = self.lam.value() if sparse else None
            weights = [v.value for v in variables]
            if sparse and self.regrow_prob > 0:
                weights = inner_loop.regrow(weights, self.penalised,
                                            self.regrow_prob, self._uniform)

            def support_loss(fast):
                return self._episode_loss(fast, statistics, *support,
                                          episode)[0]

            fast = inner_loop.adapt(support_loss, weights, self.inner_steps,
                                    self.inner_lr, self.first_order,
                                    self._inner_prox(lam), outer_tape=tape,
                                    clip_norm=self.inner_clip_norm)
            query_loss, task_losses, active = self._episode_loss(
                fast, statistics, *query, episode)
            penalty = tf.zeros((), query_loss.dtype)
            weighted_penalty = tf.zeros((), query_loss.dtype)
            if sparse:
                penalty = prox_lib.penalty([fast[i] for i in self.penalised],
                                           self.sparsity)
                weighted_penalty = tf.cast(lam, query_loss.dtype) * penalty
            scaled = query_loss * tf.cast(scale, query_loss.dtype)
        # One reverse pass from the query loss serves the weights and
        # lambda's raw weight; lambda's total derivative (Eq. 15) adds the
        # penalty term's.
        raw = [self.lam.raw.value] if self.learns_lambda else []
        grads = [g / tf.cast(scale, g.dtype) for g in multitask_gradients(
            tape, scaled, [*variables, *raw])]
        lam_grad = None
        if self.learns_lambda:
            lam_grad = grads.pop() + multitask_gradients(
                lam_tape, weighted_penalty, raw)[0]
        return MetaGradients(grads, lam_grad, query_loss,
                             query_loss + weighted_penalty, task_losses,
                             tf.stop_gradient(penalty), active)
