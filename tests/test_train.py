"""train.py as a user runs it: subprocesses on small generated datasets."""
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import checkpoints
import cli
import config
import loop
import shapes_data
import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--preset', 'tiny', '--set', 'batch_size=8', '--no_fid', '--no-jit']


# TensorFlow's C++ log lines ("I0000 00:00:... port.cc:153] oneDNN ...", "E0000 ...
# failed call to cuInit") and absl's note about them.
NATIVE_LOG_LINE = re.compile(r'^[IWEF]\d{4} |absl::InitializeLog|cuInit', re.M)


def run_train(*args, timeout=600, **env_vars):
    """train.py as a user starts it: TF_CPP_MIN_LOG_LEVEL left to train.py."""
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', **env_vars}
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: '), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, last


def saved_checkpoints(model_dir, subdir='training-checkpoints'):
    return sorted(int(p.split('ckpt-')[1].split('.')[0])
                  for p in glob.glob(os.path.join(model_dir, subdir, 'ckpt-*.index')))


def tensorboard_tags(model_dir):
    """{(tag, step)} of every summary in the run's TensorBoard event files; the images
    are checked to be PNGs of a non-empty picture."""
    import tensorflow as tf
    found = set()
    for path in glob.glob(f'{model_dir}/log-dir/events.out.tfevents.*'):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.add((value.tag, event.step))
                if value.metadata.plugin_data.plugin_name == 'images':
                    width, height, png = tf.make_ndarray(value.tensor)[:3]
                    assert int(width) > 100 and int(height) > 100
                    assert png.startswith(b'\x89PNG')
    return found


def test_help_lists_the_authors_flags():
    result = run_train('--help')
    assert result.returncode == 0
    for flag in ('--file_pattern', '--eval_dir', '--model_dir', '--metrics_inter', '--fid_inter',
                 '--total_iter', '--max_ckpt_to_keep', '--preset', '--set'):
        assert flag in result.stdout


def test_trains_writes_everything_and_resumes(shapes, tmp_path):
    # XLA on, train.py's default (the suite's only XLA run of train.py; the others save
    # the compile time with --no-jit).
    model_dir = str(tmp_path / 'run')
    common = ['--file_pattern', shapes, '--model_dir', model_dir, '--fid_inter', '2',
              '--metrics_inter', '1', *[a for a in SMALL if a != '--no-jit']]
    first = run_train(*common, '--total_iter', '4')
    assert first.returncode == 0, first.stderr[-3000:]
    assert not NATIVE_LOG_LINE.search(first.stdout + first.stderr), first.stderr[-3000:]
    # The start-up summary, then one plain progress line per interval (stdout is a pipe).
    for line in ('model: tiny, 32x32, G 0.', 'data: 48 ', 'device: CPU, strategy default '
                 '(1 replica), precision fp32, XLA on', 'run: new, 4 iterations into',
                 'Compiling the train step (XLA)...', 'Compiled and ran the first call in',
                 '[iter 1/4] d_loss ', '[iter 4/4] d_loss '):
        assert line in first.stdout, first.stdout
    assert '\r' not in first.stdout and 'ETA 00:00:' in first.stdout
    assert saved_checkpoints(model_dir) == [16, 32]
    assert saved_checkpoints(model_dir, 'best-training-checkpoints') == [16, 32]  # FID off
    for n in (16, 32):
        grid = np.asarray(Image.open(f'{model_dir}/images/samples-{n:09d}.png'))
        assert grid.shape == (160, 160, 3) and grid.std() > 0
        assert os.path.getsize(f'{model_dir}/images/attention-{n:09d}.png') > 10_000
    logged_tb = tensorboard_tags(model_dir)
    assert {('samples', 16), ('samples', 32), ('attention', 16), ('attention', 32)} <= logged_tb
    assert {('d_loss', 8), ('g_loss', 32), ('images_per_sec', 32)} <= logged_tb
    logged = [json.loads(line) for line in open(f'{model_dir}/metrics.jsonl')]
    assert [entry['iter'] for entry in logged] == [1, 2, 3, 4]
    assert all(0 < entry['images_per_sec'] < 1e4 for entry in logged)
    assert {'d_loss', 'g_loss', 'gp', 'cr', 'real_acc', 'fake_acc', 'images_per_sec'} <= set(
        logged[0])
    assert json.load(open(f'{model_dir}/config.json'))['batch_size'] == 8
    recorded = json.load(open(f'{model_dir}/run.json'))  # what config.py gives it on resume
    assert recorded['preset'] == 'tiny' and recorded['set'] == {'batch_size': 8}
    # The last lines point to the newest sample grid and to the tools to look further.
    named = first.stdout.split('samples:', 1)[1].split()[0]
    assert named == f'{model_dir}/images/samples-{32:09d}.png' and os.path.exists(named)
    assert f'generate.py --model_dir {model_dir}' in first.stdout

    second = run_train(*common, '--total_iter', '6')
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'Resumed from' in second.stdout and 'at 32 images (best FID none yet)' in second.stdout
    assert 'run: resumed at iteration 4 (32 images) of 6' in second.stdout
    assert saved_checkpoints(model_dir) == [32, 48]  # max_ckpt_to_keep = 2
    restored = checkpoints.load_generator(model_dir)
    assert restored.name == 'ema_generator'


def test_resumes_the_authors_checkpoint_with_its_adam_state(fixture_dir, shapes, tmp_path):
    model_dir = tmp_path / 'authors'
    shutil.copytree(fixture_dir, model_dir)
    # No --preset/--set: config.json (the authors' tiny config, batch 4) decides.
    result = run_train('--file_pattern', shapes, '--model_dir', str(model_dir),
                       '--total_iter', '3', '--fid_inter', '3', '--no_fid', '--no-jit')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'at 8 images' in result.stdout
    assert saved_checkpoints(str(model_dir)) == [8, 12]
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(model_dir / 'training-checkpoints' / 'ckpt-12'))
    assert reader.get_tensor('g_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE') == 3
    assert reader.get_tensor('n_images/.ATTRIBUTES/VARIABLE_VALUE') == 12


def test_config_conflict_on_resume_is_refused_then_overridden(shapes, tmp_path):
    model_dir = str(tmp_path / 'run')
    (tmp_path / 'run').mkdir()
    conf = {**__import__('config').get_config('tiny'), 'batch_size': 8}
    utils.write_json(os.path.join(model_dir, 'config.json'), conf)
    refused = run_train('--file_pattern', shapes, '--model_dir', model_dir, '--total_iter', '1',
                        '--set', 'batch_size=4', '--set', 'g_lr=0.001', '--no_fid', '--no-jit')
    assert_clean_error(refused, 'batch_size: 8 in config.json, 4 asked', 'g_lr',
                       '--override_config')
    accepted = run_train('--file_pattern', shapes, '--model_dir', model_dir, '--total_iter', '1',
                         '--set', 'batch_size=4', '--override_config', '--no_fid', '--no-jit')
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert json.load(open(os.path.join(model_dir, 'config.json')))['batch_size'] == 4


def run_train_with_edited_defaults(edits, *args):
    """train.py's main after a user edited config.py's DEFAULTS (patched in the subprocess,
    config.py itself untouched)."""
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': ''}
    code = ('import sys, config, train; config.DEFAULTS.update(%r); '
            'sys.exit(train.main(%r))' % (edits, list(args)))
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


def test_an_edited_config_py_is_named_on_resume_then_applied(shapes, tmp_path):
    # A run of `--preset tiny --set batch_size=8` as train.py records it (test above: the
    # files it writes): config.json and run.json with the preset and the --set values.
    model_dir = tmp_path / 'run'
    model_dir.mkdir()
    utils.write_json(str(model_dir / 'config.json'), config.get_config('tiny', batch_size=8))
    utils.write_json(str(model_dir / 'run.json'), {'preset': 'tiny', 'set': {'batch_size': 8}})
    common = ['--file_pattern', shapes, '--model_dir', str(model_dir), '--fid_inter', '1',
              '--total_iter', '1', '--no_fid', '--no-jit']
    # The same command after editing a default that the preset does not set: refused.
    edited = {'ema_decay': 0.99}
    refused = run_train_with_edited_defaults(edited, *common, '--preset', 'tiny',
                                             '--set', 'batch_size=8')
    assert_clean_error(refused, 'differs from config.py (ema_decay: 0.999 in config.json, '
                                '0.99 in config.py)', '--override_config')
    # Without --preset/--set the recorded ones apply: only the edit is applied.
    applied = run_train_with_edited_defaults(edited, *common, '--override_config')
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert "--override_config: changing ['ema_decay']" in applied.stdout
    conf = json.load(open(model_dir / 'config.json'))
    assert conf['ema_decay'] == 0.99 and conf['batch_size'] == 8 and conf['img_size'] == 32
    recorded = json.load(open(model_dir / 'run.json'))
    assert recorded['preset'] == 'tiny' and recorded['set'] == {'batch_size': 8}


def test_bad_inputs_give_one_line_errors(tmp_path, shapes):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (tmp_path / 'few').mkdir()
    for i in range(3):
        Image.new('RGB', (8, 8), (i, 0, 0)).save(tmp_path / 'few' / f'{i}.png')
    (tmp_path / 'text').mkdir()
    (tmp_path / 'text' / 'a.jpg').write_text('not an image')
    cases = [
        (['--file_pattern', str(tmp_path / 'nothing' / '*.png')], 'nothing'),
        (['--file_pattern', str(empty)], str(empty)),
        (['--file_pattern', str(tmp_path / 'few' / '*.png'), '--set', 'batch_size=8'],
         'batch_size'),
        (['--file_pattern', str(tmp_path / 'text' / '*.jpg')], ''),
        (['--file_pattern', shapes, '--preset', 'cifar'], "unknown preset 'cifar'"),
        (['--file_pattern', shapes, '--set', 'img_size=48'], 'img_size=48'),
        (['--file_pattern', shapes, '--set', 'batch_size'], 'KEY=VALUE'),
    ]
    for args, fragment in cases:
        result = run_train(*args, '--model_dir', str(tmp_path / 'm'), '--no_fid', '--no-jit',
                           '--total_iter', '1')
        assert_clean_error(result, fragment)
    assert run_train('--total_iter', '0').returncode == 2


@pytest.mark.parametrize('tf_config, fragment', [
    (None, 'needs the TF_CONFIG'),
    ('{"cluster": ', 'not valid JSON'),
    ('[1, 2]', 'needs "cluster"'),
    ('{"cluster": {"worker": ["h:1"]}}', 'needs "cluster"'),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     'is not an entry'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}',
     'is not an entry'),
])
def test_unusable_tf_config_is_explained(tf_config, fragment):
    with pytest.raises(loop.TrainingError, match=fragment):
        loop.check_tf_config(tf_config)


def test_tf_config_errors_point_to_a_docs_section_with_an_example():
    import re

    with pytest.raises(loop.TrainingError) as error:
        loop.check_tf_config('{')
    section, page = re.search(r'see "([^"]+)" in (\S+\.md)', str(error.value)).groups()
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    assert f'\n## {section}\n' in text
    assert 'TF_CONFIG=' in text.split(f'\n## {section}\n')[1].split('\n## ')[0]


def test_usable_tf_config_passes():
    loop.check_tf_config('{"cluster": {"chief": ["h:0"], "worker": ["h:1", "h:2"]}, '
                          '"task": {"type": "worker", "index": 1}}')


def test_distribution_setups_that_cannot_work_give_one_line_errors(tmp_path, shapes):
    common = ['--file_pattern', shapes, '--model_dir', str(tmp_path / 'm'), *SMALL,
              '--total_iter', '1']
    assert_clean_error(run_train(*common, '--strategy', 'tpu'), 'found no TPU', '--tpu local')
    bad_task = json.dumps({'cluster': {'worker': ['127.0.0.1:1']},
                           'task': {'type': 'worker', 'index': 3}})
    assert_clean_error(run_train(*common, '--strategy', 'multiworker', TF_CONFIG=bad_task),
                       'is not an entry')
    assert not os.path.exists(tmp_path / 'm' / 'training-checkpoints')


def test_corrupt_files_are_skipped_and_named(tmp_path, shapes):
    data_dir = tmp_path / 'data'
    shutil.copytree(os.path.dirname(shapes), data_dir)
    (data_dir / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 20)
    result = run_train('--file_pattern', str(data_dir / '*.png'),
                       '--model_dir', str(tmp_path / 'm'), '--total_iter', '1', *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'broken.png' in result.stderr


def test_non_finite_losses_stop_and_keep_the_last_good_checkpoint(shapes, tmp_path):
    model_dir = str(tmp_path / 'run')
    common = ['--file_pattern', shapes, '--model_dir', model_dir, '--fid_inter', '2', *SMALL]
    assert run_train(*common, '--total_iter', '2').returncode == 0
    diverging = run_train(*common, '--total_iter', '40', '--override_config',
                          '--set', 'd_lr=1e30', '--set', 'g_lr=1e30')
    assert_clean_error(diverging, 'non-finite', 'last good checkpoint')
    assert saved_checkpoints(model_dir) == [16] and saved_checkpoints(
        model_dir, 'best-training-checkpoints') == [16]
    g = checkpoints.load_generator(model_dir, ema=False)
    assert all(np.isfinite(w.numpy()).all() for w in g.weights)


def test_killed_run_resumes_from_its_last_complete_checkpoint(shapes, tmp_path):
    model_dir = str(tmp_path / 'run')
    args = [sys.executable, os.path.join(ROOT, 'train.py'), '--file_pattern', shapes,
            '--model_dir', model_dir, '--fid_inter', '2', '--total_iter', '1000', *SMALL]
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 300
        while len(saved_checkpoints(model_dir)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.7)  # somewhere in the next interval, maybe in a save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = saved_checkpoints(model_dir)
    assert len(saved) >= 2
    # Leftovers of a save cut short must not be taken for a checkpoint, and are removed.
    last = max(saved)
    partial = os.path.join(model_dir, 'training-checkpoints', f'ckpt-{last + 16}')
    open(partial + '.index', 'wb').write(b'garbage')
    open(partial + '.data-00000-of-00001', 'wb').write(b'')
    os.makedirs(partial + '_temp')
    open(os.path.join(partial + '_temp', 'part-00000-of-00001.index'), 'wb').write(b'')
    half_png = os.path.join(model_dir, 'images', f'.samples{utils.TEMP_MARK}12-ab.png')
    open(half_png, 'wb').write(b'half')
    resumed = run_train('--file_pattern', shapes, '--model_dir', model_dir, '--fid_inter', '2',
                        '--total_iter', str(last // 8 + 2), *SMALL)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'at {last} images' in resumed.stdout
    removed = int(resumed.stdout.split('Removed ')[1].split()[0])
    assert removed >= 4 and 'partial files of an interrupted save' in resumed.stdout
    assert not os.path.exists(partial + '_temp') and not os.path.exists(half_png)
    assert saved_checkpoints(model_dir)[-1] == last + 16
    checkpoints.load_generator(model_dir)  # every kept file is readable


def test_ctrl_c_says_what_was_kept_and_the_checkpoint_stays_usable(shapes, tmp_path):
    model_dir = str(tmp_path / 'run')
    args = [sys.executable, os.path.join(ROOT, 'train.py'), '--file_pattern', shapes,
            '--model_dir', model_dir, '--fid_inter', '2', '--total_iter', '1000', *SMALL]
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.time() + 300
    while not saved_checkpoints(model_dir) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and 'Traceback' not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith('train.py: interrupted; the last checkpoint is ') and 'resume' in last
    saved = last.split('checkpoint is ')[1].split(';')[0]
    assert os.path.exists(saved + '.index')
    checkpoints.load_generator(model_dir, checkpoint_path=saved)


def test_without_data_the_demo_preset_trains_on_generated_shapes(tmp_path):
    import config
    import train
    args = train.parse_args(['--model_dir', str(tmp_path / 'run')])
    before = vars(args).copy()
    plan = train.resolve_run(args)
    assert plan.asked == config.PRESETS['demo'] and plan.embedded
    assert plan.file_pattern == train.DEFAULT_DATA_PATTERN == plan.eval_dir
    assert (plan.total_iter, plan.metrics_inter, plan.fid_inter) == (600, 50, 300)
    assert vars(args) == before and not os.listdir(tmp_path)  # nothing mutated or written
    made = shapes_data.make_shapes_dataset(str(tmp_path / 'shapes'), n_images=2)
    assert made == train.DEFAULT_DATA_PATTERN.replace(train.DEFAULT_DATA_DIR,
                                                      str(tmp_path / 'shapes'))
    # The demo preset is the tiny model, without DiffAugment and with higher learning rates.
    demo, tiny = config.get_config('demo'), config.get_config('tiny')
    assert tiny['policy'] == 'color,translation' and tiny['g_lr'] == tiny['d_lr'] == 2e-4
    assert demo['policy'] == '' and demo['g_lr'] == demo['d_lr'] == 5e-4
    recipe = ('policy', 'g_lr', 'd_lr')
    assert {k: v for k, v in demo.items() if k not in recipe} == {
        k: v for k, v in tiny.items() if k not in recipe}


@pytest.mark.parametrize('steps_per_call', [1, 2])
def test_a_nan_step_inside_an_interval_stops_before_the_next_save(shapes, tmp_path,
                                                                   steps_per_call):
    """Batch 3 is NaN; metrics are read at 6 only, saves come every 2 iterations: the
    save at 4 must not happen, the one at 2 stays."""
    import tensorflow as tf
    import train
    model_dir = str(tmp_path / 'run')
    args = train.parse_args(['--file_pattern', shapes, '--model_dir', model_dir,
                             '--total_iter', '8', '--metrics_inter', '6', '--fid_inter', '2',
                             '--steps_per_call', str(steps_per_call), *SMALL])
    plan = train.resolve_run(args)
    run = loop.Run(args, plan, train.settle_config(model_dir, plan.asked, False))
    good = next(iter(run.dataset))
    one = tf.data.Dataset.from_tensors
    run.dataset = one(good).repeat(2).concatenate(one(good * np.nan)).concatenate(
        one(good).repeat())
    with pytest.raises(loop.TrainingError, match='non-finite loss between iterations 1 and 4'):
        run.train(run.restore())
    assert saved_checkpoints(model_dir) == saved_checkpoints(
        model_dir, 'best-training-checkpoints') == [16]
    assert not os.path.exists(os.path.join(model_dir, 'metrics.jsonl'))


def test_steps_per_call_must_divide_the_intervals_and_needs_one_device():
    import train
    plan = train.resolve_run(train.parse_args(['--metrics_inter', '100', '--fid_inter', '300']))
    train.check_steps_per_call(4, plan)
    with pytest.raises(cli.UsageError, match=r'--steps_per_call 4 must divide '
                       r'--metrics_inter 50: .* or --steps_per_call 2$'):
        train.check_steps_per_call(4, dataclasses.replace(plan, metrics_inter=50))
    for argv in (['--steps_per_call', '0'], ['--steps_per_call', '2', '--strategy', 'mirrored']):
        with pytest.raises(SystemExit):
            train.parse_args(argv)


@pytest.mark.parametrize('done, total, n', [(0, 10, 4), (4, 10, 4), (8, 10, 1), (9, 10, 1),
                                            (3, 10, 1), (8, 12, 4)])
def test_calls_of_k_steps_start_at_multiples_of_k_and_stop_at_total(done, total, n):
    import argparse
    import types
    run = types.SimpleNamespace(args=argparse.Namespace(steps_per_call=4))
    assert loop.Run._steps_in_next_call(run, done, total) == n
