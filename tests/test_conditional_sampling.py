"""Class-conditional sampling and metrics: generate.py --class / --class_grid, labels drawn
with the training frequencies, walks, per-image output and exports of a conditional model;
fid.py's fakes of a conditional model, --per_class (class_metrics.py) and InLoopFID's
class_counts.

The conditional model is an untrained `tiny` LadaGAN with 3 classes, saved in the authors'
layout; its random class embedding already makes each class's images differ. The
generate.py runs that need a fresh process start together (as tests/test_generate.py).
"""
import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import checkpoints
import class_metrics
import config
import fid
import generate
import metrics
import model  # noqa: F401  (registers the LadaGAN layers for keras.saving.load_model)
import sampling
import trainer
import utils
from test_fid import CountingExtractor, _make_fake_tf2015_graph, _save_pngs
from test_generate import SCRIPT, assert_close_uint8, assert_one_error_line, read_png, run_all

NAMES, COUNTS = ['circle', 'square', 'triangle'], [1, 2, 5]
SIZE, NOISE_DIM, N, SEED = 32, 64, 6, 3
KEYS, STEPS = 3, 2  # interpolation


def make_conditional_model_dir(path, classes=True):
    """An untrained tiny 3-class LadaGAN: config.json, classes.json and a checkpoint."""
    conf = config.get_config('tiny', n_classes=len(NAMES))
    gan = trainer.LadaGAN(conf, jit_compile=False)
    checkpoint = checkpoints.make_checkpoint(**gan.checkpoint_objects())
    tf.train.CheckpointManager(checkpoint, os.path.join(path, checkpoints.BEST_DIR),
                               max_to_keep=1).save(checkpoint_number=0)
    utils.write_json(os.path.join(path, config.CONFIG_FILE), conf)
    if classes:
        utils.write_json(os.path.join(path, config.CLASSES_FILE),
                         {'names': NAMES, 'counts': COUNTS})
    return str(path)


def walk_seed():
    """The first seed whose KEYS drawn labels are not all one class."""
    return next(s for s in range(100)
                if len(set(sampling.sample_labels(KEYS, COUNTS, s))) > 1)


@pytest.fixture(scope='module')
def cond_dir(tmp_path_factory):
    return make_conditional_model_dir(tmp_path_factory.mktemp('conditional') / 'run')


@pytest.fixture(scope='module')
def generator(cond_dir):
    return checkpoints.load_generator(cond_dir)


@pytest.fixture(scope='module')
def runs(cond_dir, tmp_path_factory):
    """The generate.py subprocesses of this module; returns (out dir, {name: result})."""
    out = tmp_path_factory.mktemp('conditional-out')
    base = [SCRIPT, '--model_dir', cond_dir, '--seed', str(SEED), '--batch_size', '4']
    commands = {
        'name': [*base, '--n', str(N), '--class', 'square', '--out', str(out / 'name.png')],
        'index': [*base, '--n', str(N), '--class', '1', '--no-jit', '--attention',
                  '--out', str(out / 'pngs')],
        'grid': [*base, '--n', '4', '--class_grid', '--no-jit',
                 '--out', str(out / 'classes.png')],
        'walk': [SCRIPT, '--model_dir', cond_dir, '--seed', str(walk_seed()), '--n', str(KEYS),
                 '--interpolate', str(STEPS), '--no-jit', '--out', str(out / 'walk.gif'),
                 '--export_keras', str(out / 'export' / 'g.keras'),
                 '--export_savedmodel', str(out / 'export' / 'savedmodel')],
    }
    return out, run_all(commands, cwd=out)


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def live(generator, noise, labels):
    images = generator((np.asarray(noise, np.float32), np.asarray(labels, np.int32)),
                       training=False)[0]
    return utils.to_uint8(images.numpy())


def tiles(grid, rows, columns, size=SIZE):
    return np.stack([grid[r * size:(r + 1) * size, c * size:(c + 1) * size]
                     for r in range(rows) for c in range(columns)])


def differs(a, b):
    return (np.abs(a.astype(int) - b.astype(int)) > 2).mean() > 0.3


# ---------------------------------------------------------------------------------------
# generate.py as a subprocess
# ---------------------------------------------------------------------------------------

def test_class_by_name_and_by_index_give_that_class(runs, generator):
    out, results = runs
    ok(results['name'])
    ok(results['index'])
    noise = sampling.sample_noise(N, NOISE_DIM, SEED)
    expected = live(generator, noise, np.full(N, 1))
    by_name = tiles(read_png(out / 'name.png'), 2, 3)  # 6 images: 3 columns
    assert_close_uint8(by_name, expected)
    files = sorted(f for f in os.listdir(out / 'pngs') if f.endswith('.png')
                   and not f.startswith('attention'))
    assert files == [f'{i:06d}.png' for i in range(N)]
    by_index = np.stack([read_png(out / 'pngs' / f) for f in files])
    assert_close_uint8(by_index, expected)
    assert differs(by_name, live(generator, noise, np.full(N, 0)))  # the class matters
    with open(out / 'pngs' / generate.LABELS_CSV) as f:
        rows = list(csv.reader(f))
    assert rows == [['path', 'class']] + [[f, 'square'] for f in files]
    assert os.listdir(out / 'pngs').count('attention-000.png') == 1  # 6 images: one page


def test_class_grid_has_a_row_per_class_with_the_same_z_per_column(runs, generator):
    out, results = runs
    ok(results['grid'])
    grid = read_png(out / 'classes.png')
    columns = 4
    assert grid.shape[0] == len(NAMES) * SIZE and grid.shape[1] > columns * SIZE
    pictures = grid[:, -columns * SIZE:]
    noise = sampling.sample_noise(columns, NOISE_DIM, SEED)
    expected = np.concatenate([live(generator, noise, np.full(columns, k))
                               for k in range(len(NAMES))])
    assert_close_uint8(tiles(pictures, len(NAMES), columns), expected)
    # The names: white text on the black column at the left, different on every row.
    names = grid[:, :-columns * SIZE].astype(int)
    rows = [names[k * SIZE:(k + 1) * SIZE] for k in range(len(NAMES))]
    assert all(row.max() > 200 and (row > 100).mean() < 0.5 for row in rows)
    assert all(np.abs(a - b).max() > 100 for a, b in zip(rows, rows[1:]))


def test_walk_keeps_each_keys_class_until_the_next_key(runs, generator):
    out, results = runs
    ok(results['walk'])
    seed = walk_seed()
    keys = sampling.sample_noise(KEYS, NOISE_DIM, seed)
    labels = sampling.sample_labels(KEYS, COUNTS, seed)  # the training frequencies
    strip = read_png(out / 'walk.png')
    assert strip.shape == ((KEYS - 1) * SIZE, (STEPS + 1) * SIZE, 3)
    t = np.arange(STEPS + 1) / STEPS
    for row in range(KEYS - 1):
        frames = sampling.slerp(keys[row], keys[row + 1], t)
        frame_labels = [labels[row]] * STEPS + [labels[row + 1]]
        assert_close_uint8(tiles(strip[row * SIZE:(row + 1) * SIZE], 1, STEPS + 1),
                           live(generator, frames, frame_labels))
    assert Image.open(out / 'walk.gif').n_frames == (KEYS - 1) * STEPS + 1


def test_conditional_exports_take_noise_and_label(runs, generator):
    out, results = runs
    ok(results['walk'])
    noise = sampling.sample_noise(5, NOISE_DIM, 11)
    labels = np.array([2, 0, 1, 1, 2], np.int32)
    expected = generator((noise, labels), training=False)[0].numpy()
    loaded = keras.saving.load_model(out / 'export' / 'g.keras')
    assert loaded.n_classes == len(NAMES)
    np.testing.assert_allclose(loaded((noise, labels), training=False)[0].numpy(), expected,
                               atol=1e-5)
    served = tf.saved_model.load(str(out / 'export' / 'savedmodel'))
    signature = served.signatures['serving_default']
    spec = signature.structured_input_signature[1]
    assert sorted(spec) == ['label', 'noise']
    assert spec['noise'].dtype == tf.float32 and spec['noise'].shape.as_list() == [None, NOISE_DIM]
    assert spec['label'].dtype == tf.int32 and spec['label'].shape.as_list() == [None]
    uint8 = signature(noise=tf.constant(noise), label=tf.constant(labels))['images'].numpy()
    assert uint8.dtype == np.uint8
    assert np.abs(uint8.astype(int) - utils.to_uint8(expected).astype(int)).max() <= 1
    floats = served.generate(tf.constant(noise), tf.constant(labels))['images'].numpy()
    np.testing.assert_allclose(floats, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# generate.py in-process: drawn labels, no classes.json, errors
# ---------------------------------------------------------------------------------------

def test_without_class_labels_follow_the_training_frequencies(cond_dir, generator, tmp_path):
    seed = next(s for s in range(100) if len(set(sampling.sample_labels(N, COUNTS, s))) == 3)
    args = ['--model_dir', cond_dir, '--n', str(N), '--seed', str(seed), '--no-jit']
    assert generate.main([*args, '--out', str(tmp_path / 'drawn.png')]) == 0
    noise = sampling.sample_noise(N, NOISE_DIM, seed)
    drawn = tiles(read_png(tmp_path / 'drawn.png'), 2, 3)
    labels = sampling.sample_labels(N, COUNTS, seed)
    assert_close_uint8(drawn, live(generator, noise, labels))
    uniform = sampling.sample_labels(N, [1, 1, 1], seed)
    other = labels != uniform
    assert other.any() and differs(drawn[other], live(generator, noise, uniform)[other])


def test_without_classes_json_labels_are_uniform_with_a_note(cond_dir, generator, tmp_path,
                                                            capsys):
    bare = tmp_path / 'bare'
    shutil.copytree(cond_dir, bare)
    os.remove(bare / config.CLASSES_FILE)
    seed = next(s for s in range(100) if not np.array_equal(
        sampling.sample_labels(N, COUNTS, s), sampling.sample_labels(N, [1, 1, 1], s)))
    assert generate.main(['--model_dir', str(bare), '--n', str(N), '--seed', str(seed),
                          '--no-jit', '--out', str(tmp_path / 'u.png')]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith('note')]
    assert len(notes) == 1 and 'uniformly' in notes[0] and config.CLASSES_FILE in notes[0]
    noise = sampling.sample_noise(N, NOISE_DIM, seed)
    assert_close_uint8(tiles(read_png(tmp_path / 'u.png'), 2, 3),
                       live(generator, noise, sampling.sample_labels(N, [1, 1, 1], seed)))
    # Without names, --class takes an index only.
    assert generate.main(['--model_dir', str(bare), '--class', 'square']) == 2
    assert 'give an index' in capsys.readouterr().err


def test_attention_pages_title_each_sample_with_its_class(cond_dir, tmp_path, monkeypatch):
    pages = []
    monkeypatch.setattr(utils, 'save_attention_maps', lambda images, maps, path, titles=None:
                        pages.append((len(images), titles)))
    n = generate.ATTENTION_PER_PAGE + 2
    seed = next(s for s in range(100) if len(set(sampling.sample_labels(n, COUNTS, s))) == 3)
    assert generate.main(['--model_dir', cond_dir, '--n', str(n), '--seed', str(seed),
                          '--batch_size', '4', '--attention', '--no-jit',
                          '--out', str(tmp_path / 'g.png')]) == 0
    names = [NAMES[k] for k in sampling.sample_labels(n, COUNTS, seed)]
    assert pages == [(8, names[:8]), (2, names[8:])]


def test_attention_figure_titles_each_sample():
    rng = np.random.default_rng(0)
    maps = [rng.random((2, 2, side * side)) for side in (8, 16, 32)]
    images = np.zeros((2, SIZE, SIZE, 3), np.float32)
    columns = 1 + 3 * 2  # the image, then 3 stages x 2 heads
    titled = utils.attention_figure(images, maps, ['circle', 'square'])
    assert [ax.get_title() for ax in titled.axes[::columns]] == ['circle', 'square']
    assert titled.axes[1].get_title() == '8x8 head 0'
    plain = utils.attention_figure(images, maps)
    assert [ax.get_title() for ax in plain.axes[::columns]] == ['sample', 'sample']


def test_a_conditional_runs_attention_maps_show_one_sample_of_each_grid_row():
    import loop
    grid_labels = np.arange(25) // 5 % len(NAMES)  # row r of the run's grid: class r % 3
    rows, titles = loop.attention_rows(grid_labels, {'names': NAMES})
    assert [grid_labels[r] for r in rows] == [0, 1, 2, 0]
    assert titles == ['circle', 'square', 'triangle', 'circle']
    assert loop.attention_rows(None, None) == ([0, 1, 2, 3], None)


def test_a_class_name_wins_over_an_index():
    names = ['2', 'a', 'b']
    assert generate.class_index('2', names, 3) == 0      # the name '2', not index 2
    assert generate.class_index('1', names, 3) == 1      # no class named '1': the index
    assert generate.class_index('b', names, 3) == 2
    assert generate.class_index('2', None, 3) == 2       # no names at all
    many = [f'class{i}' for i in range(25)]
    with pytest.raises(generate.cli.UsageError) as error:
        generate.class_index('dog', many, 25)
    message = str(error.value)
    assert 'class9' in message and 'class10' not in message and '25 in all' in message
    help_text = ' '.join(generate.build_parser().format_help().split())
    assert 'an integer that is also a class name means the name' in help_text
    assert '--class square' in help_text and '--class_grid' in help_text  # the examples


ERRORS = {  # name: (arguments, fragments of the one error line)
    'unknown_name': (['--model_dir', '{cond}', '--class', 'hexagon'],
                     ['hexagon', 'circle, square, triangle', '0 to 2']),
    'index_out_of_range': (['--model_dir', '{cond}', '--class', '3'], ['3', 'out of range']),
    'negative_index': (['--model_dir', '{cond}', '--class', '-1'], ['out of range']),
    'class_unconditional': (['--model_dir', '{plain}', '--class', '0'],
                            ['--class', 'unconditional']),
    'class_pretrained': (['--pretrained', 'cifar10', '--class', '0'],
                         ['--pretrained cifar10', 'unconditional']),
    'grid_unconditional': (['--model_dir', '{plain}', '--class_grid'],
                           ['--class_grid', 'unconditional']),
    'grid_and_walk': (['--model_dir', '{cond}', '--class_grid', '--interpolate', '3'],
                      ['--class_grid', '--interpolate']),
    'grid_not_png': (['--model_dir', '{cond}', '--class_grid', '--out', '{tmp}/grid'],
                     ['.png']),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_bad_class_input_gives_one_clear_line(case, cond_dir, fixture_dir, tmp_path, capsys,
                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra, fragments = ERRORS[case]
    argv = [a.format(cond=cond_dir, plain=fixture_dir, tmp=tmp_path) for a in extra]
    assert generate.main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, fragments)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# fid.py: a conditional model's fakes, --per_class
# ---------------------------------------------------------------------------------------

class TinyConditionalGenerator:
    """(z, labels) -> 16x16 images: a per-class colour pattern plus z (TF ops, traceable)."""
    noise_dim, n_classes = 4, 3

    def __init__(self):
        rng = np.random.default_rng(30)
        self.patterns = rng.uniform(-0.8, 0.8, (3, 16, 16, 3)).astype(np.float32)

    def __call__(self, inputs, training=False):
        z, labels = inputs
        noise = tf.tanh(z[:, None, None, :3]) * 0.3
        return tf.gather(tf.constant(self.patterns), labels) + noise, []

    def images(self, noise, labels):
        return utils.to_uint8(self((tf.constant(noise, tf.float32),
                                    tf.constant(labels, tf.int32)))[0].numpy())


@pytest.fixture(scope='module')
def small_graph(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('graph') / fid.TF2015_FILE)
    _make_fake_tf2015_graph(path, dim=32, seed=3)
    return path, fid.TF2015Inception(path)


PER_CLASS_REALS = {'circle': 6, 'square': 3, 'triangle': 1}  # triangle: too few


def fid_model_dir(tmp_path, monkeypatch, classes=NAMES):
    """A model dir whose EMA generator is TinyConditionalGenerator, and labelled reals."""
    gen = TinyConditionalGenerator()
    monkeypatch.setattr(checkpoints, 'load_generator', lambda model_dir, ema: gen)
    run = tmp_path / 'run'
    run.mkdir()
    utils.write_json(run / config.CONFIG_FILE, config.get_config('tiny', n_classes=3))
    utils.write_json(run / config.CLASSES_FILE, {'names': classes, 'counts': [3, 1, 0]})
    rng = np.random.default_rng(31)
    for k, (name, n) in enumerate(PER_CLASS_REALS.items()):
        noisy = gen.patterns[k] + rng.normal(0, 0.3, (n, 16, 16, 3))
        _save_pngs(utils.to_uint8(noisy), str(tmp_path / 'real' / name))
    return gen, run


def test_per_class_fid_and_swd_equal_the_metrics_of_the_class_subsets(tmp_path, monkeypatch,
                                                                      small_graph, capsys):
    graph, ext = small_graph
    gen, run = fid_model_dir(tmp_path, monkeypatch)
    n_fake = 5
    assert fid.main(['--eval_dir', str(tmp_path / 'real'), '--model_dir', str(run),
                     '--n_fake', str(n_fake), '--metrics', 'fid,pr,swd', '--per_class',
                     '--network', 'tf2015', '--inception_path', graph, '--batch_size', '4',
                     '--cache_dir', str(tmp_path / 'cache')]) == 0
    err = capsys.readouterr().err
    res = json.loads((run / 'eval-tf2015.json').read_text())

    # The overall fakes: labels drawn with classes.json's counts (3, 1, 0), the same seed.
    z = np.random.default_rng(0).standard_normal((n_fake, 4))
    labels = sampling.sample_labels(n_fake, [3, 1, 0], 0)
    fakes = gen.images(z, labels)
    all_real = sorted(str(p) for p in (tmp_path / 'real').rglob('*.png'))
    real_images = np.concatenate(list(fid.read_images(all_real, 16, 4)))
    real_f = ext(real_images)['features']
    expected = metrics.compute_metrics(real_f, ext(fakes), ['fid', 'pr'])
    assert res['fake_classes'] == 'classes.json frequencies' and 2 not in labels
    assert res['fid'] == pytest.approx(expected['fid'], rel=1e-4)
    assert res['swd'] == pytest.approx(metrics.swd(real_images, fakes)['swd'], rel=1e-6)

    per_class = {row['class']: row for row in res['per_class']['classes']}
    assert list(per_class) == NAMES
    for k, name in enumerate(NAMES[:2]):
        files = sorted(str(p) for p in (tmp_path / 'real' / name).glob('*.png'))
        reals = np.concatenate(list(fid.read_images(files, 16, 4)))
        n = min(n_fake, len(files))
        z = np.random.default_rng(class_metrics.fake_seed(0, k)).standard_normal((n, 4))
        class_fakes = gen.images(z, np.full(n, k))
        row = per_class[name]
        assert (row['label'], row['n_real'], row['n_fake']) == (k, len(files), n)
        real_feats, fake_feats = ext(reals)['features'], ext(class_fakes)['features']
        fid_k = metrics.frechet_distance(*metrics.feature_stats(real_feats),
                                         *metrics.feature_stats(fake_feats))
        assert row['fid'] == pytest.approx(fid_k, rel=1e-4)
        assert row['swd'] == pytest.approx(metrics.swd(reals, class_fakes)['swd'], rel=1e-6)
        if n > 3:
            precision, recall = metrics.precision_recall(real_feats, fake_feats)
            assert (row['precision'], row['recall']) == (pytest.approx(precision),
                                                         pytest.approx(recall))
    # square: 3 images are too few for precision/recall (k=3); triangle: 1 real image.
    assert set(per_class['square']['skipped']) == {'pr'}
    assert 'at least 2' in per_class['triangle']['skipped'] and 'fid' not in per_class['triangle']
    mean = res['per_class']['mean']
    assert mean['fid'] == pytest.approx((per_class['circle']['fid'] + per_class['square']['fid'])
                                        / 2)
    assert res['per_class']['n_in_mean'] == {'fid': 2, 'precision': 1, 'recall': 1, 'swd': 2,
                                             'swd_16': 2}
    # The table: a header, a line per class, the mean.
    lines = [line for line in err.replace('\r', '\n').splitlines() if line.strip()]  # tqdm: \r
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ['class', 'label'])
    table = lines[start:start + 5]
    assert [line.split()[0] for line in table] == ['class', *NAMES, 'mean']
    assert 'skipped' in table[3] and f"{per_class['circle']['fid']:.4f}" in table[1]
    assert '(over 1 to 2 of 3 classes)' in table[4] and f"{mean['fid']:.4f}" in table[4]


def test_per_class_with_a_labels_file_and_its_errors(tmp_path, monkeypatch, small_graph,
                                                     capsys):
    graph, _ = small_graph
    gen, run = fid_model_dir(tmp_path, monkeypatch)
    flat = tmp_path / 'flat'  # the same images in one folder, their classes in a CSV
    flat.mkdir()
    rows = []
    for path in sorted((tmp_path / 'real').rglob('*.png')):
        name = f'{path.parent.name}-{path.name}'
        shutil.copy(path, flat / name)
        rows.append(f'{name},{path.parent.name}\n')
    (flat / 'labels.csv').write_text('path,class\n' + ''.join(rows))
    base = ['--model_dir', str(run), '--n_fake', '5', '--metrics', 'fid', '--network',
            'tf2015', '--inception_path', graph, '--batch_size', '4',
            '--cache_dir', str(tmp_path / 'cache')]
    assert fid.main(['--eval_dir', str(tmp_path / 'real'), '--per_class', *base,
                     '--out', str(tmp_path / 'folders.json')]) == 0
    assert fid.main(['--eval_dir', str(flat), '--labels', str(flat / 'labels.csv'),
                     '--per_class', *base, '--out', str(tmp_path / 'csv.json')]) == 0
    capsys.readouterr()
    folders, from_csv = (json.loads((tmp_path / f).read_text())['per_class']
                         for f in ('folders.json', 'csv.json'))
    assert from_csv == folders

    def error(argv):
        assert fid.main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('fid.py: error: '), lines
        return lines[0]

    # Real class names that are not the model's.
    os.rename(tmp_path / 'real' / 'triangle', tmp_path / 'real' / 'hexagon')
    line = error(['--eval_dir', str(tmp_path / 'real'), '--per_class', *base])
    assert 'hexagon' in line and 'triangle' in line and config.CLASSES_FILE in line
    line = error(['--eval_dir', str(flat), '--labels', str(flat / 'labels.csv'), *base])
    assert '--per_class' in line
    line = error(['--eval_dir', str(flat), '--fake_dir', str(flat), '--per_class',
                  '--n_fake', 'all', '--metrics', 'swd'])
    assert '--model_dir' in line
    utils.write_json(run / config.CONFIG_FILE, config.get_config('tiny'))
    line = error(['--eval_dir', str(tmp_path / 'real'), '--per_class', *base])
    assert 'unconditional' in line


# ---------------------------------------------------------------------------------------
# The in-training monitor
# ---------------------------------------------------------------------------------------

class ClassImageGenerator:
    """(z, labels) -> a fixed image per class, whatever z."""
    noise_dim, n_classes = 3, 3

    def __init__(self):
        self.images = np.random.default_rng(32).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)

    def __call__(self, inputs, training=False):
        return tf.gather(tf.constant(self.images), inputs[1]), []


def test_in_loop_fid_draws_the_labels_with_class_counts(tmp_path, monkeypatch):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    drawn = []

    def spy(n, counts, seed):
        drawn.append(real_sample_labels(n, counts, seed))
        return drawn[-1]

    real_sample_labels = sampling.sample_labels
    monkeypatch.setattr(sampling, 'sample_labels', spy)
    real = _save_pngs(np.random.default_rng(33).integers(0, 256, (10, 8, 8, 3), np.uint8),
                      str(tmp_path / 'real'))
    conf = {'n_fid_real': 10, 'fid_batch_size': 4, 'gen_batch_size': 3, 'img_size': 8,
            'n_classes': 3}
    gen = ClassImageGenerator()
    monitor = fid.InLoopFID(str(tmp_path / 'real'), conf, None, class_counts=[0, 1, 0])
    value = monitor(gen)
    assert len(drawn) == 1 and drawn[0].tolist() == [1] * 10
    mu, sigma = metrics.feature_stats(Stub(None)(np.stack([read_png(p) for p in real]))['features'])
    fakes = utils.to_uint8(np.repeat(gen.images[1:2], 10, axis=0))
    expected = metrics.frechet_distance(mu, sigma,
                                        *metrics.feature_stats(Stub(None)(fakes)['features']))
    assert value == pytest.approx(expected, rel=1e-6)
    # None: uniform; a seed gives the same labels every call, no seed fresh ones.
    uniform = fid.InLoopFID(str(tmp_path / 'real'), conf, None)
    assert uniform.class_counts == [1, 1, 1]
    uniform(gen, seed=5)
    uniform(gen, seed=5)
    assert set(drawn[-1]) == {0, 1, 2} and np.array_equal(drawn[-1], drawn[-2])
    uniform(gen)
    uniform(gen)
    assert not np.array_equal(drawn[-1], drawn[-2])
    with pytest.raises(ValueError, match='class_counts'):
        fid.InLoopFID(str(tmp_path / 'real'), conf, None, class_counts=[1, 1])
    # Unconditional: no labels drawn, as before.
    plain = fid.InLoopFID(str(tmp_path / 'real'), {**conf, 'n_classes': 0}, None,
                          class_counts=[1, 2, 3])
    assert not plain.class_counts
