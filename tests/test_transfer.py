"""Starting a run from a trained model (train.py --init_from), FreezeD (config freeze_d) and
adaptive augmentation (config ada_target). The source model is the authors' tiny fixture."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import config
import loop
import sampling
import shapes_data
import train
import trainer
from test_pretrained import RELEASED, FakeHub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEST = ('best-training-checkpoints', 'ckpt-8')


def new_run(argv):
    """train.main's steps up to the restore, in-process: (run, first iteration, source)."""
    args = train.parse_args(argv)
    plan = train.resolve_run(args)
    source = train.init_source(args, plan)
    asked = plan.asked if source is None else train.asked_from_source(args, plan)
    conf = train.settle_config(plan.model_dir, asked, False, source=source)
    run = loop.Run(args, plan, conf)
    return run, run.restore(source), source


def run_argv(shapes, model_dir, *extra):
    return ['--file_pattern', shapes, '--model_dir', str(model_dir), '--no_fid', '--no-jit',
            '--seed', '3', '--set', 'batch_size=8', *extra]


def ema_samples(generator, labels=None):
    noise = sampling.sample_noise(6, generator.noise_dim, seed=11)
    return sampling.generate(generator, noise, jit_compile=False, labels=labels)[0]


# --- --init_from ---------------------------------------------------------------------------

def test_a_new_run_starts_from_the_source_weights_with_fresh_training_state(
        fixture_dir, shapes, tmp_path, capsys):
    run, start, source = new_run(run_argv(shapes, tmp_path / 'new', '--init_from', fixture_dir,
                                          '--set', 'g_lr=0.001'))
    gan, saved = run.gan, config.load_run_config(fixture_dir)
    assert source.checkpoint == os.path.join(fixture_dir, *BEST)  # generate.py's checkpoint
    assert 'Weights of G, EMA G and D from --init_from' in capsys.readouterr().out
    # The source's EMA samples at the same seed, before any step.
    np.testing.assert_array_equal(ema_samples(gan.ema_generator),
                                  ema_samples(checkpoints.load_generator(fixture_dir)))
    reader = tf.train.load_checkpoint(source.checkpoint)
    for name in ('generator', 'discriminator'):
        for path, variable in checkpoints.checkpoint_variables(getattr(gan, name)).items():
            np.testing.assert_array_equal(
                variable.numpy(), reader.get_tensor(f'{name}/{path}/.ATTRIBUTES/VARIABLE_VALUE'))
    # Fresh: the image count, the FIDs and the optimizers (the source's were trained).
    assert start == 1 and int(gan.n_images.numpy()) == 0
    assert float(gan.best_fid.numpy()) == trainer.NO_FID_YET
    for name, optimizer, net in (('g_optimizer', gan.g_optimizer, gan.generator),
                                 ('d_optimizer', gan.d_optimizer, gan.discriminator)):
        slots = checkpoints.optimizer_variables(optimizer, net)
        assert int(slots.pop('_iterations').numpy()) == 0
        assert reader.get_tensor(f'{name}/_iterations/.ATTRIBUTES/VARIABLE_VALUE') > 0
        slots.pop('_learning_rate')
        assert all(not v.numpy().any() for v in slots.values())
    # The architecture from the source's config.json; training keys from the command line.
    assert all(run.conf[k] == saved[k] for k in config.ARCHITECTURE_KEYS)
    assert run.conf['g_lr'] == 0.001 and run.conf['batch_size'] == 8
    arch = {k: saved[k] for k in config.ARCHITECTURE_KEYS}
    assert run.conf == {**config.DEFAULTS, 'g_lr': 0.001, 'batch_size': 8, **arch}
    assert saved['batch_size'] == 4  # the source's training keys are not taken


def test_a_released_name_loads_through_download_pretrained(fixture_dir, tmp_path, monkeypatch,
                                                           capsys):
    """--init_from cifar10 takes generate.py --pretrained's route (download_pretrained, here
    served from the fixture as the Hub would), and offline it stops with its one line."""
    import huggingface_hub
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)  # no reachability probe
    hub = FakeHub(fixture_dir, tmp_path / 'hub')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', hub)
    source = checkpoints.resolve_init_source('cifar10')
    assert [c['filename'] for c in hub.calls][0] == 'cifar10/config.json'
    assert source.checkpoint.endswith(f"best-training-checkpoints/ckpt-{RELEASED['cifar10']}")
    assert source.config == config.load_run_config(fixture_dir)
    np.testing.assert_array_equal(
        ema_samples(checkpoints.load_generator(source.model_dir)),
        ema_samples(checkpoints.load_generator(fixture_dir)))

    def offline(**kwargs):
        raise ConnectionError('Failed to resolve huggingface.co')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', offline)
    code = train.main(['--init_from', 'ffhq_128', '--model_dir', str(tmp_path / 'run'),
                       '--no_fid'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith('error: cannot download'), err
    assert not os.path.exists(tmp_path / 'run' / 'config.json')


@pytest.mark.parametrize('extra, named', [
    (['--set', 'g_dim=[64,32,16]'], 'g_dim'),
    (['--preset', 'demo'], 'noise_dim'),
    (['--set', 'n_classes=0'], None),  # fine: the source is unconditional too
])
def test_architecture_values_that_differ_from_the_source_stop_with_one_line(
        fixture_dir, shapes, tmp_path, capsys, extra, named):
    argv = run_argv(shapes, tmp_path / 'new', '--init_from', fixture_dir, *extra)
    args = train.parse_args(argv)
    plan = train.resolve_run(args)
    source = train.init_source(args, plan)
    asked = train.asked_from_source(args, plan)
    if named is None:
        assert train.settle_config(plan.model_dir, asked, False, source=source)['n_classes'] == 0
        return
    with pytest.raises(config.ConfigError, match=named) as info:
        train.settle_config(plan.model_dir, asked, False, source=source)
    assert '\n' not in str(info.value)
    assert train.main(argv) == 2
    assert capsys.readouterr().err.strip().count('\n') == 0


def test_conditional_from_conditional_only_and_unconditional_widens():
    source = config.get_config('tiny', n_classes=3)
    with pytest.raises(config.ConfigError, match='n_classes=0'):
        config.started_from(source, {'n_classes': 0}, 'src')
    with pytest.raises(config.ConfigError, match='n_classes'):
        config.started_from(source, {'n_classes': 4}, 'src')
    assert config.started_from(source, {}, 'src')['n_classes'] == 3
    assert config.started_from(config.get_config('tiny'), {'n_classes': 5}, 'src')[
        'n_classes'] == 5


def test_a_conditional_run_from_an_unconditional_source_generates_the_source_for_every_class(
        fixture_dir, tmp_path, capsys):
    labelled = shapes_data.make_shapes_dataset(str(tmp_path / 'labelled'), n_images=24,
                                               labelled=True)
    run, _, _ = new_run(run_argv(labelled, tmp_path / 'new', '--init_from', fixture_dir,
                                 '--set', 'n_classes=3'))
    assert 'class embeddings of G and D start fresh' in capsys.readouterr().out
    expected = ema_samples(checkpoints.load_generator(fixture_dir))
    for k in range(3):
        got = ema_samples(run.gan.ema_generator, labels=np.full(6, k, np.int32))
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_script_records_its_source_and_a_resume_says_it_is_not_read(fixture_dir, shapes,
                                                                         tmp_path):
    """train.py as a user runs it: --init_from with freeze_d and ada_target, 2 iterations;
    run.json records the source; resuming with --init_from again says it is not read and
    keeps the record; p and r_t reach metrics.jsonl and TensorBoard."""
    model_dir = tmp_path / 'new'
    argv = [sys.executable, os.path.join(ROOT, 'train.py'),
            *run_argv(shapes, model_dir, '--init_from', fixture_dir, '--set', 'batch_size=4',
                      '--set', 'freeze_d=1', '--set', 'ada_target=0.6', '--metrics_inter', '1')]
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}
    first = subprocess.run([*argv, '--total_iter', '2', '--fid_inter', '2'], env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert 'Weights of G, EMA G and D from --init_from' in first.stdout
    recorded = {'source': fixture_dir, 'checkpoint': os.path.join(fixture_dir, *BEST)}
    assert json.loads((model_dir / 'run.json').read_text())['init_from'] == recorded
    logged = [json.loads(line) for line in (model_dir / 'metrics.jsonl').read_text().splitlines()]
    assert {'ada_p', 'ada_r'} <= set(logged[-1]) and len(logged) == 2
    events = [e for f in os.listdir(model_dir / 'log-dir')
              for e in tf.compat.v1.train.summary_iterator(str(model_dir / 'log-dir' / f))]
    assert {'ada_p', 'ada_r'} <= {v.tag for e in events for v in e.summary.value}

    second = subprocess.run([*argv, '--total_iter', '3', '--fid_inter', '1'], env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f'--init_from {fixture_dir} not read' in second.stdout
    assert 'Resumed from' in second.stdout and 'Weights of G' not in second.stdout
    assert json.loads((model_dir / 'run.json').read_text())['init_from'] == recorded


def test_an_unusable_source_stops_with_one_line(tmp_path, capsys):
    code = train.main(['--init_from', str(tmp_path / 'nothing'), '--model_dir',
                       str(tmp_path / 'run'), '--no_fid'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and 'not a released model' in err[0], err


# --- FreezeD -------------------------------------------------------------------------------

def test_freeze_d_keeps_the_first_blocks_bit_identical_and_trains_the_rest():
    conf = config.get_config('tiny', batch_size=4, freeze_d=2)
    tf.keras.utils.set_random_seed(1)
    gan = trainer.LadaGAN(conf, jit_compile=False)
    blocks = gan.discriminator.blocks()
    frozen = [v for block in blocks[:2] for layer in block for v in layer.trainable_weights]
    frozen_ids = {id(v) for v in frozen}
    trained = [v for v in gan.discriminator.trainable_weights if id(v) not in frozen_ids]
    before = {id(v): v.numpy().copy() for v in gan.discriminator.trainable_weights}
    g_before = [v.numpy().copy() for v in gan.generator.trainable_weights]
    images = np.random.default_rng(2).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    for _ in range(3):
        gan.train_step(images)
    assert frozen and all((v.numpy() == before[id(v)]).all() for v in frozen)
    assert trained and all((v.numpy() != before[id(v)]).any() for v in trained)
    assert all((v.numpy() != b).any() for v, b in zip(gan.generator.trainable_weights, g_before))
    # The authors' optimizer and checkpoint layout: a slot for every weight, frozen or not.
    plain = trainer.LadaGAN(config.get_config('tiny', batch_size=4), jit_compile=False)
    layout = lambda g: {k: sorted(v) if isinstance(v, dict) else None  # noqa: E731
                        for k, v in g.checkpoint_objects().items()}
    assert layout(gan) == layout(plain)


def test_freeze_d_is_validated_against_the_number_of_d_blocks():
    gan = trainer.LadaGAN(config.get_config('tiny'), jit_compile=False)
    n = len(gan.discriminator.blocks())
    assert config.get_config('tiny', freeze_d=n)['freeze_d'] == n
    for bad in (n + 1, -1, 1.5):
        with pytest.raises(config.ConfigError, match='freeze_d'):
            config.get_config('tiny', freeze_d=bad)


# --- adaptive augmentation -----------------------------------------------------------------

def ada_gan(jit_compile=False, **overrides):
    conf = config.get_config('tiny', batch_size=4, policy='color,translation',
                             ada_target=0.6, ada_kimg=1, **overrides)
    return trainer.LadaGAN(conf, jit_compile=jit_compile)


def test_ada_p_rises_when_d_overfits_and_falls_when_not():
    """r_t driven directly: every 4 steps p moves by 4 x batch 4 / (ada_kimg 1 x 1000)
    toward r_t = target, r_t being the mean of the 4 steps' E[sign(D(real))]."""
    gan, step = ada_gan(), 4 * 4 / 1000
    p = lambda: float(gan.ada_p.numpy())  # noqa: E731
    for _ in range(3):
        gan.adjust_ada(tf.constant(1.0))
    assert p() == 0  # not yet: every 4 steps
    for _ in range(9):
        gan.adjust_ada(tf.constant(1.0))  # D sure of every real image: overfitting
    assert p() == pytest.approx(3 * step)
    for r in (0.9, 0.9, 0.2, 0.2):  # mean 0.55 < 0.6: not overfitting
        gan.adjust_ada(tf.constant(r))
    assert p() == pytest.approx(2 * step)
    for _ in range(4 * 5):
        gan.adjust_ada(tf.constant(-1.0))
    assert p() == 0  # clipped at 0
    gan.ada_p.assign(0.999)
    for _ in range(4):
        gan.adjust_ada(tf.constant(1.0))
    assert p() == 1  # clipped at 1


def test_ada_augments_each_image_with_probability_p():
    gan = ada_gan()
    images = tf.random.stateless_uniform([400, 32, 32, 3], seed=[4, 0], minval=-1, maxval=1)
    changed = lambda: np.abs(gan._augment(images, True).numpy() - images.numpy()).reshape(  # noqa: E731
        400, -1).max(axis=1) > 0
    for p, low, high in ((0.0, 0, 0), (1.0, 400, 400), (0.5, 160, 240)):
        gan.ada_p.assign(p)
        assert low <= changed().sum() <= high


def test_ada_off_is_the_authors_layout_and_metrics():
    gan = trainer.LadaGAN(config.get_config('tiny', policy='color'), jit_compile=False)
    assert not hasattr(gan, 'ada_p') and 'ada_p' not in gan.checkpoint_objects()
    assert tuple(gan.metric_sums) == trainer.METRIC_NAMES


def test_ada_p_is_logged_and_restored_on_resume(shapes, tmp_path, capsys):
    argv = run_argv(shapes, tmp_path / 'run', '--preset', 'tiny', '--set', 'policy=color',
                    '--set', 'ada_target=0.6')
    run, start, _ = new_run(argv)
    assert start == 1
    metrics = run.gan.train_step(np.zeros((8, 32, 32, 3), np.float32))
    assert {'ada_p', 'ada_r'} <= set(metrics)
    run.gan.ada_p.assign(0.375)
    run.gan.n_images.assign(8)  # the loop counts the images, train_step does not
    tf.train.CheckpointManager(run.checkpoint, str(tmp_path / 'run' / 'training-checkpoints'),
                               1).save(checkpoint_number=8)
    resumed, start, _ = new_run(argv)
    assert start == 2 and float(resumed.gan.ada_p.numpy()) == 0.375
    # A checkpoint saved without ADA: p starts at 0, and one line says so.
    plain, _, _ = new_run(run_argv(shapes, tmp_path / 'plain', '--preset', 'tiny', '--set',
                                   'policy=color'))
    tf.train.CheckpointManager(plain.checkpoint, str(tmp_path / 'plain' /
                                                     'training-checkpoints'), 1).save(8)
    capsys.readouterr()
    switched, _, _ = new_run(run_argv(shapes, tmp_path / 'plain', '--preset', 'tiny',
                                      '--set', 'policy=color', '--set', 'ada_target=0.6'))
    assert 'saved without adaptive augmentation' in capsys.readouterr().out
    assert float(switched.gan.ada_p.numpy()) == 0


@pytest.mark.parametrize('options', [
    {'bcr': True},
    {'freeze_d': 1},
])
def test_ada_runs_in_the_xla_step_and_several_steps_per_call(options):
    gan = ada_gan(jit_compile=True, **options)
    gan.ada_p.assign(1.0)
    images = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    gan.run_steps(np.stack([images] * 4), steps=4)
    means, count = gan.read_metrics()
    assert count == 4 and all(np.isfinite(v) for v in means.values())
    assert means['ada_p'] == 1.0 and -1 <= means['ada_r'] <= 1
    # One adjustment after the 4 steps: down by 4 x 4 / 1000 if r_t < 0.6, else clipped at 1.
    expected = 1.0 - 4 * 4 / 1000 if means['ada_r'] < 0.6 else 1.0
    assert float(gan.ada_p.numpy()) == pytest.approx(expected)
