"""Data pipeline, checkpoints in the authors' format, and model loading."""
import json
import os

import numpy as np
import tensorflow as tf

# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

# (end of data section)

# ---------------------------------------------------------------------------------------
# Checkpoints and loading
# ---------------------------------------------------------------------------------------
CONFIG_FILE = 'config.json'
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
    model, matched by position, as the authors' optimizer stores them.
    """
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


def load_config(model_dir):
    """The validated config of model_dir/config.json (the authors' or ours)."""
    import config as config_lib
    if not os.path.isdir(model_dir):
        raise CheckpointError(f'model directory {model_dir} does not exist')
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path} not found: a model directory needs its config.json')
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f'cannot read {path}: {e}') from None
    try:
        return config_lib.from_saved(saved)
    except config_lib.ConfigError as e:
        raise CheckpointError(f'{path}: {e}') from None


def load_generator(model_dir, ema=True, checkpoint_path=None):
    """The generator of a trained model directory, ready to sample.

    ema=True gives the EMA generator (used for samples and FID), ema=False the raw one.
    The newest checkpoint of best-training-checkpoints/ is used, else of
    training-checkpoints/, unless checkpoint_path is given.
    """
    import model as model_lib
    conf = load_config(model_dir)
    checkpoint_path = checkpoint_path or find_checkpoint(model_dir)
    generator = model_lib.build_generator(conf, name='ema_generator' if ema else 'generator')
    name = 'ema_generator' if ema else 'generator'
    restore_checkpoint(checkpoint_path, **{name: checkpoint_variables(generator)})
    return generator


def load_discriminator(model_dir, checkpoint_path=None):
    """The discriminator of a trained model directory (see load_generator)."""
    import model as model_lib
    conf = load_config(model_dir)
    checkpoint_path = checkpoint_path or find_checkpoint(model_dir)
    discriminator = model_lib.build_discriminator(conf)
    restore_checkpoint(checkpoint_path, discriminator=checkpoint_variables(discriminator))
    return discriminator


# ---------------------------------------------------------------------------------------
# Model statistics
# ---------------------------------------------------------------------------------------

def count_parameters(model):
    """(trainable, non_trainable) parameter counts."""
    count = lambda weights: int(sum(np.prod(w.shape) for w in weights))
    return count(model.trainable_weights), count(model.non_trainable_weights)


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass on one sample, read off the traced graph.

    Counts the matrix products and convolutions (MatMul, BatchMatMul, Einsum, Conv2D),
    the way the LadaGAN README's "FLOPs" are counted; element-wise ops are not counted.
    """
    spec = tf.TensorSpec([1, *input_shape], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return sum(_op_macs(op) for op in graph.get_operations())


def _op_macs(op):
    if op.type in ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'BatchMatMul'):
        a = op.inputs[0].shape.as_list()
        adjoint = op.get_attr('transpose_a' if op.type == 'MatMul' else 'adj_x')
        inner = a[-2] if adjoint else a[-1]
        return int(np.prod(op.outputs[0].shape.as_list())) * inner
    if op.type == 'Conv2D':
        kh, kw, cin, _ = op.inputs[1].shape.as_list()
        return int(np.prod(op.outputs[0].shape.as_list())) * kh * kw * cin
    if op.type == 'Einsum':
        inputs, _ = op.get_attr('equation').decode().split('->')
        sizes = {}
        for letters, tensor in zip(inputs.split(','), op.inputs):
            sizes.update(zip(letters, tensor.shape.as_list()))
        return int(np.prod(list(sizes.values())))
    return 0
