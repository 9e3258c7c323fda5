"""Config defaults, presets and the validation of impossible values."""
import pytest

import config


def test_defaults_are_the_authors_celeba_config():
    c = config.get_config()
    assert (c['img_size'], c['g_dim'], c['d_enc_dim'], c['batch_size']) == (
        64, [1024, 256, 64], [64, 128, 256], 128)
    assert c == config.get_config('celeba_64')


def test_bedroom_takes_the_ffhq_values():
    assert config.get_config('bedroom_128') == config.get_config('ffhq_128')


def test_ffhq_uses_the_conv_decoder_and_bcr():
    c = config.get_config('ffhq_128')
    assert c['dec_dim'] == [128, 64] and c['bcr'] and 'cutout' in c['policy']


def test_overrides_apply_after_the_preset():
    assert config.get_config('cifar10', batch_size=7)['batch_size'] == 7


@pytest.mark.parametrize('overrides, message', [
    ({'img_size': 48}, r"img_size=48: must be one of \[32, 64, 128, 256\]"),
    ({'d_enc_dim': [64, 128]}, r"d_enc_dim=\[64, 128\]: must be a list of 3 positive"),
    ({'g_dim': [1024, 256, 66], 'g_heads': [4, 4, 4]}, r"g_dim\[2\]=66: must be a multiple of g_heads\[2\] = 4"),
    ({'d_heads': 3}, r"d_enc_dim\[-1\]=256: must be a multiple of d_heads = 3"),
    ({'g_dim': [1024, 254, 64], 'g_heads': [4, 2, 4]}, r"g_dim\[1\]=254: must be a multiple of 4"),
    ({'img_size': 256, 'd_enc_dim': [8, 16, 32, 64, 128], 'g_dim': [1024, 256, 32]},
     r"g_dim\[2\]=32: must be a multiple of 64 for patch generation"),
    ({'img_size': 128, 'd_enc_dim': [8, 16, 32, 64], 'dec_dim': [32]},
     r"dec_dim=\[32\]: must be false \(patch generation\) or a list of 2"),
    ({'loss': 'wgan'}, r"loss='wgan': must be one of \['nsl', 'hinge'\]"),
    ({'policy': 'color,flip'}, r"policy='color,flip'"),
    ({'batch_size': 0}, r"batch_size=0: must be a positive integer"),
    ({'g_lr': -1.0}, r"g_lr=-1.0: must be a positive number"),
    ({'g_beta2': 1.0}, r"g_beta2=1.0: must be a number in \[0, 1\)"),
    ({'bcr': 'yes'}, r"bcr='yes': must be true or false"),
    ({'ema_init': 'zeros'}, r"ema_init='zeros': must be one of \['copy', 'random'\]"),
    ({'ema_warmup': 'yes'}, r"ema_warmup='yes': must be true or false"),
    ({'r1_interval': 0}, r"r1_interval=0: must be a positive integer"),
    ({'g_heads': [4, 4]}, r"g_heads=\[4, 4\]: must be a list of 3 positive integers"),
    ({'gdim': [1, 2, 3]}, r"unknown config key\(s\) \['gdim'\]"),
])
def test_invalid_configs_name_the_key_and_the_allowed_values(overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        config.get_config(**overrides)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(config.ConfigError, match=r"unknown preset 'cifar'.*cifar10, celeba_64"):
        config.get_config('cifar')


def test_authors_config_json_loads_with_our_defaults_for_new_keys():
    saved = {k: v for k, v in config.DEFAULTS.items() if k not in config.OUR_KEYS}
    c = config.from_saved(saved)
    assert c['ema_init'] == 'copy' and c['antialias'] is False and c['ema_warmup'] is False
    assert c['r1_interval'] == 1  # R1 on every step, as the authors


# --- one list of names, every name builds ------------------------------------------------------

def test_every_listed_name_has_a_builder():
    import diffaug
    import ladaformer
    import tensorflow as tf
    import trainer
    assert tuple(trainer.LOSSES) == config.LOSSES
    assert tuple(trainer.PRECISION_POLICIES) == config.PRECISIONS
    assert tuple(diffaug.AUGMENT_FNS) == config.POLICY_OPS
    x = tf.zeros([2, 16, 16, 3])
    for op in config.POLICY_OPS:
        assert diffaug.diff_augment(x, op).shape == x.shape
    for kind in config.ATTENTIONS:
        layer = ladaformer.make_attention(kind, 8, 2)
        assert isinstance(layer, tf.keras.layers.Layer), kind
    for loss in config.LOSSES:
        d_loss, g_loss = trainer.LOSSES[loss]
        assert all(tf.math.is_finite(v) for v in (d_loss(tf.ones([2, 3]), tf.zeros([2, 3])),
                                                  g_loss(tf.ones([2, 3]))))
    for precision in config.PRECISIONS:
        with trainer._dtype_policy(trainer.PRECISION_POLICIES[precision]):
            pass


# --- a run's config: new, resumed, overridden ------------------------------------------------

def test_settle_a_new_run_takes_the_defaults_and_the_asked_values():
    conf, changed = config.settle(None, {'batch_size': 8})
    assert conf == config.get_config(batch_size=8) and changed == []


def test_settle_a_resumed_run_keeps_its_saved_config():
    saved = config.get_config('tiny')
    assert config.settle(saved, {'batch_size': saved['batch_size']}) == (saved, [])
    with pytest.raises(config.ConfigError, match=r"batch_size: 32 in config.json, 8 asked.*"
                                                 r"--override_config"):
        config.settle(saved, {'batch_size': 8, 'g_lr': saved['g_lr']})
    conf, changed = config.settle(saved, {'batch_size': 8}, override=True)
    assert conf == {**saved, 'batch_size': 8} and changed == ['batch_size']
    with pytest.raises(config.ConfigError, match='img_size=48'):
        config.settle(saved, {'img_size': 48}, override=True)


def test_requested_values_are_the_preset_then_the_overrides():
    assert config.requested('tiny', {'batch_size': 4}) == {**config.PRESETS['tiny'],
                                                          'batch_size': 4}
    with pytest.raises(config.ConfigError, match="unknown preset 'nope'"):
        config.requested('nope')


def test_load_run_config_names_the_problem(tmp_path):
    with pytest.raises(config.ConfigError, match='config.json not found'):
        config.load_run_config(str(tmp_path))
    (tmp_path / 'config.json').write_text('{"img_size": 48}')
    with pytest.raises(config.ConfigError, match='img_size=48'):
        config.load_run_config(str(tmp_path))


def test_settle_compares_a_resumed_run_with_what_config_py_gives_now(monkeypatch):
    origin = {'preset': 'tiny', 'set': {'batch_size': 8}}
    saved = config.get_config('tiny', batch_size=8)
    # Same command, or no --preset/--set at all: the recorded origin decides, nothing differs.
    assert config.settle(saved, config.requested('tiny', {'batch_size': 8}), origin=origin) == (
        saved, [])
    resumed = config.resumed_origin(origin, None, {})
    assert resumed == origin and config.settle(saved, {}, origin=resumed) == (saved, [])
    # An edited default that the preset does not set: named, with config.py as its source.
    monkeypatch.setitem(config.DEFAULTS, 'ema_decay', 0.99)
    with pytest.raises(config.ConfigError) as refused:
        config.settle(saved, {}, origin=resumed)
    assert str(refused.value).startswith(
        "the run's config.json differs from config.py (ema_decay: 0.999 in config.json, "
        "0.99 in config.py).")
    assert '--override_config' in str(refused.value)
    conf, changed = config.settle(saved, {}, override=True, origin=resumed)
    assert changed == ['ema_decay'] and conf == {**saved, 'ema_decay': 0.99}
    # An edited preset value and a --set value together: each named with its source.
    monkeypatch.setitem(config.PRESETS['tiny'], 'd_mlp', 64)
    asked = {'g_lr': 1e-3}
    with pytest.raises(config.ConfigError) as both:
        config.settle(saved, asked, origin=config.resumed_origin(origin, None, asked))
    assert ('differs from config.py and the requested config (d_mlp: 128 in config.json, 64 '
            'in config.py, ema_decay: 0.999 in config.json, 0.99 in config.py, g_lr: 0.0002 in '
            'config.json, 0.001 asked)') in str(both.value)
    # A run without a recorded origin (older runs, the authors' folders): today's rule.
    assert config.settle(saved, {}) == (saved, [])


def test_resumed_origin_keeps_the_recorded_preset_and_layers_the_command():
    origin = {'preset': 'tiny', 'set': {'batch_size': 8}}
    assert config.resumed_origin(origin, 'tiny', {'g_lr': 1e-3}) == {
        'preset': 'tiny', 'set': {'batch_size': 8, 'g_lr': 1e-3}}
    # Another preset: its values join the --set values, after the recorded ones.
    assert config.resumed_origin(origin, 'demo', {}) == {
        'preset': 'tiny', 'set': {'batch_size': 8, **config.PRESETS['demo']}}
