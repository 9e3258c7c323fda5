"""Train LadaGAN.

    python train.py                                   # demo preset on a generated shapes dataset
    python train.py --file_pattern='data/*.png' --eval_dir='data/*.png' --preset=cifar10
    python train.py --file_pattern=... --set batch_size=64 --set policy=color

Hyper-parameters live in config.py (defaults and presets); `--set key=value` overrides one.
A run writes into --model_dir: config.json, training-checkpoints/, best-training-checkpoints/
(the authors' layout), log-dir/ (TensorBoard), metrics.jsonl, and images/ (sample grids and
attention maps). Running the same command again resumes from the last checkpoint.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(HERE, '.cache', 'shapes32')


class TrainingError(Exception):
    """A run that cannot start or go on; the message says what to do."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--file_pattern', default=None,
                        help='glob (or directory) of training images; default: a generated '
                             'dataset of 32x32 shapes, trained with --preset demo')
    parser.add_argument('--eval_dir', default=None,
                        help='glob of real images for FID (default: --file_pattern)')
    parser.add_argument('--model_dir', default='model_1',
                        help='run directory: checkpoints, logs, images (default: model_1)')
    parser.add_argument('--preset', default=None,
                        help='named config of config.py: ' + ', '.join(_preset_names()) +
                             ' (default: config.py defaults, or demo for the generated data)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='override one config value, e.g. --set batch_size=64 '
                             '--set g_dim=[256,128,64] (JSON values); repeatable')
    parser.add_argument('--override_config', action='store_true',
                        help="on resume, config.json decides and a --preset/--set value "
                             'that differs from it stops the run; this flag applies the '
                             'new values instead (and rewrites config.json)')
    parser.add_argument('--total_iter', type=int, default=None,
                        help='train until this iteration (default: 600 for the generated '
                             'data, else 1,000,000)')
    parser.add_argument('--metrics_inter', type=int, default=None,
                        help='iterations between logged metrics (default: 50 for the '
                             'generated data, else 500)')
    parser.add_argument('--fid_inter', type=int, default=None,
                        help='iterations between FID, samples and checkpoints (default: '
                             '300 for the generated data, else 5000)')
    parser.add_argument('--max_ckpt_to_keep', type=int, default=2,
                        help='checkpoints kept in each checkpoint directory (default: 2)')
    parser.add_argument('--inception_weights', default='imagenet',
                        help="Keras InceptionV3 weights for the in-loop FID: 'imagenet' "
                             "(downloaded once by Keras) or a path to the .h5 file")
    parser.add_argument('--no_fid', action='store_true',
                        help='skip FID; the best checkpoint then follows the regular one')
    parser.add_argument('--jit', action=argparse.BooleanOptionalAction, default=True,
                        help='XLA-compile the train step (default, as the authors); '
                             '--no-jit runs it as a plain TF graph, which compiles faster '
                             '(see bench/RESULTS.md)')
    parser.add_argument('--strategy', default='default',
                        choices=['default', 'mirrored', 'multiworker', 'tpu'],
                        help='tf.distribute strategy: one device (default), all local devices '
                             '(mirrored), several machines from TF_CONFIG (multiworker), or a '
                             'TPU; batch_size is the global batch, split over the replicas')
    parser.add_argument('--tpu', default=None,
                        help="with --strategy tpu: 'local' on a TPU VM, else the TPU's name or "
                             'grpc:// address (default: $TPU_NAME, or found on Cloud TPU)')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'fp16'],
                        help='compute precision (Keras mixed precision; weights, EMA, logits, '
                             'losses and R1 stay float32; fp16 adds loss scaling)')
    parser.add_argument('--grad_accum', type=int, default=1,
                        help='accumulate the gradients of K micro-batches of batch_size/K per '
                             'update (for small memory; BatchNorm sees micro-batches)')
    parser.add_argument('--steps_per_call', type=int, default=1,
                        help='train steps per compiled call (less Python per step); must '
                             'divide --metrics_inter and --fid_inter; one device only')
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of weights, noise and data order (default: random)')
    args = parser.parse_args(argv)
    for name in ('total_iter', 'metrics_inter', 'fid_inter', 'max_ckpt_to_keep', 'grad_accum',
                 'steps_per_call'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name} must be a positive integer, got {value}')
    if args.steps_per_call > 1 and args.strategy != 'default':
        parser.error(f'--steps_per_call {args.steps_per_call} runs on one device only; '
                     f'--strategy {args.strategy} takes one step per call')
    return args


def check_steps_per_call(args):
    """Checkpoints, FID and logs fall on their intervals only if K divides them."""
    k = args.steps_per_call
    bad = [f'--{name} {getattr(args, name)}' for name in ('metrics_inter', 'fid_inter')
           if getattr(args, name) % k]
    if bad:
        fits = [d for d in range(1, k) if not args.metrics_inter % d and not args.fid_inter % d]
        raise TrainingError(f"--steps_per_call {k} must divide {' and '.join(bad)}: choose "
                            f'intervals that are multiples of {k}, or --steps_per_call '
                            f'{max(fits)}')


def _preset_names():
    import config
    return list(config.PRESETS)


def parse_overrides(pairs):
    """['batch_size=64', 'policy=color'] -> {'batch_size': 64, 'policy': 'color'}."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition('=')
        if not sep or not key:
            raise TrainingError(f"--set expects KEY=VALUE, got '{pair}'")
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text  # a bare string such as color,translation
    return overrides


def resolve_run(args):
    """Fills the defaults that depend on the data source; returns the config values the
    command asks for: those of the preset, then those of --set."""
    import config
    import utils
    embedded = args.file_pattern is None
    if embedded:
        args.preset = args.preset or 'demo'
        print(f'No --file_pattern: training the {args.preset} preset on generated shapes '
              f'({DEFAULT_DATA_DIR}).')
        args.file_pattern = utils.make_shapes_dataset(DEFAULT_DATA_DIR)
    args.eval_dir = args.eval_dir or args.file_pattern
    defaults = (600, 50, 300) if embedded else (1_000_000, 500, 5000)
    for name, value in zip(('total_iter', 'metrics_inter', 'fid_inter'), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.preset is not None and args.preset not in config.PRESETS:
        raise config.ConfigError(f"unknown preset '{args.preset}'; choose one of: "
                                 f"{', '.join(config.PRESETS)}")
    asked = dict(config.PRESETS[args.preset]) if args.preset else {}
    asked.update(parse_overrides(args.overrides))
    return asked


def settle_config(model_dir, asked, override):
    """The config of the run.

    New run: config.py defaults + `asked`, written to config.json. Resume: config.json
    decides; values asked for (preset, --set) that differ from it stop the run unless
    `override`, which applies them and rewrites config.json.
    """
    import config
    import utils
    path = os.path.join(model_dir, utils.CONFIG_FILE)
    if not os.path.exists(path):
        conf = config.get_config(**asked)
    else:
        saved = utils.load_config(model_dir)
        config.validate({**saved, **asked})
        differing = sorted(k for k in asked if asked[k] != saved[k])
        if not differing:
            return saved
        if not override:
            details = ', '.join(f'{k}: {saved[k]!r} in config.json, {asked[k]!r} asked'
                                for k in differing)
            raise TrainingError(
                f'{path} differs from the requested config ({details}). Resume with the '
                f'same --preset/--set as the first run, use another --model_dir, or pass '
                f'--override_config to go on with the requested values.')
        print(f'--override_config: changing {differing} of {path}.')
        conf = {**saved, **asked}
    os.makedirs(model_dir, exist_ok=True)
    utils.write_json_atomic(path, conf)
    return conf


class Run:
    """The training loop around trainer.LadaGAN: data, checkpoints, logs, FID, pictures."""

    def __init__(self, args, conf):
        import tensorflow as tf
        import trainer
        import utils
        self.args, self.conf = args, conf
        if args.seed is not None:
            tf.keras.utils.set_random_seed(args.seed)
        strategy = make_strategy(args.strategy, args.tpu)
        self.is_chief = is_chief(strategy)
        dataset = utils.make_dataset(args.file_pattern, conf['img_size'], conf['batch_size'],
                                     antialias=conf['antialias'], seed=args.seed)
        self.gan = trainer.LadaGAN(conf, jit_compile=args.jit, strategy=strategy,
                                   precision=args.precision, grad_accum=args.grad_accum)
        self.dataset = distribute_dataset(dataset, strategy)
        if args.seed is not None:
            self.gan.noise_rng.reset_from_seed(args.seed)
        self.checkpoint = utils.make_checkpoint(**self.gan.checkpoint_objects())
        # Every worker saves (as MultiWorkerMirroredStrategy requires); only the chief's
        # files land in model_dir.
        save_dir = args.model_dir if self.is_chief else tempfile.mkdtemp(prefix='ladagan-')
        self.managers = {
            name: tf.train.CheckpointManager(self.checkpoint, os.path.join(save_dir, subdir),
                                             max_to_keep=args.max_ckpt_to_keep)
            for name, subdir in (('regular', utils.TRAINING_DIR), ('best', utils.BEST_DIR))}
        self.restore_dirs = [os.path.join(args.model_dir, subdir)
                             for subdir in (utils.TRAINING_DIR, utils.BEST_DIR)]
        self.log_dir = os.path.join(args.model_dir, 'log-dir')
        self.writer = (tf.summary.create_file_writer(self.log_dir)
                       if self.is_chief else tf.summary.create_noop_writer())
        self.fid_monitor = (None if args.no_fid or not self.is_chief
                            else self._make_fid_monitor())
        self.sample_noise = tf.random.stateless_normal(
            [25, conf['noise_dim']], seed=[conf['test_seed'], 0])

    def _make_fid_monitor(self):
        import fid
        try:
            return fid.InLoopFID(self.args.eval_dir, self.conf,
                                 weights=self.args.inception_weights,
                                 cache_dir=fid.DEFAULT_STATS_DIR)
        except fid.FIDUnavailable as e:
            print(f'FID off: {e}')
            return None

    def restore(self):
        """Resumes from the newest regular checkpoint (else the best); returns start iter.

        Only checkpoints recorded in a manager's state file count: that file is rewritten
        atomically after a save completes, so a save cut short is never picked up."""
        import utils
        import tensorflow as tf
        path = next(filter(None, map(tf.train.latest_checkpoint, self.restore_dirs)), None)
        if not path:
            print(f'Starting a new run in {self.args.model_dir}')
            return 1
        utils.restore_checkpoint(path, **self.gan.checkpoint_objects())
        self.gan.apply_learning_rates()
        n_images = int(self.gan.n_images.numpy())
        start = n_images // self.conf['batch_size'] + 1
        self._forget_logged_metrics_after(start - 1)
        print(f'Resumed from {path} at {n_images:,} images (best FID '
              f'{float(self.gan.best_fid.numpy()):.2f})')
        return start

    def _forget_logged_metrics_after(self, last_iter):
        """Drops metrics.jsonl lines of iterations that the resumed run will redo."""
        import utils
        path = os.path.join(self.args.model_dir, 'metrics.jsonl')
        if not self.is_chief or not os.path.exists(path):
            return
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if _logged_iter(line) <= last_iter]
        if len(kept) < len(lines):
            utils.write_text_atomic(path, ''.join(kept))

    def train(self):
        from tqdm import tqdm
        start = self.restore()
        total = self.args.total_iter
        if start > total:
            print(f'Already trained to iteration {start - 1} >= --total_iter {total}.')
            return
        check_steps_per_call(self.args)
        batches = iter(self.dataset)
        self.gan.read_metrics()  # the device sums start empty
        first, idx, tick = start, start - 1, time.time()
        # Closed (the bar's last line printed) before an error message comes out.
        with tqdm(initial=idx, total=total, unit='it', dynamic_ncols=True,
                  disable=not self.is_chief) as bar:
            while idx < total:
                n = self._steps_in_next_call(idx, total)
                self._run_call(batches, n)
                idx += n
                bar.update(n)
                if idx % self.args.metrics_inter == 0 or idx == total:
                    first, tick = self._read_and_log(idx, first, tick, bar)
                if idx % self.args.fid_inter == 0 or idx == total:
                    self.evaluate_and_save(idx, first)
                    tick = time.time()
        self._say_where_the_results_are(total)

    def _read_and_log(self, idx, first, tick, bar):
        """The one read of an interval (the metrics stay on the device until here);
        returns the first iteration and the start time of the next interval."""
        means, count = self.gan.read_metrics()
        self._stop_if_not_finite(means, first, idx)
        means['images_per_sec'] = count * self.conf['batch_size'] / (time.time() - tick)
        self._log(idx, means)
        bar.set_postfix({k: f'{means[k]:.3f}' for k in ('d_loss', 'g_loss', 'gp')}
                        | {'img/s': f"{means['images_per_sec']:.0f}"})
        return idx + 1, time.time()

    def _steps_in_next_call(self, done, total):
        """K steps when they start at a multiple of K and fit before total, else 1: the
        calls then end on every multiple of K, so on every interval (K divides them)."""
        k = self.args.steps_per_call
        return k if done % k == 0 and done + k <= total else 1

    def _run_call(self, batches, n):
        import tensorflow as tf
        if n == 1:
            self.gan.run_steps(next(batches))
        else:
            self.gan.run_steps(tf.stack([next(batches) for _ in range(n)]), steps=n)

    def _say_where_the_results_are(self, idx):
        if not self.is_chief:
            return
        model_dir = self.args.model_dir
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
        import tensorflow as tf
        for net in (self.gan.generator, self.gan.ema_generator, self.gan.discriminator):
            if not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in net.weights):
                raise TrainingError(
                    f'{net.name} has non-finite weights at iteration {idx}; stopped without '
                    f'saving. The last good checkpoint is kept in '
                    f'{self.managers["regular"].directory}.')

    def _log(self, idx, means):
        import tensorflow as tf
        if not self.is_chief:
            return
        n_images = idx * self.conf['batch_size']
        with self.writer.as_default():
            for name, value in means.items():
                tf.summary.scalar(name, value, step=n_images)
        self.writer.flush()
        with open(os.path.join(self.args.model_dir, 'metrics.jsonl'), 'a') as f:
            f.write(json.dumps({'iter': idx, 'n_images': n_images, **means}) + '\n')

    def evaluate_and_save(self, idx, first=None):
        """FID, pictures and checkpoints, as the authors: best first when FID improved.

        first: the first iteration whose metrics are not read yet; they are checked
        (without reading them out) so that no save follows a non-finite step."""
        import tensorflow as tf
        from tqdm import tqdm
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
        fid_text = 'off' if fid_value is None else f'{fid_value:.2f}'
        tqdm.write(f'[{n_images:,} images] FID {fid_text}; checkpoint ckpt-{n_images}'
              + (' (best)' if improved else ''))

    def _compute_fid(self):
        if self.fid_monitor is None:
            return None
        return self.fid_monitor(self.gan.ema_generator)

    def _save_pictures(self, n_images):
        """PNGs in images/, shown in TensorBoard's image tab too."""
        import tensorflow as tf
        import utils
        images, attention = self.gan.ema_generator(self.sample_noise, training=False)
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
        return os.path.join(self.args.model_dir, 'images', f'{kind}-{n_images:09d}.png')


def make_strategy(name, tpu=None):
    """The tf.distribute strategy of --strategy; a setup that cannot work raises
    TrainingError instead of a traceback from inside TensorFlow."""
    import tensorflow as tf
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
    import tensorflow as tf
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
    import tensorflow as tf
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


def main(argv=None):
    args = parse_args(argv)
    try:
        import config
        import fid
        import utils
        asked = resolve_run(args)
        conf = settle_config(args.model_dir, asked, args.override_config)
        Run(args, conf).train()
    except KeyboardInterrupt:
        print('\nInterrupted; rerun the same command to resume from the last checkpoint.',
              file=sys.stderr)
        return 130
    except (TrainingError, config.ConfigError, utils.CheckpointError, utils.DataError,
            fid.FIDError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
