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
import sys

from common import ROOT, real_images, record, run_parser, run_summary, samples, train


def parse_args(argv=None):
    parser = run_parser(__doc__, 'bench_precision')
    parser.add_argument('--fp32_seeds', default='0,1',
                        help='seeds of the fp32 runs (default 0,1: their spread is the noise)')
    parser.add_argument('--bf16_seeds', default='0', help='seeds of the bf16 runs (default 0)')
    args = parser.parse_args(argv)
    args.runs = ([('fp32', int(s)) for s in args.fp32_seeds.split(',') if s.strip()]
                 + [('bf16', int(s)) for s in args.bf16_seeds.split(',') if s.strip()])
    return args


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
