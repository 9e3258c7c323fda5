"""Checkpoints: the authors' checkpoint format, finding and restoring checkpoints, loading
a trained generator or discriminator, and downloading the authors' released weights.
"""
import dataclasses
import functools
import os
import re
import shutil
import socket
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf

import config as config_lib

TRAINING_DIR = 'training-checkpoints'
BEST_DIR = 'best-training-checkpoints'
_VALUE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'


class CheckpointError(Exception):
    """A model directory or checkpoint that cannot be used; the message says why."""


def checkpoint_variables(layer, prefix=''):
    """{object path: variable} of a Keras layer, with the paths of the authors' checkpoints.

    Keras 2 named a layer's children by attribute name, list items by index and the
    sub-layers of a Sequential that own weights `layer_with_weights-<i>`; our layers
    use the same attribute names, so walking them gives the same paths.
    """
    found = {f'{prefix}{v.name}': v
             for v in layer._trainable_variables + layer._non_trainable_variables}
    for name, child in _child_layers(layer):
        found.update(checkpoint_variables(child, f'{prefix}{name}/'))
    return found


def _child_layers(layer):
    import keras
    if isinstance(layer, keras.Sequential):
        with_weights = [sub for sub in layer.layers if sub.weights]
        return [(f'layer_with_weights-{i}', sub) for i, sub in enumerate(with_weights)]
    children = []
    for name, value in vars(layer).items():
        if name.startswith('_'):
            continue
        if isinstance(value, keras.layers.Layer):
            children.append((name, value))
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, keras.layers.Layer) for v in value):
            children.extend((f'{name}/{i}', v) for i, v in enumerate(value))
    return children


def optimizer_variables(optimizer, model):
    """{object path: variable} of a Keras 3 Adam in the authors' (Keras 2.11+) layout.

    `_variables/{2i+1}` and `/{2i+2}` are m and v of the i-th trainable weight of the
    model, matched by position, as the authors' optimizer stores them. A Keras
    LossScaleOptimizer (fp16) is saved as its inner Adam.
    """
    optimizer = getattr(optimizer, 'inner_optimizer', optimizer)
    found = {'_iterations': optimizer.iterations, '_learning_rate': optimizer._learning_rate}
    for i, weight in enumerate(model.trainable_weights):
        index = optimizer._get_variable_index(weight)
        found[f'_variables/{2 * i + 1}'] = optimizer._momentums[index]
        found[f'_variables/{2 * i + 2}'] = optimizer._velocities[index]
    return found


def _trackable_tree(variables):
    """Nested trackable objects whose checkpoint keys are the given paths."""
    root = tf.__internal__.tracking.AutoTrackable()
    for path, variable in variables.items():
        node = root
        *parents, leaf = path.split('/')
        for part in parents:
            if not hasattr(node, part):
                setattr(node, part, tf.__internal__.tracking.AutoTrackable())
            node = getattr(node, part)
        setattr(node, leaf, getattr(variable, 'value', variable))
    return root


def make_checkpoint(**objects):
    """tf.train.Checkpoint in the authors' format.

    `objects` maps checkpoint names to {path: variable} dicts (from checkpoint_variables
    or optimizer_variables) or to plain tf.Variables (n_images, fid, best_fid).
    """
    return tf.train.Checkpoint(**{
        name: _trackable_tree(value) if isinstance(value, dict) else value
        for name, value in objects.items()})


def check_checkpoint_matches(checkpoint_path, name, variables):
    """Raises CheckpointError naming the first variable missing or of another shape."""
    shapes = tf.train.load_checkpoint(checkpoint_path).get_variable_to_shape_map()
    for path, variable in variables.items():
        key = f'{name}/{path}{_VALUE_SUFFIX}'
        if key not in shapes:
            raise CheckpointError(
                f'{checkpoint_path} has no variable {name}/{path}: config.json does not '
                f'describe the model in this checkpoint')
        if list(shapes[key]) != list(variable.shape):
            raise CheckpointError(
                f'config.json does not match {checkpoint_path}: {name}/{path} has shape '
                f'{list(shapes[key])} in the checkpoint but {list(variable.shape)} for '
                f'this config')


def has_variable(checkpoint_path, name):
    """Whether the checkpoint holds the variable saved under `name` (make_checkpoint's)."""
    return f'{name}{_VALUE_SUFFIX}' in tf.train.load_checkpoint(
        checkpoint_path).get_variable_to_shape_map()


def restore_checkpoint(checkpoint_path, **objects):
    """Restores the named objects (as for make_checkpoint) from one checkpoint file."""
    for name, value in objects.items():
        variables = value if isinstance(value, dict) else {'': value}
        if isinstance(value, dict):
            check_checkpoint_matches(checkpoint_path, name, variables)
    status = make_checkpoint(**objects).restore(checkpoint_path)
    status.expect_partial().assert_existing_objects_matched()


def find_checkpoint(model_dir, prefer_best=True):
    """Newest checkpoint of model_dir: best-training-checkpoints/ first (the one the
    authors release), else training-checkpoints/. Raises CheckpointError if none."""
    if not os.path.isdir(model_dir):
        raise CheckpointError(f'model directory {model_dir} does not exist')
    subdirs = (BEST_DIR, TRAINING_DIR) if prefer_best else (TRAINING_DIR, BEST_DIR)
    for subdir in subdirs:
        path = newest_checkpoint_in(os.path.join(model_dir, subdir))
        if path:
            return path
    raise CheckpointError(
        f'no checkpoint in {model_dir}: expected {BEST_DIR}/ckpt-<n>.index or '
        f'{TRAINING_DIR}/ckpt-<n>.index')


def newest_checkpoint_in(directory):
    """Path prefix of the newest ckpt-<n> in directory, or None.

    Uses the `checkpoint` state file when present, else the highest n on disk (files
    downloaded one by one may come without the state file)."""
    if not os.path.isdir(directory):
        return None
    path = tf.train.latest_checkpoint(directory)
    if path and os.path.exists(path + '.index'):
        return path
    numbers = [int(f[5:-6]) for f in os.listdir(directory)
               if f.startswith('ckpt-') and f.endswith('.index') and f[5:-6].isdigit()]
    return os.path.join(directory, f'ckpt-{max(numbers)}') if numbers else None


def remove_partial_saves(directory):
    """Removes what a save cut short leaves in one of our checkpoint directories: the
    `ckpt-<n>_temp` folders TensorFlow writes into, and `ckpt-<n>` files that the
    `checkpoint` state file does not list (it is rewritten atomically once a save is
    complete). A directory without a state file (e.g. filled by hand) is left alone.
    Returns the names removed."""
    if not os.path.isdir(directory):
        return []
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    listed = {os.path.basename(p) for p in state.all_model_checkpoint_paths}
    removed = []
    for name in sorted(os.listdir(directory)):
        match = re.fullmatch(r'(ckpt-\d+)(_temp|\.index|\.data-\d+-of-\d+)', name)
        if match and (match.group(2) == '_temp' or match.group(1) not in listed):
            path = os.path.join(directory, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            removed.append(name)
    return removed


def _model_config(model_dir):
    """config.json of a model directory, or CheckpointError saying why it is unusable."""
    if not os.path.isdir(model_dir):
        raise CheckpointError(f'model directory {model_dir} does not exist')
    try:
        return config_lib.load_run_config(model_dir)
    except config_lib.ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_generator(model_dir, ema=True, checkpoint_path=None):
    """The generator of a trained model directory, ready to sample.

    ema=True gives the EMA generator (used for samples and FID), ema=False the raw one.
    The newest checkpoint of best-training-checkpoints/ is used, else of
    training-checkpoints/, unless checkpoint_path is given.
    """
    import model as model_lib
    conf = _model_config(model_dir)
    checkpoint_path = checkpoint_path or find_checkpoint(model_dir)
    generator = model_lib.build_generator(conf, name='ema_generator' if ema else 'generator')
    name = 'ema_generator' if ema else 'generator'
    restore_checkpoint(checkpoint_path, **{name: checkpoint_variables(generator)})
    return generator


def load_discriminator(model_dir, checkpoint_path=None):
    """The discriminator of a trained model directory (see load_generator)."""
    import model as model_lib
    conf = _model_config(model_dir)
    checkpoint_path = checkpoint_path or find_checkpoint(model_dir)
    discriminator = model_lib.build_discriminator(conf)
    restore_checkpoint(checkpoint_path, discriminator=checkpoint_variables(discriminator))
    return discriminator


def resumable_checkpoint(model_dir):
    """The checkpoint a run in model_dir resumes from: the newest one that a state file of
    training-checkpoints/ (else best-training-checkpoints/) lists, or None for a new run.
    A save cut short is never listed (the state file is rewritten after the save)."""
    paths = (tf.train.latest_checkpoint(os.path.join(model_dir, subdir))
             for subdir in (TRAINING_DIR, BEST_DIR))
    return next(filter(None, paths), None)


# ---------------------------------------------------------------------------------------
# Starting a run from another model's weights (train.py --init_from)
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InitSource:
    """The weights a new run starts from."""
    source: str      # as given: a released model's name, a run folder or a checkpoint path
    model_dir: str   # the folder of its config.json
    checkpoint: str  # the ckpt-<n> path prefix read
    config: dict     # its validated config


def resolve_init_source(source, local_dir=None, cache_dir=None, download_fn=None):
    """The InitSource of train.py --init_from SOURCE: a released model's name (downloaded,
    or read from the cache, as generate.py --pretrained does), a run folder (the
    checkpoint generate.py reads: find_checkpoint's), or a ckpt-<n> path prefix in a run
    folder's checkpoint directory. Raises CheckpointError saying what is wrong."""
    if source in PRETRAINED:
        model_dir = download_pretrained(source, local_dir=local_dir, cache_dir=cache_dir,
                                        download_fn=download_fn)
        checkpoint = find_checkpoint(model_dir)
    elif os.path.isdir(source):
        model_dir, checkpoint = source, find_checkpoint(source)
    elif os.path.isfile(source + '.index'):
        checkpoint = source
        model_dir = os.path.dirname(os.path.dirname(os.path.abspath(source)))
    else:
        raise CheckpointError(
            f"--init_from {source}: not a released model ({', '.join(PRETRAINED)}), a run "
            f'folder, or a checkpoint (the ckpt-<n> path prefix of its .index file)')
    return InitSource(source, model_dir, checkpoint, _model_config(model_dir))


def load_for_init(checkpoint_path, objects, conditional_from_unconditional=False):
    """Assigns the networks' variables ({checkpoint name: {path: variable}}, as for
    make_checkpoint) from another run's checkpoint; returns the paths left as they were.

    conditional_from_unconditional: the checkpoint's model has no classes. Its class
    embeddings are missing and stay fresh; G's kernels that read [z, e(label)] have the
    checkpoint's rows for z and zeros for e(label), so G starts as the checkpoint's G
    for every class. Otherwise every variable must be in the checkpoint with its shape.
    """
    reader = tf.train.load_checkpoint(checkpoint_path)
    shapes = reader.get_variable_to_shape_map()
    fresh = []
    for name, variables in objects.items():
        if not conditional_from_unconditional:
            check_checkpoint_matches(checkpoint_path, name, variables)
        for path, variable in variables.items():
            key = f'{name}/{path}{_VALUE_SUFFIX}'
            if key not in shapes:
                if not path.startswith('class_embedding/'):
                    raise CheckpointError(f'{checkpoint_path} has no variable {name}/{path}')
                fresh.append(f'{name}/{path}')
                continue
            value = reader.get_tensor(key)
            if value.shape != tuple(variable.shape):
                value = _widened(value, variable, f'{checkpoint_path}: {name}/{path}')
            variable.assign(value)
    return fresh


def _widened(value, variable, where):
    """A kernel of the unconditional model read into one that also reads e(label): its
    rows first, zeros for the new rows."""
    shape = tuple(variable.shape)
    if len(shape) != len(value.shape) or shape[1:] != value.shape[1:] or (
            shape[0] != 2 * value.shape[0]):
        raise CheckpointError(f'{where} has shape {list(value.shape)}, the new run '
                              f'{list(shape)}: the models differ in more than the classes')
    return np.concatenate([value, np.zeros((shape[0] - value.shape[0], *shape[1:]),
                                           value.dtype)])


# ---------------------------------------------------------------------------------------
# Pretrained weights
# ---------------------------------------------------------------------------------------

PRETRAINED_REPO = 'milmor/LadaGAN'
PRETRAINED = config_lib.PRETRAINED  # name -> images seen at the released checkpoint
_CKPT_DATA_SUFFIX = '.data-00000-of-00001'


class UnknownPretrainedError(CheckpointError, ValueError):
    """A pretrained model name that is not in PRETRAINED; the message lists the valid ones."""


def pretrained_url(name):
    """Web page of a released model's folder on the Hub."""
    return f'https://huggingface.co/{PRETRAINED_REPO}/tree/main/{name}'


def pretrained_files(name):
    """The Hub file names of a released model, relative to the repository root.

    The last one, the `checkpoint` state file, is optional: newest_checkpoint_in finds
    the checkpoint without it.
    """
    if name not in PRETRAINED:
        raise UnknownPretrainedError(
            f"unknown pretrained model '{name}': choose one of {', '.join(PRETRAINED)}")
    ckpt = f'{name}/{BEST_DIR}/ckpt-{PRETRAINED[name]}'
    return [f'{name}/{config_lib.CONFIG_FILE}', f'{ckpt}.index', f'{ckpt}{_CKPT_DATA_SUFFIX}',
            f'{name}/{BEST_DIR}/checkpoint']


def download_pretrained(name, local_dir=None, cache_dir=None, download_fn=None):
    """Download a released model from the Hub; returns its model directory.

    name: one of PRETRAINED. The files go to the Hugging Face cache (cache_dir, default
    ~/.cache/huggingface/hub; a second call reads the cache) or, with local_dir, to
    local_dir/<name>/. The directory returned holds config.json and
    best-training-checkpoints/, as `load_generator` expects.
    download_fn: stands in for huggingface_hub.hf_hub_download (same keyword arguments).
    Raises UnknownPretrainedError for an unknown name and CheckpointError, saying how to
    place the files by hand, when the Hub cannot be reached.
    """
    files = pretrained_files(name)
    unreachable = None
    if download_fn is None:
        download_fn, unreachable = _hub_client()
    model_dir = None
    for i, filename in enumerate(files):
        optional = i == len(files) - 1
        try:
            path = download_fn(repo_id=PRETRAINED_REPO, filename=filename,
                               local_dir=local_dir, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - only download failures are turned into CheckpointError
            if optional and (_missing_on_hub(e) or _is_download_error(e)):
                continue  # best effort: newest_checkpoint_in does without the state file
            if not _is_download_error(e):
                raise
            raise CheckpointError(_manual_download_message(name, filename, e, local_dir,
                                                           unreachable)) from None
        if model_dir is None:  # config.json comes first: its folder is the model directory
            model_dir = os.path.dirname(os.fspath(path))
    for filename in files[:-1]:
        if not os.path.isfile(os.path.join(model_dir, *filename.split('/')[1:])):
            raise CheckpointError(f'download of {name} incomplete: {filename} is not in '
                                  f'{model_dir}')
    return model_dir


def _hub_client():
    """hf_hub_download, and why the Hub cannot be reached (None if it can or if unknown).
    Unreachable, it only reads files already downloaded: the client would retry for
    half a minute before failing."""
    from huggingface_hub import constants, hf_hub_download
    if constants.HF_HUB_OFFLINE or urllib.request.getproxies():  # a proxy may reach it
        return hf_hub_download, None
    unreachable = _unreachable(constants.ENDPOINT)
    if unreachable:
        return functools.partial(hf_hub_download, local_files_only=True), unreachable
    return hf_hub_download, None


def _unreachable(endpoint, timeout=3.0):
    """Why a TCP connection to the endpoint's host fails; None when it connects."""
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == 'https' else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f'{url.hostname}:{port} cannot be reached ({e.strerror or e})'
    return None


def _missing_on_hub(error):
    """The Hub answered that the file does not exist (not: the Hub cannot be reached)."""
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        return False
    return isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError)


def _is_download_error(error):
    """Network, Hub and file-system failures (not programming errors)."""
    if isinstance(error, OSError):  # ConnectionError, OfflineModeIsEnabled, HTTP and cache errors
        return True
    module = type(error).__module__ or ''
    return module.split('.')[0] in ('huggingface_hub', 'httpx', 'httpx2', 'requests', 'urllib3')


def _manual_download_message(name, filename, error, local_dir, unreachable=None):
    reason = ' '.join(str(error).split()).split('. ')[0].rstrip('.') or 'no details'
    if len(reason) > 300:
        reason = reason[:300].rsplit(' ', 1)[0] + ' ...'
    reason = f'{type(error).__name__}: {reason}'
    if unreachable:
        reason = f'{unreachable} and the file is not in the cache ({type(error).__name__})'
    ckpt = f'ckpt-{PRETRAINED[name]}'
    target = os.path.join(local_dir, name) if local_dir else f'<dir>/{name}'
    return (f"cannot download pretrained model '{name}' ({filename}) from the Hugging Face "
            f"Hub: {reason}. To place the files by hand, get "
            f"config.json and best-training-checkpoints/{ckpt}.index and "
            f"{ckpt}{_CKPT_DATA_SUFFIX} from {pretrained_url(name)} into {target}/config.json "
            f"and {target}/{BEST_DIR}/, then pass that folder as the model directory "
            f"(generate.py --model_dir {target}, or checkpoints.load_generator('{target}'))")
