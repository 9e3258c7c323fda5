"""Compile time of the train step, with and without lazy R1 and several steps per call.

Each variant runs in a fresh process (nothing compiled before it): the LadaGAN step of a
preset (default cifar10, batch 8, XLA), the first calls timed one by one, then the mean
of the later calls, which cover --later_steps steps (default 16: one R1 step of
r1_interval=16 among them). With r1_interval=k the first step has R1 and the second has
not, so "first two steps" is what a lazy-R1 run pays before it trains at speed; the
issue's bar is at most 1.15x the first step with R1 every step (r1_interval=1). Compile
times on a shared 2-core machine vary by 20% from one process to the next: the variants
take turns for --rounds rounds, and the medians are reported.

    python bench/bench_compile.py --record
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import ROOT, record

VARIANT = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import config, trainer
conf = config.get_config({preset!r}, batch_size={batch}, r1_interval={r1})
gan = trainer.LadaGAN(conf)
steps = {steps}
rng = np.random.default_rng(0)
shape = (steps, conf['batch_size'], conf['img_size'], conf['img_size'], 3)
images = rng.uniform(-1, 1, shape).astype(np.float32)
images = images[0] if steps == 1 else images
times = []
for call in range({calls}):
    tick = time.time()
    gan.run_steps(images, steps=steps)
    gan.d_optimizer.iterations.numpy()  # waits for the call
    times.append(time.time() - tick)
print('TIMES', json.dumps(times))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', default='cifar10')
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--variants', default='1x1,16x1,1x4,16x4',
                        help='r1_interval x steps_per_call, comma-separated (default '
                             '1x1,16x1,1x4,16x4)')
    parser.add_argument('--later_steps', type=int, default=16,
                        help='steps timed after the first three calls (default 16)')
    parser.add_argument('--rounds', type=int, default=3,
                        help='fresh processes per variant, taking turns (default 3)')
    parser.add_argument('--record', action='store_true', help='append to bench/RESULTS.md')
    return parser.parse_args(argv)


def run_variant(args, r1, steps):
    calls = 3 + -(-args.later_steps // steps)
    script = VARIANT.format(root=ROOT, preset=args.preset, batch=args.batch_size, r1=r1,
                            steps=steps, calls=calls)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}
    started = time.time()
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            env=env, check=False)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    line = next(l for l in result.stdout.splitlines() if l.startswith('TIMES'))
    return json.loads(line.split(' ', 1)[1]), time.time() - started


def first_two_steps(times):
    """The issue's bar: lazy R1's first two calls against R1 every step's first call."""
    if (1, 1) not in times:
        return []
    base = times[1, 1][0]
    return [f'first two steps with r1_interval={r1}: {t[0] + t[1]:.1f} s = '
            f'{(t[0] + t[1]) / base:.2f}x the first step with r1_interval=1 ({base:.1f} s)'
            for (r1, steps), t in times.items() if r1 > 1 and steps == 1]


def main(argv=None):
    args = parse_args(argv)
    variants = [tuple(int(n) for n in v.split('x')) for v in args.variants.split(',')]
    runs = {variant: [] for variant in variants}
    for round_ in range(args.rounds):
        for r1, steps in variants:
            t, wall = run_variant(args, r1, steps)
            runs[r1, steps].append(t)
            print(f'round {round_ + 1}, r1_interval={r1}, {steps} step(s)/call: calls '
                  + ', '.join(f'{s:.1f}' for s in t[:3])
                  + f' s, later {statistics.mean(t[3:]):.3f} s/call ({wall:.0f} s with '
                  'start-up)', flush=True)
    # Per call index, the median over the rounds.
    times = {v: [statistics.median(c) for c in zip(*ts)] for v, ts in runs.items()}
    lines = [f'{args.preset}, batch {args.batch_size}, XLA, a fresh process per variant and '
             f'round, {args.rounds} round(s) taking turns; medians of the seconds of the first '
             f'three calls, then of the mean of the later calls ({args.later_steps} steps)']
    for (r1, steps), t in times.items():
        firsts = ', '.join(f'{ts[0]:.1f}' for ts in runs[r1, steps])
        lines.append(f'r1_interval={r1}, {steps} step(s) per call: ' + ', '.join(
            f'{s:.1f}' for s in t[:3]) + f' s; later {statistics.mean(t[3:]):.3f} s/call '
            f'(first call per round: {firsts} s)')
    lines += first_two_steps(times)
    print('\n'.join(lines))
    if args.record:
        record('bench_compile.py', lines)


if __name__ == '__main__':
    os.chdir(ROOT)
    main()
