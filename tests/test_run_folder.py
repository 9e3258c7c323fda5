"""A run folder that a failed start, a failed override or a killed save never breaks, and the
options of a run recorded beside its config (train.py as a user runs it)."""
import json
import os

from test_train import SMALL, assert_clean_error, run_train, saved_checkpoints


def _files(folder):
    return {os.path.relpath(os.path.join(root, name), folder): open(
        os.path.join(root, name), 'rb').read()
        for root, _, names in os.walk(folder) for name in names}


def test_a_failed_start_writes_nothing_and_the_corrected_command_trains(shapes, tmp_path):
    import shapes_data
    few = shapes_data.make_shapes_dataset(str(tmp_path / 'few'), n_images=6)
    model_dir = tmp_path / 'run'
    common = ['--model_dir', str(model_dir), '--total_iter', '1', *SMALL]
    too_few = run_train('--file_pattern', few, *common)
    assert_clean_error(too_few, 'fewer than one batch')
    assert not model_dir.exists()
    bad_path = run_train('--file_pattern', str(tmp_path / 'nope' / '*.png'), *common)
    assert_clean_error(bad_path, 'No file matches')
    assert not model_dir.exists()
    fixed = run_train('--file_pattern', few, *common, '--set', 'batch_size=4')
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert json.load(open(model_dir / 'config.json'))['batch_size'] == 4


def test_failed_override_and_other_options_leave_the_run_as_it_was(shapes, tmp_path):
    model_dir = str(tmp_path / 'run')
    common = ['--file_pattern', shapes, '--model_dir', model_dir, '--fid_inter', '2', *SMALL]
    assert run_train(*common, '--total_iter', '2').returncode == 0
    run_file = json.load(open(os.path.join(model_dir, 'run.json')))
    assert run_file == {'file_pattern': shapes, 'precision': 'fp32', 'grad_accum': 1,
                        'strategy': 'default', 'seed': None, 'jit': False, 'total_iter': 2,
                        'n_train_images': 48, 'preset': 'tiny', 'set': {'batch_size': 8}}
    before = _files(model_dir)
    # Shapes that do not fit the checkpoint: refused before config.json is touched.
    misfit = run_train(*common, '--total_iter', '3', '--override_config',
                       '--set', 'g_mlp=[64,64,64]')
    assert_clean_error(misfit, 'does not match', 'has shape')
    # Options that change what the run computes: refused, naming them.
    other = run_train(*common, '--total_iter', '3', '--grad_accum', '2', '--strategy',
                      'mirrored', '--precision', 'bf16')
    assert_clean_error(other, "precision: 'fp32' in run.json, 'bf16' asked",
                       "grad_accum: 1 in run.json, 2 asked",
                       "strategy: 'default' in run.json, 'mirrored' asked", '--override_config')
    assert _files(model_dir) == before  # byte for byte, every file
    resumed = run_train(*common, '--total_iter', '3', '--grad_accum', '2', '--override_config')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resumed from' in resumed.stdout and "changing ['grad_accum']" in resumed.stdout
    assert json.load(open(os.path.join(model_dir, 'run.json')))['grad_accum'] == 2
    assert saved_checkpoints(model_dir) == [16, 24]


def test_few_shot_folders_train_and_measure_fid_on_all_their_images(tmp_path):
    import shapes_data
    import keras
    few = shapes_data.make_shapes_dataset(str(tmp_path / 'few'), n_images=100)
    more = shapes_data.make_shapes_dataset(str(tmp_path / 'more'), n_images=150)
    # Random Inception weights: the FID plumbing of a real run, without the download.
    weights = str(tmp_path / 'inception.weights.h5')
    keras.applications.InceptionV3(include_top=False, pooling='avg',
                                   weights=None).save_weights(weights)
    model_dir = tmp_path / 'run'
    defaults = run_train('--file_pattern', few, '--model_dir', str(model_dir), '--no-jit')
    assert_clean_error(defaults, 'fewer than one batch', '--set batch_size=64')
    assert not model_dir.exists()
    # 150 training images, FID on all 100 of another folder (both below n_fid_real = 500).
    tiny = run_train('--file_pattern', more, '--eval_dir', few, '--model_dir', str(model_dir),
                     '--preset', 'tiny', '--total_iter', '2', '--fid_inter', '2', '--no-jit',
                     '--inception_weights', weights)
    assert tiny.returncode == 0, tiny.stderr[-3000:]
    assert 'data: 150 images' in tiny.stdout, tiny.stdout
    assert 'n_fid_real' in tiny.stdout and 'all 100' in tiny.stdout, tiny.stdout
    fid_line = next(line for line in tiny.stdout.splitlines() if '] FID ' in line)
    assert float(fid_line.split('] FID ')[1].split(';')[0]) >= 0 and '(best)' in fid_line
