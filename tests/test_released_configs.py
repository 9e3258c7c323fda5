"""The config.json files of the authors' released models, as their code writes them
(`json.dump(vars(config), indent=4)`, SPEC §6), load into the models they describe."""
import copy
import json

import numpy as np
import pytest

import checkpoints
import config
import model
import sampling

# The authors' config.py (CelebA 64), every key it dumps, in its order, spelt and typed as
# in their files (the fixture's config.json has the same keys, with tiny values).
AUTHORS_DEFAULT = {
    'img_size': 64, 'batch_size': 128, 'g_lr': 0.0002, 'g_beta1': 0.5, 'g_beta2': 0.99,
    'noise_dim': 128, 'g_initializer': 'orthogonal', 'g_dim': [1024, 256, 64],
    'g_heads': [4, 4, 4], 'g_mlp': [512, 512, 512], 'd_initializer': 'orthogonal',
    'd_enc_dim': [64, 128, 256], 'd_out_dim': [512, 1024], 'd_heads': 4, 'd_mlp': 512,
    'd_lr': 0.0002, 'd_beta1': 0.5, 'd_beta2': 0.99, 'gp_weight': 0.0001,
    'policy': 'color,translation', 'fid_batch_size': 50, 'gen_batch_size': 50, 'loss': 'nsl',
    'ema_decay': 0.999, 'bcr': False, 'cr_weight': 0.1, 'dec_dim': False, 'n_fid_real': 2500,
    'n_fid_gen': 2500, 'plot_size': 5.2, 'test_seed': 77,
}
# SPEC §6's per-dataset table; Bedroom's config is not public, its size is FFHQ's.
_FFHQ = {'img_size': 128, 'batch_size': 64, 'g_dim': [1024, 512, 256], 'dec_dim': [128, 64],
         'd_enc_dim': [32, 64, 128, 256], 'bcr': True, 'policy': 'color,translation,cutout'}
RELEASED_CONFIGS = {
    'cifar10': {'img_size': 32, 'd_enc_dim': [128, 256]},
    'celeba_64': {},
    'ffhq_128': _FFHQ,
    'bedroom_128': _FFHQ,
}
# The sizes of the released config.json files on the Hub (SPEC §6; CelebA's is not given).
HUB_SIZES = {'cifar10': 881, 'ffhq_128': 938, 'bedroom_128': 938}
# (G, D) trainable parameters of the released checkpoints (SPEC §6: 19.90M / 24.03M G;
# 6.78M / 7.01M / 7.06M D); FFHQ's G also has 384 BatchNorm statistics.
PARAMETERS = {'cifar10': (19_901_647, 6_775_940), 'celeba_64': (19_900_351, 7_004_356),
              'ffhq_128': (24_026_255 - 384, 7_061_220),
              'bedroom_128': (24_026_255 - 384, 7_061_220)}


def authors_config_file(folder, name, extra=None):
    values = {**copy.deepcopy(AUTHORS_DEFAULT), **RELEASED_CONFIGS[name], **(extra or {})}
    text = json.dumps(values, indent=4)
    (folder / 'config.json').write_text(text)
    return text


@pytest.mark.parametrize('name', list(RELEASED_CONFIGS))
def test_each_released_config_builds_its_model(name, tmp_path, capsys):
    text = authors_config_file(tmp_path, name)
    if name in HUB_SIZES:  # the same keys, spellings and types as the released file
        assert len(text) == HUB_SIZES[name]
    conf = config.load_run_config(str(tmp_path))
    assert capsys.readouterr().out == ''  # nothing unknown, nothing to say
    assert not any(conf[k] != config.DEFAULTS[k] for k in config.OUR_KEYS)
    trainable = lambda net: model.count_parameters(net)[0]  # noqa: E731
    assert (trainable(model.build_generator(conf)),
            trainable(model.build_discriminator(conf))) == PARAMETERS[name]


def test_unknown_keys_of_an_authors_file_are_named_in_one_line_then_loaded(
        fixture_dir, tmp_path, capsys):
    """A key of another version of the authors' code does not stop their weights loading."""
    import shutil
    model_dir = tmp_path / 'released'
    shutil.copytree(fixture_dir, model_dir)
    saved = json.loads((model_dir / 'config.json').read_text())
    (model_dir / 'config.json').write_text(json.dumps(
        {**saved, 'n_critic': 1, 'fid_interval': 5000}, indent=4))
    generator = checkpoints.load_generator(str(model_dir))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'fid_interval, n_critic' in out[0], out
    noise = sampling.sample_noise(4, generator.noise_dim, seed=5)
    expected = checkpoints.load_generator(fixture_dir)
    np.testing.assert_array_equal(sampling.generate(generator, noise, jit_compile=False)[0],
                                  sampling.generate(expected, noise, jit_compile=False)[0])


def test_an_unknown_key_in_one_of_our_run_folders_is_refused(tmp_path):
    saved = {**config.get_config('tiny'), 'n_critic': 1}  # ours: it has OUR_KEYS
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    with pytest.raises(config.ConfigError, match=r"unknown config key\(s\) \['n_critic'\]"):
        config.load_run_config(str(tmp_path))
