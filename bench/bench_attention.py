"""Cost of each attention (lada, dot, l2, simplex, duplex) as the number of tokens grows.

    python bench/bench_attention.py                       # blocks at 64 ... 16384 tokens
    python bench/bench_attention.py --record --plot bench/attention_scaling.png
    python bench/bench_attention.py --train_step --record # + tiny-preset train step per attention

Each point (attention, N) is a discriminator-style Ladaformer block (attention, MLP and
LayerNorms; model_dim 64, 2 heads, MLP 128, batch 1 by default) measured in a fresh
subprocess, so that memory readings do not mix:
- params: trainable parameters of the block;
- MACs: multiply-accumulates of one forward pass, read off the traced graph (matrix
  products and convolutions, as model.count_macs counts them);
- memory: growth of the process' peak resident set (ru_maxrss) over one forward+backward
  run as a plain TF graph, above the level reached after building the block and running
  it on 16 tokens: the tensors the step keeps alive, plus allocator slack;
- time: median of --repeats forward+backward runs (gradients wrt input and weights) of
  the XLA-compiled step, after compilation.
Points run N by N with the attentions taking turns, so machine load drifts hit all of them
alike. A quadratic point whose attention matrices would exceed --max_gb is skipped and
says so. The log-log slope between the two largest sizes of each attention is printed:
about 1 for linear cost, 2 for quadratic.

--train_step adds the images/s of the tiny preset's train step (trainer.LadaGAN, XLA,
fixed random images and noise) with each attention in both G and D; the attentions take
turns step by step and compilation is timed apart.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import record

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
KINDS = ('lada', 'dot', 'l2', 'simplex', 'duplex')
QUADRATIC = ('dot', 'l2')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tokens', default='64,256,1024,4096,16384',
                        help='comma-separated token counts (default 64,256,1024,4096,16384)')
    parser.add_argument('--kinds', default=','.join(KINDS),
                        help=f"comma-separated attentions (default {','.join(KINDS)})")
    parser.add_argument('--dim', type=int, default=64, help='model width (default 64)')
    parser.add_argument('--heads', type=int, default=2, help='attention heads (default 2)')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed forward+backward runs per point (default 5)')
    parser.add_argument('--max_gb', type=float, default=6.0,
                        help='skip quadratic points whose attention matrices (x6 for the '
                             'backward pass) would exceed this many GB (default 6)')
    parser.add_argument('--plot', default=None, metavar='PATH',
                        help='write a log-log plot (time, MACs, memory vs tokens) as PNG')
    parser.add_argument('--train_step', action='store_true',
                        help='also time the tiny-preset train step with each attention')
    parser.add_argument('--steps', type=int, default=10,
                        help='timed train steps per attention with --train_step (default 10)')
    parser.add_argument('--record', action='store_true',
                        help='append the result lines to bench/RESULTS.md')
    parser.add_argument('--point', nargs=2, metavar=('KIND', 'N'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tokens = [int(n) for n in args.tokens.split(',') if n.strip()]
    args.kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f'unknown attention(s) {unknown}; choose from {list(KINDS)}')
    return args


# --- one point, in its own process ------------------------------------------------------------

def measure_point(kind, n_tokens, args):
    """{'params', 'macs', 'memory_mb', 'seconds'} of one block; runs in a subprocess."""
    import numpy as np
    import tensorflow as tf

    import ladaformer
    import model
    block = ladaformer.Ladaformer(args.dim, args.heads, 2 * args.dim, attention=kind)
    block.build((None, n_tokens, args.dim))
    x = tf.constant(np.random.default_rng(0).standard_normal(
        (args.batch, n_tokens, args.dim)).astype(np.float32))

    def forward_backward(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.square(block(inputs)[0]))
        return tape.gradient(loss, [inputs] + block.trainable_weights)

    graph_step = tf.function(forward_backward)
    graph_step(x[:, :16])  # allocator, kernels and tracing machinery warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    graph_step(x)
    memory_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    spec = tf.TensorSpec([args.batch, n_tokens, args.dim], tf.float32)
    graph = tf.function(lambda t: block(t)).get_concrete_function(spec).graph
    macs = sum(model._op_macs(op) for op in graph.get_operations())

    xla_step = tf.function(forward_backward, jit_compile=True)
    [g.numpy() for g in xla_step(x)]
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        [g.numpy() for g in xla_step(x)]
        times.append(time.perf_counter() - start)
    return {'params': int(sum(np.prod(w.shape) for w in block.trainable_weights)),
            'macs': int(macs), 'memory_mb': memory_kb / 1024,
            'seconds': statistics.median(times)}


def run_point(kind, n_tokens, args):
    command = [sys.executable, os.path.abspath(__file__), '--point', kind, str(n_tokens),
               '--dim', str(args.dim), '--heads', str(args.heads), '--batch', str(args.batch),
               '--repeats', str(args.repeats)]
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {'skipped': f'failed: {result.stderr.strip().splitlines()[-1:]}'}
    return json.loads(result.stdout.strip().splitlines()[-1])


def attention_gb(kind, n_tokens, args):
    """Size of the attention matrices of a quadratic point, times 6 for the backward pass."""
    return 6 * 4 * args.batch * args.heads * n_tokens ** 2 / 1e9 if kind in QUADRATIC else 0.0


def measure_scaling(args):
    results = {kind: {} for kind in args.kinds}
    for n_tokens in args.tokens:
        for kind in args.kinds:  # attentions take turns at each size
            if attention_gb(kind, n_tokens, args) > args.max_gb:
                results[kind][n_tokens] = {'skipped': f'attention matrices would take about '
                                                      f'{attention_gb(kind, n_tokens, args):.0f}'
                                                      f' GB > --max_gb {args.max_gb:g}'}
            else:
                results[kind][n_tokens] = run_point(kind, n_tokens, args)
            print(f'  {kind} N={n_tokens}: {results[kind][n_tokens]}', flush=True)
    return results


def loglog_slope(points, key):
    import math
    measured = sorted((n, p[key]) for n, p in points.items() if 'skipped' not in p)
    if len(measured) < 2:
        return None
    (n0, v0), (n1, v1) = measured[-2:]
    return math.log(v1 / v0) / math.log(n1 / n0)


def scaling_lines(results, args):
    lines = [f'one discriminator Ladaformer block, model_dim {args.dim}, {args.heads} heads, '
             f'MLP {2 * args.dim}, batch {args.batch}; time = median of {args.repeats} XLA '
             f'forward+backward runs; memory = peak RSS growth over one graph-mode '
             f'forward+backward']
    for kind, points in results.items():
        cells = []
        for n_tokens, p in points.items():
            if 'skipped' in p:
                cells.append(f"N={n_tokens}: skipped ({p['skipped']})")
            else:
                cells.append(f"N={n_tokens}: {p['macs'] / 1e6:.1f} MMAC, "
                             f"{p['seconds'] * 1e3:.2f} ms, {p['memory_mb']:.0f} MB")
        params = next((p['params'] for p in points.values() if 'params' in p), 0)
        slopes = {key: loglog_slope(points, key) for key in ('macs', 'seconds')}
        slope_text = ', '.join(f'{key} {s:.2f}' for key, s in slopes.items() if s is not None)
        lines.append(f'{kind} ({params:,} params; log-log slope at the largest sizes: '
                     f'{slope_text}): ' + '; '.join(cells))
    return lines


def plot_scaling(results, path):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    fig = Figure(figsize=(15, 4.5))
    panels = (('seconds', 'forward+backward time (s)'), ('macs', 'forward MACs'),
              ('memory_mb', 'peak memory growth (MB)'))
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for kind, points in results.items():
            measured = sorted((n, p[key]) for n, p in points.items()
                              if 'skipped' not in p and p[key] > 0)
            if measured:
                ax.plot(*zip(*measured), marker='o', label=kind)
        all_n = sorted({n for points in results.values() for n in points})
        anchor = [p[key] for p in results.get('lada', {}).values()
                  if 'skipped' not in p and p[key] > 0]
        if anchor and len(all_n) > 1:
            n0, v0 = all_n[0], anchor[0]
            ax.plot(all_n, [v0 * n / n0 for n in all_n], 'k--', lw=0.8, label='O(N)')
            ax.plot(all_n, [v0 * (n / n0) ** 2 for n in all_n], 'k:', lw=0.8, label='O(N^2)')
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('tokens N')
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f'plot written to {path}')


# --- the tiny preset's train step per attention ----------------------------------------------

def train_step_lines(args):
    import numpy as np

    import config
    import trainer
    batch = 8
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
    gans, first, steps = {}, {}, {kind: [] for kind in args.kinds}
    for kind in args.kinds:
        conf = config.get_config('tiny', g_attention=kind, d_attention=kind)
        noise = rng.standard_normal((batch, conf['noise_dim'])).astype(np.float32)
        gans[kind] = (trainer.LadaGAN(conf, jit_compile=True), noise)
        start = time.perf_counter()
        gans[kind][0].train_step(images, noise_d=noise, noise_g=noise)
        first[kind] = time.perf_counter() - start
        print(f'  train step {kind}: first step (compile) {first[kind]:.1f} s', flush=True)
    for _ in range(args.steps):
        for kind, (gan, noise) in gans.items():
            start = time.perf_counter()
            gan.train_step(images, noise_d=noise, noise_g=noise)
            steps[kind].append(time.perf_counter() - start)
    lada = statistics.median(steps['lada']) if 'lada' in steps else None
    cells = []
    for kind in args.kinds:
        median = statistics.median(steps[kind])
        ratio = f', {median / lada:.2f}x lada' if lada else ''
        cells.append(f'{kind} {batch / median:.1f} img/s ({median:.3f} s/step{ratio}; '
                     f'first step {first[kind]:.0f} s)')
    return [f'tiny preset train step (XLA, batch {batch}, same attention in G and D, median '
            f'of {args.steps}, attentions taking turns): ' + '; '.join(cells)]


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(BENCH_DIR))
    if args.point:
        print(json.dumps(measure_point(args.point[0], int(args.point[1]), args)))
        return
    load_before = os.getloadavg()[0]
    results = measure_scaling(args)
    lines = scaling_lines(results, args)
    if args.train_step:
        lines += train_step_lines(args)
    lines.append(f'1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after')
    print('\n'.join(lines))
    if args.plot:
        plot_scaling(results, args.plot)
    if args.record:
        record('bench_attention.py', lines)


if __name__ == '__main__':
    main()
