"""Tests of fid.py: the feature networks on small stand-ins, the statistics cache, the
in-training monitor and the CLI's errors (the metric maths: tests/test_metrics.py). Nothing
is downloaded.

Tolerances: float64 metrics agree to 1e-6 relative; features from float32 graphs to 1e-5.
"""
import json
import os
import subprocess
import sys
import urllib.error
import warnings

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fid  # noqa: E402
import metrics  # noqa: E402
import sampling  # noqa: E402
from test_metrics import _shapes_like  # noqa: E402

# ---------------------------------------------------------------------------------------
# uint8 quantisation and image files
# ---------------------------------------------------------------------------------------


class ConstantGenerator:
    """Ignores the noise; returns the first rows of fixed images (TF ops, so it traces)."""

    def __init__(self, images, noise_dim=3):
        self.images, self.noise_dim, self.seen = np.asarray(images, np.float32), noise_dim, []

    def __call__(self, z, training):
        import tensorflow as tf
        assert not training
        self.seen.append(tuple(z.shape))
        return tf.constant(self.images)[:z.shape[0]], []


def test_fakes_are_quantised_as_the_authors_pngs():
    # x*127.5 + 127.5, clipped, then TRUNCATED (the authors' astype('uint8')):
    # 0 -> 127.5 -> 127 and 0.999 -> 254.37 -> 254.
    values = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32)
    gen = ConstantGenerator(np.broadcast_to(values[:, None, None, None], (6, 2, 2, 3)))
    (batch,) = list(sampling.FakeSampler(gen, batch_size=6).batches(6))
    assert batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[:, 0, 0, 0], [0, 0, 127, 254, 255, 255])


def _save_pngs(images, directory):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = os.path.join(directory, f'{i:04d}.png')
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def test_read_images_converts_gray_and_rgba_and_resizes(tmp_path):
    rgb = np.random.default_rng(9).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / 'a_gray.png')
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 7, np.uint8)])).save(tmp_path / 'b_rgba.png')
    Image.fromarray(rgb).save(tmp_path / 'c_rgb.png')
    paths = fid.find_images(str(tmp_path / '*.png'))
    (batch,) = list(fid.read_images(paths, 8, batch_size=3))
    assert batch.dtype == np.uint8 and batch.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(batch[0], np.dstack([gray] * 3))
    np.testing.assert_array_equal(batch[1], rgb)
    np.testing.assert_array_equal(batch[2], rgb)
    # Resize: a constant image stays constant; the batch is 4x4.
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / 'd_const.png')
    batches = list(fid.read_images([str(tmp_path / 'd_const.png')], 4, batch_size=2))
    np.testing.assert_array_equal(batches[0], np.full((1, 4, 4, 3), 200, np.uint8))


def test_generated_images_of_mixed_sizes_are_rejected(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'b.png')
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(tmp_path / 'c.png')
    paths = fid.find_images(str(tmp_path))
    with pytest.raises(fid.FIDError, match=r'one size, got 8x8 .*a.png.* and 16x16 .*b.png'):
        fid.common_size(paths)
    with pytest.raises(fid.FIDError, match=r'square .* got 6x8'):
        fid.common_size(paths[2:])
    assert fid.common_size(paths[:1]) == 8
    # With a size given they are resized.
    assert [b.shape for b in fid.read_images(paths, 8, 3)] == [(3, 8, 8, 3)]


def test_empty_directories_and_bad_files_are_clear_errors(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(fid.FIDError, match='holds no image files'):
        fid.find_images(str(tmp_path / 'empty'))
    with pytest.raises(fid.FIDError, match='No file matches'):
        fid.find_images(str(tmp_path / 'nothing' / '*.png'))
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'x.png').write_bytes(b'not a png')
    with pytest.warns(UserWarning), pytest.raises(fid.FIDError, match='None of the 1'):
        fid.find_images(str(tmp_path / 'bad'))


# ---------------------------------------------------------------------------------------
# Feature networks
# ---------------------------------------------------------------------------------------


def _make_fake_tf2015_graph(path, size=8, dim=2048, seed=0):
    """A GraphDef with the 2015 graph's interface: JPEG decoder -> 'ExpandDims' ->
    resize -> (x-128)/128 -> 1x1 conv to dim -> 'pool_3' (B,1,1,dim) -> a batch-1
    'pool_3/_reshape' -> 'softmax/logits/MatMul' -> 'softmax/logits' -> 'softmax'."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(3, dim)).astype(np.float32)
    weights = (rng.normal(size=(dim, 1008)) * 0.01).astype(np.float32)
    bias = rng.normal(size=1008).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name='DecodeJpeg/contents')
        x = tf.cast(tf.io.decode_jpeg(contents, channels=3, name='DecodeJpeg'), tf.float32)
        x = tf.expand_dims(x, 0, name='ExpandDims')
        x = tf.raw_ops.ResizeBilinear(images=x, size=[size, size], name='ResizeBilinear')
        x = tf.nn.conv2d((x - 128.0) / 128.0, kernel[None, None], 1, 'VALID')
        pool = tf.nn.avg_pool2d(x, size, size, 'VALID', name='pool_3')
        flat = tf.reshape(pool, [1, dim], name='pool_3/_reshape')  # static batch 1
        logits = tf.matmul(flat, tf.constant(weights, name='softmax/weights'),
                           name='softmax/logits/MatMul')
        tf.nn.softmax(tf.nn.bias_add(logits, bias, name='softmax/logits'), name='softmax')
    with open(path, 'wb') as f:
        f.write(graph.as_graph_def().SerializeToString())
    return kernel, weights


@pytest.fixture(scope='module')
def fake_graph(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('graph') / fid.TF2015_FILE)
    kernel, weights = _make_fake_tf2015_graph(path)
    return path, kernel, weights


@pytest.fixture(scope='module')
def fake_tf2015(fake_graph):
    return fid.TF2015Inception(fake_graph[0])


@pytest.fixture(scope='module')
def small_graph(tmp_path_factory):
    # 64-d features for the end-to-end tests: sqrtm of a 2048x2048 matrix takes about
    # a minute on 2 CPU cores.
    path = str(tmp_path_factory.mktemp('small') / fid.TF2015_FILE)
    _make_fake_tf2015_graph(path, dim=64, seed=1)
    return path, fid.TF2015Inception(path)


def test_tf2015_loader_on_a_small_graph(fake_graph, fake_tf2015):
    _, kernel, weights = fake_graph
    images = np.random.default_rng(10).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    out = fake_tf2015(images)  # batch 5 although the graph's reshape is batch 1
    expected = ((images.astype(np.float64) - 128) / 128).mean(axis=(1, 2)) @ kernel
    assert out['features'].shape == (5, 2048) and out['logits'].shape == (5, 1008)
    np.testing.assert_allclose(out['features'], expected, rtol=1e-5, atol=1e-5)
    # IS logits are pool_3 @ W without the bias, as the TTUR/OpenAI code.
    np.testing.assert_allclose(out['logits'], expected @ weights, rtol=1e-4, atol=1e-5)
    # Images are fed at their own size: the graph resizes them.
    assert fake_tf2015(images[:2, :4, :4])['features'].shape == (2, 2048)
    assert fid.get_extractor('tf2015', fake_graph[0]).name.startswith('tf2015-')


def test_tf2015_rejects_a_graph_without_the_tensors(tmp_path):
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(1.0, name='something')
    path = tmp_path / 'other.pb'
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(fid.FIDError, match='ExpandDims'):
        fid.TF2015Inception(str(path))


@pytest.mark.skipif(not os.environ.get('LADAGAN_INCEPTION_2015'),
                    reason='set LADAGAN_INCEPTION_2015 to classify_image_graph_def.pb')
def test_tf2015_real_graph():
    ext = fid.TF2015Inception(os.environ['LADAGAN_INCEPTION_2015'])
    images = np.random.default_rng(11).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = ext(images)
    assert out['features'].shape == (3, 2048) and out['logits'].shape == (3, 1008)
    assert (out['features'] >= 0).all()  # pool_3 averages ReLU outputs
    one = ext(images[1:2])
    np.testing.assert_allclose(one['features'][0], out['features'][1], rtol=1e-4, atol=1e-4)


def test_tf2015_offline_without_file_is_unavailable(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(fid, '_download', offline)
    with pytest.raises(fid.FIDUnavailable) as info:
        fid.get_tf2015_graph(cache_dir=str(tmp_path / 'cache'))
    message = str(info.value)
    assert fid.TF2015_URL in message and '--inception_path' in message
    assert str(tmp_path / 'cache') in message and '\n' not in message
    with pytest.raises(fid.FIDUnavailable, match='not found'):
        fid.get_tf2015_graph(str(tmp_path / 'missing.pb'))


def test_tf2015_graph_is_taken_from_cache_or_tgz(tmp_path, monkeypatch, fake_graph):
    import tarfile
    tgz = tmp_path / 'inception.tgz'
    with tarfile.open(tgz, 'w:gz') as tar:
        tar.add(fake_graph[0], arcname=fid.TF2015_FILE)
    downloads = []

    def fake_download(url, dest):
        downloads.append(url)
        with open(tgz, 'rb') as src, open(dest, 'wb') as dst:
            dst.write(src.read())

    monkeypatch.setattr(fid, '_download', fake_download)
    cache = str(tmp_path / 'cache')
    path = fid.get_tf2015_graph(cache_dir=cache)
    assert path == os.path.join(cache, fid.TF2015_FILE) and downloads == [fid.TF2015_URL]
    assert open(path, 'rb').read() == open(fake_graph[0], 'rb').read()
    assert fid.get_tf2015_graph(cache_dir=cache) == path and len(downloads) == 1


def test_keras_inception_random_weights_gives_2048_features():
    ext = fid.KerasInception(weights=None)
    images = np.random.default_rng(12).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    feats = ext(images)['features']
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert feats.std() > 0
    # The same images give the same features, whatever else is in the batch.
    np.testing.assert_allclose(ext(images[::-1])['features'][::-1], feats, rtol=1e-4, atol=1e-5)


def test_keras_inception_falls_back_when_xla_cannot_compile():
    import tensorflow as tf
    ext = object.__new__(fid.KerasInception)
    ext._jit, ext._fn = True, None
    # numpy_function has no XLA kernel: the jit-compiled call fails, the plain one works.
    ext._forward = lambda images: tf.numpy_function(
        lambda x: x.reshape(len(x), -1).astype(np.float32), [images], tf.float32)
    images = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(ext(images)['features'], images.reshape(2, -1))
    np.testing.assert_array_equal(ext(images)['features'], images.reshape(2, -1))


def test_keras_inception_offline_is_unavailable(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception('URL fetch failure on https://storage.googleapis.com/...')

    monkeypatch.setattr(keras.applications, 'InceptionV3', offline)
    with pytest.raises(fid.FIDUnavailable, match=fid.KERAS_WEIGHTS_FILE):
        fid.KerasInception(weights='imagenet')
    with pytest.raises(fid.FIDUnavailable, match='not found'):
        fid.KerasInception(weights='/nonexistent/weights.h5')
    with pytest.raises(fid.FIDError, match='unknown network'):
        fid.get_extractor('vgg')


# ---------------------------------------------------------------------------------------
# Feature passes, PNG round trip, statistics cache
# ---------------------------------------------------------------------------------------


def test_in_memory_uint8_features_equal_png_round_trip(tmp_path, fake_tf2015):
    import tensorflow as tf

    class ReshapeGenerator:  # z -> 0.6 z as an 8x8 RGB image: values beyond [-1, 1] too
        noise_dim = 8 * 8 * 3

        def __call__(self, z, training):
            return tf.reshape(z, [-1, 8, 8, 3]) * 0.6, []

    batches = list(sampling.FakeSampler(ReshapeGenerator(), batch_size=4).batches(7, seed=13))
    assert [len(b) for b in batches] == [4, 3]
    in_memory = fid.compute_features(batches, fake_tf2015)
    z = np.random.default_rng(13).standard_normal((7, 192)).astype(np.float32)
    x = z.reshape(7, 8, 8, 3) * np.float32(0.6)
    # The authors write PNGs of np.clip(x * 127.5 + 127.5, 0, 255).astype('uint8').
    pngs = np.clip(x * 127.5 + 127.5, 0, 255).astype('uint8')
    paths = _save_pngs(pngs, str(tmp_path / 'png'))
    from_files = fid.compute_features(fid.read_images(paths, 8, batch_size=4), fake_tf2015)
    np.testing.assert_array_equal(in_memory['features'], from_files['features'])
    np.testing.assert_array_equal(in_memory['logits'], from_files['logits'])


def test_compute_features_keeps_n_and_pads_the_last_batch():
    seen = []

    def extractor(batch):
        seen.append(len(batch))
        return {'features': batch.reshape(len(batch), -1).astype(np.float32)}

    batches = [np.full((4, 2, 2, 3), i, np.uint8) for i in range(3)]
    out = fid.compute_features(batches, extractor, n=10)
    assert out['features'].shape == (10, 12) and seen == [4, 4, 4]
    np.testing.assert_array_equal(out['features'][:, 0], [0] * 4 + [1] * 4 + [2] * 2)
    with pytest.raises(fid.FIDError, match='got 12 images, expected 20'):
        fid.compute_features(batches, extractor, n=20)


class CountingExtractor:
    """Features = the first pixels of the image; counts its calls (feature passes)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return {'features': batch.reshape(len(batch), -1)[:, :16].astype(np.float32)}


@pytest.fixture
def real_files(tmp_path):
    images = np.random.default_rng(14).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    return _save_pngs(images, str(tmp_path / 'real'))


def test_real_stats_cache_is_reused_and_invalidated(tmp_path, real_files):
    cache = str(tmp_path / 'stats')
    ext = CountingExtractor()

    def stats(files, n, img_size=8):
        return fid.real_stats(files, n, img_size, 'counting', ext, cache, batch_size=5)

    first = stats(real_files, 10)  # batches of 5: two passes
    assert ext.calls == 2 and not first['from_cache'] and os.path.isfile(first['path'])
    second = stats(real_files, 10)
    assert ext.calls == 2 and second['from_cache'] and second['path'] == first['path']
    np.testing.assert_array_equal(second['features'], first['features'])
    mu, sigma = metrics.feature_stats(first['features'])
    np.testing.assert_allclose(second['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(second['sigma'], sigma, rtol=1e-12)
    # Anything the statistics depend on changes the key.
    assert not stats(real_files, 9)['from_cache'] and ext.calls == 4
    assert not stats(real_files[1:], 10)['from_cache'] and ext.calls == 6
    assert not stats(real_files, 10, img_size=4)['from_cache'] and ext.calls == 8
    os.utime(real_files[0], ns=(1, 1))  # an edited file
    assert not stats(real_files, 10)['from_cache'] and ext.calls == 10
    assert stats(real_files, 10)['from_cache'] and ext.calls == 10
    assert not [f for f in os.listdir(cache) if f.endswith('.tmp')]


def test_real_stats_with_fewer_images_than_asked(tmp_path, real_files):
    with pytest.raises(fid.FIDError, match='asked for 20 real images but only 12'):
        fid.real_stats(real_files, 20, 8, 'counting', CountingExtractor(), str(tmp_path))


def test_select_files_takes_all_when_asked_for_more_and_says_so(real_files, capsys):
    assert fid.select_files(real_files, 20, seed=0, what='real images') == real_files
    captured = capsys.readouterr()
    assert captured.err == 'asked for 20 real images but only 12 exist: using all 12\n'
    assert fid.select_files(real_files, 12, seed=0) == real_files  # all, silently
    assert capsys.readouterr().err == ''


def test_stats_key_depends_on_the_crop(real_files):
    keys = {crop: fid.stats_key(real_files, 12, 8, 'net', 'bilinear', crop)
            for crop in ('none', 'center')}
    assert keys['none'] != keys['center']
    assert keys['none'] == fid.stats_key(real_files, 12, 8, 'net', 'bilinear')  # default


def test_read_images_center_crop(tmp_path):
    wide = np.random.default_rng(15).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / 'wide.png')
    (batch,) = list(fid.read_images([str(tmp_path / 'wide.png')], 8, crop='center'))
    np.testing.assert_array_equal(batch[0], wide[:, 4:12])  # the centre 8x8 square


def test_select_files_is_seeded():
    paths = [f'{i}.png' for i in range(50)]
    a = fid.select_files(paths, 10, seed=0)
    assert a == fid.select_files(paths, 10, seed=0) and len(set(a)) == 10
    assert a != fid.select_files(paths, 10, seed=1)
    assert fid.select_files(paths, 'all', seed=0) == paths


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'fid.py'), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def bad_inputs(tmp_path, real_files):
    (tmp_path / 'empty').mkdir()
    mixed = tmp_path / 'mixed'
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / 'a.png')
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / 'b.png')
    return {'REAL': os.path.dirname(real_files[0]), 'EMPTY': str(tmp_path / 'empty'),
            'MIXED': str(mixed)}


@pytest.mark.parametrize('extra,message', [
    (['--eval_dir', '/nonexistent/*.png', '--fake_dir', 'REAL'], 'No file matches'),
    (['--eval_dir', 'EMPTY', '--fake_dir', 'REAL'], 'holds no image files'),
    (['--fake_dir', 'EMPTY'], 'holds no image files'),
    (['--fake_dir', 'MIXED'], 'must be square and of one size'),
    (['--network', 'tf2015', '--inception_path', '/nonexistent.pb', '--fake_dir', 'REAL'],
     'Inception graph not found'),
    (['--network', 'keras', '--inception_path', '/nonexistent.h5', '--fake_dir', 'REAL'],
     'weights file not found'),
    (['--model_dir', '/nonexistent'], 'is not a directory'),
    (['--metrics', 'fid,xyz', '--fake_dir', 'REAL'], 'unknown metrics'),
])
def test_cli_errors_are_one_line(extra, message, bad_inputs, capsys):
    args = [bad_inputs.get(a, a) for a in extra]
    if '--eval_dir' not in args:
        args = ['--eval_dir', bad_inputs['REAL']] + args
    if '--fake_dir' in args and '--n_fake' not in args:
        args += ['--n_fake', 'all']
    assert fid.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fid.py: error:'), captured.err
    assert message in lines[0] and not captured.out


def test_cli_error_in_a_subprocess_is_one_line_without_traceback(bad_inputs):
    result = _cli('--eval_dir', bad_inputs['EMPTY'], '--fake_dir', bad_inputs['REAL'])
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    # The error is the last line (TensorFlow may log lines of its own before it).
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('fid.py: error:') and 'holds no image files' in last, result.stderr


def test_cli_tf2015_offline_without_the_file_is_one_line(tmp_path, monkeypatch, capsys,
                                                          real_files):
    def offline(url, dest):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(fid, '_download', offline)
    monkeypatch.setattr(fid, 'CACHE_ROOT', str(tmp_path / 'cache'))
    code = fid.main(['--eval_dir', os.path.dirname(real_files[0]), '--fake_dir',
                     os.path.dirname(real_files[0]), '--n_fake', 'all'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith('fid.py: error: cannot download the Inception 2015 graph')
    assert fid.TF2015_FILE in err and str(tmp_path / 'cache') in err


def test_cli_end_to_end_on_the_small_graph(tmp_path, small_graph):
    graph, ext = small_graph
    rng = np.random.default_rng(15)
    real = _save_pngs(rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8), str(tmp_path / 'r'))
    fake = _save_pngs(rng.integers(0, 200, (20, 8, 8, 3), dtype=np.uint8), str(tmp_path / 'f'))
    out = tmp_path / 'res.json'
    args = ['--eval_dir', str(tmp_path / 'r' / '*.png'), '--fake_dir', str(tmp_path / 'f'),
            '--n_fake', '20', '--metrics', 'fid,kid,is,pr', '--network', 'tf2015',
            '--inception_path', graph, '--batch_size', '8', '--cache_dir',
            str(tmp_path / 'c'), '--out', str(out)]
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    res = json.loads(out.read_text())
    real_f = fid.compute_features(fid.read_images(real, 8, 8), ext)['features']
    fake_o = fid.compute_features(fid.read_images(fake, 8, 8), ext)
    expected = metrics.compute_metrics(real_f, fake_o, ['fid', 'kid', 'is', 'pr'])
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert res['n_real'] == 30 and res['n_fake'] == 20 and res['network'] == 'tf2015'
    assert res['fid_method'] == 'sqrtm' and not res['real_stats_cached']
    assert os.path.isfile(res['real_stats'])
    # Second run: the real statistics come from the cache; eigh gives the same FID.
    result = _cli(*args, '--fid_method', 'eigh')
    assert result.returncode == 0, result.stderr
    again = json.loads(out.read_text())
    assert again['real_stats_cached'] and again['real_stats'] == res['real_stats']
    assert again['fid'] == pytest.approx(res['fid'], rel=1e-6)


def test_model_dir_uses_the_ema_generator(tmp_path, monkeypatch, small_graph):
    import tensorflow as tf

    import checkpoints
    import utils
    graph, ext = small_graph
    calls = {}

    class TinyGenerator:
        noise_dim = 4

        def __call__(self, z, training):
            assert not training
            img = tf.tanh(z[:, None, None, :3]) * tf.ones((1, 8, 8, 1))
            return img, []

    def load_generator(model_dir, ema):
        calls['args'] = (model_dir, ema)
        return TinyGenerator()

    monkeypatch.setattr(checkpoints, 'load_generator', load_generator)
    real = _save_pngs(np.random.default_rng(16).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
                      str(tmp_path / 'r'))
    model_dir = tmp_path / 'run'
    model_dir.mkdir()
    argv = ['--eval_dir', str(tmp_path / 'r'), '--model_dir', str(model_dir), '--n_fake', '10',
            '--network', 'tf2015', '--inception_path', graph, '--batch_size', '4',
            '--cache_dir', str(tmp_path / 'c'), '--metrics', 'fid,is']
    assert fid.main(argv) == 0
    assert calls['args'] == (str(model_dir), True)
    res = json.loads((model_dir / 'eval-tf2015.json').read_text())
    z = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    fakes = utils.to_uint8(TinyGenerator()(z, False)[0].numpy())
    real_f = fid.compute_features(fid.read_images(real, 8, 4), ext)['features']
    expected = metrics.compute_metrics(real_f, ext(fakes), ['fid', 'is'])
    assert res['fid'] == pytest.approx(expected['fid'], rel=1e-4)
    assert res['is_mean'] == pytest.approx(expected['is_mean'], rel=1e-4)


def test_model_dir_checkpoint_errors_are_one_line(tmp_path, capsys, real_files):
    (tmp_path / 'run').mkdir()
    code = fid.main(['--eval_dir', os.path.dirname(real_files[0]), '--model_dir',
                     str(tmp_path / 'run'), '--n_fake', '10', '--network', 'keras'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and 'config.json' in err, err


# ---------------------------------------------------------------------------------------
# Fakes under XLA and the in-training monitor
# ---------------------------------------------------------------------------------------


class DenseGenerator:
    """A small Keras generator with the project's interface: z -> (images, attention)."""

    def __init__(self, noise_dim=5, size=4):
        import keras
        self.noise_dim = noise_dim
        self.model = keras.Sequential([
            keras.Input((noise_dim,)), keras.layers.Dense(size * size * 3),
            keras.layers.Reshape((size, size, 3)), keras.layers.Activation('tanh')])

    def __call__(self, z, training=False):
        return self.model(z, training=training), []


def test_fake_sampler_compiles_one_xla_program_for_a_fixed_batch():
    import tensorflow as tf

    import utils
    gen = DenseGenerator()
    sampler = sampling.FakeSampler(gen, batch_size=4)
    batches = list(sampler.batches(10, seed=3))
    assert [b.shape for b in batches] == [(4, 4, 4, 3), (4, 4, 4, 3), (2, 4, 4, 3)]
    assert sampler.traces == 1 and sampler._sampler._images._jit_compile
    list(sampler.batches(7))
    assert sampler.traces == 1
    z = np.random.default_rng(3).standard_normal((10, 5)).astype(np.float32)
    eager = utils.to_uint8(gen(tf.constant(z))[0].numpy())
    # XLA may round the last bit differently; truncation then moves a level at most.
    diff = np.abs(np.concatenate(batches).astype(int) - eager.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    # Same seed, same images; no seed, fresh noise.
    np.testing.assert_array_equal(np.concatenate(list(sampler.batches(10, seed=3))),
                                  np.concatenate(batches))
    assert not np.array_equal(next(sampler.batches(4)), next(sampler.batches(4)))


def test_fake_sampler_falls_back_when_xla_cannot_compile():
    import tensorflow as tf

    class NumpyGenerator:  # numpy_function has no XLA kernel
        noise_dim = 2

        def __call__(self, z, training):
            img = tf.numpy_function(lambda a: np.tanh(a[:, :1, None, None]) *
                                    np.ones((1, 2, 2, 3), np.float32), [z], tf.float32)
            return img, []

    sampler = sampling.FakeSampler(NumpyGenerator(), batch_size=3)
    with pytest.warns(RuntimeWarning, match='XLA cannot compile'):
        batches = list(sampler.batches(5, seed=0))
    assert [len(b) for b in batches] == [3, 2]
    assert len(list(sampler.batches(5))) == 2  # no second warning or trace needed


def test_fake_sampler_does_not_fall_back_on_errors_that_are_not_xlas():
    # e.g. the half-built trace a Ctrl-C leaves: falling back would hide the interrupt
    class BrokenGenerator:
        noise_dim = 2

        def __call__(self, z, training):
            raise AttributeError('half-built trace')

    sampler = sampling.FakeSampler(BrokenGenerator(), batch_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(AttributeError, match='half-built trace'):
            list(sampler.batches(5, seed=0))


def test_rebatch():
    stream = [np.arange(3), np.arange(3, 10), np.arange(10, 11)]
    out = list(fid.rebatch(stream, 4))
    assert [len(b) for b in out] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(out), np.arange(11))


def test_in_loop_fid_matches_direct_computation(tmp_path, monkeypatch, real_files):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    fixed = np.random.default_rng(17).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    gen = ConstantGenerator(fixed)
    # Generation in batches of 3 (one program), features in batches of 4.
    conf = {'n_fid_real': 10, 'fid_batch_size': 4, 'gen_batch_size': 3, 'img_size': 8}
    monitor = fid.InLoopFID(os.path.dirname(real_files[0]), conf, weights=None,
                            cache_dir=str(tmp_path / 'c'))
    assert monitor.extractor.calls == 3 and not monitor.real['from_cache']
    second = fid.InLoopFID(os.path.dirname(real_files[0]), conf, None, str(tmp_path / 'c'))
    assert second.real['from_cache'] and second.extractor.calls == 0
    value = monitor(gen)
    assert monitor.extractor.calls == 6 and set(gen.seen) == {(3, 3)}
    assert monitor.sampler.traces == 1 and monitor(gen) == value
    assert monitor.sampler.traces == 1 and monitor.extractor.calls == 9
    chosen = fid.select_files(sorted(real_files), 10, seed=42)
    real = np.stack([np.asarray(Image.open(p)) for p in chosen])
    mu, sigma = metrics.feature_stats(Stub(None)(real)['features'])
    fakes = np.clip(np.concatenate([fixed] * 3 + [fixed[:1]]) * 127.5 + 127.5, 0, 255)
    fake_feats = Stub(None)(fakes.astype(np.uint8))['features']
    expected = metrics.frechet_distance(mu, sigma, *metrics.feature_stats(fake_feats),
                                        method='sqrtm')
    assert value == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(monitor.real['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(monitor.real['sigma'], sigma, rtol=1e-12)


def test_in_loop_fid_without_gen_batch_size_uses_fid_batch_size(tmp_path, monkeypatch,
                                                                real_files):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    gen = ConstantGenerator(np.zeros((4, 8, 8, 3)))
    monitor = fid.InLoopFID(os.path.dirname(real_files[0]),
                            {'n_fid_real': 6, 'fid_batch_size': 4, 'img_size': 8}, None)
    monitor(gen)
    assert set(gen.seen) == {(4, 3)} and monitor.real['path'] is None


def _stub_keras(monkeypatch):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    return Stub


def test_in_loop_fid_with_fewer_real_images_than_n_fid_real_uses_all(tmp_path, monkeypatch,
                                                                      capsys):
    stub = _stub_keras(monkeypatch)
    images = np.random.default_rng(18).integers(0, 256, (fid.MIN_FID_IMAGES, 4, 4, 3),
                                                dtype=np.uint8)
    files = _save_pngs(images, str(tmp_path / 'real'))
    conf = {'n_fid_real': 100, 'fid_batch_size': 16, 'gen_batch_size': 8, 'img_size': 4}
    monitor = fid.InLoopFID(str(tmp_path / 'real'), conf, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and f'{len(files)} real images' in lines[0]
    assert 'n_fid_real=100' in lines[0] and f'using all {len(files)}' in lines[0]
    mu, sigma = metrics.feature_stats(stub(None)(images)['features'])
    np.testing.assert_allclose(monitor.real['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(monitor.real['sigma'], sigma, rtol=1e-12)
    gen = ConstantGenerator(np.zeros((8, 4, 4, 3)))
    monitor(gen)
    # 50 reals, then as many fakes (not 100: 7 batches), in batches of 16.
    assert monitor.n == len(files) and monitor.extractor.calls == 4 + 4


def test_in_loop_fid_below_the_minimum_is_unavailable(tmp_path, monkeypatch, real_files):
    _stub_keras(monkeypatch)
    conf = {'n_fid_real': 100, 'fid_batch_size': 4, 'img_size': 8}
    with pytest.raises(fid.FIDUnavailable, match=f'only 12 real images in .*fewer than the '
                                                 f'{fid.MIN_FID_IMAGES} an FID needs'):
        fid.InLoopFID(os.path.dirname(real_files[0]), conf, None)
    assert fid.MIN_FID_IMAGES == 50  # docs/training.md states it


def test_in_loop_fid_crops_the_real_images_as_training(tmp_path, monkeypatch):
    stub = _stub_keras(monkeypatch)
    tall = np.random.default_rng(19).integers(0, 256, (12, 8, 4, 3), dtype=np.uint8)
    _save_pngs(tall, str(tmp_path / 'real'))  # 4 wide, 8 high
    conf = {'n_fid_real': 12, 'fid_batch_size': 4, 'img_size': 4}
    cache = str(tmp_path / 'cache')
    squashed = fid.InLoopFID(str(tmp_path / 'real'), conf, None, cache)
    cropped = fid.InLoopFID(str(tmp_path / 'real'), {**conf, 'crop': 'center'}, None, cache)
    assert not cropped.real['from_cache'] and cropped.real['path'] != squashed.real['path']
    mu, _ = metrics.feature_stats(stub(None)(tall[:, 2:6])['features'])  # centre 4x4 squares
    np.testing.assert_allclose(cropped.real['mu'], mu, rtol=1e-12)
    assert np.abs(squashed.real['mu'] - mu).max() > 1


def test_cli_with_fewer_images_than_asked_uses_all_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(20)
    _save_pngs(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), str(tmp_path / 'real'))
    _save_pngs(rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), str(tmp_path / 'fake'))
    code = fid.main(['--eval_dir', str(tmp_path / 'real'), '--fake_dir', str(tmp_path / 'fake'),
                     '--n_real', '10', '--n_fake', '9', '--metrics', 'swd'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert 'asked for 10 real images but only 6 exist: using all 6' in captured.err
    assert 'asked for 9 fake images but only 5 exist: using all 5' in captured.err
    results = json.loads(captured.out)
    assert results['n_real'] == 6 and results['n_fake'] == 5 and results['swd'] > 0


def test_cli_help_explains_the_networks():
    result = _cli('--help')
    assert result.returncode == 0
    text = ' '.join(result.stdout.split())
    for phrase in ('NOT comparable', 'pytorch-fid', 'TTUR', 'in-training monitor',
                   'LadaGAN paper', '--fid_method', 'scipy.linalg.sqrtm', 'VGG-16'):
        assert phrase in text, phrase


# --- sliced Wasserstein distance through the CLI (no feature network) ------------------

def test_cli_swd_works_offline_without_a_network(tmp_path):
    for name, images in (('real', _shapes_like(40, 3)), ('fake', _shapes_like(40, 4))):
        os.makedirs(tmp_path / name)
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / name / f'{i}.png')
    result = _cli('--eval_dir', str(tmp_path / 'real'), '--fake_dir', str(tmp_path / 'fake'),
                     '--n_fake', 'all', '--metrics', 'swd', '--inception_path', '/nonexistent')
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout)
    assert numbers['swd'] > 0 and numbers['n_fake'] == 40 and numbers['img_size'] == 32


def _shape_dirs(tmp_path, n_real, n_fake):
    dirs = []
    for name, images in (('real', _shapes_like(n_real, 3)), ('fake', _shapes_like(n_fake, 4))):
        os.makedirs(tmp_path / name)
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / name / f'{i}.png')
        dirs.append(str(tmp_path / name))
    return dirs


def test_cli_offline_still_reports_swd_and_names_what_it_skipped(tmp_path, monkeypatch,
                                                                 capsys):
    def offline(url, dest):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(fid, '_download', offline)
    monkeypatch.setattr(fid, 'CACHE_ROOT', str(tmp_path / 'cache'))
    real, fake = _shape_dirs(tmp_path, 20, 20)
    code = fid.main(['--eval_dir', real, '--fake_dir', fake, '--n_fake', 'all',
                     '--metrics', 'fid,swd'])
    out, err = capsys.readouterr()
    numbers = json.loads(out)
    assert code == 1 and numbers['swd'] > 0 and 'fid' not in numbers
    assert numbers['not_computed']['metrics'] == ['fid']
    assert 'cannot download the Inception 2015 graph' in numbers['not_computed']['reason']
    # The last stderr line (above it: progress bars).
    assert err.splitlines()[-1].startswith('fid.py: warning: fid not computed')


def test_cli_too_few_images_names_the_flag(tmp_path, capsys):
    real, fake = _shape_dirs(tmp_path, 5, 1)
    code = fid.main(['--eval_dir', real, '--fake_dir', fake, '--n_fake', 'all',
                     '--metrics', 'swd'])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: progress bars
    assert code == 2 and last.startswith('fid.py: error: ')
    assert 'at least 2 generated images, got 1' in last and '--n_fake N' in last
