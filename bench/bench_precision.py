"""Quality and speed of bf16 against fp32 training of the tiny preset on the generated
shapes (600 iterations, as the embedded default), measured with the sliced Wasserstein
distance (metrics.swd), which needs no Inception weights, so it runs offline.

    python bench/bench_precision.py                 # 600 iterations: fp32 seeds 0 and 1, bf16 seed 0
    python bench/bench_precision.py --iters 300 --record

Each run is `python train.py --preset tiny --precision P --seed S --total_iter N --no_fid` in its own
directory under --work_dir (an existing finished run is reused). Then n_images samples of
each EMA generator (fixed noise) are compared with n_images real shapes. Two references
tell an effect from noise: the SWD between two disjoint sets of real images (the floor of
the metric at this n) and the spread between the fp32 runs of different seeds. Step
speed is the mean images_per_sec logged in metrics.jsonl (the runs go one after another).
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys

from common import record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_parser(doc, work_subdir):
    """The options of the benches that train the embedded default and compare by SWD."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=600,
                        help='training iterations per run (default 600, the embedded default)')
    parser.add_argument('--n_images', type=int, default=1000,
                        help='samples and real images compared per run (default 1000)')
    parser.add_argument('--work_dir', default=os.path.join(ROOT, '.cache', work_subdir),
                        help=f'where the runs are written (default .cache/{work_subdir})')
    parser.add_argument('--record', action='store_true',
                        help='append the results to bench/RESULTS.md')
    return parser


def parse_args(argv=None):
    parser = run_parser(__doc__, 'bench_precision')
    parser.add_argument('--fp32_seeds', default='0,1',
                        help='seeds of the fp32 runs (default 0,1: their spread is the noise)')
    parser.add_argument('--bf16_seeds', default='0', help='seeds of the bf16 runs (default 0)')
    args = parser.parse_args(argv)
    args.runs = ([('fp32', int(s)) for s in args.fp32_seeds.split(',') if s.strip()]
                 + [('bf16', int(s)) for s in args.bf16_seeds.split(',') if s.strip()])
    return args


def train(name, flags, args):
    """Runs `train.py FLAGS` for args.iters iterations in work_dir/NAME-ITERS (reused when
    that run is complete) and returns the directory."""
    model_dir = os.path.join(args.work_dir, f'{name}-{args.iters}')
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--model_dir', model_dir,
               '--total_iter', str(args.iters), '--fid_inter', str(args.iters), '--no_fid',
               *flags]
    print(f'training {name} -> {model_dir}', flush=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f'{name} failed:\n{result.stderr[-2000:]}')
    return model_dir


def run_summary(model_dir):
    logged = [json.loads(line) for line in open(os.path.join(model_dir, 'metrics.jsonl'))]
    finite = all(math.isfinite(entry[k]) for entry in logged
                 for k in ('d_loss', 'g_loss', 'gp'))
    speed = sum(entry['images_per_sec'] for entry in logged) / len(logged)
    return finite, speed


def samples(model_dir, n, ema=True):
    import numpy as np
    import utils
    generator = utils.load_generator(model_dir, ema=ema)
    noise = np.random.default_rng(123).standard_normal((n, generator.noise_dim))
    images = [generator(noise[i:i + 100].astype(np.float32), training=False)[0]
              for i in range(0, n, 100)]
    return utils.to_uint8(np.concatenate(images))


def ema_and_raw_swd(real, model_dir, n):
    """SWD x1e3 to the real images of n samples of the run's EMA generator and of its raw G."""
    import metrics
    return tuple(metrics.swd(real, samples(model_dir, n, ema=ema))['swd'] for ema in (True, False))


def real_images(n):
    import numpy as np
    from PIL import Image
    files = sorted(glob.glob(os.path.join(ROOT, '.cache', 'shapes32', '*.png')))
    if len(files) < 2 * n:
        sys.exit(f'need {2 * n} shapes images in .cache/shapes32 (run python train.py once)')
    load = lambda paths: np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths])
    return load(files[:n]), load(files[n:2 * n])


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    import metrics
    model_dirs = {(precision, seed): train(f'{precision}-seed{seed}',
                                           ['--preset', 'tiny', '--precision', precision,
                                            '--seed', str(seed)], args)
                  for precision, seed in args.runs}
    real, other_real = real_images(args.n_images)
    floor = metrics.swd(real, other_real)['swd']
    cells = []
    for (precision, seed), model_dir in model_dirs.items():
        finite, speed = run_summary(model_dir)
        value = metrics.swd(real, samples(model_dir, args.n_images))['swd']
        cells.append(f'{precision} seed {seed}: SWD {value:.1f}, {speed:.1f} img/s, '
                     f"losses {'finite' if finite else 'NOT FINITE'}")
        print(cells[-1], flush=True)
    lines = [f'tiny preset on the generated shapes, {args.iters} iterations, batch 32, '
             f'SWD x1e3 of {args.n_images} EMA samples vs {args.n_images} real images '
             f'(floor: real vs other real {floor:.1f}): ' + '; '.join(cells)]
    print(lines[0])
    if args.record:
        record('bench_precision.py', lines)


if __name__ == '__main__':
    main()
