"""Sample images from a trained or released LadaGAN generator, plot its attention, walk
its latent space, make a learning-progress GIF, and export it for serving.

    python generate.py --pretrained cifar10 --n 64 --seed 1 --out samples.png   # a grid
    python generate.py --model_dir runs/tiny --n 10000 --out samples/           # one PNG each
    python generate.py --model_dir runs/tiny --n 5 --interpolate 16 --out walk.gif
    python generate.py --model_dir runs/tiny --n 8 --attention --out maps.png
    python generate.py --model_dir runs/tiny --export_keras g.keras --export_savedmodel g_tf
    python generate.py --progress_gif runs/tiny/images progress.gif
    python generate.py --model_dir runs/shapes --class square --n 16 --out squares.png
    python generate.py --model_dir runs/shapes --class_grid --n 8 --out classes.png

The same --seed gives the same images (noise from a stateless RNG; sampling runs in
fixed-size XLA batches). Bad input ends with one line `error: ...` and exit code 2.
A class-conditional model (n_classes > 0) draws each image's class with the training
frequencies of the run's classes.json (from the same --seed; uniform when the file is
missing), or makes them all of one class with --class; --class_grid shows every class
(rows) for the same --n noise vectors (columns).

Python API: save_gif, make_progress_gif, class_grid, export_keras, export_savedmodel;
noise, labels and batched sampling are in sampling.py.
"""
import argparse
import glob
import os
import re
import shutil
import sys

import numpy as np
from PIL import Image, ImageDraw

import cli
import config
import utils

GRID_LIMIT = 1024         # more images than this go to a directory, not one grid PNG
ATTENTION_PER_PAGE = 8    # images (rows) per attention PNG
OTHER_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
LABELS_CSV = 'labels.csv'  # beside one PNG per image of a conditional model: their classes
PROGRESS_PATTERN = re.compile(r'samples-(\d+)\.png$')  # train.py: images/samples-<n:09d>.png


# ---------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------

def save_gif(frames, path, duration_ms=80, last_frame_ms=None):
    """uint8 (H, W, 3) frames -> a looping animated GIF, written atomically."""
    images = [Image.fromarray(np.asarray(f, np.uint8)).quantize(256) for f in frames]
    durations = [duration_ms] * len(images)
    if last_frame_ms is not None:
        durations[-1] = last_frame_ms
    with utils.atomic_write(path) as tmp:
        images[0].save(tmp, format='GIF', save_all=True, append_images=images[1:], loop=0,
                       duration=durations if len(images) > 1 else duration_ms, disposal=1)


def progress_image_paths(images_dir):
    """train.py's sample grids in images_dir (or model_dir/images), oldest first."""
    candidates = [images_dir, os.path.join(images_dir, 'images')]
    for directory in candidates:
        paths = [p for p in glob.glob(os.path.join(directory, 'samples-*.png'))
                 if PROGRESS_PATTERN.search(os.path.basename(p))]
        if paths:
            return sorted(paths, key=_images_seen)
    raise cli.UsageError(f'no samples-<n_images>.png in {images_dir}: train.py writes them to '
                     f'MODEL_DIR/images/')


def _images_seen(path):
    return int(PROGRESS_PATTERN.search(os.path.basename(path)).group(1))


def make_progress_gif(image_paths, out_path, duration_ms=250, last_frame_ms=2000, label=True):
    """The sample grids of a training run -> one animated GIF, in the given order.

    label: a bar under each frame with the images seen, read from samples-<n>.png names.
    Frames of another size than the first are resized to it.
    """
    image_paths = list(image_paths)
    if not image_paths:
        raise cli.UsageError('no images for the progress GIF')
    frames, size = [], None
    for path in image_paths:
        with Image.open(path) as image:
            frame = image.convert('RGB')
        size = size or frame.size
        if frame.size != size:
            frame = frame.resize(size, Image.Resampling.BILINEAR)
        match = PROGRESS_PATTERN.search(os.path.basename(path))
        if label and match:
            frame = _with_caption(frame, f'{_format_count(int(match.group(1)))} images')
        frames.append(np.asarray(frame))
    if label:  # captioned and plain frames may differ in height
        height = max(f.shape[0] for f in frames)
        frames = [np.pad(f, ((0, height - f.shape[0]), (0, 0), (0, 0))) for f in frames]
    save_gif(frames, out_path, duration_ms, last_frame_ms)
    return out_path


def _format_count(n):
    for unit, size in (('M', 1e6), ('k', 1e3)):
        if n >= size:
            return f'{n / size:.2f}'.rstrip('0').rstrip('.') + unit
    return str(n)


def _with_caption(image, text):
    bar = 14
    out = Image.new('RGB', (image.width, image.height + bar), (0, 0, 0))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((3, image.height + 2), text, fill=(255, 255, 255))
    return out


def class_grid(images_uint8, names, columns):
    """(K * columns, S, S, 3) uint8, row-major (row k: class k) -> one grid with the class
    names written in a black column at the left of their rows."""
    from PIL import ImageFont
    grid = utils.image_grid(np.asarray(images_uint8, np.uint8), columns)
    side = grid.shape[0] // len(names)
    font = ImageFont.load_default()
    labels = [_short(str(name)) for name in names]
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    width = 6 + max(int(np.ceil(measure.textlength(t, font=font))) for t in labels)
    out = Image.new('RGB', (width + grid.shape[1], grid.shape[0]), (0, 0, 0))
    out.paste(Image.fromarray(grid), (width, 0))
    draw = ImageDraw.Draw(out)
    for row, text in enumerate(labels):
        top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
        y = row * side + (side - (bottom - top)) // 2 - top
        draw.text((3, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(out)


def _short(name, limit=24):
    return name if len(name) <= limit else name[:limit - 3] + '...'


def interpolation_strip(frames_uint8, steps):
    """((k-1)*steps + 1, H, W, 3) frames -> a grid with one row per keyframe pair, from
    one key (first column) to the next (last column)."""
    rows = [frames_uint8[i * steps:i * steps + steps + 1]
            for i in range((len(frames_uint8) - 1) // steps)]
    return utils.image_grid(np.concatenate(rows), columns=steps + 1)


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------

def export_keras(generator, path):
    """The generator as a .keras file for keras.saving.load_model (custom layers are
    registered under the package 'LadaGAN': import model before loading). A conditional
    generator's file is called on (noise, labels), labels int32 (B,)."""
    path = os.fspath(path)
    with utils.atomic_write(path) as tmp:
        generator.save(tmp)
    return path


def _serving_module(generator):
    """The module export_savedmodel saves (defined here: TensorFlow loads only on use)."""
    import tensorflow as tf
    noise = tf.TensorSpec([None, generator.noise_dim], tf.float32, name='noise')
    label = tf.TensorSpec([None], tf.int32, name='label')

    def images_and_maps(generator, noise, label=None):
        return generator(noise if label is None else (noise, label), training=False)

    def as_uint8(images):  # utils.to_uint8: x*127.5 + 127.5, clipped to [0, 255], truncated
        return {'images': tf.cast(tf.clip_by_value(images * 127.5 + 127.5, 0.0, 255.0),
                                  tf.uint8)}

    def with_maps(images, attention):
        return {'images': images, 'attn_8': attention[0], 'attn_16': attention[1],
                'attn_32': attention[2]}

    class ServingModule(tf.Module):
        def __init__(self, generator):
            super().__init__()
            self.generator = generator
            self.serve = tf.function(self._serve, input_signature=[noise])
            self.generate = tf.function(self._generate, input_signature=[noise])

        def _generate(self, noise):
            return with_maps(*images_and_maps(self.generator, noise))

        def _serve(self, noise):
            return as_uint8(images_and_maps(self.generator, noise)[0])

    class ConditionalServingModule(tf.Module):
        # Holds the generator's variables, not the Keras model: saving a model makes its
        # default signature, a call on noise alone, which a conditional generator refuses.
        def __init__(self, generator):
            super().__init__()
            self.generator_variables = list(generator.variables)
            self.serve = tf.function(self._serve, input_signature=[noise, label])
            self.generate = tf.function(self._generate, input_signature=[noise, label])

        def _generate(self, noise, label):
            return with_maps(*images_and_maps(generator, noise, label))

        def _serve(self, noise, label):
            return as_uint8(images_and_maps(generator, noise, label)[0])

    conditional = bool(getattr(generator, 'n_classes', 0))
    return (ConditionalServingModule if conditional else ServingModule)(generator)


def export_savedmodel(generator, directory):
    """A TensorFlow SavedModel for TF Serving.

    Signature `serving_default`: noise float32 (None, noise_dim) -> {'images': uint8
    (None, S, S, 3)}, the same pixels as utils.to_uint8; a conditional generator's takes
    noise and label int32 (None,). The loaded object also has `generate(noise[, label])`
    -> float images and attention maps. An existing SavedModel at directory is replaced.
    """
    directory = os.path.abspath(os.fspath(directory))
    _check_savedmodel_target(directory)
    import tensorflow as tf
    module = _serving_module(generator)
    tmp = f'{directory}.tmp-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures={'serving_default': module.serve})
    old = f'{directory}.old-{os.getpid()}'
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _check_savedmodel_target(directory):
    if os.path.isfile(directory):
        raise cli.UsageError(f'--export_savedmodel {directory} is a file: give a directory')
    if os.path.isdir(directory) and os.listdir(directory) and not os.path.isfile(
            os.path.join(directory, 'saved_model.pb')):
        raise cli.UsageError(f'--export_savedmodel {directory} is a non-empty directory that is '
                         f'not a SavedModel: give a new or empty directory')


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):  # defaults only where they say something
        flag = any(action.default is v for v in (None, True, False))
        if flag and '--ema' not in action.option_strings or 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    paragraphs = __doc__.split('\n\n')
    p = cli.Parser(prog='generate.py', description=paragraphs[0],
                   epilog='examples:\n' + paragraphs[1] + '\n\n' + paragraphs[2],
                   formatter_class=_HelpFormatter)
    source = p.add_argument_group('model (one of)')
    source.add_argument('--model_dir', help='trained model directory (config.json and '
                        'best-training-checkpoints/ or training-checkpoints/)')
    source.add_argument('--pretrained', metavar='NAME', choices=list(config.PRETRAINED),
                        help=f"released model from the Hugging Face Hub: "
                             f"{', '.join(config.PRETRAINED)}")
    source.add_argument('--checkpoint', help='a ckpt-<n> path prefix to load instead of the '
                        'newest checkpoint of --model_dir')
    source.add_argument('--cache_dir', help='Hugging Face cache for --pretrained '
                        '(default: ~/.cache/huggingface/hub)')
    source.add_argument('--local_dir', help='download --pretrained into LOCAL_DIR/NAME/ '
                        'instead of the cache')
    source.add_argument('--ema', action=argparse.BooleanOptionalAction, default=True,
                        help='use the EMA generator (the one the authors evaluate)')
    sample_args = p.add_argument_group('sampling')
    sample_args.add_argument('--n', type=cli.positive_int, default=25,
                             help='number of images (the keyframes with --interpolate)')
    sample_args.add_argument('--seed', type=cli.seed, default=None,
                             help='noise seed; the same seed gives the same images '
                                  '(default: random, printed)')
    sample_args.add_argument('--batch_size', type=cli.positive_int, default=50,
                             help='images per compiled batch')
    sample_args.add_argument('--truncation', type=cli.non_negative_float, default=1.0,
                             help='scale of z (below 1: less varied, more typical images)')
    sample_args.add_argument('--jit', action=argparse.BooleanOptionalAction, default=True,
                             help='XLA-compile sampling (as train.py; --no-jit: plain TF graph)')
    sample_args.add_argument('--class', dest='class_', metavar='NAME|INDEX', default=None,
                             help="class-conditional models: every image of this class, a "
                                  "name of the run's classes.json or a label index (an "
                                  "integer that is also a class name means the name). "
                                  "Default: classes drawn with the training frequencies")
    out = p.add_argument_group('outputs')
    out.add_argument('--out', default=None,
                     help='a .png path: one grid of all images; a directory: one PNG per '
                          'image (000000.png, ...; with a conditional model also labels.csv, '
                          'their classes). With --interpolate, a .gif or .png path '
                          '(the GIF and the strip PNG share its stem) or a directory. '
                          'Default: samples.png, or interpolation.gif with --interpolate; '
                          'none when only exporting')
    out.add_argument('--columns', type=cli.positive_int, default=None,
                     help='grid columns (default: about sqrt(n))')
    out.add_argument('--interpolate', type=cli.positive_int, metavar='K', default=None,
                     help='latent walk: K frames of spherical interpolation from each of the '
                          'n samples to the next, as an animated GIF and a strip PNG (a '
                          "conditional model: the frames from a key keep that key's class; "
                          "with --class, one class throughout)")
    out.add_argument('--class_grid', action='store_true',
                     help='class-conditional models: one PNG (default class_grid.png) with '
                          'a row per class, its name at the left, and --n columns, the same '
                          'z in each column')
    out.add_argument('--fps', type=cli.positive_int, default=12, help='GIF frames per second')
    out.add_argument('--attention', action='store_true',
                     help=f'also plot the images with the attention map of every stage and '
                          f'head, {ATTENTION_PER_PAGE} images per PNG '
                          f'(<out stem>_attention-<k>.png)')
    p.add_argument('--progress_gif', nargs=2, metavar=('IMAGES_DIR', 'OUT_GIF'),
                   help="a learning-progress GIF from the sample grids train.py saved in "
                        "IMAGES_DIR (MODEL_DIR/images/samples-<n>.png); needs no model")
    export = p.add_argument_group('export')
    export.add_argument('--export_keras', metavar='PATH.keras',
                        help='save the generator for keras.saving.load_model (a '
                             'conditional one is called on (noise, labels))')
    export.add_argument('--export_savedmodel', metavar='DIR',
                        help='save a TensorFlow SavedModel with the serving signature '
                             'noise (None, noise_dim) float32 -> images uint8 (a conditional '
                             'model: noise and label (None,) int32)')
    return p


def plan_outputs(args):
    """{kind: path} of the files the run writes, checked for writability; no model needed.

    kinds: grid (a .png), dir (one PNG per image), gif + strip (--interpolate),
    attention (a format string with the page number), class_grid (a .png), keras,
    savedmodel.
    """
    plan = {}
    exporting = args.export_keras or args.export_savedmodel
    if args.class_grid:
        if args.interpolate or args.attention or args.class_ is not None:
            raise cli.UsageError('--class_grid makes one grid of every class: drop '
                                 '--interpolate, --attention and --class')
        out = args.out or 'class_grid.png'
        if not out.lower().endswith('.png'):
            raise cli.UsageError(f'--out {out}: the class grid is one PNG: give a .png path')
        cli.check_writable(out, 'images')
        plan['class_grid'] = out
    elif args.out is not None or not exporting or args.attention or args.interpolate:
        out = args.out or ('interpolation.gif' if args.interpolate else 'samples.png')
        lower = out.lower()
        if lower.endswith(OTHER_IMAGE_EXTENSIONS):
            raise cli.UsageError(f'--out {out}: images are written as PNG: give a .png path or '
                             f'a directory')
        if lower.endswith('.gif') and not args.interpolate:
            raise cli.UsageError(f'--out {out}: a .gif is written only with --interpolate; '
                             f'give a .png path or a directory')
        as_dir = os.path.isdir(out) or not lower.endswith(('.png', '.gif'))
        if as_dir:
            cli.check_writable(out, 'images', is_dir=True)
            stem = os.path.join(out, 'interpolation')
            plan['attention'] = os.path.join(out, 'attention-{:03d}.png')
        else:
            cli.check_writable(out, 'images')
            stem = out[:-4]
            plan['attention'] = stem + '_attention-{:03d}.png'
        if not args.attention:
            del plan['attention']
        if args.interpolate:
            plan['gif'], plan['strip'] = stem + '.gif', stem + '.png'
        elif as_dir:
            plan['dir'] = out
        elif args.n > GRID_LIMIT:
            raise cli.UsageError(f'--n {args.n} is too many for one grid PNG (at most '
                             f'{GRID_LIMIT}): give a directory as --out')
        else:
            plan['grid'] = out
    if args.export_keras:
        if not args.export_keras.endswith('.keras'):
            raise cli.UsageError(f'--export_keras {args.export_keras}: the file name must end '
                             f'with .keras')
        cli.check_writable(args.export_keras, 'the .keras file')
        plan['keras'] = args.export_keras
    if args.export_savedmodel:
        _check_savedmodel_target(os.path.abspath(args.export_savedmodel))
        cli.check_writable(os.path.dirname(os.path.abspath(args.export_savedmodel)),
                       'the SavedModel', is_dir=True)
        plan['savedmodel'] = args.export_savedmodel
    return plan


def run(args):
    if args.progress_gif:
        return _progress_gif(args)
    classes = _classes(args, _check_source(args))
    plan = plan_outputs(args)
    tf = cli.import_tensorflow()  # after every check that needs no model
    import checkpoints
    try:
        model_dir = (checkpoints.download_pretrained(args.pretrained, local_dir=args.local_dir,
                                                     cache_dir=args.cache_dir)
                     if args.pretrained else args.model_dir)
        generator = checkpoints.load_generator(model_dir, ema=args.ema,
                                               checkpoint_path=args.checkpoint)
    except checkpoints.CheckpointError as e:
        raise cli.UsageError(e) from None
    except tf.errors.OpError as e:  # e.g. a damaged or partly downloaded checkpoint
        raise cli.UsageError(f'cannot load the generator of {model_dir}: {e.message}') from None
    _sample(generator, plan, args, classes)
    if 'keras' in plan:
        export_keras(generator, plan['keras'])
        print(f'exported {plan["keras"]}')
    if 'savedmodel' in plan:
        export_savedmodel(generator, plan['savedmodel'])
        print(f'exported {plan["savedmodel"]}')


def _progress_gif(args):
    if args.model_dir or args.pretrained:
        raise cli.UsageError('--progress_gif needs no model: drop --model_dir/--pretrained')
    images_dir, out_gif = args.progress_gif
    if not out_gif.lower().endswith('.gif'):
        raise cli.UsageError(f'--progress_gif: {out_gif} must end with .gif')
    cli.check_writable(out_gif, 'the progress GIF')
    paths = progress_image_paths(images_dir)
    make_progress_gif(paths, out_gif)
    print(f'wrote {out_gif} ({len(paths)} frames)')


def _check_source(args):
    """The model named on the command line exists (a download is checked later); returns
    the config of --model_dir (None for --pretrained)."""
    if bool(args.model_dir) == bool(args.pretrained):
        raise cli.UsageError('give either --model_dir DIR or --pretrained NAME '
                             f"({', '.join(config.PRETRAINED)})")
    if args.interpolate and args.n < 2:
        raise cli.UsageError('--interpolate needs --n 2 or more keyframes')
    if args.checkpoint and not os.path.isfile(args.checkpoint + '.index'):
        raise cli.UsageError(f'--checkpoint {args.checkpoint}: no {args.checkpoint}.index '
                             f'(give a ckpt-<n> path prefix)')
    if args.model_dir and not os.path.isdir(args.model_dir):
        raise cli.UsageError(f'--model_dir {args.model_dir} is not a directory')
    if args.model_dir:
        try:
            return config.load_run_config(args.model_dir)
        except config.ConfigError as e:
            raise cli.UsageError(e) from None
    return None


def _classes(args, conf):
    """The classes of a conditional --model_dir: {'n', 'names' (None without classes.json),
    'counts' (None: uniform), 'label' (--class, or None), 'where'}; None for an
    unconditional model. --class and --class_grid on an unconditional model are UsageErrors."""
    n_classes = conf['n_classes'] if conf else 0
    for flag, used in (('--class', args.class_ is not None), ('--class_grid', args.class_grid)):
        if used and not n_classes:
            model = (f'--pretrained {args.pretrained}' if args.pretrained else
                     f'the model of {args.model_dir} (n_classes=0 in config.json)')
            raise cli.UsageError(f'{flag} needs a class-conditional model; {model} is '
                                 f'unconditional')
    if not n_classes:
        return None
    try:
        saved = config.load_run_classes(args.model_dir)
    except config.ConfigError as e:
        raise cli.UsageError(e) from None
    if saved and len(saved['names']) != n_classes:
        raise cli.UsageError(f"{config.CLASSES_FILE} of {args.model_dir} lists "
                             f"{len(saved['names'])} classes but config.json has "
                             f"n_classes={n_classes}")
    classes = {'n': n_classes, 'names': saved and saved['names'], 'label': None,
               'counts': saved['counts'] if saved and sum(saved['counts']) else None,
               'where': args.model_dir}
    if args.class_ is not None:
        classes['label'] = class_index(args.class_, classes['names'], n_classes)
    if args.class_grid and n_classes * args.n > GRID_LIMIT:
        raise cli.UsageError(f'--class_grid: {n_classes} classes x --n {args.n} is too many '
                             f'for one PNG (at most {GRID_LIMIT} images)')
    return classes


def class_index(value, names, n_classes):
    """--class NAME|INDEX -> the label: a class name (of names) wins over an index."""
    if names and value in names:
        return names.index(value)
    try:
        index = int(value)
    except ValueError:
        if not names:
            raise cli.UsageError(f'--class {value}: the run has no {config.CLASSES_FILE}, so its '
                                 f'classes have no names: give an index, 0 to {n_classes - 1}') \
                from None
        shown = ', '.join(names[:10]) + (f', ... ({len(names)} in all)' if len(names) > 10 else '')
        raise cli.UsageError(f'--class {value}: no such class; the classes are {shown} (or '
                             f'give an index, 0 to {n_classes - 1})') from None
    if not 0 <= index < n_classes:
        raise cli.UsageError(f'--class {value}: out of range, the model has {n_classes} '
                             f'classes (indices 0 to {n_classes - 1})')
    return index


def _labels(classes, n, seed):
    """(n,) int32 labels of the samples (None for an unconditional model)."""
    import sampling
    if classes is None:
        return None
    if classes['label'] is not None:
        return np.full(n, classes['label'], np.int32)
    if classes['counts'] is None:
        print(f"note: no {config.CLASSES_FILE} in {classes['where']}: classes drawn "
              f"uniformly over the {classes['n']} classes")
    return sampling.sample_labels(n, classes['counts'] or [1] * classes['n'], seed)


def _sample(generator, plan, args, classes=None):
    """The pictures of the plan, from --n noise vectors of --seed (and their labels)."""
    import sampling
    if not any(k in plan for k in ('grid', 'dir', 'gif', 'attention', 'class_grid')):
        return
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), 'little')
    noise = sampling.sample_noise(args.n, generator.noise_dim, seed, args.truncation)
    sampler = sampling.Sampler(generator, args.batch_size, jit_compile=args.jit)
    names = classes and (classes['names'] or [str(k) for k in range(classes['n'])])
    if 'class_grid' in plan:
        images = sampler(np.tile(noise, (len(names), 1)), labels=np.repeat(
            np.arange(len(names), dtype=np.int32), len(noise)))[0]
        utils.save_png(class_grid(utils.to_uint8(images), names, args.n), plan['class_grid'])
    else:
        _write_samples(sampler, noise, _labels(classes, args.n, seed), plan, args, names)
    written = [plan[k].replace('{:03d}', '*') for k in ('grid', 'dir', 'gif', 'strip',
                                                        'attention', 'class_grid') if k in plan]
    print(f'seed {seed}: wrote {", ".join(written)}')


def _write_samples(sampler, noise, labels, plan, args, names=None):
    """Samples noise (with labels and their class names, for a conditional model) in
    batches and writes the planned pictures as the batches come."""
    kept = []          # images for the grid
    pending = None     # (images, maps) not yet on an attention page
    page = 0
    needs_samples = any(k in plan for k in ('grid', 'dir', 'attention'))
    for start, images, maps in (sampler.batches(noise, attention='attention' in plan,
                                                labels=labels)
                                if needs_samples else ()):
        if 'dir' in plan:
            for i, image in enumerate(utils.to_uint8(images)):
                utils.save_png(image, os.path.join(plan['dir'], f'{start + i:06d}.png'))
        if 'grid' in plan:
            kept.append(images)
        if maps is not None:
            pending = (images, maps) if pending is None else (
                np.concatenate([pending[0], images]),
                [np.concatenate(pair) for pair in zip(pending[1], maps)])
            while len(pending[0]) >= ATTENTION_PER_PAGE or (
                    len(pending[0]) and start + len(images) == len(noise)):
                k = ATTENTION_PER_PAGE
                first = page * k
                titles = None if labels is None else [
                    names[label] for label in labels[first:first + len(pending[0][:k])]]
                utils.save_attention_maps(pending[0][:k], [m[:k] for m in pending[1]],
                                          plan['attention'].format(page), titles)
                pending, page = (pending[0][k:], [m[k:] for m in pending[1]]), page + 1
    if 'dir' in plan and labels is not None:
        _write_labels_csv(os.path.join(plan['dir'], LABELS_CSV), labels, names)
    if 'grid' in plan:
        utils.save_image_grid(np.concatenate(kept), plan['grid'], args.columns)
    if 'gif' in plan:
        import sampling
        frames_noise = sampling.interpolation_noise(noise, args.interpolate)
        frame_labels = None if labels is None else np.append(
            np.repeat(labels[:-1], args.interpolate), labels[-1])  # a key's class to the next key
        frames = utils.to_uint8(sampler(frames_noise, labels=frame_labels)[0])
        save_gif(frames, plan['gif'], duration_ms=round(1000 / args.fps))
        utils.save_png(interpolation_strip(frames, args.interpolate), plan['strip'])


def _write_labels_csv(path, labels, names):
    """The classes of 000000.png, ... as a labels file of data.read_labels (CSV)."""
    import csv
    import io
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(['path', 'class'])
    writer.writerows([f'{i:06d}.png', names[label]] for i, label in enumerate(labels))
    utils.write_text(path, text.getvalue())


def main(argv=None):
    args = build_parser().parse_args(argv)
    cli.quiet(args.verbose)
    try:
        with cli.ctrl_c_stays_an_interrupt():
            run(args)
    except cli.UsageError as e:
        return cli.fail(e)
    except OSError as e:  # e.g. the disk filled up while writing
        return cli.fail(f'{e.strerror or e}: {e.filename}' if e.filename else e)
    except KeyboardInterrupt:
        return cli.interrupted('generate.py', 'files are written whole, so the ones there are '
                               'complete; rerun the command to write them all')
    return 0


if __name__ == '__main__':
    sys.exit(main())
