"""Per-class (intra-class) metrics of a class-conditional generator, for fid.py
--per_class: which real images belong to which of the model's classes, the fakes of each
class, and each class's FID, KID, precision/recall and SWD against its own reals.

Class k's reals are the real images fid.py selected (--n_real) whose class (from the class
subfolders of --eval_dir, or a --labels file, read by data.read_labels) is the model's
class k; the real class names must be those of the run's classes.json. Class k's fakes are
as many images generated with label k as it has reals, at most --n_fake, from the noise of
`fake_seed(seed, k)`. The metrics are those of --metrics except IS (a per-class IS says
little: one class is one mode by design); the real features are those of the overall
evaluation, so only the fakes cost a feature pass. A class with too few images for a
metric reports it as skipped, with the reason, and the mean over classes leaves it out.
"""
import os
import sys

import numpy as np

import cli
import config
import metrics

SHOWN = ('fid', 'kid_mean', 'precision', 'recall', 'swd')  # the table's columns, if computed


def fake_labels(generator, model_dir, n, seed, results):
    """Labels (n,) int32 of the fakes of a model directory's generator, drawn with the
    training frequencies of its classes.json, else uniformly (seeded by
    sampling.sample_labels; results['fake_classes'] says which); None for an
    unconditional generator."""
    import sampling
    n_classes = int(getattr(generator, 'n_classes', 0) or 0)
    if not n_classes:
        return None
    classes = _run_classes(model_dir)
    if classes and sum(classes['counts']):
        results['fake_classes'] = 'classes.json frequencies'
        return sampling.sample_labels(n, classes['counts'], seed)
    print(f'fid.py: note: no {config.CLASSES_FILE} in {model_dir}: fakes of the '
          f'{n_classes} classes drawn uniformly', file=sys.stderr)
    results['fake_classes'] = 'uniform'
    return sampling.sample_labels(n, [1] * n_classes, seed)


def checked_counts(n_classes, class_counts=None):
    """fid.InLoopFID's class_counts: None for an unconditional model (n_classes 0), else
    the n_classes counts (None: uniform)."""
    if not n_classes:
        return None
    counts = [1] * n_classes if class_counts is None else list(class_counts)
    if len(counts) != n_classes:
        raise ValueError(f'{len(counts)} class_counts for n_classes={n_classes}')
    return counts


def draw_labels(n, class_counts, seed=None):
    """(n,) int32 labels drawn with class_counts' frequencies (None: None), by
    sampling.sample_labels from seed; seed None: fresh labels every call, as the noise of
    sampling.FakeSampler.batches."""
    import sampling
    if class_counts is None:
        return None
    seed = np.random.default_rng().integers(2 ** 32) if seed is None else seed
    return sampling.sample_labels(n, class_counts, seed)


def _run_classes(model_dir):
    try:
        return config.load_run_classes(model_dir)
    except config.ConfigError as e:
        raise cli.UsageError(e) from None


def check(args):
    """fid.py's --per_class and --labels, before any evaluation: None without --per_class,
    else {'names': the model's class names, 'of': {absolute path: the model's label}} of
    the real images of --eval_dir (class subfolders) or --labels. UsageError when the
    model is not conditional or the real class names differ from classes.json's."""
    if args.labels and not args.per_class:
        raise cli.UsageError('--labels gives the real classes for --per_class: add '
                             '--per_class')
    if not args.per_class:
        return None
    if args.fake_dir:
        raise cli.UsageError('--per_class needs --model_dir (the fakes of each class are '
                             'generated); --fake_dir images have no classes')
    try:
        n_classes = config.load_run_config(args.model_dir)['n_classes']
    except config.ConfigError as e:
        raise cli.UsageError(e) from None
    if not n_classes:
        raise cli.UsageError(f'--per_class needs a class-conditional model; {args.model_dir} '
                             f'is unconditional (n_classes=0 in config.json)')
    cli.import_tensorflow()  # data imports it
    import data
    try:
        found = data.read_labels(args.eval_dir, args.labels)
    except data.DataError as e:
        raise cli.UsageError(e) from None
    classes = _run_classes(args.model_dir)
    names = classes['names'] if classes else None
    if names is None:
        if len(found.names) != n_classes:
            raise cli.UsageError(f'the real images have {len(found.names)} classes, the '
                                 f'model {n_classes} (and {args.model_dir} has no '
                                 f'{config.CLASSES_FILE})')
        print(f'fid.py: note: no {config.CLASSES_FILE} in {args.model_dir}: the real class '
              f'names in sorted order are taken as labels 0 to {n_classes - 1}',
              file=sys.stderr)
        names = found.names
    elif set(found.names) != set(names):
        missing = [n for n in names if n not in found.names]
        extra = [n for n in found.names if n not in names]
        raise cli.UsageError(
            f'the real classes differ from those of {config.CLASSES_FILE}: '
            + '; '.join(f'{what}: {_listed(values)}' for what, values in (
                ('no real images of', missing), ('not classes of the model', extra)) if values))
    label = [names.index(name) for name in found.names]  # read_labels' label -> the model's
    return {'names': names, 'of': {os.path.abspath(f): label[k]
                                   for f, k in zip(found.files, found.labels)}}


def _listed(values, limit=10):
    more = f' and {len(values) - limit} more' if len(values) > limit else ''
    return ', '.join(values[:limit]) + more


def fake_seed(seed, label):
    """The noise seed (for sampling.FakeSampler.batches) of class `label`'s fakes."""
    return [int(seed), 2, int(label)]


def evaluate(generator, classes, real_files, wanted, args, real_features=None,
             real_images=None, features=None, show=True):
    """{'classes': [one dict per class], 'mean': {metric: mean over the classes that have
    it}, 'n_in_mean': {metric: how many}, 'n_fake': the rule}; show: also print `table`
    of it on stderr.

    classes: check's result; args: fid.py's (n_fake, seed, batch_size, fid_method);
    real_features / real_images: aligned with real_files; features(uint8 batches, n,
    desc) -> {'features': ...} (fid.compute_features with the network). Without
    real_features and features the network metrics, without real_images SWD, are left out.
    """
    import sampling
    n_fake, seed, fid_method = int(args.n_fake), args.seed, args.fid_method
    networked = real_features is not None and bool(features)
    wanted = [m for m in wanted if m != 'is' and (networked or m == 'swd')
              and (real_images is not None or m != 'swd')]
    of = np.array([classes['of'].get(os.path.abspath(f), -1) for f in real_files])
    sampler = sampling.FakeSampler(generator, args.batch_size)
    rows = []
    for k, name in enumerate(classes['names']):
        members = np.flatnonzero(of == k)
        row = {'class': name, 'label': k, 'n_real': len(members), 'n_fake': 0}
        rows.append(row)
        if len(members) < 2:
            row['skipped'] = (f"{len(members)} real image{'s' * (len(members) != 1)} of this "
                              f"class; every metric needs at least 2")
            continue
        row['n_fake'] = n = min(n_fake, len(members))
        batches = list(sampler.batches(n, fake_seed(seed, k), labels=np.full(n, k, np.int32)))
        fake = features(iter(batches), n, f'class {name}') if networked else None
        skipped = {}
        for metric in wanted:
            try:
                if metric == 'swd':
                    row.update(metrics.swd(real_images[members], np.concatenate(batches),
                                           seed=seed))
                else:
                    row.update(metrics.compute_metrics(real_features[members], fake, [metric],
                                                       seed=seed, fid_method=fid_method))
            except metrics.TooFewSamples as e:
                skipped[metric] = str(e)
        if skipped:
            row['skipped'] = skipped
    keys = sorted({key for row in rows for key in row
                   if key not in ('class', 'label', 'n_real', 'n_fake', 'skipped')})
    mean = {key: float(np.mean([row[key] for row in rows if key in row])) for key in keys}
    results = {'classes': rows, 'mean': mean,
               'n_in_mean': {key: sum(key in row for row in rows) for key in keys},
               'n_fake': f'per class: as many as its real images, at most {n_fake}'}
    if show:
        print(table(results), file=sys.stderr)
    return results


def table(per_class):
    """The per-class results as text: a line per class, then the mean."""
    shown = [key for key in SHOWN if key in per_class['mean']]
    width = max([len('class')] + [len(row['class']) for row in per_class['classes']]) + 2
    lines = [f"{'class':<{width}}{'label':>6}{'n_real':>8}{'n_fake':>8}"
             + ''.join(f'{key:>11}' for key in shown)]
    for row in per_class['classes']:
        cells = ''.join(f'{row[key]:>11.4f}' if key in row else f"{'-':>11}" for key in shown)
        line = f"{row['class']:<{width}}{row['label']:>6}{row['n_real']:>8}{row['n_fake']:>8}"
        skipped = row.get('skipped')
        if isinstance(skipped, dict):
            skipped = '; '.join(f'{m}: {reason}' for m, reason in skipped.items())
        lines.append(line + cells + (f'  skipped: {skipped}' if skipped else ''))
    if not shown:
        return '\n'.join(lines)
    low, high = (f(per_class['n_in_mean'][key] for key in shown) for f in (min, max))
    n_classes = len(per_class['classes'])
    label = 'mean' + ('' if low == n_classes else
                      f" (over {low}{f' to {high}' * (high != low)} of {n_classes} classes)")
    lines.append(f'{label:<{width + 22}}'
                 + ''.join(f"{per_class['mean'][key]:>11.4f}" for key in shown))
    return '\n'.join(lines)
