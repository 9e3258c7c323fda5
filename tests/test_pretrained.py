"""checkpoints.download_pretrained: the Hub file names of the authors' released models, loading
what was downloaded, and the offline errors."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import checkpoints
import config
import sampling
import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Images seen at each released checkpoint (SPEC §5); written out here, not read from utils.
RELEASED = {'cifar10': 68096000, 'celeba_64': 72192000, 'ffhq_128': 24064000,
            'bedroom_128': 10624000}


def hub_files(name):
    n = RELEASED[name]
    return [f'{name}/config.json',
            f'{name}/best-training-checkpoints/ckpt-{n}.index',
            f'{name}/best-training-checkpoints/ckpt-{n}.data-00000-of-00001',
            f'{name}/best-training-checkpoints/checkpoint']


def place_fixture_as(fixture_dir, model_dir, n_images):
    """The fixture's best checkpoint laid out as a released model's Hub folder."""
    best = os.path.join(model_dir, 'best-training-checkpoints')
    os.makedirs(best, exist_ok=True)
    shutil.copy(os.path.join(fixture_dir, 'config.json'), model_dir)
    for suffix in ('.index', '.data-00000-of-00001'):
        shutil.copy(os.path.join(fixture_dir, 'best-training-checkpoints', 'ckpt-8' + suffix),
                    os.path.join(best, f'ckpt-{n_images}{suffix}'))


class FakeHub:
    """Records hf_hub_download calls and serves the files from the fixture, as the Hub
    would for a released model (its `checkpoint` state file names ckpt-8: stale, as a
    hand-copied one may be)."""

    def __init__(self, fixture_dir, root, missing=()):
        self.fixture_dir, self.root, self.missing = fixture_dir, str(root), set(missing)
        self.calls = []

    def __call__(self, *, repo_id, filename, local_dir=None, cache_dir=None):
        self.calls.append({'repo_id': repo_id, 'filename': filename, 'local_dir': local_dir,
                           'cache_dir': cache_dir})
        if filename in self.missing:
            from huggingface_hub.errors import EntryNotFoundError
            raise EntryNotFoundError(f'404: {filename} not found')
        base = local_dir or os.path.join(cache_dir or self.root, 'snapshots', '0123abc')
        path = os.path.join(base, *filename.split('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        source = os.path.join(self.fixture_dir, *filename.split('/')[1:])
        if '/ckpt-' in filename:
            source = os.path.join(os.path.dirname(source),
                                  'ckpt-8' + filename[filename.index('.', filename.rindex('/')):])
        shutil.copy(source, path)
        return path


def test_asks_for_the_authors_file_names_and_reproduces_the_fixture(fixture_dir, reference,
                                                                      tmp_path):
    hub = FakeHub(fixture_dir, tmp_path)
    local = str(tmp_path / 'weights')
    model_dir = checkpoints.download_pretrained('cifar10', local_dir=local, download_fn=hub)
    assert [c['filename'] for c in hub.calls] == hub_files('cifar10')
    assert {c['repo_id'] for c in hub.calls} == {'milmor/LadaGAN'}
    assert all(c['local_dir'] == local for c in hub.calls)
    assert os.path.samefile(model_dir, os.path.join(local, 'cifar10'))
    assert checkpoints.find_checkpoint(model_dir).endswith('ckpt-68096000')

    generator = checkpoints.load_generator(model_dir)
    images, attention = generator(reference['noise'], training=False)
    np.testing.assert_allclose(images.numpy(), reference['ema_img'], atol=1e-5)
    np.testing.assert_allclose(attention[2].numpy(), reference['ema_attn_32'], atol=1e-7)


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_every_released_model_through_the_cache(name, fixture_dir, tmp_path):
    hub = FakeHub(fixture_dir, tmp_path)
    cache = str(tmp_path / 'hf-cache')
    model_dir = checkpoints.download_pretrained(name, cache_dir=cache, download_fn=hub)
    assert [c['filename'] for c in hub.calls] == hub_files(name)
    assert all(c['cache_dir'] == cache and c['local_dir'] is None for c in hub.calls)
    assert model_dir == os.path.join(cache, 'snapshots', '0123abc', name)
    assert checkpoints.find_checkpoint(model_dir) == os.path.join(
        model_dir, 'best-training-checkpoints', f'ckpt-{RELEASED[name]}')
    assert config.load_run_config(model_dir)['noise_dim'] == 32


def test_checkpoint_state_file_is_optional(fixture_dir, tmp_path):
    state = 'celeba_64/best-training-checkpoints/checkpoint'
    hub = FakeHub(fixture_dir, tmp_path, missing={state})
    model_dir = checkpoints.download_pretrained('celeba_64', local_dir=str(tmp_path),
                                                download_fn=hub)
    assert hub.calls[-1]['filename'] == state
    assert not os.path.exists(os.path.join(model_dir, 'best-training-checkpoints', 'checkpoint'))
    assert checkpoints.find_checkpoint(model_dir).endswith('ckpt-72192000')


def test_unknown_name_lists_the_valid_ones(fixture_dir, tmp_path):
    hub = FakeHub(fixture_dir, tmp_path)
    with pytest.raises(ValueError) as info:
        checkpoints.download_pretrained('cifar100', download_fn=hub)
    assert isinstance(info.value, checkpoints.CheckpointError)
    message = str(info.value)
    assert 'cifar100' in message and all(name in message for name in RELEASED)
    assert hub.calls == []


def offline_errors():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    return [ConnectionError('Failed to resolve huggingface.co'),
            LocalEntryNotFoundError('cannot find the requested files in the local cache'),
            OfflineModeIsEnabled('offline mode is enabled')]


@pytest.mark.parametrize('error', offline_errors(), ids=lambda e: type(e).__name__)
def test_offline_says_how_to_place_the_files(error, monkeypatch, tmp_path):
    import huggingface_hub

    def no_connection(**kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', no_connection)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.download_pretrained('ffhq_128', cache_dir=str(tmp_path))
    message = str(info.value)
    assert '\n' not in message
    for fragment in ('https://huggingface.co/milmor/LadaGAN/tree/main/ffhq_128', 'config.json',
                     'best-training-checkpoints/', 'ckpt-24064000.index',
                     'ckpt-24064000.data-00000-of-00001', '--model_dir', type(error).__name__):
        assert fragment in message, message


def test_programming_errors_are_not_reported_as_offline(tmp_path):
    def broken(**kwargs):
        raise TypeError('bad argument')

    with pytest.raises(TypeError):
        checkpoints.download_pretrained('cifar10', cache_dir=str(tmp_path), download_fn=broken)


def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_files_placed_by_hand_work_offline_with_the_real_hub_client(fixture_dir, tmp_path):
    """The manual route of the offline message, end to end: generate.py --pretrained with
    --local_dir finds the files there with huggingface_hub in offline mode; without them
    it fails with that message, at once also when the Hub cannot be reached without
    HF_HUB_OFFLINE (instead of the client's half minute of retries)."""
    local = tmp_path / 'weights'
    place_fixture_as(fixture_dir, str(local / 'cifar10'), RELEASED['cifar10'])
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf-home'),
           'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}
    unreachable = {**env, 'HF_ENDPOINT': f'http://127.0.0.1:{closed_port()}'}
    del unreachable['HF_HUB_OFFLINE']
    script = os.path.join(ROOT, 'generate.py')
    common = ['--pretrained', 'cifar10', '--n', '4', '--seed', '5', '--no-jit']
    runs = [subprocess.Popen([sys.executable, script, *common, *extra], env=run_env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for extra, run_env in (
                (['--local_dir', str(local), '--out', str(tmp_path / 'hub.png')], env),
                (['--cache_dir', str(tmp_path / 'empty'), '--out', 'x.png'], env),
                (['--cache_dir', str(tmp_path / 'empty'), '--out', 'y.png'], unreachable))]
    (_, placed_err), (_, missing_err), (_, unreachable_err) = [
        run.communicate(timeout=300) for run in runs]
    assert runs[0].returncode == 0, placed_err[-3000:]
    generator = checkpoints.load_generator(fixture_dir)
    expected = utils.to_uint8(generator(sampling.sample_noise(4, 32, 5), training=False)[0])
    grid = np.asarray(Image.open(tmp_path / 'hub.png').convert('RGB')).astype(int)
    assert np.abs(grid - utils.image_grid(expected).astype(int)).max() <= 1

    assert runs[1].returncode == 2
    assert 'Traceback' not in missing_err, missing_err[-3000:]
    last = missing_err.strip().splitlines()[-1]
    assert last.startswith('error: cannot download pretrained model'), missing_err[-3000:]
    assert 'https://huggingface.co/milmor/LadaGAN/tree/main/cifar10' in last
    assert not os.path.exists(tmp_path / 'x.png')

    assert runs[2].returncode == 2 and 'Retrying' not in unreachable_err, unreachable_err
    lines = unreachable_err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: cannot download'), lines
    assert 'cannot be reached' in lines[0] and 'best-training-checkpoints/' in lines[0]
