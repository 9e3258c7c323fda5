"""The training loop around trainer.LadaGAN: data, distribution strategy, checkpoints,
TensorBoard and metrics.jsonl, in-loop FID, sample grids and attention maps.

train.py (the command line) plans the run and hands it to `Run`.
"""
import contextlib
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import checkpoints
import config
import data
import fid
import model
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
        dataset = self._make_dataset(args.seed)
        self.n_train_images = dataset.n_files
        self.data_summary = dataset.summary
        self.last_saved = None  # newest checkpoint this process wrote
        self.gan = trainer.LadaGAN(conf, jit_compile=args.jit, strategy=strategy,
                                   precision=args.precision, grad_accum=args.grad_accum,
                                   class_counts=self.classes and self.classes['counts'])
        self.dataset = distribute_dataset(dataset, strategy)
        if args.seed is not None:
            self.gan.noise_rng.reset_from_seed(args.seed)
        self.checkpoint = checkpoints.make_checkpoint(**self.gan.checkpoint_objects())
        self.restore_dirs = [os.path.join(plan.model_dir, subdir)
                             for subdir in (checkpoints.TRAINING_DIR, checkpoints.BEST_DIR)]
        self.log_dir = os.path.join(plan.model_dir, 'log-dir')
        self.fid_monitor = (None if args.no_fid or not self.is_chief
                            else self._make_fid_monitor())
        # The authors' fixed grid noise: 25 samples drawn from test_seed. Conditional: row r
        # of the 5x5 grid shows class r % n_classes.
        self.grid_noise = sampling.sample_noise(25, conf['noise_dim'], conf['test_seed'])
        self.grid_labels = (np.arange(25) // 5 % conf['n_classes']).astype(np.int32) if (
            conf['n_classes']) else None

    def _make_dataset(self, seed):
        """The training batches; a conditional run's come with labels, and self.classes
        holds its class names and counts (None when unconditional)."""
        conf, plan = self.conf, self.plan
        files, kwargs, self.classes = plan.file_pattern, {}, None
        if conf['n_classes']:
            labels = data.read_labels(plan.file_pattern, plan.labels_file)
            self._check_classes(labels.names)
            files = labels.files
            kwargs = {'labels': labels.labels, 'class_names': labels.names}
        dataset = data.make_dataset(files, conf['img_size'], conf['batch_size'],
                                    antialias=conf['antialias'], seed=seed, crop=conf['crop'],
                                    **kwargs)
        if conf['n_classes']:
            self.classes = {'names': kwargs['class_names'], 'counts': dataset.class_counts}
        return dataset

    def _check_classes(self, names):
        """The data's classes must be n_classes, and on resume the run's own classes."""
        n_classes, where = self.conf['n_classes'], self.plan.labels_file or self.plan.file_pattern
        if len(names) != n_classes:
            shown = ', '.join(names[:10]) + (', ...' if len(names) > 10 else '')
            raise TrainingError(
                f'{where} has {len(names)} classes ({shown}) but n_classes={n_classes}: '
                f'use --set n_classes={len(names)}, or fix the labels')
        saved = config.load_run_classes(self.plan.model_dir)
        if saved is not None and saved['names'] != names:
            raise TrainingError(
                f"the data's classes {names[:10]} are not those this run was trained on "
                f"({config.CLASSES_FILE}: {saved['names'][:10]}): the labels would change "
                f'meaning. Use the same data, or another --model_dir.')

    def _make_fid_monitor(self):
        try:
            return fid.InLoopFID(self.plan.eval_dir, self.conf,
                                 weights=self.args.inception_weights,
                                 cache_dir=fid.DEFAULT_STATS_DIR,
                                 class_counts=self.classes and self.classes['counts'])
        except fid.FIDUnavailable as e:
            print(f'FID off: {e}')
            return None

    def restore(self, source=None):
        """Resumes from the newest regular checkpoint (else the best); returns start iter.
        A new run starts from the weights of `source` (a checkpoints.InitSource) if given.
        Raises CheckpointError when the checkpoint does not fit the config. Writes nothing.

        Only checkpoints recorded in a manager's state file count: that file is rewritten
        atomically after a save completes, so a save cut short is never picked up."""
        path = checkpoints.resumable_checkpoint(self.plan.model_dir)
        if not path:
            print(f'Starting a new run in {self.plan.model_dir}')
            if source is not None:
                self._start_from(source)
            return 1
        objects = self.gan.checkpoint_objects()
        if 'ada_p' in objects and not checkpoints.has_variable(path, 'ada_p'):
            print(f'{path} was saved without adaptive augmentation: its p starts at 0.')
            del objects['ada_p']
        checkpoints.restore_checkpoint(path, **objects)
        self.gan.apply_learning_rates()
        n_images = int(self.gan.n_images.numpy())
        print(f'Resumed from {path} at {n_images:,} images (best FID {self._best_fid_text()})')
        return n_images // self.conf['batch_size'] + 1

    def _start_from(self, source):
        """G, EMA G and D from the source's checkpoint (--init_from); the optimizers, the
        image count, the FIDs and ADA's p keep their fresh values."""
        gan = self.gan
        widen = bool(self.conf['n_classes']) and not source.config['n_classes']
        fresh = checkpoints.load_for_init(source.checkpoint, {
            name: checkpoints.checkpoint_variables(getattr(gan, name))
            for name in ('generator', 'ema_generator', 'discriminator')}, widen)
        print(f'Weights of G, EMA G and D from --init_from {source.source} '
              f'({source.checkpoint}); optimizers, image count and best FID start fresh.')
        if widen:
            print(f'The source is unconditional: the class embeddings of G and D start fresh '
                  f'({len(fresh)} variables), and G reads them with weights starting at 0.')

    def _best_fid_text(self):
        best = float(self.gan.best_fid.numpy())
        return 'none yet' if best >= trainer.NO_FID_YET else f'{best:.2f}'

    def remove_leftovers(self):
        """Removes what a run killed in a save or a write left behind (only our partial
        files), with one line saying so."""
        if not self.is_chief:
            return
        model_dir = self.plan.model_dir
        removed = [os.path.join(os.path.basename(d), name) for d in self.restore_dirs
                   for name in checkpoints.remove_partial_saves(d)]
        removed += [os.path.join(folder, name) for folder in ('', 'images')
                    for name in utils.remove_temp_files(os.path.join(model_dir, folder))]
        if removed:
            print(f'Removed {len(removed)} partial files of an interrupted save in {model_dir}: '
                  f'{", ".join(removed[:4])}{" ..." if len(removed) > 4 else ""}')

    def write_run_files(self, options):
        """config.json and run.json, once the data, the model and any checkpoint have been
        checked (so a start that fails leaves the folder as it was)."""
        if not self.is_chief:
            return
        run_file = os.path.join(self.plan.model_dir, config.RUN_FILE)
        before = _read_json(run_file).get('n_train_images')
        if before not in (None, self.n_train_images):
            print(f'The training data has changed: {self.n_train_images:,} images, '
                  f'{before:,} when the run started.')
        utils.write_json(os.path.join(self.plan.model_dir, config.CONFIG_FILE), self.conf)
        utils.write_json(run_file, {**options, 'n_train_images': self.n_train_images})
        if self.classes is not None:
            utils.write_json(os.path.join(self.plan.model_dir, config.CLASSES_FILE), self.classes)

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
        """Trains from iteration `start` (see restore) to the plan's total_iter.

        The metrics stay on the device and are read once per --metrics_inter; with
        --steps_per_call K, one compiled call runs K steps."""
        total = self.plan.total_iter
        if start > total:
            print(f'Already trained to iteration {start - 1} >= --total_iter {total}.')
            return
        self._open_outputs()
        self._forget_logged_metrics_after(start - 1)
        batches = iter(self.dataset)
        self.gan.read_metrics()  # the device sums start empty
        first, idx, progress = start, start - 1, None
        while idx < total:
            n = self._steps_in_next_call(idx, total)
            if progress is None:  # the first call compiles: timed apart from the rest
                seconds = self._compile_step(lambda: self._run_call(batches, n))
                progress = Progress(start - 1 + n, total, self.conf['batch_size'],
                                    self.is_chief, seconds / n)
            else:
                self._run_call(batches, n)
                progress.step(n)
            idx += n
            if idx % self.plan.metrics_inter == 0 or idx == total:
                first = self._read_and_log(idx, first, progress)
            if idx % self.plan.fid_inter == 0 or idx == total:
                with progress.paused():
                    progress.write(self.evaluate_and_save(idx, first))
        progress.close()
        self._say_where_the_results_are(total)

    def _read_and_log(self, idx, first, progress):
        """The one read of an interval (the metrics stay on the device until here);
        returns the first iteration of the next interval."""
        means, _ = self.gan.read_metrics()
        self._stop_if_not_finite(means, first, idx)
        means['images_per_sec'] = progress.images_per_sec()
        self._log(idx, means)
        progress.report(idx, means)
        return idx + 1

    def _steps_in_next_call(self, done, total):
        """K steps when they start at a multiple of K and fit before total, else 1: the
        calls then end on every multiple of K, so on every interval (K divides them)."""
        k = self.args.steps_per_call
        return k if done % k == 0 and done + k <= total else 1

    def _run_call(self, batches, n):
        if n == 1:
            self.gan.run_steps(next(batches))
        else:
            stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts),
                                            *[next(batches) for _ in range(n)])
            self.gan.run_steps(stacked, steps=n)

    def _compile_step(self, first_call):
        """Runs the first call, which compiles the step, with one line on how long that
        took; returns the seconds."""
        kind = 'XLA' if self.args.jit else 'TF graph'
        self._say(f'Compiling the train step ({kind})...')
        tick = time.time()
        first_call()
        seconds = time.time() - tick
        self._say(f'Compiled and ran the first call in {seconds:.1f} s.')
        return seconds

    def _say(self, line):
        if self.is_chief:
            print(line, flush=True)

    def summary(self, start):
        """The start-up lines: what is trained, on what data, on which devices, from where."""
        if not self.is_chief:
            return
        c = self.conf
        g, d = (sum(model.count_parameters(net)) / 1e6
                for net in (self.gan.generator, self.gan.discriminator))
        devices = sorted({dev.device_type for dev in tf.config.list_logical_devices()} - {'CPU'})
        where = ', '.join(devices) or 'CPU'
        replicas = self.gan.n_replicas
        print(f'model: {self.plan.preset or "config.py defaults"}, {c["img_size"]}x'
              f'{c["img_size"]}, G {g:.2f}M / D {d:.2f}M parameters, batch {c["batch_size"]}\n'
              f'data: {self.data_summary}\n'
              f'device: {where}, strategy {self.args.strategy} ({replicas} '
              f'replica{"s" * (replicas > 1)}), precision {self.args.precision}, '
              f'XLA {"on" if self.args.jit else "off"}\n'
              f'run: {self._start_text(start)}', flush=True)

    def _start_text(self, start):
        images = (start - 1) * self.conf['batch_size']
        total = self.plan.total_iter
        if start == 1:
            return f'new, {total:,} iterations into {self.plan.model_dir}'
        return (f'resumed at iteration {start - 1:,} ({images:,} images) of {total:,}, '
                f'in {self.plan.model_dir}')

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

    def _stop_if_not_finite(self, means, first, last):
        """Means of iterations first..last: a NaN or inf of any step stays in its sum."""
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        if bad:
            where = f'at iteration {last}' if first == last else (
                f'between iterations {first} and {last}')
            raise TrainingError(
                f'non-finite loss {where} ({bad}); stopped without saving. The '
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

    def evaluate_and_save(self, idx, first=None):
        """FID, pictures and checkpoints, as the authors: best first when FID improved;
        returns the line that says so.

        first: the first iteration whose metrics are not read yet; they are checked
        (without reading them out) so that no save follows a non-finite step."""
        n_images = idx * self.conf['batch_size']
        if first is not None and first <= idx:
            self._stop_if_not_finite(self.gan.read_metrics(reset=False)[0], first, idx)
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
        self.last_saved = self.managers['regular'].latest_checkpoint
        fid_text = 'off' if fid_value is None else f'{fid_value:.2f}'
        return (f'[{n_images:,} images] FID {fid_text}; checkpoint ckpt-{n_images}'
                + (' (best)' if improved else ''))

    def _compute_fid(self):
        if self.fid_monitor is None:
            return None
        return self.fid_monitor(self.gan.ema_generator)

    def _save_pictures(self, n_images):
        """PNGs in images/, shown in TensorBoard's image tab too."""
        images, attention = sampling.generate(self.gan.ema_generator, self.grid_noise,
                                              batch_size=len(self.grid_noise), attention=True,
                                              jit_compile=self.args.jit, labels=self.grid_labels)
        paths = {kind: self._picture_path(kind, n_images) for kind in ('samples', 'attention')}
        utils.save_image_grid(images, paths['samples'])
        rows, titles = attention_rows(self.grid_labels, self.classes)
        utils.save_attention_maps(images[rows], [a[rows] for a in attention],
                                  paths['attention'], titles)
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
    see = 'see "Several machines" in docs/scaling.md for a two-worker example'
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


def _read_json(path):
    """A JSON object file, or {} when there is none (train.py checked it is readable)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _logged_iter(line):
    try:
        return json.loads(line)['iter']
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut by a kill: drop it


class Progress:
    """Progress of the loop: a tqdm bar on a terminal; when stdout is not one (a log file,
    CI, nohup), one plain line per metrics interval instead of carriage-return frames.
    Rates and the ETA leave out the first (compiling) step and the evaluations."""

    def __init__(self, done, total, batch_size, enabled, first_step_seconds):
        """Starts once the first call of this process is done (it compiled the step; its
        steps took first_step_seconds each), at iteration `done`."""
        self.done, self.total, self.batch_size = done, total, batch_size
        self.enabled = enabled
        self.first_step_seconds = first_step_seconds
        self.steps, self.seconds, self.tick = 0, 0.0, time.time()  # timed steps only
        self.interval_steps, self.interval_start = 0, 0.0  # interval_start: in self.seconds
        self.bar = (tqdm(initial=done, total=total, unit='it', dynamic_ncols=True)
                    if enabled and sys.stdout.isatty() else None)

    def step(self, n=1):
        """n more iterations done (one call) after the first call."""
        now = time.time()
        self.seconds += now - self.tick
        self.tick = now
        self.steps += n
        self.interval_steps += n
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def images_per_sec(self):
        """Images per second over the timed steps since the last report; an interval that
        holds only the first step takes that step's time, compilation included."""
        if not self.interval_steps:
            return self.batch_size / max(self.first_step_seconds, 1e-9)
        elapsed = max(self.seconds - self.interval_start, 1e-9)
        return self.interval_steps * self.batch_size / elapsed

    def report(self, idx, means):
        shown = {k: f'{means[k]:.3f}' for k in ('d_loss', 'g_loss', 'gp')}
        speed = f"{means['images_per_sec']:.0f}"
        if self.bar is not None:
            self.bar.set_postfix(shown | {'img/s': speed})
        elif self.enabled:
            losses = ' '.join(f'{k} {v}' for k, v in shown.items())
            print(f'[iter {idx:,}/{self.total:,}] {losses} | {speed} img/s, '
                  f'ETA {self._eta()}', flush=True)
        self.interval_steps, self.interval_start = 0, self.seconds

    def _eta(self):
        if not self.steps:
            return 'after the next steps'
        left = (self.total - self.done) * self.seconds / self.steps
        if left >= 86400:
            return f'{left / 86400:.1f} days'
        return time.strftime('%H:%M:%S', time.gmtime(left))

    @contextlib.contextmanager
    def paused(self):
        """Time spent in the block (FID, pictures, checkpoints) is not counted as steps."""
        yield
        self.tick = time.time()

    def write(self, line):
        if not self.enabled:
            return
        if self.bar is not None:
            tqdm.write(line)
        else:
            print(line, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def attention_rows(grid_labels, classes):
    """Which 4 of the 25 grid samples get attention maps, and their titles: the first 4;
    a conditional run's, the first of each of the first 4 grid rows (one class per row),
    titled with their class names."""
    if grid_labels is None:
        return [0, 1, 2, 3], None
    rows = [0, 5, 10, 15]
    return rows, [classes['names'][grid_labels[i]] for i in rows]
