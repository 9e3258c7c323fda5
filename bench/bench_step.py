"""Where the time of the XLA train step goes, and whether TensorFlow / XLA settings make it
faster without changing its results.

    python bench/bench_step.py                          # cifar10 preset, batch 8
    python bench/bench_step.py --presets tiny,cifar10 --batch_size 16 --record
    python bench/bench_step.py --no-settings            # the breakdown only
    python bench/bench_step.py --no-breakdown --steps 20  # the settings only

Breakdown: each piece of one training iteration is compiled with XLA on its own; the
pieces then take turns for --steps rounds (median time of each): G and D forward, D input gradient, the D update's gradients with
and without R1 (their difference is R1's double backprop), the G update's gradients, both
Adam updates, the EMA, the whole step compiled as one function and the step as train.py
calls it (noise drawn, metrics read back). G and D forward are also given in GFLOP/s (2 x
the MACs counted from the models), next to this machine's matrix-product peak: an XLA
2048 x 2048 float32 product. A forward near that peak leaves nothing for fusions or layouts
to win: the step is bound by its arithmetic.

Settings: the whole train step under each setting, each in its own process (XLA flags,
oneDNN and thread counts are read when TensorFlow starts). All processes compile first and
stay alive (memory: one training process per setting); then they take turns, one step at
a time, for --steps rounds, so all see the same machine load. Each line gives the median step time,
its ratio to the default and how far the losses after the same steps (same seed, data and
noise, augmentation off) are from the default's: a setting that is faster but changes
them more than float rounding would not be a result-preserving speed-up.

About 12 minutes for the default run on 2 CPU cores, mostly compilations; the settings
need about 1 GB of memory each for cifar10.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import fixed_batch, record

HERE = os.path.abspath(__file__)

# name -> (XLA-compiled step?, extra environment, (inter-op, intra-op) threads; 0 = default)
SETTINGS = {
    'default (XLA)': (True, {}, (0, 0)),
    'plain TF graph': (False, {}, (0, 0)),
    'plain TF graph, oneDNN off': (False, {'TF_ENABLE_ONEDNN_OPTS': '0'}, (0, 0)),
    'XLA, 1 inter-op / 2 intra-op threads': (True, {}, (1, 2)),
    'XLA, single-threaded Eigen': (True, {'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false'},
                                   (0, 0)),
    'XLA, legacy (non-thunk) runtime': (True, {'XLA_FLAGS': '--xla_cpu_use_thunk_runtime=false'},
                                        (0, 0)),
    'XLA, oneDNN dots and convolutions': (True, {'XLA_FLAGS': (
        '--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true')}, (0, 0)),
    'XLA, XNNPACK dots and convolutions': (True, {'XLA_FLAGS': (
        '--xla_cpu_use_xnnpack=true --xla_cpu_experimental_xnn_fusion_type='
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION')}, (0, 0)),
    # Not result-preserving (reassociates float arithmetic): shown for what it would give.
    'XLA, fast math': (True, {'XLA_FLAGS': '--xla_cpu_enable_fast_math=true'}, (0, 0)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--presets', default='cifar10',
                        help='comma-separated config.py presets (default: cifar10)')
    parser.add_argument('--batch_size', type=int, default=8, help='images per step (default 8)')
    parser.add_argument('--steps', type=int, default=8,
                        help='timed rounds: runs of each piece, steps of each setting '
                             '(default 8)')
    parser.add_argument('--breakdown', action=argparse.BooleanOptionalAction, default=True,
                        help='time the pieces of the step (default: yes)')
    parser.add_argument('--settings', action=argparse.BooleanOptionalAction, default=True,
                        help='also time the step under every setting (default: yes)')
    parser.add_argument('--record', action='store_true',
                        help='append the result lines to bench/RESULTS.md')
    parser.add_argument('--worker', nargs=2, metavar=('PRESET', 'SETTING'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.presets = [p.strip() for p in args.presets.split(',') if p.strip()]
    if args.batch_size < 1 or args.steps < 1:
        parser.error('--batch_size and --steps must be >= 1')
    return args


def make_gan_and_batch(preset, batch_size, jit_compile=True):
    """A seeded LadaGAN (the same weights in every process) and fixed (images, noise_d,
    noise_g)."""
    import keras

    import config
    import trainer
    conf = config.get_config(preset, batch_size=batch_size)
    keras.utils.set_random_seed(0)
    gan = trainer.LadaGAN(conf, jit_compile=jit_compile)
    return gan, conf, fixed_batch(conf, seed=0)


def interleaved_medians(calls, steps):
    """{name: median ms} of calls {name: (fn, args)}, results read back, the calls taking
    turns for `steps` rounds (after two untimed calls each) so that all see the same load."""
    import tensorflow as tf
    read = lambda result: tf.nest.map_structure(lambda t: t.numpy(), result)
    for fn, args in calls.values():
        read(fn(*args))
        read(fn(*args))
    times = {name: [] for name in calls}
    for _ in range(steps):
        for name, (fn, args) in calls.items():
            start = time.perf_counter()
            read(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def matmul_peak_gflops(steps, n=2048):
    import tensorflow as tf
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    product = tf.function(lambda a, b: a @ b, jit_compile=True)
    return 2 * n ** 3 / interleaved_medians({'': (product, (a, b))}, steps)[''] * 1e-6


def step_pieces(gan):
    """{name: (function, which of (images, noise_d, noise_g) it takes)} of one iteration."""
    import tensorflow as tf
    G, D = gan.generator, gan.discriminator

    def d_input_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(D(x, training=True))
        return tape.gradient(total, x)

    def d_gradients_without_r1(x, z):
        fake, _ = G(z, training=True)
        with tf.GradientTape() as tape:
            loss = gan.d_loss_fn(D(x, training=True), D(fake, training=True))
        return tape.gradient(loss, D.trainable_weights)

    def apply(optimizer, net):
        def update():
            optimizer.apply_gradients(
                [(tf.fill(w.shape, 1e-3), w) for w in net.trainable_weights])
            return tf.constant(0)
        return update

    def ema():
        gan._update_ema()
        return tf.constant(0)

    return {
        'G forward': (lambda z: G(z, training=True)[0], 'g'),
        'D forward': (lambda x: D(x, training=True), 'x'),
        'D forward + input gradient': (d_input_gradient, 'x'),
        'D update gradients (with R1)': (
            lambda x, z: gan._discriminator_grads(x, z, False, gan.d_optimizer)[0], 'xd'),
        'D update gradients without R1': (d_gradients_without_r1, 'xd'),
        'G update gradients': (
            lambda z: gan._generator_grads(z, False, gan.g_optimizer)[0], 'g'),
        'Adam update of G': (apply(gan.g_optimizer, G), ''),
        'Adam update of D': (apply(gan.d_optimizer, D), ''),
        'EMA update': (ema, ''),
        'whole step, one XLA function': (lambda x, zd, zg: gan._step(x, zd, zg, False), 'xdg'),
    }


def breakdown(preset, args):
    import tensorflow as tf

    import model
    gan, conf, (images, noise_d, noise_g) = make_gan_and_batch(preset, args.batch_size)
    inputs = {'x': tf.constant(images), 'd': tf.constant(noise_d), 'g': tf.constant(noise_g)}
    calls = {name: (tf.function(fn, jit_compile=True), [inputs[k] for k in takes])
             for name, (fn, takes) in step_pieces(gan).items()}
    calls['train_step as train.py calls it'] = (
        lambda: tf.constant(list(gan.train_step(images, augment=False).values())), ())
    print(f'  {preset}: compiling and timing {len(calls)} pieces', flush=True)
    times = interleaved_medians(calls, args.steps)
    size, b = conf['img_size'], args.batch_size
    flops = {'G forward': 2 * b * model.count_macs(gan.generator, (conf['noise_dim'],)),
             'D forward': 2 * b * model.count_macs(gan.discriminator, (size, size, 3))}
    peak = matmul_peak_gflops(args.steps)
    whole = times['whole step, one XLA function']
    parts = []
    for name, ms in times.items():
        part = f'{name} {ms:.1f} ms'
        if name in flops:
            rate = flops[name] / ms * 1e-6
            part += f' ({rate:.0f} GFLOP/s = {rate / peak:.0%} of peak)'
        parts.append(part)
    r1 = times['D update gradients (with R1)'] - times['D update gradients without R1']
    overhead = times['train_step as train.py calls it'] - whole
    return [f'{preset}, batch {b}, XLA, median of {args.steps} (pieces taking turns): '
            + '; '.join(parts) + f'. R1 double backprop ~{r1:.0f} ms = {r1 / whole:.0%} of '
            f'the step; train_step minus the compiled step {overhead:.1f} ms; matrix-product '
            f'peak (XLA, 2048^2 float32) {peak:.0f} GFLOP/s']


def run_worker(preset, setting, args):
    """One setting in this process (its environment set by the parent): compiles, says it
    is ready, then times one step per 'step' line on stdin; any other line ends it with
    the metrics of its last step."""
    import tensorflow as tf
    jit, _, (inter, intra) = SETTINGS[setting]
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    gan, _, (images, noise_d, noise_g) = make_gan_and_batch(preset, args.batch_size, jit)
    step = lambda: gan.train_step(images, noise_d, noise_g, augment=False)
    step()
    metrics = step()
    print(json.dumps({'ready': True}), flush=True)
    for line in sys.stdin:
        if line.strip() != 'step':
            break
        start = time.perf_counter()
        metrics = step()
        print(json.dumps({'seconds': time.perf_counter() - start}), flush=True)
    print(json.dumps({'metrics': metrics}), flush=True)


class Worker:
    """A run_worker process under one setting, driven line by line."""

    def __init__(self, preset, name, args):
        self.name = name
        self.log = tempfile.TemporaryFile('w+')
        command = [sys.executable, HERE, '--worker', preset, name,
                   '--batch_size', str(args.batch_size)]
        self.proc = subprocess.Popen(command, env={**os.environ, **SETTINGS[name][1]},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)

    def ask(self, command):
        self.proc.stdin.write(command + '\n')
        self.proc.stdin.flush()
        return self.reply()

    def reply(self):
        for line in self.proc.stdout:
            if line.startswith('{'):
                return json.loads(line)
        self.log.seek(0)
        raise RuntimeError(f'{self.name} stopped:\n{self.log.read()[-2000:]}')


def time_settings(preset, args):
    """Every setting in its own process; once all have compiled, they take turns one step
    at a time for args.steps rounds."""
    workers = {}
    for name in SETTINGS:
        worker = Worker(preset, name, args)
        try:
            worker.reply()
        except RuntimeError as e:
            print(f'  {preset} {e}', flush=True)
            continue
        workers[name] = worker
        print(f'  {preset} {name}: compiled', flush=True)
    times = {name: [] for name in workers}
    for _ in range(args.steps):
        for name, worker in workers.items():
            times[name].append(worker.ask('step')['seconds'])
    results = {name: {'median': statistics.median(times[name]),
                      'metrics': worker.ask('quit')['metrics']}
               for name, worker in workers.items()}
    for worker in workers.values():
        worker.proc.wait()
    return settings_lines(preset, args, results)


def settings_lines(preset, args, results):
    base_name = next(iter(SETTINGS))
    if base_name not in results:
        return [f'{preset}: the default setting failed; no comparison']
    base = results[base_name]
    lines = []
    for name in SETTINGS:
        if name not in results:
            lines.append(f'{preset} {name}: failed to run')
            continue
        median, metrics = results[name]['median'], results[name]['metrics']
        change = max(abs(metrics[k] - base['metrics'][k]) / max(abs(base['metrics'][k]), 1e-12)
                     for k in ('d_total', 'g_loss'))
        line = (f'{preset} {name}, batch {args.batch_size}: {median * 1000:.0f} ms/step '
                f'({args.batch_size / median:.1f} img/s)')
        if name != base_name:
            line += (f'; step time {median / base["median"]:.2f}x default, losses after '
                     f'{args.steps + 2} steps differ by {change:.1e} (relative)')
        lines.append(line)
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(*args.worker, args)
        return
    lines = []
    load_before = os.getloadavg()[0]
    for preset in args.presets:
        if args.breakdown:
            lines += breakdown(preset, args)
            print(lines[-1], flush=True)
        if args.settings:
            lines += time_settings(preset, args)
            print('\n'.join(lines[-len(SETTINGS):]), flush=True)
    lines.append(f'1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after')
    print(lines[-1])
    if args.record:
        record('bench_step.py', lines)


if __name__ == '__main__':
    main()
