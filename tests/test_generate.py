"""generate.py: sampling, attention plots, interpolation, progress GIF, export, errors.

The command-line runs share one module fixture that starts them all at once (three at a
time), so TensorFlow's start-up is paid in parallel.
"""
import concurrent.futures
import math
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

import checkpoints
import config
import generate
import model as model_lib
import sampling
import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'generate.py')
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}
N, SEED, OTHER_SEED, NOISE_DIM, SIZE = 10, 3, 4, 32, 32
KEYS, STEPS = 3, 4  # interpolation: keyframes and frames per segment


def run_all(commands, cwd, env=ENV, workers=3):
    """{name: CompletedProcess} of `python <argv...>` for {name: argv}, run in parallel."""
    def run(argv):
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=600)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(run, argv) for name, argv in commands.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope='module')
def cli(fixture_dir, tmp_path_factory):
    """Every generate.py run of this module; returns (tmp dir, {name: result})."""
    out = tmp_path_factory.mktemp('generate')
    no_ckpt = out / 'no-checkpoint'
    no_ckpt.mkdir()
    shutil.copy(os.path.join(fixture_dir, 'config.json'), no_ckpt)
    (out / 'afile').write_text('not a directory')
    model = ['--model_dir', fixture_dir]
    sample = [SCRIPT, *model, '--n', str(N), '--batch_size', '4']
    commands = {
        'grid': [*sample, '--seed', str(SEED), '--out', str(out / 'grid.png'), '--attention'],
        'again': [*sample, '--seed', str(SEED), '--out', str(out / 'again.png')],
        'walk': [SCRIPT, *model, '--n', str(KEYS), '--seed', str(SEED), '--batch_size', '4',
                 '--no-jit',
                 '--interpolate', str(STEPS), '--out', str(out / 'walk.gif'),
                 '--export_keras', str(out / 'export' / 'generator.keras'),
                 '--export_savedmodel', str(out / 'export' / 'savedmodel')],
        'unknown_name': [SCRIPT, '--pretrained', 'cifar100', '--out', str(out / 'u.png')],
        'no_checkpoint': [SCRIPT, '--model_dir', str(no_ckpt), '--out', str(out / 'nc.png')],
        'under_a_file': [*sample, '--out', str(out / 'afile' / 'grid.png')],
    }
    return out, run_all(commands, cwd=out)


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_png(path):
    return np.asarray(Image.open(path).convert('RGB'))


def tiles(grid, n, size=SIZE, columns=None):
    columns = columns or math.ceil(math.sqrt(n))
    return np.stack([grid[r * size:(r + 1) * size, c * size:(c + 1) * size]
                     for r, c in (divmod(i, columns) for i in range(n))])


def assert_close_uint8(a, b, max_changed=0.01):
    """Equal up to a few one-level flips (float noise across batch shapes or XLA)."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() <= max_changed, (diff > 0).mean()


@pytest.fixture(scope='module')
def ema_generator(fixture_dir):
    return checkpoints.load_generator(fixture_dir)


def live_uint8(generator, noise):
    return utils.to_uint8(generator(np.asarray(noise, np.float32), training=False)[0])


# ---------------------------------------------------------------------------------------
# In-process: noise, slerp, sampling
# ---------------------------------------------------------------------------------------

def test_sample_noise_is_seeded_and_truncated():
    a = sampling.sample_noise(6, NOISE_DIM, 1)
    assert a.shape == (6, NOISE_DIM) and a.dtype == np.float32
    np.testing.assert_array_equal(a, sampling.sample_noise(6, NOISE_DIM, 1))
    assert not np.allclose(a, sampling.sample_noise(6, NOISE_DIM, 2))
    np.testing.assert_allclose(sampling.sample_noise(6, NOISE_DIM, 1, truncation=0.5), a * 0.5)
    assert abs(a.std() - 1) < 0.2


def test_slerp_follows_the_great_circle():
    z0, z1 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    t = np.linspace(0, 1, 7)
    path = sampling.slerp(z0, z1, t)
    np.testing.assert_allclose(path[0], z0, atol=1e-12)
    np.testing.assert_allclose(path[-1], z1, atol=1e-12)
    angles = np.arctan2(path[:, 1], path[:, 0])
    np.testing.assert_allclose(angles, t * np.pi / 2, atol=1e-12)  # constant angular speed
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1, atol=1e-12)
    assert np.all(path[:, 2] == 0)
    ends = sampling.slerp(z0, 2 * z1, [0, 1])  # other norms: still from z0 to z1
    np.testing.assert_allclose(ends, [z0, 2 * z1], atol=1e-12)
    # Parallel vectors: linear interpolation.
    np.testing.assert_allclose(sampling.slerp(z0, 3 * z0, [0.5])[0], 2 * z0)
    # Unit Gaussian keys stay near the sphere of radius sqrt(d), unlike lerp midpoints.
    keys = sampling.sample_noise(2, 512, 0)
    mid = sampling.slerp(keys[0], keys[1], 0.5)[0]
    assert abs(np.linalg.norm(mid) / np.sqrt(512) - 1) < 0.1
    assert np.linalg.norm((keys[0] + keys[1]) / 2) / np.sqrt(512) < 0.8


def test_interpolation_noise_passes_through_the_keys():
    keys = sampling.sample_noise(4, NOISE_DIM, 0)
    frames = sampling.interpolation_noise(keys, 5)
    assert frames.shape == (3 * 5 + 1, NOISE_DIM)
    np.testing.assert_allclose(frames[::5], keys, atol=1e-6)


def test_generate_reproduces_the_fixture_with_padded_batches(ema_generator, reference):
    # 8 images in batches of 3: the last batch is padded.
    images, attention = sampling.generate(ema_generator, reference['noise'], batch_size=3,
                                          attention=True)
    np.testing.assert_allclose(images, reference['ema_img'], atol=1e-5)
    for stage, key in zip(attention, ('ema_attn_8', 'ema_attn_16', 'ema_attn_32')):
        np.testing.assert_allclose(stage, reference[key], atol=1e-7)
    plain, none = sampling.generate(ema_generator, reference['noise'], batch_size=3)
    assert none is None
    np.testing.assert_array_equal(plain, images)


def test_no_ema_and_truncation_flags(fixture_dir, reference, tmp_path):
    raw = checkpoints.load_generator(fixture_dir, ema=False)
    noise = sampling.sample_noise(4, NOISE_DIM, SEED)
    args = ['--model_dir', fixture_dir, '--n', '4', '--seed', str(SEED), '--no-jit']
    assert generate.main([*args, '--no-ema', '--out', str(tmp_path / 'raw.png')]) == 0
    assert_close_uint8(tiles(read_png(tmp_path / 'raw.png'), 4), live_uint8(raw, noise))
    np.testing.assert_allclose(raw(reference['noise'])[0].numpy(), reference['g_img'], atol=1e-5)

    assert generate.main([*args, '--truncation', '0.5', '--out', str(tmp_path / 'half.png')]) == 0
    ema = checkpoints.load_generator(fixture_dir)
    assert_close_uint8(tiles(read_png(tmp_path / 'half.png'), 4), live_uint8(ema, noise * 0.5))
    assert generate.main([*args, '--truncation', '0', '--out', str(tmp_path / 'zero.png')]) == 0
    zero = tiles(read_png(tmp_path / 'zero.png'), 4)
    assert all(np.array_equal(zero[0], image) for image in zero[1:])  # z = 0 for all


def test_get_config_round_trip(fixture_dir):
    conf = config.load_run_config(fixture_dir)
    for built in (model_lib.build_generator(conf), model_lib.build_discriminator(conf)):
        copy = type(built).from_config(built.get_config())
        assert copy.get_config() == built.get_config()
        assert [w.shape for w in copy.weights] == [w.shape for w in built.weights]
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(built))
        assert type(revived) is type(built) and revived.get_config() == built.get_config()


def test_conv_decoder_generator_export_and_xla_sampling(fixture_dir, tmp_path):
    # A 64x64 generator with a conv decoder (BatchNorm moving statistics in its weights).
    conf = {**config.load_run_config(fixture_dir), 'img_size': 64, 'dec_dim': [8],
            'd_enc_dim': [8, 16, 32]}
    generator = model_lib.build_generator(conf)
    rng = np.random.default_rng(0)
    for weight in generator.weights:  # nothing at its initial value, variances > 0
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32)
                      if 'variance' in weight.path else
                      rng.normal(0, 0.2, weight.shape).astype(np.float32))
    path = generate.export_keras(generator, str(tmp_path / 'dec.keras'))
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == len(generator.weights)  # same order (paths get new names)
    for a, b in zip(loaded.weights, generator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    noise = sampling.sample_noise(3, NOISE_DIM, 0)
    eager = generator(noise, training=False)[0].numpy()
    assert eager.shape == (3, 64, 64, 3)
    np.testing.assert_allclose(loaded(noise, training=False)[0].numpy(), eager, atol=1e-5)
    np.testing.assert_allclose(sampling.generate(generator, noise, batch_size=2)[0], eager,
                               atol=1e-4)


def test_progress_gif_from_training_grids(tmp_path):
    images_dir = tmp_path / 'run' / 'images'
    colours = {8000: 30, 16000: 130, 1_200_000: 230}  # written out of order on purpose
    for n_images in (16000, 1_200_000, 8000):
        grid = np.full((64, 64, 3), colours[n_images], np.uint8)
        utils.save_png(grid, str(images_dir / f'samples-{n_images:09d}.png'))
    (images_dir / 'attention-000008000.png').write_bytes(b'not a sample grid')
    out = tmp_path / 'progress.gif'
    assert generate.main(['--progress_gif', str(tmp_path / 'run'), str(out)]) == 0
    gif = Image.open(out)
    assert gif.n_frames == 3
    firsts = []
    for i in range(3):
        gif.seek(i)
        frame = np.asarray(gif.convert('RGB'))
        assert frame.shape[1] == 64 and frame.shape[0] > 64  # a caption bar below
        firsts.append(int(frame[10, 10, 0]))
    assert firsts == [30, 130, 230]  # ordered by images seen


def test_progress_gif_errors(tmp_path, capsys):
    assert generate.main(['--progress_gif', str(tmp_path), str(tmp_path / 'p.gif')]) == 2
    assert 'samples-' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'p.gif')


# ---------------------------------------------------------------------------------------
# Command line (subprocesses)
# ---------------------------------------------------------------------------------------

def test_grid_matches_the_generator_for_the_seed(cli, ema_generator):
    out, runs = cli
    ok(runs['grid'])
    grid = read_png(out / 'grid.png')
    assert grid.shape == (3 * SIZE, 4 * SIZE, 3)  # 10 images, 4 columns
    expected = live_uint8(ema_generator, sampling.sample_noise(N, NOISE_DIM, SEED))
    assert_close_uint8(tiles(grid, N), expected)


def test_same_seed_identical_different_seed_differs(cli, fixture_dir, tmp_path):
    out, runs = cli
    for name in ('grid', 'again'):
        ok(runs[name])
    grid = read_png(out / 'grid.png')
    np.testing.assert_array_equal(read_png(out / 'again.png'), grid)
    # In-process runs of main() (no XLA, to save time) from here on.
    model = ['--model_dir', fixture_dir, '--n', str(N), '--no-jit']
    assert generate.main([*model, '--seed', str(OTHER_SEED), '--batch_size', '4',
                          '--out', str(tmp_path / 'other.png')]) == 0
    other = read_png(tmp_path / 'other.png')
    assert (np.abs(other.astype(int) - grid.astype(int)) > 2).mean() > 0.5
    # One PNG per image in a directory; another batch size gives the same images.
    assert generate.main([*model, '--seed', str(SEED), '--batch_size', str(N),
                          '--out', str(tmp_path / 'pngs')]) == 0
    files = sorted(os.listdir(tmp_path / 'pngs'))
    assert files == [f'{i:06d}.png' for i in range(N)]
    singles = np.stack([read_png(tmp_path / 'pngs' / f) for f in files])
    assert_close_uint8(singles, tiles(grid, N))


def test_attention_pages(cli):
    out, runs = cli
    ok(runs['grid'])
    pages = sorted(f for f in os.listdir(out) if f.startswith('grid_attention'))
    assert pages == ['grid_attention-000.png', 'grid_attention-001.png']  # 8 + 2 images
    first, second = (read_png(out / page) for page in pages)
    assert first.shape[1] == second.shape[1] > 7 * SIZE  # image + 3 stages x 2 heads
    assert first.shape[0] / second.shape[0] == pytest.approx(4, rel=0.05)
    assert first.std() > 10


def test_interpolation_gif_and_strip(cli, ema_generator):
    out, runs = cli
    ok(runs['walk'])
    keys = sampling.sample_noise(KEYS, NOISE_DIM, SEED)
    strip = read_png(out / 'walk.png')
    assert strip.shape == ((KEYS - 1) * SIZE, (STEPS + 1) * SIZE, 3)
    rows = [tiles(strip[r * SIZE:(r + 1) * SIZE], STEPS + 1, columns=STEPS + 1)
            for r in range(KEYS - 1)]
    expected = live_uint8(ema_generator, np.concatenate([
        sampling.slerp(a, b, np.arange(STEPS + 1) / STEPS) for a, b in zip(keys, keys[1:])]))
    assert_close_uint8(np.concatenate(rows), expected.reshape(-1, SIZE, SIZE, 3))
    # The keyframes are the samples of the same seed.
    assert_close_uint8(np.stack([rows[0][0], rows[1][0], rows[1][-1]]),
                       live_uint8(ema_generator, keys))
    # Slerp, not lerp: the midpoint of lerp gives other images.
    lerp_mid = live_uint8(ema_generator, (keys[:1] + keys[1:2]) / 2)[0]
    assert np.abs(lerp_mid.astype(int) - rows[0][STEPS // 2].astype(int)).max() > 1

    gif = Image.open(out / 'walk.gif')
    assert gif.n_frames == (KEYS - 1) * STEPS + 1 and gif.size == (SIZE, SIZE)
    assert gif.info.get('loop') == 0
    first_last = []
    for index in (0, gif.n_frames - 1):
        gif.seek(index)
        first_last.append(np.asarray(gif.convert('RGB')).astype(int))
    # Up to the 256-colour palette (these noisy tiny-model images have 1024 colours each).
    for frame, same, other in ((first_last[0], rows[0][0], rows[1][-1]),
                               (first_last[1], rows[1][-1], rows[0][0])):
        error = np.abs(frame - same).mean()
        assert error < 8 and error < 0.5 * np.abs(frame - other).mean()


RELOAD = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    export, out = sys.argv[1], sys.argv[2]
    noise = np.load(sys.argv[3])
    # The SavedModel needs no project code.
    served = tf.saved_model.load(export + '/savedmodel')
    signature = served.signatures['serving_default']
    uint8 = signature(noise=tf.constant(noise))['images'].numpy()
    spec = signature.structured_input_signature[1]['noise']
    generated = served.generate(tf.constant(noise))
    assert 'model' not in sys.modules and 'ladaformer' not in sys.modules
    # The .keras file needs the registered LadaGAN classes.
    sys.path.insert(0, sys.argv[4])
    import keras
    import model
    loaded = keras.saving.load_model(export + '/generator.keras')
    keras_images, keras_attention = loaded(noise, training=False)
    np.savez(out, uint8=uint8, float=generated['images'].numpy(),
             attn_32=generated['attn_32'].numpy(), keras=keras_images.numpy(),
             keras_attn_32=keras_attention[2].numpy(), spec_shape=np.array(spec.shape.as_list()[1:]),
             spec_batch=np.array(spec.shape[0] is None), uint8_dtype=str(uint8.dtype),
             weights=np.array([float(np.sum(np.abs(w))) for w in loaded.get_weights()]),
             n_weights=len(loaded.weights), name=loaded.name, cls=type(loaded).__name__)
''')


def test_exports_reload_in_a_fresh_process(cli, ema_generator, reference):
    out, runs = cli
    ok(runs['walk'])
    noise = reference['noise'][:5]  # another batch size than the export ever saw
    np.save(out / 'noise.npy', noise)
    result = subprocess.run([sys.executable, '-c', RELOAD, str(out / 'export'),
                             str(out / 'reloaded.npz'), str(out / 'noise.npy'), ROOT],
                            capture_output=True, text=True, env=ENV, cwd=out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out / 'reloaded.npz')
    live_images, live_attention = ema_generator(noise, training=False)
    live_images = live_images.numpy()

    # .keras: same class, same weights, same images.
    assert str(got['cls']) == 'Generator' and int(got['n_weights']) == len(ema_generator.weights)
    np.testing.assert_allclose(got['weights'],
                               [np.sum(np.abs(w)) for w in ema_generator.get_weights()],
                               rtol=0, atol=0)
    np.testing.assert_allclose(got['keras'], live_images, atol=1e-5)
    np.testing.assert_allclose(got['keras_attn_32'], live_attention[2].numpy(), atol=1e-7)

    # SavedModel: float32 (None, noise_dim) -> uint8 images with the to_uint8 rule.
    assert list(got['spec_shape']) == [NOISE_DIM] and bool(got['spec_batch'])
    assert str(got['uint8_dtype']) == 'uint8' and got['uint8'].shape == (5, SIZE, SIZE, 3)
    np.testing.assert_allclose(got['float'], live_images, atol=1e-5)
    np.testing.assert_allclose(got['attn_32'], live_attention[2].numpy(), atol=1e-7)
    expected = utils.to_uint8(live_images)
    differ = got['uint8'] != expected
    # Only where float noise crosses an integer level (0 places in practice).
    scaled = np.clip(live_images * 127.5 + 127.5, 0, 255)
    near_level = np.abs(scaled - np.round(scaled)) < 1e-3
    assert not np.any(differ & ~near_level)
    assert np.abs(got['uint8'].astype(int) - expected.astype(int)).max() <= 1


SUBPROCESS_ERRORS = {
    'unknown_name': ('cifar100', 'cifar10', 'celeba_64', 'ffhq_128', 'bedroom_128'),
    'no_checkpoint': ('no checkpoint', 'no-checkpoint'),
    'under_a_file': ('afile', 'not a directory'),
}


def assert_one_error_line(stderr, fragments):
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), stderr[-3000:]
    assert [line for line in lines if 'error' in line.lower()] == lines[-1:], lines
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.mark.parametrize('case', sorted(SUBPROCESS_ERRORS))
def test_bad_input_gives_one_clear_line(case, cli):
    out, runs = cli
    result = runs[case]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert_one_error_line(result.stderr, SUBPROCESS_ERRORS[case])
    assert not any(f.startswith(('u.png', 'nc.png')) for f in os.listdir(out))


def read_only_target(tmp_path):
    if os.geteuid() != 0:
        read_only = tmp_path / 'read-only'
        read_only.mkdir()
        read_only.chmod(0o555)
        return str(read_only / 'grid.png')
    if os.path.isdir('/proc'):  # root may write into read-only directories, not into /proc
        return '/proc/ladagan-test/grid.png'
    pytest.skip('no read-only directory to test with')


IN_PROCESS_ERRORS = {  # name: (arguments after --model_dir, fragments of the message)
    'n_zero': (['--n', '0'], ['--n', 'positive']),
    'n_negative': (['--n', '-3'], ['--n', 'positive']),
    'batch_size_zero': (['--batch_size', '0'], ['--batch_size', 'positive']),
    'negative_truncation': (['--truncation', '-1'], ['--truncation', '>= 0']),
    'dir_under_a_file': (['--out', '{tmp}/afile/pngs'], ['afile', 'not a directory']),
    'keras_under_a_file': (['--export_keras', '{tmp}/afile/g.keras'], ['afile', 'not a directory']),
    'read_only': (['--out', '{read_only}'], ['not writable']),
    'jpeg_out': (['--out', '{tmp}/x.jpg'], ['.png']),
    'grid_too_big': (['--n', '5000', '--out', '{tmp}/big.png'], ['directory']),
    'one_keyframe': (['--n', '1', '--interpolate', '4'], ['--n 2']),
    'two_sources': (['--pretrained', 'cifar10'], ['either']),
}


@pytest.mark.parametrize('case', sorted(IN_PROCESS_ERRORS))
def test_bad_input_in_process(case, fixture_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'afile').write_text('not a directory')
    extra, fragments = IN_PROCESS_ERRORS[case]
    targets = {'tmp': str(tmp_path)}
    if '{read_only}' in extra:
        targets['read_only'] = read_only_target(tmp_path)
    argv = ['--model_dir', fixture_dir, *[a.format(**targets) for a in extra]]
    try:
        code = generate.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, fragments)
    assert sorted(os.listdir(tmp_path)) == ['afile'] + (['read-only'] if os.geteuid() else [])
