"""Training recipes for the embedded default (`python train.py`: demo preset, generated
shapes) compared by the sliced Wasserstein distance of their samples to the real shapes
(metrics.swd, works offline).

    python bench/bench_recipe.py                                  # the embedded default
    python bench/bench_recipe.py --variants '--preset tiny' '' --seeds 0,1   # DiffAugment on/off
    python bench/bench_recipe.py --variants '' '--set g_lr=5e-4 --set d_lr=5e-4'

Each variant is a string of extra train.py flags ('' = the embedded default), trained for
--iters iterations (a --total_iter in the variant wins) with each seed, one run after
another, in work_dir (a finished run is reused). Printed per run: SWD x1e3 of the EMA and
of the raw generator against n_images real shapes, images/s, and the sample grid; the floor
is the SWD between two disjoint sets of real images, and the spread between seeds tells an
effect from noise. The wall time is that of the train.py process (start-up, compilation and
training; a reused run's is only its start-up).
"""
import shlex
import time

from common import ema_and_raw_swd, real_images, record, run_parser, run_summary, train


def parse_args(argv=None):
    parser = run_parser(__doc__, 'bench_recipe')
    parser.add_argument('--variants', nargs='+', default=[''],
                        help="extra train.py flags per variant ('' = the embedded default)")
    parser.add_argument('--seeds', default='0', help='comma-separated seeds (default 0)')
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    return args


def run_name(variant, seed):
    """A directory name from the variant's flags: '--set policy=' -> 'policy=-seed0'."""
    flags = '_'.join(shlex.split(variant)).replace('--set_', '').replace('--', '')
    safe = ''.join(c if c.isalnum() or c in '=._-' else '-' for c in flags)
    return f"{safe or 'default'}-seed{seed}"


def main(argv=None):
    args = parse_args(argv)
    import metrics
    real, other_real = real_images(args.n_images)
    floor = metrics.swd(real, other_real)['swd']
    cells = []
    for variant in args.variants:
        for seed in args.seeds:
            started = time.time()
            model_dir = train(run_name(variant, seed),
                              ['--seed', str(seed), *shlex.split(variant)], args)
            wall = time.time() - started
            ema, raw = ema_and_raw_swd(real, model_dir, args.n_images)
            finite, speed = run_summary(model_dir)
            cells.append(f"[{variant or 'embedded default'}] seed {seed}: EMA SWD {ema:.1f}, "
                         f"raw G {raw:.1f}, {speed:.0f} img/s, wall {wall:.0f} s"
                         + ('' if finite else ', losses NOT FINITE'))
            print(cells[-1], f'(samples in {model_dir}/images)', flush=True)
    line = (f'embedded default (demo preset, generated shapes), {args.iters} iterations unless '
            f'the variant says, SWD x1e3 of {args.n_images} samples vs {args.n_images} real '
            f'images (floor: real vs other real {floor:.1f}): ' + '; '.join(cells))
    print(line)
    if args.record:
        record('bench_recipe.py', [line])


if __name__ == '__main__':
    main()
