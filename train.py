"""Train LadaGAN.

    python train.py                                   # demo preset on a generated shapes dataset
    python train.py --file_pattern='data/*.png' --eval_dir='data/*.png' --preset=cifar10
    python train.py --file_pattern=... --set batch_size=64 --set policy=color
    python train.py --file_pattern=data/ --set n_classes=10   # conditional: a folder per class
    python train.py --set n_classes=3                         # conditional demo: labelled shapes

Hyper-parameters live in config.py (defaults and presets); `--set key=value` overrides one.
A run writes into --model_dir: config.json, training-checkpoints/, best-training-checkpoints/
(the authors' layout), log-dir/ (TensorBoard), metrics.jsonl, run.json (the options of this
command) and images/ (sample grids and attention maps), once the data, the config and any
checkpoint have been checked. Running the same command again resumes from the last checkpoint.
"""
import argparse
import dataclasses
import json
import os
import sys

import cli  # plain Python, as config: --help and argument errors come before TensorFlow
import config

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(HERE, '.cache', 'shapes32')
DEFAULT_DATA_PATTERN = os.path.join(DEFAULT_DATA_DIR, 'shape_*.png')  # shapes_data.make_shapes_dataset
LABELLED_DATA_DIR = os.path.join(HERE, '.cache', 'shapes32-labelled')  # one folder per shape
# Options a resumed run must keep (unless --override_config): they change what it computes.
KEPT_OPTIONS = ('file_pattern', 'labels', 'precision', 'grad_accum', 'strategy', 'seed', 'jit')


def parse_args(argv=None):
    parser = cli.Parser(
        prog='train.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--file_pattern', default=None,
                        help='glob (or directory) of training images; default: a generated '
                             'dataset of 32x32 shapes, trained with --preset demo')
    parser.add_argument('--labels', default=None, metavar='FILE',
                        help='class-conditional runs (--set n_classes=K): a CSV or JSON file '
                             'of relative path -> class name; default: the class of an image '
                             'is the name of its first-level folder under --file_pattern')
    parser.add_argument('--eval_dir', default=None,
                        help='glob of real images for FID (default: --file_pattern)')
    parser.add_argument('--model_dir', default='model_1',
                        help='run directory: checkpoints, logs, images (default: model_1)')
    parser.add_argument('--preset', default=None,
                        help='named config of config.py: ' + ', '.join(config.PRESETS) +
                             ' (default: config.py defaults, or demo for the generated data)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE',
                        help="override one config value, e.g. --set batch_size=64 "
                             "--set 'g_dim=[256,128,64]' (JSON values, quoted for the shell); "
                             'repeatable')
    parser.add_argument('--init_from', default=None, metavar='SOURCE',
                        help="start a new run from the weights (G, EMA G, D) of SOURCE: a "
                             f"released model ({', '.join(config.PRETRAINED)}; downloaded as "
                             'generate.py --pretrained does), a run folder (its checkpoint '
                             'that generate.py reads) or a ckpt-<n> path. Its config.json '
                             'sets the architecture; optimizers and the image count start '
                             'fresh. A folder that already holds a checkpoint resumes instead '
                             '(docs/few-shot.md)')
    parser.add_argument('--override_config', action='store_true',
                        help="on resume, config.json decides and a value of --preset/--set "
                             "or of config.py (for the run's recorded preset and --set) "
                             'that differs from it stops the run; this flag applies the '
                             'new values instead (and rewrites config.json)')
    parser.add_argument('--total_iter', type=cli.positive_int, default=None,
                        help='train until this iteration (default: 600 for the generated '
                             'data, else 1,000,000)')
    parser.add_argument('--metrics_inter', type=cli.positive_int, default=None,
                        help='iterations between logged metrics (default: 50 for the '
                             'generated data, else 500)')
    parser.add_argument('--fid_inter', type=cli.positive_int, default=None,
                        help='iterations between FID, samples and checkpoints (default: '
                             '300 for the generated data, else 5000)')
    parser.add_argument('--max_ckpt_to_keep', type=cli.positive_int, default=2,
                        help='checkpoints kept in each checkpoint directory (default: 2)')
    parser.add_argument('--inception_weights', default='imagenet',
                        help="Keras InceptionV3 weights for the in-loop FID: 'imagenet' "
                             "(downloaded once by Keras) or a path to the .h5 file")
    parser.add_argument('--no_fid', action='store_true',
                        help='skip FID; the best checkpoint then follows the regular one')
    parser.add_argument('--jit', action=argparse.BooleanOptionalAction, default=True,
                        help='XLA-compile the train step (default, as the authors); '
                             '--no-jit runs it as a plain TF graph, which compiles faster '
                             '(see bench/RESULTS.md)')
    parser.add_argument('--strategy', default='default',
                        choices=['default', 'mirrored', 'multiworker', 'tpu'],
                        help='tf.distribute strategy: one device (default), all local devices '
                             '(mirrored), several machines from TF_CONFIG (multiworker), or a '
                             'TPU; batch_size is the global batch, split over the replicas')
    parser.add_argument('--tpu', default=None,
                        help="with --strategy tpu: 'local' on a TPU VM, else the TPU's name or "
                             'grpc:// address (default: $TPU_NAME, or found on Cloud TPU)')
    parser.add_argument('--precision', default='fp32', choices=config.PRECISIONS,
                        help='compute precision (Keras mixed precision; weights, EMA, logits, '
                             'losses and R1 stay float32; fp16 adds loss scaling)')
    parser.add_argument('--grad_accum', type=cli.positive_int, default=1,
                        help='accumulate the gradients of K micro-batches of batch_size/K per '
                             'update (for small memory; BatchNorm sees micro-batches)')
    parser.add_argument('--steps_per_call', type=cli.positive_int, default=1,
                        help='train steps per compiled call (less Python per step); must '
                             'divide --metrics_inter and --fid_inter; one device only')
    parser.add_argument('--seed', type=cli.seed, default=None,
                        help='seed of weights, noise and data order (default: random)')
    args = parser.parse_args(argv)
    if args.tpu is not None and args.strategy != 'tpu':
        parser.error(f'--tpu {args.tpu} needs --strategy tpu')
    if args.steps_per_call > 1 and args.strategy != 'default':
        parser.error(f'--steps_per_call {args.steps_per_call} runs on one device only; '
                     f'--strategy {args.strategy} takes one step per call')
    return args


def check_steps_per_call(k, plan):
    """Checkpoints, FID and logs fall on their intervals only if K divides them."""
    intervals = {'metrics_inter': plan.metrics_inter, 'fid_inter': plan.fid_inter}
    bad = [f'--{name} {value}' for name, value in intervals.items() if value % k]
    if bad:
        fits = [d for d in range(1, k) if not any(v % d for v in intervals.values())]
        raise cli.UsageError(f"--steps_per_call {k} must divide {' and '.join(bad)}: choose "
                             f'intervals that are multiples of {k}, or --steps_per_call '
                             f'{max(fits)}')


def check_paths(args):
    """What must exist or be writable before anything loads; raises cli.UsageError."""
    cli.check_writable(args.model_dir, 'the run (--model_dir)', is_dir=True)
    weights = args.inception_weights
    if not args.no_fid and weights != 'imagenet' and not os.path.isfile(weights):
        raise cli.UsageError(f"--inception_weights {weights}: no such file (give the notop "
                             f"InceptionV3 .h5 file, 'imagenet', or --no_fid)")


def parse_overrides(pairs):
    """['batch_size=64', 'policy=color'] -> {'batch_size': 64, 'policy': 'color'}."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition('=')
        if not sep or not key:
            raise config.ConfigError(f"--set expects KEY=VALUE, got '{pair}'")
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text  # a bare string such as color,translation
    return overrides


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a train.py command asks for, with the defaults that depend on the data source
    filled in. Resolving it reads nothing but the arguments and writes nothing."""
    model_dir: str
    file_pattern: str   # glob (or directory) of the training images
    labels_file: str    # or None: a conditional run's labels come from the folders
    eval_dir: str       # glob of the real images for FID
    embedded: bool      # the generated shapes dataset (made before the run starts)
    preset: str         # or None: config.py's defaults
    total_iter: int
    metrics_inter: int
    fid_inter: int
    asked: dict         # config values: the preset's, then those of --set
    overrides: dict     # those of --set alone


def resolve_run(args):
    """The Plan of a command; raises config.ConfigError for an unknown preset or a bad --set."""
    embedded = args.file_pattern is None
    preset = args.preset or ('demo' if embedded else None)
    file_pattern = DEFAULT_DATA_PATTERN if embedded else args.file_pattern
    overrides = parse_overrides(args.overrides)
    defaults = (600, 50, 300) if embedded else (1_000_000, 500, 5000)
    total_iter, metrics_inter, fid_inter = (
        default if given is None else given
        for given, default in zip((args.total_iter, args.metrics_inter, args.fid_inter),
                                  defaults))
    return Plan(model_dir=args.model_dir, file_pattern=file_pattern, labels_file=args.labels,
                eval_dir=args.eval_dir or file_pattern, embedded=embedded, preset=preset,
                total_iter=total_iter, metrics_inter=metrics_inter, fid_inter=fid_inter,
                asked=config.requested(preset, overrides), overrides=overrides)


def with_data_for(plan, conf):
    """The plan of a run on the generated shapes, pointed at the labelled set (one folder
    per shape) when the config is class-conditional."""
    if not (plan.embedded and conf['n_classes']):
        return plan
    return dataclasses.replace(plan, file_pattern=LABELLED_DATA_DIR, eval_dir=LABELLED_DATA_DIR)


def config_origin(args, plan, recorded):
    """{'preset': ..., 'set': {...}}: what the run's config comes from in config.py, kept in
    run.json so that a resume compares config.json with what config.py gives now. None for
    a resumed run that recorded none (config.settle then compares the command's values)."""
    if not os.path.exists(os.path.join(plan.model_dir, config.CONFIG_FILE)):
        return {'preset': plan.preset, 'set': plan.overrides}
    if recorded is None or 'preset' not in recorded:
        return None
    return config.resumed_origin(recorded, args.preset, plan.overrides)


def init_source(args, plan):
    """The checkpoints.InitSource of --init_from for a new run; None without --init_from
    or when the run folder holds a checkpoint (it resumes, saying --init_from is not
    read). Imports TensorFlow; raises cli.UsageError when SOURCE cannot be used."""
    if args.init_from is None:
        return None
    cli.quiet(args.verbose)
    cli.import_tensorflow()
    import checkpoints
    resumed = checkpoints.resumable_checkpoint(plan.model_dir)
    if resumed:
        print(f'--init_from {args.init_from} not read: {plan.model_dir} holds a checkpoint '
              f'({resumed}), so this resumes that run. Give another --model_dir for a new '
              f'run.')
        return None
    try:
        return checkpoints.resolve_init_source(args.init_from)
    except checkpoints.CheckpointError as e:
        raise cli.UsageError(e) from None


def asked_from_source(args, plan):
    """The values asked of a run started from another model: without --preset, the
    generated data's implicit preset gives the training values only (the architecture
    is the source's)."""
    if args.preset is not None:
        return plan.asked
    overrides = parse_overrides(args.overrides)
    return {k: v for k, v in plan.asked.items()
            if k in overrides or k not in config.ARCHITECTURE_KEYS}


def settle_config(model_dir, asked, override, origin=None, source=None):
    """The run's config: a new run's from config.py (with --init_from, the architecture
    from the source), a resumed run's from its config.json (config.settle decides on
    differing values). Writes nothing."""
    if source is not None:
        return config.started_from(source.config, asked, source.source)
    path = os.path.join(model_dir, config.CONFIG_FILE)
    saved = config.load_run_config(model_dir) if os.path.exists(path) else None
    conf, changed = config.settle(saved, asked, override, origin)
    if changed:
        print(f'--override_config: changing {changed} of {path}.')
    return conf


def run_options(args, plan, origin=None, source=None):
    """The options recorded in run.json (loop.Run adds the number of training images),
    with the config's origin (config_origin) when it has one and the --init_from source."""
    labels = {} if plan.labels_file is None else {'labels': plan.labels_file}
    if source is not None:
        labels['init_from'] = {'source': source.source, 'checkpoint': source.checkpoint}
    return {**(origin or {}), 'file_pattern': plan.file_pattern, **labels,
            'precision': args.precision, 'grad_accum': args.grad_accum,
            'strategy': args.strategy, 'seed': args.seed, 'jit': args.jit,
            'total_iter': plan.total_iter}


def read_run_file(model_dir):
    """The options recorded in model_dir/run.json, or None for a run without one."""
    path = os.path.join(model_dir, config.RUN_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise config.ConfigError(f'cannot read {path} ({e}); remove it to resume') from None


def settle_run_options(model_dir, options, override, saved):
    """The run's options; on resume, those in run.json (`saved`) that differ from the
    command's stop the run unless `override` (a new total_iter only extends or shortens
    the run). Writes nothing."""
    path = os.path.join(model_dir, config.RUN_FILE)
    if saved is None:
        return options
    differing = [k for k in KEPT_OPTIONS if k in saved and saved[k] != options.get(k)]
    if differing and not override:
        details = ', '.join(f'{k}: {saved[k]!r} in {config.RUN_FILE}, {options.get(k)!r} asked'
                            for k in differing)
        raise config.ConfigError(
            f'this run was started with other options ({details}). Resume with the same '
            f'options, use another --model_dir, or pass --override_config to go on with '
            f'the new ones.')
    if differing:
        print(f'--override_config: changing {differing} of {path}.')
    started = {'init_from': saved['init_from']} if 'init_from' in saved else {}
    return {**started, **options}  # a resumed run keeps the record of its start


def main(argv=None):
    args = parse_args(argv)
    try:
        check_paths(args)
        plan = resolve_run(args)
        check_steps_per_call(args.steps_per_call, plan)
        recorded = read_run_file(plan.model_dir)
        source = init_source(args, plan)
        started_from_source = source is not None or 'init_from' in (recorded or {})
        asked = asked_from_source(args, plan) if started_from_source else plan.asked
        origin = config_origin(args, plan, recorded)
        conf = settle_config(plan.model_dir, asked, args.override_config, origin, source)
        if source is not None:  # what config.py gives it on resume: with the source's shapes
            origin = {'preset': plan.preset, 'set': {
                **plan.overrides, **{key: conf[key] for key in config.ARCHITECTURE_KEYS}}}
        plan = with_data_for(plan, conf)
        if plan.labels_file and not conf['n_classes']:
            raise cli.UsageError(f'--labels {plan.labels_file} is for class-conditional runs: '
                                 f'add --set n_classes=K (K = the number of classes)')
        options = settle_run_options(plan.model_dir, run_options(args, plan, origin, source),
                                     args.override_config, recorded)
    except (config.ConfigError, cli.UsageError) as e:
        return cli.fail(e)
    cli.quiet(args.verbose)
    try:
        with cli.ctrl_c_stays_an_interrupt():
            cli.import_tensorflow()
            import checkpoints  # TensorFlow from here on
            import data
            import fid
            import loop
            import shapes_data
    except KeyboardInterrupt:
        return cli.interrupted('train.py', 'nothing was saved')
    run = None
    try:
        with cli.ctrl_c_stays_an_interrupt():
            if plan.embedded:
                where = LABELLED_DATA_DIR if conf['n_classes'] else DEFAULT_DATA_DIR
                print(f'No --file_pattern: training the {plan.preset} preset on generated shapes '
                      f'({where}).')
                if conf['n_classes']:
                    shapes_data.make_shapes_dataset(LABELLED_DATA_DIR, labelled=True)
                else:
                    shapes_data.make_shapes_dataset(DEFAULT_DATA_DIR)
            run = loop.Run(args, plan, conf)  # checks the data and the model; writes nothing
            start = run.restore(source)
            run.remove_leftovers()
            run.write_run_files(options)
            run.summary(start)
            run.train(start)
    except KeyboardInterrupt:
        return cli.interrupted('train.py', _what_was_kept(run, plan))
    except (loop.TrainingError, config.ConfigError, checkpoints.CheckpointError,
            data.DataError, fid.FIDError) as e:
        return cli.fail(e)
    return 0


def _what_was_kept(run, plan):
    """After Ctrl-C: the checkpoint kept and how to go on."""
    saved = getattr(run, 'last_saved', None) or _newest_checkpoint(plan.model_dir)
    if saved is None:
        return 'nothing was saved yet (no checkpoint before the first --fid_inter)'
    return f'the last checkpoint is {saved}; run the same command to resume from it'


def _newest_checkpoint(model_dir):
    import checkpoints
    path = os.path.join(model_dir, checkpoints.TRAINING_DIR)
    return checkpoints.newest_checkpoint_in(path) if os.path.isdir(path) else None


if __name__ == '__main__':
    sys.exit(main())
