"""Train-step speed on this machine: XLA (jit_compile=True) against a plain TF graph.

    python bench/bench_train.py                      # tiny + cifar10 at batch 8, both modes
    python bench/bench_train.py --record             # ... and append the lines to RESULTS.md
    python bench/bench_train.py --presets tiny --batch_size 32 --steps 10 --jit
    python bench/bench_train.py --presets ffhq_128 --batch_size 4   # slow on a CPU

For each preset one LadaGAN is built per mode. The first train_step of each (tracing,
compilation and one step) is timed on its own; then, after --warmup steps, the modes
take turns for --steps steps, so both see the same machine load, and the median step
time is reported, with the fastest and slowest step in brackets and images/s =
batch / median. The XLA/graph ratio is the ratio of those two medians measured in this
run (> 1: XLA is slower).

The default run (2 presets x 2 modes, batch 8, 10 steps) takes about 4 minutes on
2 CPU cores, most of it in the compilations (about 1 minute per preset for XLA).
Timings on a shared machine vary: the load average is printed with the results.
"""
import argparse
import gc
import inspect
import os
import statistics
import time

from common import record

MODES = {'xla': True, 'graph': False}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--presets', default='tiny,cifar10',
                        help="comma-separated config.py presets (default: tiny,cifar10; "
                             "ffhq_128 is possible but slow)")
    parser.add_argument('--batch_size', type=int, default=8, help='images per step (default 8)')
    parser.add_argument('--steps', type=int, default=10,
                        help='timed steps per mode, after the first one (default 10)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed steps per mode after the first one (default 1)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--jit', dest='modes', action='store_const', const=['xla'],
                      help='measure only the XLA step (jit_compile=True)')
    mode.add_argument('--no-jit', dest='modes', action='store_const', const=['graph'],
                      help='measure only the plain graph step (jit_compile=False)')
    parser.add_argument('--precision', default=None,
                        help='comma-separated values of the LadaGAN precision argument (e.g. fp32,bf16), '
                             'if trainer.LadaGAN has one (ignored otherwise)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the images and noise')
    parser.add_argument('--record', action='store_true',
                        help='append the result lines to bench/RESULTS.md')
    args = parser.parse_args(argv)
    args.modes = args.modes or list(MODES)
    args.presets = [p.strip() for p in args.presets.split(',') if p.strip()]
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        parser.error('--batch_size and --steps must be >= 1, --warmup >= 0')
    return args


def precisions(args, trainer):
    """[None] (the trainer's default) or the requested values, when LadaGAN takes one."""
    if 'precision' not in inspect.signature(trainer.LadaGAN).parameters:
        if args.precision:
            print('trainer.LadaGAN has no precision argument: --precision ignored')
        return [None]
    if not args.precision:
        return [None]
    return [p.strip() for p in args.precision.split(',') if p.strip()]


def timed_step(gan, images, noise_d, noise_g):
    start = time.perf_counter()
    gan.train_step(images, noise_d=noise_d, noise_g=noise_g)
    return time.perf_counter() - start


def bench_preset(preset, precision, args):
    import numpy as np
    import config
    import trainer
    conf = config.get_config(preset)
    rng = np.random.default_rng(args.seed)
    size, batch = conf['img_size'], args.batch_size
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    noise_d = rng.standard_normal((batch, conf['noise_dim'])).astype(np.float32)
    noise_g = rng.standard_normal((batch, conf['noise_dim'])).astype(np.float32)
    kwargs = {} if precision is None else {'precision': precision}
    gans, result = {}, {}
    for mode in args.modes:
        start = time.perf_counter()
        gans[mode] = trainer.LadaGAN(conf, jit_compile=MODES[mode], **kwargs)
        build = time.perf_counter() - start
        first = timed_step(gans[mode], images, noise_d, noise_g)
        for _ in range(args.warmup):
            timed_step(gans[mode], images, noise_d, noise_g)
        result[mode] = {'build': build, 'first': first, 'steps': []}
        print(f'  {preset} {mode}: build {build:.1f} s, first step {first:.1f} s', flush=True)
    for _ in range(args.steps):  # modes take turns: same load for both
        for mode in args.modes:
            result[mode]['steps'].append(timed_step(gans[mode], images, noise_d, noise_g))
    for r in result.values():
        r['median'] = statistics.median(r['steps'])
        r['compile'] = max(r['first'] - r['median'], 0.0)
    del gans
    gc.collect()
    return result


def format_line(preset, precision, args, result):
    name = preset if precision is None else f'{preset} {precision}'
    parts = []
    for mode in args.modes:
        r = result[mode]
        parts.append(f"{'XLA' if mode == 'xla' else 'graph'} {r['median']:.3f} s/step "
                     f"[{min(r['steps']):.3f}-{max(r['steps']):.3f}] "
                     f"({args.batch_size / r['median']:.1f} img/s), first step "
                     f"{r['first']:.1f} s (compile ~{r['compile']:.1f} s)")
    line = f'{name}, batch {args.batch_size}, median of {args.steps}: ' + '; '.join(parts)
    if len(args.modes) == 2:
        ratio = result['xla']['median'] / result['graph']['median']
        line += (f'; XLA/graph step time {ratio:.2f} '
                 f"({'XLA slower' if ratio > 1 else 'XLA faster'})")
    return line


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf
    import trainer
    load_before = os.getloadavg()[0]
    lines = []
    for preset in args.presets:
        for precision in precisions(args, trainer):
            result = bench_preset(preset, precision, args)
            lines.append(format_line(preset, precision, args, result))
            print(lines[-1], flush=True)
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
