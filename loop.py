"""The training loop around trainer.LadaGAN: data, distribution strategy, checkpoints,
TensorBoard and metrics.jsonl, in-loop FID, sample grids and attention maps.

train.py (the command line) plans the run and hands it to `Run`.
"""
import json
import math
import os
import tempfile
import time

import tensorflow as tf
from tqdm import tqdm

import checkpoints
import config
import data
import fid
import sampling
import trainer
import utils


class TrainingError(Exception):
    """A run that cannot start or go on; the message says what to do."""


class Run:
    """The training loop around trainer.LadaGAN: data, checkpoints, logs, FID, pictures."""

    def __init__(self, args, plan, conf):
        self.args, self.plan, self.conf = args, plan, conf
        if args.seed is not None:
            tf.keras.utils.set_random_seed(args.seed)
        strategy = make_strategy(args.strategy, args.tpu)
        self.is_chief = is_chief(strategy)
        dataset = data.make_dataset(plan.file_pattern, conf['img_size'], conf['batch_size'],
                                     antialias=conf['antialias'], seed=args.seed,
                                     crop=conf['crop'])
        self.gan = trainer.LadaGAN(conf, jit_compile=args.jit, strategy=strategy,
                                   precision=args.precision, grad_accum=args.grad_accum)
        self.dataset = distribute_dataset(dataset, strategy)
        if args.seed is not None:
            self.gan.noise_rng.reset_from_seed(args.seed)
        self.checkpoint = checkpoints.make_checkpoint(**self.gan.checkpoint_objects())
        self.restore_dirs = [os.path.join(plan.model_dir, subdir)
                             for subdir in (checkpoints.TRAINING_DIR, checkpoints.BEST_DIR)]
        self.log_dir = os.path.join(plan.model_dir, 'log-dir')
        self.fid_monitor = (None if args.no_fid or not self.is_chief
                            else self._make_fid_monitor())
        # The authors' fixed grid noise: 25 samples drawn from test_seed.
        self.grid_noise = sampling.sample_noise(25, conf['noise_dim'], conf['test_seed'])

    def _make_fid_monitor(self):
        try:
            return fid.InLoopFID(self.plan.eval_dir, self.conf,
                                 weights=self.args.inception_weights,
                                 cache_dir=fid.DEFAULT_STATS_DIR)
        except fid.FIDUnavailable as e:
            print(f'FID off: {e}')
            return None

    def restore(self):
        """Resumes from the newest regular checkpoint (else the best); returns start iter.
        Raises CheckpointError when the checkpoint does not fit the config. Writes nothing.

        Only checkpoints recorded in a manager's state file count: that file is rewritten
        atomically after a save completes, so a save cut short is never picked up."""
        path = next(filter(None, map(tf.train.latest_checkpoint, self.restore_dirs)), None)
        if not path:
            print(f'Starting a new run in {self.plan.model_dir}')
            return 1
        checkpoints.restore_checkpoint(path, **self.gan.checkpoint_objects())
        self.gan.apply_learning_rates()
        n_images = int(self.gan.n_images.numpy())
        print(f'Resumed from {path} at {n_images:,} images (best FID '
              f'{float(self.gan.best_fid.numpy()):.2f})')
        return n_images // self.conf['batch_size'] + 1

    def write_config(self):
        """config.json, once the data, the model and any checkpoint have been checked."""
        if self.is_chief:
            utils.write_json(os.path.join(self.plan.model_dir, config.CONFIG_FILE), self.conf)

    def _open_outputs(self):
        """Checkpoint managers and the TensorBoard writer (they create their folders)."""
        # Every worker saves (as MultiWorkerMirroredStrategy requires); only the chief's
        # files land in model_dir.
        save_dir = (self.plan.model_dir if self.is_chief
                    else tempfile.mkdtemp(prefix='ladagan-'))
        self.managers = {
            name: tf.train.CheckpointManager(self.checkpoint, os.path.join(save_dir, subdir),
                                             max_to_keep=self.args.max_ckpt_to_keep)
            for name, subdir in (('regular', checkpoints.TRAINING_DIR),
                                 ('best', checkpoints.BEST_DIR))}
        self.writer = (tf.summary.create_file_writer(self.log_dir)
                       if self.is_chief else tf.summary.create_noop_writer())

    def _forget_logged_metrics_after(self, last_iter):
        """Drops metrics.jsonl lines of iterations that the resumed run will redo."""
        path = os.path.join(self.plan.model_dir, 'metrics.jsonl')
        if not self.is_chief or not os.path.exists(path):
            return
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if _logged_iter(line) <= last_iter]
        if len(kept) < len(lines):
            utils.write_text(path, ''.join(kept))

    def train(self, start):
        """Trains from iteration `start` (see restore) to the plan's total_iter."""
        total = self.plan.total_iter
        if start > total:
            print(f'Already trained to iteration {start - 1} >= --total_iter {total}.')
            return
        self._open_outputs()
        self._forget_logged_metrics_after(start - 1)
        batches = iter(self.dataset)
        sums, count, tick = {}, 0, time.time()
        bar = tqdm(range(start, total + 1), initial=start - 1, total=total, unit='it',
                   dynamic_ncols=True, disable=not self.is_chief)
        for idx in bar:
            metrics = self.gan.train_step(next(batches))
            self._stop_if_not_finite(metrics, idx)
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value
            count += 1
            if idx % self.plan.metrics_inter == 0 or idx == total:
                means = {name: value / count for name, value in sums.items()}
                means['images_per_sec'] = count * self.conf['batch_size'] / (time.time() - tick)
                self._log(idx, means)
                bar.set_postfix({k: f'{means[k]:.3f}' for k in ('d_loss', 'g_loss', 'gp')}
                                | {'img/s': f"{means['images_per_sec']:.0f}"})
                sums, count, tick = {}, 0, time.time()
            if idx % self.plan.fid_inter == 0 or idx == total:
                self.evaluate_and_save(idx)
                tick = time.time()
        bar.close()
        self._say_where_the_results_are(total)

    def _say_where_the_results_are(self, idx):
        if not self.is_chief:
            return
        model_dir = self.plan.model_dir
        n_images = idx * self.conf['batch_size']
        samples = self._picture_path('samples', n_images)
        print(f'Done: {idx:,} iterations, {n_images:,} images.\n'
              f'  samples:      {samples} (attention maps beside them)\n'
              f'  TensorBoard:  tensorboard --logdir {self.log_dir}\n'
              f'  more samples: python generate.py --model_dir {model_dir} --n 64 '
              f'--out samples.png')

    def _stop_if_not_finite(self, metrics, idx):
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise TrainingError(
                f'non-finite loss at iteration {idx} ({bad}); stopped without saving. The '
                f'last good checkpoint is kept in {self.managers["regular"].directory}. '
                f'Try a lower g_lr/d_lr or a higher gp_weight.')

    def _stop_if_weights_not_finite(self, idx):
        for net in (self.gan.generator, self.gan.ema_generator, self.gan.discriminator):
            if not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in net.weights):
                raise TrainingError(
                    f'{net.name} has non-finite weights at iteration {idx}; stopped without '
                    f'saving. The last good checkpoint is kept in '
                    f'{self.managers["regular"].directory}.')

    def _log(self, idx, means):
        if not self.is_chief:
            return
        n_images = idx * self.conf['batch_size']
        with self.writer.as_default():
            for name, value in means.items():
                tf.summary.scalar(name, value, step=n_images)
        self.writer.flush()
        with open(os.path.join(self.plan.model_dir, 'metrics.jsonl'), 'a') as f:
            f.write(json.dumps({'iter': idx, 'n_images': n_images, **means}) + '\n')

    def evaluate_and_save(self, idx):
        """FID, pictures and checkpoints, as the authors: best first when FID improved."""
        n_images = idx * self.conf['batch_size']
        self._stop_if_weights_not_finite(idx)
        fid_value = self._compute_fid()
        if self.is_chief:
            self._save_pictures(n_images)
        self.gan.n_images.assign(n_images)
        improved = fid_value is None or fid_value < float(self.gan.best_fid.numpy())
        if fid_value is not None:
            self.gan.fid.assign(fid_value)
            with self.writer.as_default():
                tf.summary.scalar('FID', fid_value, step=n_images)
            if improved:
                self.gan.best_fid.assign(fid_value)
        if improved:
            self.managers['best'].save(checkpoint_number=n_images)
        self.managers['regular'].save(checkpoint_number=n_images)
        fid_text = 'off' if fid_value is None else f'{fid_value:.2f}'
        tqdm.write(f'[{n_images:,} images] FID {fid_text}; checkpoint ckpt-{n_images}'
              + (' (best)' if improved else ''))

    def _compute_fid(self):
        if self.fid_monitor is None:
            return None
        return self.fid_monitor(self.gan.ema_generator)

    def _save_pictures(self, n_images):
        """PNGs in images/, shown in TensorBoard's image tab too."""
        images, attention = sampling.generate(self.gan.ema_generator, self.grid_noise,
                                              batch_size=len(self.grid_noise), attention=True,
                                              jit_compile=self.args.jit)
        paths = {kind: self._picture_path(kind, n_images) for kind in ('samples', 'attention')}
        utils.save_image_grid(images, paths['samples'])
        utils.save_attention_maps(images[:4], [a[:4] for a in attention], paths['attention'])
        with self.writer.as_default():
            for kind, path in paths.items():
                png = tf.io.decode_png(tf.io.read_file(path))
                tf.summary.image(kind, png[None], step=n_images)
        self.writer.flush()

    def _picture_path(self, kind, n_images):
        """images/samples-<n_images>.png or images/attention-<n_images>.png."""
        return os.path.join(self.plan.model_dir, 'images', f'{kind}-{n_images:09d}.png')


def make_strategy(name, tpu=None):
    """The tf.distribute strategy of --strategy; a setup that cannot work raises
    TrainingError instead of a traceback from inside TensorFlow."""
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name == 'multiworker':
        check_tf_config(os.environ.get('TF_CONFIG'))
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == 'tpu':
        return tpu_strategy(tpu)
    return tf.distribute.get_strategy()


def check_tf_config(text):
    """Checks what MultiWorkerMirroredStrategy reads from TF_CONFIG: a cluster of job
    names -> host:port lists, and this process's task as one of its entries."""
    see = 'see "Scaling up" in README.md for a two-worker example'
    if not text:
        raise TrainingError(f'--strategy multiworker needs the TF_CONFIG environment variable '
                            f'({see})')
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise TrainingError(f'TF_CONFIG is not valid JSON ({e}); {see}') from None
    cluster = spec.get('cluster') if isinstance(spec, dict) else None
    task = spec.get('task') if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise TrainingError('TF_CONFIG needs "cluster" ({"worker": ["host:port", ...]}) and '
                            f'"task" ({{"type": "worker", "index": i}}); {see}')
    hosts = cluster.get(task.get('type'))
    index = task.get('index')
    if not isinstance(hosts, list) or not isinstance(index, int) or not 0 <= index < len(hosts):
        raise TrainingError(f'TF_CONFIG task {json.dumps(task)} is not an entry of its cluster '
                            f'{json.dumps(cluster)}: "type" must be one of its job names and '
                            f'"index" a position in that job\'s list; {see}')


def tpu_strategy(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, ImportError, tf.errors.OpError) as e:
        raise TrainingError(
            f'--strategy tpu found no TPU ({_first_line(e)}). On a TPU VM pass '
            f'--tpu local; for a TPU node pass --tpu NAME or set TPU_NAME.') from None
    return tf.distribute.TPUStrategy(resolver)


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def is_chief(strategy):
    """True on the worker that writes checkpoints, logs and pictures."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = 'chief' in resolver.cluster_spec().as_dict()
    return resolver.task_type == 'chief' or (
        not has_chief and resolver.task_type == 'worker' and resolver.task_id == 0)


def distribute_dataset(dataset, strategy):
    """Per-replica slices of each global batch; with several workers, each worker keeps
    every n-th batch element (DATA sharding: works for any number of files)."""
    if strategy.num_replicas_in_sync == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _logged_iter(line):
    try:
        return json.loads(line)['iter']
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut by a kill: drop it
