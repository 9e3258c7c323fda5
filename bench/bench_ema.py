"""What the EMA warm-up (config `ema_warmup`) changes in a short run: the tiny preset trained
on the generated shapes like the embedded default (600 iterations), twice with the same seed,
without and with the warm-up, measured with the sliced Wasserstein distance (metrics.swd, works
offline).

    python bench/bench_ema.py                 # 600 iterations, as `python train.py`
    python bench/bench_ema.py --iters 2000 --record

The EMA never feeds back into training, so both runs train the same kind of G; the
difference between their EMA samples is the warm-up's. The SWD of each run's raw G
(ema=False) is printed too: the warm-up should bring the EMA close to it, while without
it the EMA of a short run still holds 0.999^iters of its starting weights. The floor is
the SWD between two disjoint sets of real images.
"""
from common import ema_and_raw_swd, real_images, record, run_parser, train


def parse_args(argv=None):
    parser = run_parser(__doc__, 'bench_ema')
    parser.add_argument('--seed', type=int, default=0, help='seed of both runs (default 0)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import metrics
    real, other_real = real_images(args.n_images)
    floor = metrics.swd(real, other_real)['swd']
    cells = []
    for warmup in (False, True):
        name = f"{'warmup' if warmup else 'no-warmup'}-seed{args.seed}"
        model_dir = train(name, ['--preset', 'tiny', '--seed', str(args.seed),
                                 '--set', f'ema_warmup={str(warmup).lower()}'], args)
        ema, raw = ema_and_raw_swd(real, model_dir, args.n_images)
        cells.append(f"ema_warmup={str(warmup).lower()}: EMA G SWD {ema:.1f}, raw G {raw:.1f}")
        print(cells[-1], flush=True)
    line = (f'tiny preset on the generated shapes, {args.iters} iterations, batch 32, seed '
            f'{args.seed}, SWD x1e3 of {args.n_images} samples vs {args.n_images} real images '
            f'(floor: real vs other real {floor:.1f}): ' + '; '.join(cells))
    print(line)
    if args.record:
        record('bench_ema.py', [line])


if __name__ == '__main__':
    main()
