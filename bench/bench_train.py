"""Train-step speed on this machine: XLA against a plain TF graph, fp32 against mixed
precision, one device against two, gradient accumulation, and the input pipeline.

    python bench/bench_train.py                      # tiny + cifar10 at batch 8, XLA vs graph
    python bench/bench_train.py --record             # ... and append the lines to RESULTS.md
    python bench/bench_train.py --presets tiny --precision fp32,bf16 --jit
    python bench/bench_train.py --presets tiny --batch_size 16 --devices 1,2 --no-jit
    python bench/bench_train.py --presets tiny --batch_size 16 --grad_accum 1,2,4 --jit
    python bench/bench_train.py --presets tiny --batch_size 32 --pipeline --jit
    python bench/bench_train.py --presets ffhq_128 --batch_size 4   # slow on a CPU
    python bench/bench_train.py --jit --r1_interval 1,16 --steps_per_call 1,4 --steps 3
    python bench/bench_train.py --jit --loop --baseline_dir /tmp/old   # train.py's loop

For each preset, one LadaGAN is built per variant: every combination of the modes (XLA,
graph), --precision values, --devices counts and --grad_accum factors asked for. The
first train_step of each (tracing, compilation and one step) is timed on its own; then,
after --warmup steps, the variants take turns for --steps steps, so all see the same
machine load. Each line gives the median step time, the fastest and slowest step in
brackets, images/s = batch / median, and the ratio of its median to the first variant's
(the baseline), measured in this run.

--r1_interval (lazy R1) and --steps_per_call (K steps per compiled call) add variants. Each
turn then runs a block of L steps, L the least common multiple of all their values (16 for
1,16 and 1,4), so that every variant's block holds the same share of R1 steps; a step's
time is the block's time / L, and --steps counts blocks.

--loop also runs train.py itself (subprocesses, one after another, on the embedded shapes,
FID off) with each --steps_per_call value and reads the images/s that it logs (data,
logging and the Python loop included; the first interval, with the compilation, left out),
against the compiled step alone (the baseline variant above). --baseline_dir DIR adds the
train.py of another checkout (e.g. `git archive COMMIT | tar -x -C DIR`): the loop before.

--devices 2 runs tf.distribute.MirroredStrategy over two logical CPU devices made from
the one physical CPU (set up before TensorFlow starts). Multi-replica steps run as TF
graphs (XLA cannot compile their cross-device reductions), so compare them with the
one-device graph step (--no-jit). On a 2-core CPU two replicas cannot be faster than
one: the ratio shows the cost of the distribution machinery.

--pipeline also measures the images/s that data.make_dataset delivers alone, on the
embedded shapes dataset (.cache/shapes32, made if missing): first pass (decoding) and
steady state (decoded images cached in memory), against the fastest variant's step.

The default run (2 presets x 2 modes, batch 8, 10 steps) takes about 4 minutes on
2 CPU cores, most of it in the compilations (about 1 minute per preset for XLA).
Timings on a shared machine vary: the load average is printed with the results.
"""
import argparse
import gc
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import ROOT, fixed_batch, record

import cli  # noqa: E402  (common puts the project on sys.path)

MODES = {'xla': True, 'graph': False}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--presets', default='tiny,cifar10',
                        help="comma-separated config.py presets (default: tiny,cifar10; "
                             "ffhq_128 is possible but slow)")
    parser.add_argument('--batch_size', type=cli.positive_int, default=8,
                        help='global images per step (default 8)')
    parser.add_argument('--steps', type=cli.positive_int, default=10,
                        help='timed steps per variant, after the first one (default 10)')
    parser.add_argument('--warmup', type=cli.int_in(0, math.inf, 'an integer >= 0'), default=1,
                        help='untimed steps per variant after the first one (default 1)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--jit', dest='modes', action='store_const', const=['xla'],
                      help='measure only the XLA step (jit_compile=True)')
    mode.add_argument('--no-jit', dest='modes', action='store_const', const=['graph'],
                      help='measure only the plain graph step (jit_compile=False)')
    for name, default, values in (
            ('precision', 'fp32', 'precisions: fp32, bf16, fp16'),
            ('devices', '1', 'replica counts, 1 and/or 2'),
            ('grad_accum', '1', 'accumulation factors'),
            ('r1_interval', '1', 'r1_interval values (lazy R1)'),
            ('steps_per_call', '1', 'steps per compiled call')):
        parser.add_argument(f'--{name}', default=default,
                            help=f'comma-separated {values} (default {default})')
    parser.add_argument('--pipeline', action='store_true',
                        help='also measure the input pipeline alone (img/s)')
    parser.add_argument('--loop', action='store_true',
                        help="also measure train.py's own images/s against the step alone")
    parser.add_argument('--loop_iters', type=int, default=10,
                        help='iterations per logged interval of the --loop runs (default 10; '
                             'each run trains 4 intervals and times the last 3)')
    parser.add_argument('--baseline_dir', default=None,
                        help="with --loop: a checkout whose train.py is measured too")
    parser.add_argument('--seed', type=cli.seed, default=0, help='seed of the images and noise')
    parser.add_argument('--record', action='store_true',
                        help='append the result lines to bench/RESULTS.md')
    args = parser.parse_args(argv)
    args.modes = args.modes or list(MODES)
    args.presets = _split(args.presets)
    args.precision = _split(args.precision)
    args.devices = [int(d) for d in _split(args.devices)]
    args.grad_accum = [int(k) for k in _split(args.grad_accum)]
    args.r1_interval = [int(k) for k in _split(args.r1_interval)]
    args.steps_per_call = [int(k) for k in _split(args.steps_per_call)]
    args.block = math.lcm(*args.r1_interval, *args.steps_per_call)
    if min(args.r1_interval + args.steps_per_call) < 1:
        parser.error('--r1_interval and --steps_per_call take positive integers')
    if args.loop and any(args.loop_iters % k for k in args.steps_per_call):
        parser.error('--loop_iters must be a multiple of every --steps_per_call value')
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        parser.error('--batch_size and --steps must be >= 1, --warmup >= 0')
    if not set(args.devices) <= {1, 2}:
        parser.error('--devices takes 1 and/or 2')
    if any(args.batch_size % (d * k) for d in args.devices for k in args.grad_accum):
        parser.error('--batch_size must be a multiple of every devices x grad_accum product')
    return args


def _split(text):
    return [part.strip() for part in text.split(',') if part.strip()]


def variants(args):
    """[(label, LadaGAN keyword arguments)]; the first one is the baseline."""
    found = []
    for mode, precision, devices, accum, r1, k in itertools.product(
            args.modes, args.precision, args.devices, args.grad_accum, args.r1_interval,
            args.steps_per_call):
        if devices > 1 and (mode == 'xla' or k > 1):
            continue  # multi-replica steps run as graphs (same as 'graph'), one per call
        label = ' '.join([mode, precision] + (['2 devices'] if devices > 1 else [])
                         + ([f'accum {accum}'] if accum > 1 else [])
                         + ([f'r1_interval {r1}'] if r1 > 1 else [])
                         + ([f'{k} steps/call'] if k > 1 else []))
        found.append((label, {'jit_compile': MODES[mode], 'precision': precision,
                              'grad_accum': accum, 'devices': devices, 'r1_interval': r1,
                              'steps_per_call': k}))
    return found


_MIRRORED = []


def two_device_strategy():
    """One MirroredStrategy for the whole run: two of them in one process can give
    their collective ops clashing keys."""
    import tensorflow as tf
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
    return _MIRRORED[0]


def make_gan(conf, kwargs):
    """(LadaGAN, steps per call) of one variant."""
    import trainer
    kwargs = dict(kwargs)
    strategy = two_device_strategy() if kwargs.pop('devices') > 1 else None
    conf = {**conf, 'r1_interval': kwargs.pop('r1_interval')}
    steps = kwargs.pop('steps_per_call')
    return trainer.LadaGAN(conf, strategy=strategy, **kwargs), steps


def timed_block(gan, batch, n_steps):
    """Seconds per step of n_steps steps (n_steps a multiple of gan's steps per call), run as
    train.py runs them: run_steps, no metric read."""
    gan, k = gan
    args = batch if k == 1 else [np.stack([x] * k) for x in batch]
    start = time.perf_counter()
    for _ in range(n_steps // k):
        gan.run_steps(*args, steps=k)
    gan.discriminator.weights[0].numpy()  # the last call is done
    return (time.perf_counter() - start) / n_steps


def bench_preset(preset, args):
    """{label: {'first', 'steps', 'median'}} of every variant, measured in lockstep."""
    import config
    conf = config.get_config(preset, batch_size=args.batch_size)
    batch = fixed_batch(conf, args.seed)
    gans, result = {}, {}
    for label, kwargs in variants(args):
        gans[label] = make_gan(conf, kwargs)
        first = timed_block(gans[label], batch, gans[label][1]) * gans[label][1]
        for _ in range(args.warmup):
            timed_block(gans[label], batch, args.block)
        result[label] = {'first': first, 'steps': []}
        print(f'  {preset} {label}: first call {first:.1f} s', flush=True)
    for _ in range(args.steps):  # variants take turns: same load for all
        for label, gan in gans.items():
            result[label]['steps'].append(timed_block(gan, batch, args.block))
    for r in result.values():
        r['median'] = statistics.median(r['steps'])
    del gans
    gc.collect()
    return result


def format_lines(preset, args, result):
    baseline = next(iter(result))
    lines = []
    of = f'{args.steps} blocks of {args.block} steps' if args.block > 1 else str(args.steps)
    for label, r in result.items():
        compile_time = max(r['first'] - r['median'], 0.0)
        line = (f"{preset} {label}, batch {args.batch_size}, median of {of}: "
                f"{r['median']:.3f} s/step [{min(r['steps']):.3f}-{max(r['steps']):.3f}] "
                f"({args.batch_size / r['median']:.1f} img/s), first step {r['first']:.1f} s "
                f"(compile ~{compile_time:.1f} s)")
        if label != baseline:
            line += f"; step time {r['median'] / result[baseline]['median']:.2f}x {baseline}"
        lines.append(line)
    return lines


def pipeline_line(args, step_images_per_sec):
    """Images/s of data.make_dataset alone on the embedded shapes: decode, then cached."""
    import config
    import data
    import shapes_data
    data_dir = os.path.join(ROOT, '.cache', 'shapes32')
    pattern = shapes_data.make_shapes_dataset(data_dir)
    conf = config.get_config('tiny')
    dataset = data.make_dataset(pattern, conf['img_size'], args.batch_size, seed=args.seed)
    batches = iter(dataset)
    per_epoch = dataset.n_files // args.batch_size
    rates = []
    for _ in range(2):  # first pass decodes the files, the second reads the cache
        start = time.perf_counter()
        for _ in range(per_epoch):
            next(batches)
        rates.append(per_epoch * args.batch_size / (time.perf_counter() - start))
    return (f'input pipeline alone (data.make_dataset, {dataset.n_files} shapes PNGs, '
            f'batch {args.batch_size}): first pass {rates[0]:.0f} img/s, cached '
            f'{rates[1]:.0f} img/s = {rates[0] / step_images_per_sec:.0f}x and '
            f'{rates[1] / step_images_per_sec:.0f}x the fastest step above '
            f'({step_images_per_sec:.1f} img/s)')


def loop_images_per_sec(train_py, preset, args, k):
    """images/s that train.py logs over its last 3 of 4 intervals (FID off, one save)."""
    import shapes_data
    pattern = shapes_data.make_shapes_dataset(os.path.join(ROOT, '.cache', 'shapes32'))
    total = 4 * args.loop_iters
    with tempfile.TemporaryDirectory(prefix='bench-loop-') as model_dir:
        command = [sys.executable, train_py, '--file_pattern', pattern, '--model_dir', model_dir,
                   '--preset', preset, '--set', f'batch_size={args.batch_size}', '--no_fid',
                   '--total_iter', str(total), '--metrics_inter', str(args.loop_iters),
                   '--fid_inter', str(total), '--seed', str(args.seed)]
        command += ['--steps_per_call', str(k)] if k > 1 else []
        command += [] if args.modes[0] == 'xla' else ['--no-jit']
        result = subprocess.run(command, capture_output=True, text=True,
                                cwd=os.path.dirname(train_py))
        if result.returncode != 0:
            sys.exit(f'{train_py} failed:\n{result.stderr[-2000:]}')
        with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
            logged = [json.loads(line)['images_per_sec'] for line in f]
    return statistics.mean(logged[1:])


def loop_lines(preset, args, step_result):
    """train.py's images/s (before/after, each K) against the compiled step alone."""
    step_speed = args.batch_size / next(iter(step_result.values()))['median']
    runs = [(f'train.py, {k} steps/call', os.path.join(ROOT, 'train.py'), k)
            for k in args.steps_per_call]
    if args.baseline_dir:
        runs.insert(0, (f'train.py of {args.baseline_dir} (before)',
                        os.path.join(os.path.abspath(args.baseline_dir), 'train.py'), 1))
    cells = []
    for label, train_py, k in runs:
        speed = loop_images_per_sec(train_py, preset, args, k)
        cells.append(f'{label}: {speed:.1f} img/s = {speed / step_speed:.2f}x')
        print(f'  {preset} {cells[-1]}', flush=True)
    return [f'{preset} loop, batch {args.batch_size}, jit {args.modes[0]}, images/s logged '
            f'over 3 intervals of {args.loop_iters} iterations against the compiled step '
            f'alone ({step_speed:.1f} img/s, baseline variant above): ' + '; '.join(cells)]


def use_two_logical_devices():
    """Splits the physical CPU into two logical devices; must run before TF starts."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def main(argv=None):
    args = parse_args(argv)
    if 2 in args.devices:
        use_two_logical_devices()
    import tensorflow as tf
    load_before = os.getloadavg()[0]
    lines, fastest = [], 0.0
    for preset in args.presets:
        result = bench_preset(preset, args)
        lines += format_lines(preset, args, result)
        fastest = max([fastest] + [args.batch_size / r['median'] for r in result.values()])
        print('\n'.join(lines[-len(result):]), flush=True)
        if args.loop:
            lines += loop_lines(preset, args, result)
    if args.pipeline:
        lines.append(pipeline_line(args, fastest))
        print(lines[-1])
    threads = (tf.config.threading.get_inter_op_parallelism_threads(),
               tf.config.threading.get_intra_op_parallelism_threads())
    lines.append(f'CPU, inter/intra-op threads {threads[0]}/{threads[1]} (0 = TF default), '
                 f"TF_XLA_FLAGS={os.environ.get('TF_XLA_FLAGS', '')!r}, "
                 f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; 1-min load average "
                 f'{load_before:.1f} before, {os.getloadavg()[0]:.1f} after')
    print(lines[-1])
    if args.record:
        record('bench_train.py', lines)


if __name__ == '__main__':
    main()
