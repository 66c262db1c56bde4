"""MetaSparsityTrainer: Algorithm 3 as a `keras.Model.train_step`.

Each meta-step takes `meta_batch_size` episodes. For each, the fast weights
start at the meta parameters, take `inner_steps` SGD steps on the support
batch (each followed by the differentiable prox), and the query batch gives
the meta-objective of Eq. 10: query loss + lam * R(theta_b*). The weights'
meta-gradient comes from the query loss (the penalty reaches them through the
prox); lambda's is the total derivative of Eq. 15 (explicit + implicit
terms). In Alg. 3's order the averaged gradients update the weights, the
outer prox thresholds them with the lambda of the step, and then lambda
takes its own step. Last, one training-mode pass at the updated meta weights
refreshes the batch-norm moving statistics, so that inference uses
statistics of the weights that are evaluated and shipped.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras.trainers import library
from ms_keras.trainers import meta_step
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import prox as prox_lib
from ms_keras.sparsity import structure as structure_lib
from ms_keras.trainers.multitask import MultiTaskTrainer
from ms_keras.trainers.multitask import loss_scale
from ms_keras.trainers.multitask import reducible
from ms_keras.trainers.multitask import replica_scale

_META_FIELDS = tuple(f.name for f in dataclasses.fields(config_lib.MetaConfig))
_SPARSITY_FIELDS = tuple(f.name for f in dataclasses.fields(
    config_lib.SparsityConfig) if f.name != "kind")


def split_options(options):
    """`(meta, sparsity, rest)` of a trainer's keyword options: the fields of
    `config.MetaConfig`, of `config.SparsityConfig`, and the rest (Keras')."""
    meta = {k: v for k, v in options.items() if k in _META_FIELDS}
    sparsity = {k: v for k, v in options.items() if k in _SPARSITY_FIELDS}
    rest = {k: v for k, v in options.items()
            if k not in meta and k not in sparsity}
    unknown = sorted(set(rest) - {"name", "dtype", "trainable"})
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown}. MetaSparsityTrainer takes the "
            "fields of config.MetaConfig and config.SparsityConfig: "
            f"{', '.join(sorted(_META_FIELDS + _SPARSITY_FIELDS))}.")
    return meta, sparsity, rest


class MetaSparsityTrainer(meta_step.MetaStep, MultiTaskTrainer):
    """Meta-trains a multi-task model and its sparsity strength (Alg. 3).

    Args:
        network: a `MultiTaskModel`.
        task_specs: TaskSpecs of its outputs.
        loss_weighting: `uncertainty` or `equal`: the loss F_c of multi-task
            episodes; a single-task episode uses its task's loss alone
            (Alg. 3: L_Ei = l_Tj).
        sparsity: `channel`, `unstructured` or `none` (meta-learning
            baseline: no penalty, no prox, no lambda).
        lam: a `SparsityStrength`; with `prox`, instead of building them
            from the options.
        prox: the outer `sparsity.proximal.OuterProx`, with `lam`.
        masks: optional `sparsity.proximal.KernelMasks` (a fixed pattern).
        controller: optional `sparsity.control.SparsityController` (built
            from the options in `budget` and `tolerance` modes).
        reference: the dense reference's `reference.ReferenceCurve` in
            `tolerance` mode; without it `fit` on a plain dataset trains the
            dense reference first.
        seed: seed of the regrowth draws and episodes.
        **options: the fields of `config.MetaConfig` (`sparsity_control`,
            `target_sparsity`, `target_flops_speedup`, `quality_tolerance`,
            `lambda_init`, `inner_steps`, `inner_lr`, `first_order`,
            `inner_prox`, `meta_batch_size`, `episode_sampler`, ...) and of
            `config.SparsityConfig` (`prox_step`, `preserve_norm`,
            `lambda_beta`), with the meanings, defaults and checks given
            there (the flags of the same names are generated from them).

    Second-order meta-gradients need exact second derivatives: Keras'
    `BatchNormalization` and `MaxPooling2D` layers of the model are swapped
    for `ExactBatchNormalization` and `ExactMaxPooling2D` (weights kept;
    `swapped_layers` names them, and a warning says so).

    Example:

    >>> trainer = MetaSparsityTrainer(model, tasks, target_sparsity=44,
    ...                               sparsity_control="budget")
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> trainer.fit(train_ds, validation_data=val_ds, epochs=8)
    """

    def __init__(self, network, task_specs, loss_weighting="uncertainty",
                 sparsity=config_lib.CHANNEL, lam=None, prox=None, masks=None,
                 controller=None, reference=None, seed=0, **options):
        meta_options, sparsity_options, rest = split_options(options)
        if sparsity not in groups_lib.KINDS:
            raise ValueError(
                f"`sparsity` must be one of {', '.join(groups_lib.KINDS)}. "
                f"Received: sparsity={sparsity}")
        sparse = sparsity != config_lib.NONE
        # One validation of the options: the config's.
        self.options = config_lib.MetaConfig(**meta_options)
        self.sparsity_options = (
            config_lib.SparsityConfig(kind=sparsity, **sparsity_options)
            if sparse else None)
        if sparse:  # a layer it cannot analyse is refused here, in one line
            structure_lib.analyse(network.backbone)
        self.swapped_layers = (
            [] if self.options.first_order
            else library.exact_second_order(network))
        if sparse and lam is None and prox is None:
            lam, prox, built = library.build_sparsity(
                network.backbone, self.sparsity_options, self.options,
                reference, num_tasks=len(task_specs))
            controller = controller or built
        if sparse and (lam is None or prox is None):
            raise ValueError(
                f"sparsity='{sparsity}' needs a sparsity strength `lam` and "
                "an outer `prox` (or neither: the options build them).")
        super().__init__(network, task_specs, loss_weighting,
                         lam=lam if sparse else None,
                         prox=prox if sparse else None, masks=masks,
                         controller=controller, **rest)
        self.sparsity = sparsity
        self.seed = int(seed)
        options = self.options
        self.meta_batch_size = options.meta_batch_size
        self.episode_sampler = options.episode_sampler
        self.inner_steps = options.inner_steps
        self.inner_lr = options.inner_lr
        self.first_order = options.first_order
        self.inner_prox = options.inner_prox
        self.regrow_prob = options.regrow_prob
        self.inner_clip_norm = options.inner_clip_norm
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.lambda_optimizer = None
        self.backbone = network.backbone
        self.heads = [network.heads[t.name] for t in self.task_specs]
        self.penalised = [k.index for k in
                          groups_lib.penalised_kernels(self.backbone)]
        # Mean sqrt(n_g) over groups: the inner threshold per unit lambda.
        kernels = [self.backbone.trainable_variables[i]
                   for i in self.penalised]
        self._mean_root_group_size = float(
            sum(k.shape[2] * prox_lib.group_size(k) ** 0.5 for k in kernels)
            / sum(k.shape[2] for k in kernels))
        self.objective_tracker = keras.metrics.Mean(name="objective")
        self.explicit_tracker = keras.metrics.Mean(
            name="lambda_grad_explicit")
        self.implicit_tracker = keras.metrics.Mean(
            name="lambda_grad_implicit")
        self.inner_threshold_tracker = keras.metrics.Mean(
            name="prox_inner_threshold")
        # A dense reference trained by `fit` starts where this run starts.
        self.initial_network_weights = (
            [np.copy(w) for w in network.get_weights()]
            if self._trains_own_reference() else None)

    def _trains_own_reference(self):
        controller = self.controller
        return (controller is not None and controller.reference is None
                and controller.mode == config_lib.TOLERANCE)

    def fit(self, x=None, y=None, epochs=1, steps_per_epoch=None,
            validation_data=None, callbacks=None, verbose="auto", **kwargs):
        """Like `keras.Model.fit`; `x` may be a plain `(images, {task:
        target})` dataset, which becomes meta-batches of episodes
        (`trainers.library.meta_batches_from`), or meta-batches already.

        With a plain dataset and a sparsity controller, the run's length
        sets the controller's schedule, a tolerance-mode run without a
        `reference` first trains its dense reference, and when training
        ends the weights of the epoch the run selects are restored (the
        sparsest within the tolerance, or the best on the budget; see
        `SparsityConstraint`).
        """
        callbacks = list(callbacks or [])
        controller = self.controller
        plain = (isinstance(x, tf.data.Dataset)
                 and not library.is_meta_batch(x))
        if plain:
            steps_per_epoch = library.steps_of(x, steps_per_epoch,
                                               self.meta_batch_size)
        if controller is not None:
            if not steps_per_epoch:
                raise ValueError(
                    "A sparsity controller needs the run's length: pass "
                    "`steps_per_epoch`.")
            controller.total_steps = epochs * steps_per_epoch
            if controller.mode == config_lib.TOLERANCE:
                if self._trains_own_reference():
                    if not plain:
                        raise ValueError(
                            "sparsity_control='tolerance' on meta-batches "
                            "needs the dense `reference` curve.")
                    controller.reference = library.train_dense_reference(
                        self, x, validation_data, epochs, steps_per_epoch,
                        verbose)
                callbacks.append(sparsity_callbacks.QualityChecks(
                    controller, validation_data, self.validation_task_losses,
                    self.task_names, steps_per_epoch,
                    self.options.quality_checks,
                    kwargs.get("validation_steps")))
            if plain:
                callbacks += library.selection_callbacks(self)
            # The schedule is part of the traced step.
            self.train_function = None
        if plain:
            x = library.meta_batches_from(
                x, len(self.task_specs), self.meta_batch_size,
                self.episode_sampler, self.seed)
        return super().fit(x, y, epochs=epochs,
                           steps_per_epoch=steps_per_epoch,
                           validation_data=validation_data,
                           callbacks=callbacks, verbose=verbose, **kwargs)

    def compile(self, optimizer="adam", lambda_optimizer=None, **kwargs):
        """Like `keras.Model.compile`; `lambda_optimizer` updates lambda.

        Without one, lambda (in the paper's mode) is updated by the
        `lambda_optimizer` option's kind at `lambda_lr` (0: the learning
        rate of `optimizer`). Both optimizers are built here so that the
        first traced step does not create variables (which would trace it
        twice).
        """
        super().compile(optimizer=optimizer, **kwargs)
        if lambda_optimizer is None and self.learns_lambda:
            rate = self.options.lambda_lr or float(keras.ops.convert_to_numpy(
                self.optimizer.learning_rate))
            kind = (keras.optimizers.SGD if self.options.lambda_optimizer
                    == "sgd" else keras.optimizers.Adam)
            lambda_optimizer = kind(rate)
        self.lambda_optimizer = lambda_optimizer
        if self.learns_lambda:
            self.lambda_optimizer.build([self.lam.raw])

    @property
    def learns_lambda(self):
        return self.lam is not None and self.lam.learnable

    @property
    def optimizer_variables(self):
        return self.meta_variables

    @property
    def meta_variables(self):
        """Variables updated by the outer optimizer (lambda excluded)."""
        variables = list(self.backbone.trainable_variables)
        for head in self.heads:
            variables.extend(head.trainable_variables)
        variables.extend(self.loss_weighting.trainable_variables)
        return variables

    @property
    def sparsity_trackers(self):
        """Trackers of lambda's gradient and of the prox thresholds."""
        if self.lam is None:
            return []
        return [self.explicit_tracker, self.implicit_tracker,
                self.threshold_tracker, self.inner_threshold_tracker]

    @property
    def metrics(self):
        return [self.objective_tracker, *self.sparsity_trackers,
                *self.evaluation_metrics]

    def _zero_sums(self):
        """Accumulators of one meta-batch."""
        return {
            "weights": [tf.zeros_like(v.value) for v in self.meta_variables],
            "lam": tf.zeros((), self.lam.raw.dtype) if self.learns_lambda
            else tf.zeros(()),
        }

    def _track_lambda_gradient(self, raw_gradient, penalty):
        """Splits lambda's gradient (per unit lambda) into the explicit term
        R(theta_b*) (Eq. 14) and the implicit rest (Eq. 15)."""
        total = raw_gradient / tf.cast(self.lam.derivative(),
                                       raw_gradient.dtype)
        explicit = tf.cast(penalty, total.dtype)
        self.explicit_tracker.update_state(explicit)
        self.implicit_tracker.update_state(total - explicit)

    def train_step(self, data):
        episodes = tf.cast(data["episodes"], tf.bool)
        meta_batch = tf.shape(episodes)[0]

        def episode_body(m, sums):
            pick = lambda t: t[m]
            support = (data["support_images"][m],
                       tf.nest.map_structure(pick, data["support_targets"]))
            query = (data["query_images"][m],
                     tf.nest.map_structure(pick, data["query_targets"]))
            result = self.compute_meta_gradients(support, query, episodes[m])
            active = tf.cast(result.active, result.task_losses.dtype)
            self.loss_tracker.update_state(result.query_loss)
            self.objective_tracker.update_state(result.objective)
            self.task_sum_tracker.update_state(
                tf.reduce_sum(result.task_losses))
            for i, tracker in enumerate(self.task_loss_trackers):
                tracker.update_state(result.task_losses[i],
                                     sample_weight=active[i])
            if self.learns_lambda:
                self._track_lambda_gradient(result.lam, result.penalty)
            return m + 1, {
                "weights": [x + y for x, y in zip(sums["weights"],
                                                  result.weights)],
                "lam": sums["lam"] + (0.0 if result.lam is None
                                      else result.lam),
            }

        # One traced body for every episode of the meta-batch. Iterations
        # run one after the other: the metric updates in the body are
        # stateful, and overlapping iterations would add them in an order
        # that depends on thread timing (not --deterministic).
        _, sums = tf.while_loop(lambda m, _: m < meta_batch, episode_body,
                                (tf.constant(0), self._zero_sums()),
                                parallel_iterations=1)
        # The mean over episodes, times the loss scale that
        # `LossScaleOptimizer.apply` (mixed_float16) divides by again.
        scale = loss_scale(self.optimizer) / tf.cast(meta_batch, tf.float32)
        lam_of_step = None if self.lam is None else self.lam.value()
        norm = self.apply_update(
            [replica_scale(g * tf.cast(scale, g.dtype))
             for g in sums["weights"]], self.meta_variables, lam_of_step)
        if self.lam is not None:
            self.inner_threshold_tracker.update_state(
                self.inner_lr * lam_of_step * self._mean_root_group_size)
        if self.learns_lambda:
            lam_grad = replica_scale(sums["lam"] / tf.cast(
                meta_batch, sums["lam"].dtype))
            # A step whose scaled gradients overflowed is skipped, lambda's
            # included.
            lam_grad = tf.where(tf.math.is_finite(lam_grad), lam_grad,
                                tf.zeros_like(lam_grad))
            self.lambda_optimizer.apply([lam_grad], [self.lam.raw])
        self.refresh_statistics(data["query_images"])
        logs = self.logs([self.loss_tracker, self.objective_tracker,
                          self.task_sum_tracker, *self.task_loss_trackers,
                          *self.sparsity_trackers])
        logs["gradient_norm"] = norm
        if self.controller is not None:
            if self.controller.mode == config_lib.TOLERANCE:
                logs["quality_gap"] = 100.0 * self.controller.gap()
            logs["sparsity_budget"] = self.controller.budget_now(
                self.optimizer.iterations)
        return reducible(logs)

    def validation_task_losses(self, images, targets):
        """`(losses, labelled)` of a validation batch, in inference mode
        (what `QualityChecks` averages)."""
        return self.task_losses(targets, self.network(images,
                                                      training=False))

    def refresh_statistics(self, query_images):
        """One moving-statistics update from training-mode passes at the meta
        weights (after the update and the prox) over each episode's query
        batch, averaged over the episodes: the statistics then belong to the
        weights that are evaluated and shipped, not to the sparser fast
        weights. Per episode, as the meta-gradients are, so that spreading
        the episodes over replicas (whose averaged assignment this is) gives
        the same statistics as one device."""
        network = self.network
        trainable = [v.value for v in network.trainable_variables]
        statistics = [v.value for v in network.non_trainable_variables]
        episodes = tf.shape(query_images)[0]

        def body(m, sums):
            _, updated = network.stateless_call(
                trainable, statistics, query_images[m], training=True)
            return m + 1, [s + u for s, u in zip(sums, updated)]

        _, sums = tf.while_loop(
            lambda m, _: m < episodes, body,
            (tf.constant(0), [tf.zeros_like(v) for v in statistics]),
            parallel_iterations=1)
        count = tf.cast(episodes, tf.float32)
        for variable, total in zip(network.non_trainable_variables, sums):
            variable.assign(tf.stop_gradient(total / tf.cast(count,
                                                             total.dtype)))
