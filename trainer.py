"""One LadaGAN training step (XLA-compiled): losses, R1, DiffAugment, bCR and the EMA.

    gan = LadaGAN(config)                       # builds G, EMA G, D and both Adams
    metrics = gan.train_step(images)            # one D update then one G update
    metrics = gan.train_step(images, noise_d=z1, noise_g=z2, augment=False)  # replayable
    gan.run_steps(stacked, steps=4)             # 4 steps in one compiled call, no sync
    means, n = gan.read_metrics()               # device-side means since the last read

Class-conditional (config n_classes > 0): batches are (images, labels) and the noise of
each update is (z, fake labels), the labels drawn with the dataset's class frequencies.

The step follows the authors' order exactly (SPEC §5). train.py runs the loop around it.
"""
import contextlib

import keras
import tensorflow as tf

import config as config_lib
import diffaug
import checkpoints
import model as model_lib

# real_acc / fake_acc: the authors' names for the mean D logit of the real images and of
# the G step's fakes (not accuracies).
METRIC_NAMES = ('g_loss', 'd_loss', 'gp', 'd_total', 'real_acc', 'fake_acc', 'cr')
# With adaptive augmentation (config ada_target): p, the probability that an image is
# augmented, and ada_r, the overfitting heuristic r_t = E[sign(D(real))] that moves it.
ADA_METRIC_NAMES = ('ada_p', 'ada_r')
ADA_INTERVAL = 4  # steps between two adjustments of p, as ADA's
# fid / best_fid before any FID is measured: the authors' placeholder, kept so that their
# checkpoints and ours hold the same values. Show it as "none yet", never as a number.
NO_FID_YET = 10000.0


# --- losses -------------------------------------------------------------------------------
# Means run over the batch and the 25 patch logits of each image.

def nsl_d_loss(real_logits, fake_logits):
    return tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(
        tf.nn.softplus(fake_logits))


def nsl_g_loss(fake_logits):
    return tf.reduce_mean(tf.nn.softplus(-fake_logits))


def hinge_d_loss(real_logits, fake_logits):
    return tf.reduce_mean(tf.nn.relu(1 - real_logits)) + tf.reduce_mean(
        tf.nn.relu(1 + fake_logits))


def hinge_g_loss(fake_logits):
    return -tf.reduce_mean(fake_logits)


# One entry per name of config.LOSSES / config.PRECISIONS (tests/test_config.py checks).
LOSSES = {'nsl': (nsl_d_loss, nsl_g_loss), 'hinge': (hinge_d_loss, hinge_g_loss)}


def r1_penalty(discriminator, images, gp_weight, labels=None):
    """(logits, gp_weight * mean_b sum_pixels (d sum_25 D(x) / dx)^2) with BN in training mode.

    No 1/2 factor: the authors' weight 1e-4 is gamma/2 in StyleGAN's convention. A
    conditional D reads the images' labels; the gradient is the images' alone.
    """
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = discriminator(_with_labels(images, labels), training=True)
        summed = tf.reduce_sum(logits)
    grads = tape.gradient(summed, images)
    grads = tf.reshape(tf.cast(grads, tf.float32), [tf.shape(images)[0], -1])
    return logits, gp_weight * tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=1))


def _with_labels(images, labels):
    """A network's input: the images, or (images, labels) for a conditional one."""
    return images if labels is None else (images, labels)


def _images_and_labels(batch):
    """(images, labels) of a batch; labels None for unconditional data."""
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch, None)


def consistency_loss(logits, augmented_logits):
    """bCR term: mean squared difference over the 25 logits and the batch."""
    return tf.reduce_mean(tf.square(logits - augmented_logits))


PRECISION_POLICIES = {'fp32': 'float32', 'bf16': 'mixed_bfloat16', 'fp16': 'mixed_float16'}


@contextlib.contextmanager
def _dtype_policy(name):
    """Keras layers take the global dtype policy when created: set it for model building."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _inner(optimizer):
    return getattr(optimizer, 'inner_optimizer', optimizer)


def make_adam(lr, beta1, beta2):
    return keras.optimizers.Adam(learning_rate=lr, beta_1=beta1, beta_2=beta2, epsilon=1e-7)


def _class_logits(n_classes, class_counts):
    """Log class frequencies for drawing the G's labels; None when unconditional."""
    if not n_classes:
        return None
    counts = tf.ones([n_classes]) if class_counts is None else tf.constant(
        class_counts, tf.float32)
    if counts.shape != [n_classes]:
        raise config_lib.ConfigError(
            f'class_counts has {counts.shape[0]} entries for n_classes={n_classes}')
    return tf.math.log(counts)


def _split(batch, n):
    """n micro-batches of a batch: a tensor or an (images, labels) pair."""
    if isinstance(batch, tuple):
        return list(zip(*(tf.split(t, n) for t in batch)))
    return tf.split(batch, n)


def _first(stacked, steps):
    """The first step's batch of run_steps' arguments (stacked when steps > 1)."""
    return stacked if steps == 1 else tf.nest.map_structure(lambda t: t[0], stacked)


def _dense(gradient):
    """An embedding's gradient comes as IndexedSlices, a row per lookup: a class drawn
    k times in a batch has k rows. Keras' Adam squares each row for its second moment
    before the rows are added up (sum of squares, not the square of the sum), so a
    conditional model's embeddings would get a wrong update; the dense gradient is the
    true one (and small: n_classes rows)."""
    return gradient if gradient is None else tf.convert_to_tensor(gradient)


class LadaGAN:
    """Generator, EMA generator, discriminator, their optimizers and the train step.

    Attributes: generator, ema_generator, discriminator, g_optimizer, d_optimizer,
    n_images / fid / best_fid (tf.Variables saved with checkpoints), config.
    """

    def __init__(self, config, jit_compile=True, strategy=None, precision='fp32',
                 grad_accum=1, class_counts=None):
        """jit_compile=False runs the step as a plain TF graph (faster to compile; on some
        CPUs faster to run); the results agree to float rounding.

        strategy: a tf.distribute strategy (default: the current one, one device). The
        config's batch_size is the global batch, split over the replicas; BatchNorm
        statistics are synchronised so that N replicas compute what one device does.

        precision: 'fp32', 'bf16' or 'fp16' (Keras mixed precision: float32 weights,
        EMA, logits, attention softmax, losses and R1; fp16 adds dynamic loss scaling,
        which skips the updates whose gradients overflow).

        grad_accum: K micro-batches per update, giving the update of a K-times larger
        batch; BatchNorm in D then sees micro-batch statistics.

        class_counts: images per class of a conditional model's data (n_classes values);
        the G's labels are drawn with these frequencies (default: uniform).
        """
        self.config = config_lib.validate(dict(config))
        self.class_logits = _class_logits(self.config['n_classes'], class_counts)
        self.jit_compile = jit_compile
        self.strategy = strategy or tf.distribute.get_strategy()
        self.n_replicas = self.strategy.num_replicas_in_sync
        self.grad_accum = grad_accum
        if precision not in PRECISION_POLICIES:
            raise config_lib.ConfigError(
                f"invalid precision {precision!r}: must be one of {list(config_lib.PRECISIONS)}")
        self.precision = precision
        c = self.config
        if c['batch_size'] % (self.n_replicas * grad_accum):
            raise config_lib.ConfigError(
                f"invalid config value batch_size={c['batch_size']}: must be a multiple of "
                f"{self.n_replicas} replicas x {grad_accum} accumulation steps")
        with self.strategy.scope(), _dtype_policy(PRECISION_POLICIES[precision]):
            self._build(c)

    def _build(self, c):
        sync = self.n_replicas > 1
        self.generator = model_lib.build_generator(c, 'generator', sync)
        self.ema_generator = model_lib.build_generator(c, 'ema_generator', sync)
        if c['ema_init'] == 'copy':
            # Fix of the authors' code, whose clone_model EMA starts from another random init.
            for ema_weight, weight in zip(self.ema_generator.weights, self.generator.weights):
                ema_weight.assign(weight)
        self.discriminator = model_lib.build_discriminator(c, 'discriminator', sync)
        self.g_optimizer = make_adam(c['g_lr'], c['g_beta1'], c['g_beta2'])
        self.d_optimizer = make_adam(c['d_lr'], c['d_beta1'], c['d_beta2'])
        if self.precision == 'fp16':
            self.g_optimizer = keras.optimizers.LossScaleOptimizer(self.g_optimizer)
            self.d_optimizer = keras.optimizers.LossScaleOptimizer(self.d_optimizer)
        self.g_optimizer.build(self.generator.trainable_weights)
        self.d_optimizer.build(self.discriminator.trainable_weights)
        # FreezeD: the optimizer keeps a slot for every weight (the checkpoint layout of any
        # run), but only the unfrozen ones get gradients and updates.
        frozen = {id(v) for block in self.discriminator.blocks()[:c['freeze_d']]
                  for layer in block for v in layer.trainable_weights}
        self.d_variables = [v for v in self.discriminator.trainable_weights
                            if id(v) not in frozen]
        self.d_loss_fn, self.g_loss_fn = LOSSES[c['loss']]
        self.n_images = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.fid = tf.Variable(NO_FID_YET, dtype=tf.float32, trainable=False)
        self.best_fid = tf.Variable(NO_FID_YET, dtype=tf.float32, trainable=False)
        self.noise_rng = tf.random.Generator.from_non_deterministic_state()
        # Summed on the device by every step; read (one sync) by read_metrics.
        self.ada = c['ada_target'] > 0
        if self.ada:
            self.ada_p = tf.Variable(0.0, trainable=False)  # checkpointed: see checkpoint_objects
            self.ada_signs = tf.Variable(0.0, trainable=False)  # this interval's sum of E[sign]
            self.ada_steps = tf.Variable(0, dtype=tf.int32, trainable=False)
        names = METRIC_NAMES + (ADA_METRIC_NAMES if self.ada else ())
        self.metric_sums = {name: tf.Variable(0.0, trainable=False) for name in names}
        self.metric_count = tf.Variable(0, dtype=tf.int32, trainable=False)
        self._compiled_steps, self._step_functions = {}, {}

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint_objects(self):
        """Objects for checkpoints.make_checkpoint, under the authors' checkpoint names, and
        with ADA its p (only then: the authors' layout stays as it was otherwise)."""
        ada = {'ada_p': self.ada_p} if self.ada else {}
        return {**ada,
            'g_optimizer': checkpoints.optimizer_variables(self.g_optimizer, self.generator),
            'd_optimizer': checkpoints.optimizer_variables(self.d_optimizer, self.discriminator),
            'generator': checkpoints.checkpoint_variables(self.generator),
            'ema_generator': checkpoints.checkpoint_variables(self.ema_generator),
            'discriminator': checkpoints.checkpoint_variables(self.discriminator),
            'n_images': self.n_images, 'fid': self.fid, 'best_fid': self.best_fid,
        }

    def apply_learning_rates(self):
        """Sets the optimizers' rates from the config: checkpoints store the rates too, and
        a restored run must follow its (possibly overridden) config."""
        for optimizer, key in ((self.g_optimizer, 'g_lr'), (self.d_optimizer, 'd_lr')):
            _inner(optimizer).learning_rate.assign(self.config[key])

    # --- training -------------------------------------------------------------------------
    def sample_noise(self, shape):
        """G's input for a batch: z of shape [*shape, noise_dim], and for a conditional
        model the labels [*shape] drawn with the class frequencies; shape is a batch size
        or a list of sizes."""
        shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
        z = self.noise_rng.normal(shape + [self.config['noise_dim']])
        if self.class_logits is None:
            return z
        n = int(tf.reduce_prod(shape))
        seed = self.noise_rng.make_seeds(1)[:, 0]
        labels = tf.random.stateless_categorical(self.class_logits[None], n, seed,
                                                 dtype=tf.int32)
        return z, tf.reshape(labels, shape)

    def train_step(self, images, noise_d=None, noise_g=None, augment=True):
        """One D update then one G update and the EMA; returns the metrics as floats.

        images: the global batch, or per-replica values from a distributed dataset.
        noise_d / noise_g: the z of the two updates, global batch (drawn when None).
        augment=False turns DiffAugment off (bCR consistency pairs included), which
        with explicit noise makes the step deterministic and replayable.
        The metrics are also added to the device sums (read_metrics).
        """
        metrics = self.run_steps(images, noise_d, noise_g, augment, steps=1)
        return {name: float(value) for name, value in metrics.items()}

    def run_steps(self, images, noise_d=None, noise_g=None, augment=True, steps=1):
        """`steps` train steps in one compiled call, without reading anything back.

        steps=1: arguments as train_step's; returns the step's metrics as tensors.
        steps=K > 1: images, noise_d and noise_g stacked as [K, batch, ...] (noise drawn
        when None), one device only; returns None. K calls of train_step with the same
        batches and noise give the same weights and metric sums.
        """
        if steps > 1 and self.n_replicas > 1:
            raise config_lib.ConfigError(
                f'{steps} steps per call need one device; {self.n_replicas} replicas run '
                'one step per call')
        first = tf.nest.flatten(images)[0]
        if isinstance(first, tf.distribute.DistributedValues):
            batch = self.config['batch_size']
        else:
            batch = first.shape[1] if steps > 1 else len(first)
        shape = [steps, batch] if steps > 1 else [batch]
        noise_d = self.sample_noise(shape) if noise_d is None else noise_d
        noise_g = self.sample_noise(shape) if noise_g is None else noise_g
        args = [self._per_replica(x) for x in (images, noise_d, noise_g)]
        return self._compiled_step(bool(augment), steps, args)(*args)

    def read_metrics(self, reset=True):
        """{name: mean since the last reset} of the device sums and the step count, the
        one device-to-host read of the training loop; NaN and inf stay in the sums."""
        count = int(self.metric_count.numpy())
        means = {name: float(v.numpy()) / max(count, 1) for name, v in self.metric_sums.items()}
        if reset:
            self.metric_count.assign(0)
            for v in self.metric_sums.values():
                v.assign(0.0)
        return means, count

    def _per_replica(self, x):
        """Splits a global batch (or an (x, labels) pair) over the replicas (each replica
        takes its slice)."""
        if isinstance(x, (tuple, list)):
            return tuple(self._per_replica(part) for part in x)
        if isinstance(x, tf.distribute.DistributedValues):
            return x
        x = tf.convert_to_tensor(x)
        x = x if x.dtype.is_integer else tf.cast(x, tf.float32)
        if self.n_replicas == 1:
            return x
        size = x.shape[0] // self.n_replicas
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: x[ctx.replica_id_in_sync_group * size:
                          (ctx.replica_id_in_sync_group + 1) * size])

    def _compiled_step(self, augment, steps, args):
        """The function that run_steps calls with args. R1 every step and one step: the one
        XLA step, as the authors'. Else a TF graph around XLA-compiled parts, looping over
        the K batches as Keras' steps_per_execution does. Lazy R1 (one device): the graph
        picks by the D update count between the R1 part and the real images' augmentation,
        then the plain step (a tf.cond inside one XLA function ran its R1 branch ~20x slower
        on a CPU, as XLA's nested computations lose its optimisations; two whole XLA steps,
        with and without R1, compile the G and D passes and the updates twice)."""
        key = (augment, steps)
        if key not in self._compiled_steps:
            k = self.config['r1_interval']
            lazy = k > 1 and self.config['gp_weight'] > 0
            if lazy and self.n_replicas > 1:
                fn = lambda x, zd, zg: self._replicated_lazy_step(x, zd, zg, augment)  # noqa
            elif lazy:
                self._compile_lazy_parts(augment, [_first(x, steps) for x in args])
                one = lambda x, zd, zg: self._lazy_step(x, zd, zg, augment)  # noqa: E731
                fn = tf.function(one if steps == 1 else lambda x, zd, zg: self._loop(
                    one, x, zd, zg, steps))
            elif steps == 1:
                fn = self._xla_step(augment, 1)
            else:
                fn = tf.function(lambda x, zd, zg: self._loop(
                    self._xla_step(augment, 1), x, zd, zg, steps))
            self._compiled_steps[key] = fn
        return self._compiled_steps[key]

    def _xla(self, key, fn):
        """fn XLA-compiled once per key (a TF graph with several replicas: XLA cannot
        compile their cross-device all-reduces)."""
        if key not in self._step_functions:
            jit = self.jit_compile and self.n_replicas == 1
            self._step_functions[key] = tf.function(fn, jit_compile=jit)
        return self._step_functions[key]

    def _xla_step(self, augment, r1_scale):
        """One step; r1_scale multiplies the R1 weight, 0 leaves R1 out."""
        return self._xla(('step', augment, r1_scale), lambda x, zd, zg: self._step(
            x, zd, zg, augment, r1_scale))

    def _replicated_lazy_step(self, images, noise_d, noise_g, augment):
        """Lazy R1 over several replicas: their per-replica batches cannot enter a tf.cond,
        so the count is read from the device at each step and picks the R1 or plain step."""
        k = self.config['r1_interval']
        count = int(_inner(self.d_optimizer).iterations.numpy())
        return self._xla_step(augment, k if count % k == 0 else 0)(images, noise_d, noise_g)

    def _lazy_parts(self, augment):
        """Lazy R1's three XLA functions: the R1 part, the augmentation of the real images
        (what the plain step's D sees of them), and the plain step given both."""
        r1 = self._xla(('r1', augment), lambda x: self._r1_part(x, augment))
        real = self._xla(('real', augment), lambda x: self._real_input(x, augment))
        step = self._xla(('given_r1', augment), lambda x, zd, zg, gp, grads: self._step(
            x, zd, zg, augment, 0, (gp, grads)))
        return r1, real, step

    def _compile_lazy_parts(self, augment, args):
        """XLA compiles a function when it first runs: the R1 part and the augmentation run
        once here, in a graph as the step calls them (XLA's cache keeps eager calls apart),
        their results dropped (they change no variable); the first step compiles the plain
        step, so no later step compiles anything. Without XLA there is nothing to compile."""
        if not self.jit_compile:
            return
        r1, real, _ = self._lazy_parts(augment)
        tf.function(lambda x: [r1(x), real(x)])(args[0])

    def _lazy_step(self, images, noise_d, noise_g, augment):
        """Lazy R1 (StyleGAN2): R1 with weight x k on the D updates whose count is a
        multiple of k, none on the others. The count is the D optimizer's, checkpointed,
        so a resumed run keeps the phase (an fp16 update skipped for overflow does not
        count); only the part taken runs."""
        r1, real, step = self._lazy_parts(augment)
        due = tf.equal(_inner(self.d_optimizer).iterations % self.config['r1_interval'], 0)

        def without_r1():
            return (real(images), tf.zeros([self.grad_accum]),
                    [tf.zeros_like(v) for v in self.d_variables])
        # The plain step after the tf.cond, not in both branches: one call of its large
        # function in the graph is prepared once before the first run.
        real_input, gp, grads = tf.cond(due, lambda: r1(images), without_r1)
        return step(real_input, noise_d, noise_g, gp, grads)

    def _real_input(self, real_batch, augment):
        """The real images as the D step's D sees them: augmented, or clean with bCR."""
        images, labels = _images_and_labels(real_batch)
        if not self.config['bcr']:
            images = self._augment(images, augment)
        return images if labels is None else (images, labels)

    def _r1_part(self, real_batch, augment):
        """Lazy R1's due part, before the plain step: (the real input, R1 of each micro-batch,
        the sum of their gradients), from a D pass of its own whose BatchNorm statistics
        update is undone (the plain step's D pass makes it, as R1 every step does once)."""
        real_input = self._real_input(real_batch, augment)
        weight = self.config['gp_weight'] * self.config['r1_interval']
        statistics = self.discriminator.non_trainable_variables
        saved = [tf.identity(v) for v in statistics]
        gps, total = [], None
        for micro in _split(real_input, self.grad_accum):
            images, labels = _images_and_labels(micro)
            with tf.GradientTape() as tape:
                _, gp = r1_penalty(self.discriminator, images, weight, labels)
                scaled = self._scaled(gp, self.d_optimizer)
            grads = [_dense(g) for g in tape.gradient(scaled, self.d_variables)]
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
            gps.append(gp)
        with tf.control_dependencies([*gps, *total]):
            for v, value in zip(statistics, saved):
                v.assign(value)
        return real_input, tf.stack(gps), total

    def _loop(self, one_step, images, noise_d, noise_g, steps):
        """A graph loop of `steps` steps over stacked batches: one call from Python."""
        def body(i):
            one_step(*(tf.nest.map_structure(lambda t: t[i], x)
                       for x in (images, noise_d, noise_g)))
            return (i + 1,)
        tf.while_loop(lambda i: i < steps, body, (tf.constant(0),), parallel_iterations=1,
                      maximum_iterations=steps)

    def _augment(self, images, augment):
        """The policy's DiffAugment; with ADA, each image augmented with probability p."""
        if not augment:
            return images
        augmented = diffaug.diff_augment(images, self.config['policy'])
        if not self.ada:
            return augmented
        chosen = tf.random.uniform([tf.shape(images)[0]]) < self.ada_p
        return tf.where(chosen[:, None, None, None], augmented, images)

    def adjust_ada(self, sign_mean):
        """ADA's controller, on the device (no branch, no read to the host): adds one step's
        E[sign(D(real))]; every ADA_INTERVAL steps, r_t is their mean and p moves by
        sign(r_t - ada_target) x (the interval's images) / (ada_kimg x 1000), within [0, 1]."""
        c = self.config
        signs, steps = self.ada_signs + sign_mean, self.ada_steps + 1
        due = steps >= ADA_INTERVAL
        r_t = signs / tf.cast(steps, tf.float32)
        speed = ADA_INTERVAL * c['batch_size'] / (c['ada_kimg'] * 1000)
        moved = tf.clip_by_value(self.ada_p + tf.sign(r_t - c['ada_target']) * speed, 0.0, 1.0)
        self.ada_p.assign(tf.where(due, moved, self.ada_p))
        self.ada_signs.assign(tf.where(due, 0.0, signs))
        self.ada_steps.assign(tf.where(due, 0, steps))

    def _step(self, real_images, noise_d, noise_g, augment, r1_scale=1, given_r1=None):
        """given_r1: lazy R1's (R1 of each micro-batch, their gradients), from _r1_part; the
        real images then come as _real_input gives them."""
        run = self.strategy.run
        d_metrics = run(self._discriminator_step,
                        args=(real_images, noise_d, augment, r1_scale, given_r1))
        g_metrics = run(self._generator_step, args=(noise_g, augment))
        self._update_ema()
        # As the authors: fake_acc is the mean logit of the G step's fakes.
        metrics = {**d_metrics, **g_metrics}
        mean = tf.distribute.ReduceOp.MEAN
        metrics = {name: self.strategy.reduce(mean, value, axis=None)
                   for name, value in metrics.items()}
        if self.ada:
            metrics['ada_p'] = tf.identity(self.ada_p)  # the p this step augmented with
            self.adjust_ada(metrics['ada_r'])
        for name, value in metrics.items():
            self.metric_sums[name].assign_add(value)
        self.metric_count.assign_add(1)
        return metrics

    def _discriminator_step(self, real_images, noise, augment, r1_scale, given_r1):
        if given_r1 is None:
            grads_fn = lambda *args: self._discriminator_grads(*args, r1_scale=r1_scale)
            return self._accumulated_update(grads_fn, self.discriminator, self.d_optimizer,
                                            (real_images, noise), augment)
        gps, r1_grads = given_r1
        grads_fn = lambda real, noise, gp, *args: self._discriminator_grads(
            real, noise, *args, given_gp=gp[0])
        return self._accumulated_update(grads_fn, self.discriminator, self.d_optimizer,
                                        (real_images, noise, gps), augment, r1_grads)

    def _generator_step(self, noise, augment):
        return self._accumulated_update(self._generator_grads, self.generator,
                                        self.g_optimizer, (noise,), augment)

    def _accumulated_update(self, grads_fn, net, optimizer, batches, augment, total=None):
        """Sums the gradients of grad_accum micro-batches (to total, if given), then applies
        them once to the net's trained variables (all but FreezeD's frozen ones)."""
        metrics = []
        for micro in zip(*(_split(b, self.grad_accum) for b in batches)):
            grads, micro_metrics = grads_fn(*micro, augment, optimizer)
            grads = [_dense(g) for g in grads]
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
            metrics.append(micro_metrics)
        optimizer.apply_gradients(zip(total, self._trained_variables(net)))
        return {name: tf.add_n([m[name] for m in metrics]) / self.grad_accum
                for name in metrics[0]}

    def _trained_variables(self, net):
        return self.d_variables if net is self.discriminator else net.trainable_weights

    def _scaled(self, loss, optimizer):
        """The loss whose gradient, summed over replicas and micro-batches, is the
        gradient of the global-batch mean (times the fp16 loss scale)."""
        loss = loss / (self.n_replicas * self.grad_accum)
        return optimizer.scale_loss(loss) if self.precision == 'fp16' else loss

    def _discriminator_grads(self, real_batch, noise, augment, optimizer, r1_scale=1,
                             given_gp=None):
        """r1_scale multiplies gp_weight; 0 skips R1's double backprop altogether.
        given_gp: lazy R1's term, computed (with its gradients) by _r1_part, whose real input
        real_batch is. Labels (conditional) stay with their images through augmentation
        and bCR."""
        c = self.config
        real_images, real_labels = _images_and_labels(real_batch)
        fake_labels = _images_and_labels(noise)[1]
        fake_images, _ = self.generator(noise, training=True)
        d = lambda images, labels: self.discriminator(_with_labels(images, labels),
                                                      training=True)
        if given_gp is None:
            r1 = lambda images: self._r1(images, real_labels, r1_scale)
        else:
            r1 = lambda images: (d(images, real_labels), given_gp)
        with tf.GradientTape() as tape:
            if c['bcr']:
                # Adversarial loss and R1 on clean images; augmentation only for bCR pairs.
                fake_logits = d(fake_images, fake_labels)
                real_logits, gp = r1(real_images)
                pairs = tf.stop_gradient(tf.concat(
                    [self._augment(real_images, augment),
                     self._augment(fake_images, augment)], axis=0))
                pair_labels = (None if real_labels is None
                               else tf.concat([real_labels, fake_labels], axis=0))
                real_aug_logits, fake_aug_logits = tf.split(d(pairs, pair_labels), 2, axis=0)
                cr = c['cr_weight'] * (consistency_loss(real_logits, real_aug_logits)
                                       + consistency_loss(fake_logits, fake_aug_logits))
            else:
                fake_aug = self._augment(fake_images, augment)
                real_aug = (real_images if given_gp is not None
                            else self._augment(real_images, augment))
                fake_logits = d(fake_aug, fake_labels)
                real_logits, gp = r1(real_aug)
                cr = tf.constant(0.0)
            d_loss = self.d_loss_fn(real_logits, fake_logits)
            d_total = d_loss + gp + cr
            scaled = self._scaled(d_total, optimizer)
        grads = tape.gradient(scaled, self.d_variables)
        ada = {'ada_r': tf.reduce_mean(tf.sign(real_logits))} if self.ada else {}
        return grads, {'d_loss': d_loss, 'gp': gp, 'd_total': d_total, 'cr': cr,
                       'real_acc': tf.reduce_mean(real_logits), **ada}

    def _r1(self, images, labels, scale):
        weight = self.config['gp_weight'] * scale
        if weight == 0:  # lazy R1's skipped steps, or no R1 at all (gp_weight 0)
            return self.discriminator(_with_labels(images, labels), training=True), \
                tf.constant(0.0)
        return r1_penalty(self.discriminator, images, weight, labels)

    def _generator_grads(self, noise, augment, optimizer):
        with tf.GradientTape() as tape:
            fake_images, _ = self.generator(noise, training=True)
            if not self.config['bcr']:
                fake_images = self._augment(fake_images, augment)
            fake_labels = _images_and_labels(noise)[1]
            fake_logits = self.discriminator(_with_labels(fake_images, fake_labels),
                                             training=True)
            g_loss = self.g_loss_fn(fake_logits)
            scaled = self._scaled(g_loss, optimizer)
        grads = tape.gradient(scaled, self.generator.trainable_weights)
        return grads, {'g_loss': g_loss, 'fake_acc': tf.reduce_mean(fake_logits)}

    def _ema_decay(self):
        decay = self.config['ema_decay']
        if not self.config['ema_warmup']:
            return decay
        # The num_updates ramp of tf.train.ExponentialMovingAverage: early in training the
        # EMA follows G closely instead of keeping most of the initial weights.
        n = tf.cast(_inner(self.g_optimizer).iterations, tf.float32)
        return tf.minimum(decay, (1 + n) / (10 + n))

    def _update_ema(self):
        decay = self._ema_decay()
        # All weights, BatchNorm statistics of the conv decoder included.
        for ema_weight, weight in zip(self.ema_generator.weights, self.generator.weights):
            ema_weight.assign(decay * ema_weight + (1 - decay) * weight)

