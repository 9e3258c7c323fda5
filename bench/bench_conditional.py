"""Does a class-conditional run generate each class? The conditional embedded default
(`python train.py --set n_classes=3`: the demo preset on the labelled shapes, one folder
per shape kind) is trained, and the sliced Wasserstein distance (metrics.swd, ProGAN's)
of each class's samples to each class's real images is printed as a matrix: row = the
class asked for, column = the real class. Conditioning shows on the diagonal: row-wise,
class k's samples are nearer class k's reals than the other reals; column-wise, class k's
reals are nearer class k's samples than the other classes' samples (this one is not
fooled by a real class that is near every sample, as blob-like circles are early on). The
real-vs-real matrix (two disjoint halves of each class) shows how far apart SWD puts the
classes themselves.

    python bench/bench_conditional.py --seeds 0,1 --record
"""
import numpy as np

from common import record, run_parser, run_summary, train

PER_CLASS = 500  # images per class and side: 3 x 500 of the 1,333 per class


def parse_args(argv=None):
    parser = run_parser(__doc__, 'bench_conditional')
    parser.add_argument('--seeds', default='0', help='comma-separated seeds (default 0)')
    parser.set_defaults(n_images=PER_CLASS)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    return args


def real_halves(n):
    """Two disjoint sets of n real images per class of the labelled shapes, and the names."""
    from PIL import Image

    import data
    import shapes_data
    import train as train_cli
    labels = data.read_labels(shapes_data.make_shapes_dataset(train_cli.LABELLED_DATA_DIR,
                                                       labelled=True))
    load = lambda paths: np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths])  # noqa: E731
    halves = ([], [])
    for k in range(len(labels.names)):
        files = [f for f, label in zip(labels.files, labels.labels) if label == k]
        halves[0].append(load(files[:n]))
        halves[1].append(load(files[n:2 * n]))
    return halves, labels.names


def class_samples(model_dir, n, n_classes):
    """n EMA samples of each class, the same noise for every class."""
    import checkpoints
    import sampling
    import utils
    generator = checkpoints.load_generator(model_dir)
    noise = sampling.sample_noise(n, generator.noise_dim, seed=123)
    return [utils.to_uint8(sampling.generate(generator, noise,
                                             labels=np.full(n, k, np.int32))[0])
            for k in range(n_classes)]


def swd_matrix(fakes, reals):
    import metrics
    return [[metrics.swd(real, fake)['swd'] for real in reals] for fake in fakes]


def matrix_text(matrix, names):
    return '; '.join(f'{name}: ' + '/'.join(f'{v:.1f}' for v in row)
                     for name, row in zip(names, matrix))


def diagonal_wins(matrix):
    """(rows, columns) whose smallest value is on the diagonal."""
    matrix = np.asarray(matrix)
    rows = sum(int(np.argmin(row) == i) for i, row in enumerate(matrix))
    return rows, sum(int(np.argmin(column) == j) for j, column in enumerate(matrix.T))


def main(argv=None):
    args = parse_args(argv)
    (reals, other_reals), names = real_halves(args.n_images)
    floor = swd_matrix(other_reals, reals)
    print(f'real vs real ({"/".join(names)} columns): {matrix_text(floor, names)}')
    cells = []
    for seed in args.seeds:
        model_dir = train(f'conditional-seed{seed}',
                          ['--seed', str(seed), '--set', f'n_classes={len(names)}'], args)
        matrix = swd_matrix(class_samples(model_dir, args.n_images, len(names)), reals)
        finite, speed = run_summary(model_dir)
        rows, columns = diagonal_wins(matrix)
        cells.append(f'seed {seed}: {matrix_text(matrix, names)} (diagonal smallest in '
                     f'{rows} of {len(names)} rows and {columns} of {len(names)} columns, '
                     f'{speed:.0f} img/s'
                     + ('' if finite else ', losses NOT FINITE') + ')')
        print(cells[-1], f'(samples in {model_dir}/images)', flush=True)
    line = (f'conditional embedded default (demo preset, n_classes={len(names)}, labelled '
            f'shapes), {args.iters} iterations, SWD x1e3 of {args.n_images} EMA samples of '
            f'each class (rows) vs {args.n_images} real images of each class (columns '
            f'{"/".join(names)}); real vs other real: {matrix_text(floor, names)}; '
            + '; '.join(cells))
    print(line)
    if args.record:
        record('bench_conditional.py', [line])


if __name__ == '__main__':
    main()
