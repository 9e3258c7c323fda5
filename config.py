"""LadaGAN hyper-parameters: the defaults, the named presets, and their validation.

Edit `DEFAULTS` or a preset here; `train.py --preset NAME` picks a preset and
`--key=value` flags override single keys. The key names are those of the authors'
`config.json` files, so their released configs load unchanged.

`DEFAULTS` equals the authors' default config (CelebA 64). Keys that the authors'
code does not have are marked "ours" below.
"""
import copy
import json
import math
import os

CONFIG_FILE = 'config.json'  # a run's config, in its model directory
RUN_FILE = 'run.json'        # beside it: the command's options (train.py records them)
CLASSES_FILE = 'classes.json'  # a conditional run's classes: {"names": [...], "counts": [...]}

DEFAULTS = {
    'img_size': 64,
    'batch_size': 128,
    # generator
    'g_lr': 2e-4,
    'g_beta1': 0.5,
    'g_beta2': 0.99,
    'noise_dim': 128,
    'g_initializer': 'orthogonal',  # ignored by the authors' code (always orthogonal); kept for their configs
    'g_dim': [1024, 256, 64],        # token widths at 8x8, 16x16 and 32x32
    'g_heads': [4, 4, 4],
    'g_mlp': [512, 512, 512],
    # discriminator
    'd_initializer': 'orthogonal',
    'd_enc_dim': [64, 128, 256],     # one entry per resolution from img_size down to 16x16
    'd_out_dim': [512, 1024],
    'd_heads': 4,
    'd_mlp': 512,
    'd_lr': 2e-4,
    'd_beta1': 0.5,
    'd_beta2': 0.99,
    # losses and regularisation
    'gp_weight': 1e-4,               # R1 weight (no 1/2 factor)
    'policy': 'color,translation',   # DiffAugment ops
    'fid_batch_size': 50,
    'gen_batch_size': 50,
    'loss': 'nsl',                   # 'nsl' (non-saturating logistic) or 'hinge'
    'ema_decay': 0.999,
    'bcr': False,
    'cr_weight': 0.1,
    'dec_dim': False,                # False: patch generation; list of widths: conv decoder
    'n_fid_real': 2500,
    'n_fid_gen': 2500,               # unused by the authors' code (n_fid_real is used for both)
    'plot_size': 5.2,
    'test_seed': 77,
    # ours
    'ema_init': 'copy',              # 'copy': EMA starts as G's weights; 'random': authors' fresh init
    'ema_warmup': False,             # True: decay min(ema_decay, (1 + n) / (10 + n)) after n G updates
    'antialias': False,              # antialias when resizing training images (authors: False)
    'g_attention': 'lada',           # attention of the generator blocks: one of ATTENTIONS
    'd_attention': 'lada',           # attention of the discriminator block: one of ATTENTIONS
    'n_latents': 16,                 # simplex/duplex: number k of latent components
    'latent_dim': 32,                # simplex/duplex: width of each latent component
    'crop': 'none',                  # 'none': squash to a square (authors); 'center': centre crop
    'r1_interval': 1,                # R1 on every k-th D step, weight x k (lazy R1; authors: 1)
    'n_classes': 0,                  # 0: unconditional (authors); K: class-conditional G and D
    'spectral_norm': 'none',         # spectral normalisation of 'g', 'd', 'both' or 'none'
    # FreezeD (Mo et al. 2020), for fine-tuning (train.py --init_from): D's first N blocks,
    # counting from the image, keep their weights. D's blocks are the input conv (1), the
    # down blocks (one per d_enc_dim entry after the first), then the Ladaformer with its
    # positional embedding; the output head always trains, so N is 0 (all train) to
    # len(d_enc_dim) + 1. BatchNorm statistics of frozen blocks still follow the batches
    # (D trains in training mode, which normalises with the batch's own statistics).
    'freeze_d': 0,
    # Adaptive augmentation (ADA, Karras et al. 2020): 0 is off (the authors' DiffAugment on
    # every image); a target in (0, 1) applies the policy to each image with probability p,
    # moved every 4 steps toward r_t = E[sign(D(real))] = target by ± (images of the 4
    # steps) / (ada_kimg * 1000), so p can go from 0 to 1 in ada_kimg thousand images.
    'ada_target': 0,
    'ada_kimg': 20,                  # ADA's 500 suits runs of millions of images; 20 ~600 steps of 32
}

# Keys added by this project: the authors' config.json files do not have them, and
# they take their default values when such a file is loaded.
OUR_KEYS = ('ema_init', 'ema_warmup', 'antialias',
            'g_attention', 'd_attention', 'n_latents', 'latent_dim', 'crop', 'r1_interval',
            'n_classes', 'spectral_norm', 'freeze_d', 'ada_target', 'ada_kimg')

# Keys that set the networks' variables (their shapes or which exist): a run started from
# another model's weights (train.py --init_from) takes them from that model's config.
ARCHITECTURE_KEYS = ('img_size', 'noise_dim', 'g_dim', 'g_heads', 'g_mlp', 'd_enc_dim',
                     'd_out_dim', 'd_heads', 'd_mlp', 'dec_dim', 'g_attention', 'd_attention',
                     'n_latents', 'latent_dim', 'spectral_norm', 'n_classes')

_FFHQ_128 = {
    'img_size': 128,
    'batch_size': 64,
    'g_dim': [1024, 512, 256],
    'dec_dim': [128, 64],
    'd_enc_dim': [32, 64, 128, 256],
    'bcr': True,
    'policy': 'color,translation,cutout',
}

_TINY = {
    'img_size': 32,
    'batch_size': 32,
    'noise_dim': 64,
    'g_dim': [128, 64, 32],
    'g_heads': [2, 2, 2],
    'g_mlp': [128, 128, 128],
    'd_enc_dim': [32, 64],
    'd_out_dim': [64, 128],
    'd_heads': 2,
    'd_mlp': 128,
    'n_fid_real': 500,   # keeps each in-loop FID to about a minute on a CPU
    'n_fid_gen': 500,
    # Short runs: with 0.999 and no warm-up the EMA of a 600-step run is still 55% init.
    'ema_warmup': True,
    # Lazy R1 (ours; the authors' presets keep R1 on every step): a 600-iteration run is
    # 5-9% shorter at an SWD within the seeds' spread (bench/bench_recipe.py, 2026-12-08).
    'r1_interval': 16,
}

PRESETS = {
    'cifar10': {'img_size': 32, 'd_enc_dim': [128, 256]},
    'celeba_64': {},
    'ffhq_128': _FFHQ_128,
    # The authors' Bedroom config is not public; its size on the Hub matches the FFHQ config.
    'bedroom_128': dict(_FFHQ_128),
    # Small 32x32 model that trains at a useful speed on a laptop CPU.
    'tiny': _TINY,
    # The embedded default (`python train.py` without data): the tiny model for 600
    # iterations on 4,000 generated shapes. DiffAugment off (so short a run cannot overfit;
    # augmenting only slows learning) and a higher learning rate (bench/bench_recipe.py).
    'demo': {**_TINY, 'policy': '', 'g_lr': 5e-4, 'd_lr': 5e-4},
    # SAGAN's recipe (Zhang et al. 2019) on LadaGAN's CIFAR-10 backbone: dot-product
    # attention in G and D, spectral normalisation in both, hinge loss, two time-scale
    # learning rates, Adam betas (0, 0.9), class-conditional (CIFAR-10's 10 classes), and
    # neither R1 nor DiffAugment, which SAGAN does not use. docs/conditional.md: what differs.
    'sagan': {'img_size': 32, 'd_enc_dim': [128, 256], 'g_attention': 'dot',
              'd_attention': 'dot', 'spectral_norm': 'both', 'loss': 'hinge',
              'g_lr': 1e-4, 'd_lr': 4e-4, 'g_beta1': 0.0, 'g_beta2': 0.9, 'd_beta1': 0.0,
              'd_beta2': 0.9, 'n_classes': 10, 'gp_weight': 0.0, 'policy': ''},
}

SUPPORTED_SIZES = (32, 64, 128, 256)
D_STAGES = {32: 2, 64: 3, 128: 4, 256: 5}  # len(d_enc_dim): the encoder always ends at 16x16
LOSSES = ('nsl', 'hinge')
POLICY_OPS = ('color', 'translation', 'cutout')
EMA_INITS = ('copy', 'random')
# 'lada': LadaGAN's additive attention; baselines: 'dot' (SAGAN / ViT GANs), 'l2' (GigaGAN),
# 'simplex' and 'duplex' (GANformer). See ladaformer.make_attention.
ATTENTIONS = ('lada', 'dot', 'l2', 'simplex', 'duplex')
# How a non-square image becomes square (data.py): 'none' squashes it (the authors'),
# 'center' takes its centred square.
CROPS = ('none', 'center')
# Which networks spectral normalisation applies to (ladaformer.spectral_norm).
SPECTRAL_NORMS = ('none', 'g', 'd', 'both')
PRECISIONS = ('fp32', 'bf16', 'fp16')  # compute precision of the train step (trainer.py)
# The authors' released models on the Hugging Face Hub (checkpoints.download_pretrained):
# name -> images seen at the released (best-FID) checkpoint, which names its files
# `ckpt-<n_images>` (SPEC §5). Here, not in checkpoints.py, so --help needs no TensorFlow.
PRETRAINED = {'cifar10': 68096000, 'celeba_64': 72192000, 'ffhq_128': 24064000,
              'bedroom_128': 10624000}


class ConfigError(ValueError):
    """An impossible or unknown configuration value; the message names the key."""


def requested(preset=None, overrides=None):
    """The values a command asks for: those of the preset, then the overrides."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    return {**copy.deepcopy(PRESETS.get(preset, {})), **copy.deepcopy(overrides or {})}


def get_config(preset=None, **overrides):
    """Returns a validated config dict: DEFAULTS, then the preset, then overrides."""
    return validate({**copy.deepcopy(DEFAULTS), **requested(preset, overrides)})


def started_from(source, asked, what):
    """The config of a new run whose networks start from those of a model with config
    `source` (train.py --init_from `what`): the source's ARCHITECTURE_KEYS, the other keys
    from DEFAULTS and `asked` as for any new run. n_classes may go from 0 to K (a
    conditional run from an unconditional model), not from K to another value. Raises
    ConfigError naming the asked architecture values that differ from the source's."""
    arch = {key: source[key] for key in ARCHITECTURE_KEYS}
    if source['n_classes'] and asked.get('n_classes', source['n_classes']) == 0:
        raise ConfigError(
            f"--init_from {what} is class-conditional (n_classes={source['n_classes']}): a "
            f'run started from it is conditional too; drop --set n_classes=0, or train from '
            f'scratch')
    if not source['n_classes'] and asked.get('n_classes'):
        arch['n_classes'] = asked['n_classes']
    differing = [key for key in ARCHITECTURE_KEYS if key in asked and asked[key] != arch[key]]
    if differing:
        details = ', '.join(f'{key}: {asked[key]!r} asked, {arch[key]!r} in the source'
                            for key in differing)
        raise ConfigError(
            f'--init_from {what}: the architecture comes from its {CONFIG_FILE}, and '
            f'--preset/--set change it ({details}). Drop those values, or train from '
            f'scratch without --init_from.')
    return get_config(**{**asked, **arch})


def from_saved(saved):
    """Config from a saved config.json dict (the authors' or ours), validated."""
    return validate({**copy.deepcopy(DEFAULTS), **saved})


def validate(config):
    """Checks every key of `config` and returns it; raises ConfigError otherwise."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown}; valid keys: {', '.join(DEFAULTS)}")
    c = config
    _check(c['img_size'] in SUPPORTED_SIZES, 'img_size', c['img_size'],
           f"one of {list(SUPPORTED_SIZES)}")
    for key in ('batch_size', 'noise_dim', 'd_heads', 'd_mlp', 'fid_batch_size',
                'gen_batch_size', 'n_fid_real', 'n_fid_gen', 'n_latents', 'latent_dim',
                'r1_interval'):
        _check(_is_int(c[key]) and c[key] >= 1, key, c[key], 'a positive integer')
    _check(_is_int(c['n_classes']) and c['n_classes'] >= 0, 'n_classes', c['n_classes'],
           'an integer >= 0 (0: unconditional)')
    _check(c['spectral_norm'] in SPECTRAL_NORMS, 'spectral_norm', c['spectral_norm'],
           f"one of {list(SPECTRAL_NORMS)}")
    for key in ('g_dim', 'g_heads', 'g_mlp'):
        _check(_is_int_list(c[key], 3), key, c[key], 'a list of 3 positive integers')
    n_stages = D_STAGES[c['img_size']]
    _check(_is_int_list(c['d_enc_dim'], n_stages), 'd_enc_dim', c['d_enc_dim'],
           f"a list of {n_stages} positive integers for img_size {c['img_size']}")
    _check(_is_int_list(c['d_out_dim'], 2), 'd_out_dim', c['d_out_dim'],
           'a list of 2 positive integers')
    for i, (dim, heads) in enumerate(zip(c['g_dim'], c['g_heads'])):
        _check(dim % heads == 0, f'g_dim[{i}]', dim,
               f"a multiple of g_heads[{i}] = {heads}")
    for i in (0, 1):  # pixel shuffle x2 into the next stage
        _check(c['g_dim'][i] % 4 == 0, f'g_dim[{i}]', c['g_dim'][i], 'a multiple of 4')
    _check(c['d_enc_dim'][-1] % c['d_heads'] == 0, 'd_enc_dim[-1]', c['d_enc_dim'][-1],
           f"a multiple of d_heads = {c['d_heads']}")
    _validate_output_head(c)
    _check(c['loss'] in LOSSES, 'loss', c['loss'], f"one of {list(LOSSES)}")
    _check(isinstance(c['policy'], str) and all(
        op in POLICY_OPS for op in policy_ops(c['policy'])), 'policy', c['policy'],
        f"a comma-separated subset of {list(POLICY_OPS)} (or '')")
    for key in ('g_lr', 'd_lr'):
        _check(_is_number(c[key]) and c[key] > 0, key, c[key], 'a positive number')
    for key in ('g_beta1', 'g_beta2', 'd_beta1', 'd_beta2'):
        _check(_is_number(c[key]) and 0 <= c[key] < 1, key, c[key], 'a number in [0, 1)')
    for key in ('gp_weight', 'cr_weight'):
        _check(_is_number(c[key]) and c[key] >= 0, key, c[key], 'a number >= 0')
    _check(_is_number(c['ema_decay']) and 0 <= c['ema_decay'] <= 1, 'ema_decay',
           c['ema_decay'], 'a number in [0, 1]')
    for key in ('bcr', 'antialias', 'ema_warmup'):
        _check(isinstance(c[key], bool), key, c[key], 'true or false')
    _check(c['ema_init'] in EMA_INITS, 'ema_init', c['ema_init'], f"one of {list(EMA_INITS)}")
    for key in ('g_attention', 'd_attention'):
        _check(c[key] in ATTENTIONS, key, c[key], f"one of {list(ATTENTIONS)}")
    _check(c['crop'] in CROPS, 'crop', c['crop'], f"one of {list(CROPS)}")
    _check(_is_int(c['freeze_d']) and 0 <= c['freeze_d'] <= n_stages + 1, 'freeze_d',
           c['freeze_d'], f"an integer from 0 to {n_stages + 1}, D's blocks before its output "
           f"head at img_size {c['img_size']} (input conv, {n_stages - 1} down blocks, "
           f"Ladaformer)")
    _check(_is_number(c['ada_target']) and 0 <= c['ada_target'] < 1, 'ada_target',
           c['ada_target'], 'a number in (0, 1), or 0 for off')
    _check(not c['ada_target'] or policy_ops(c['policy']), 'ada_target', c['ada_target'],
           "0 (off) when policy is '': ADA applies the DiffAugment policy")
    _check(_is_number(c['ada_kimg']) and c['ada_kimg'] > 0, 'ada_kimg', c['ada_kimg'],
           'a positive number')
    return config


def spectral_norm_in(config, net):
    """Whether spectral normalisation applies to net 'g' or 'd'."""
    return config['spectral_norm'] in (net, 'both')


def _validate_output_head(c):
    upscale = c['img_size'] // 32
    if c['dec_dim'] is False:
        _check(c['g_dim'][2] % (upscale * upscale) == 0, 'g_dim[2]', c['g_dim'][2],
               f"a multiple of {upscale * upscale} for patch generation at img_size "
               f"{c['img_size']} (or set dec_dim to use the conv decoder)")
    else:
        n_up = int(math.log2(upscale))
        _check(_is_int_list(c['dec_dim'], n_up) if n_up else c['dec_dim'] in ([], False),
               'dec_dim', c['dec_dim'],
               f"false (patch generation) or a list of {n_up} positive integers "
               f"(one per x2 upsampling from 32 to {c['img_size']})")


def policy_ops(policy):
    return [op.strip() for op in policy.split(',') if op.strip()]


def _check(ok, key, value, allowed):
    if not ok:
        raise ConfigError(f"invalid config value {key}={value!r}: must be {allowed}")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int_list(x, length):
    return (isinstance(x, (list, tuple)) and len(x) == length
            and all(_is_int(v) and v >= 1 for v in x))


# ---------------------------------------------------------------------------------------
# A run's config.json
# ---------------------------------------------------------------------------------------

def load_run_config(model_dir):
    """The validated config of model_dir/config.json (the authors' or ours)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f'{path} not found: a model directory needs its config.json')
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f'cannot read {path}: {e}') from None
    try:
        return from_saved(_known_keys_of_authors_file(saved, path))
    except ConfigError as e:
        raise ConfigError(f'{path}: {e}') from None


def _known_keys_of_authors_file(saved, path):
    """An authors' config.json (it has none of OUR_KEYS) may hold keys of a version of
    their code that we do not know: named in one line, then left out so that their weights
    still load. In one of our run folders an unknown key stays, and validate refuses it."""
    if not isinstance(saved, dict) or any(key in saved for key in OUR_KEYS):
        return saved
    extra = sorted(set(saved) - set(DEFAULTS))
    if extra:
        print(f"{path}: not used here, left out: {', '.join(extra)} (keys of the authors' "
              f"code that this implementation does not have)")
    return {key: value for key, value in saved.items() if key not in extra}


def load_run_classes(model_dir):
    """{'names': [...], 'counts': [...]} of a conditional run (model_dir/classes.json,
    written by train.py: class names in label order and their training images), or None
    when the run has no such file."""
    path = os.path.join(model_dir, CLASSES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            classes = json.load(f)
        names, counts = classes['names'], classes['counts']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f'cannot read {path} ({e}): it should hold the class names and '
                          f'counts that train.py wrote') from None
    if len(names) != len(counts) or not all(_is_int(n) and n >= 0 for n in counts):
        raise ConfigError(f'{path}: names and counts must be lists of the same length')
    return {'names': [str(n) for n in names], 'counts': list(counts)}


def resumed_origin(recorded, preset, overrides):
    """The preset and --set values a resumed run's config comes from: those recorded in its
    run.json, then the command's. A --preset other than the recorded one adds its values
    as --set values, so that config.py's edits of the recorded preset still show."""
    values = dict(overrides) if preset in (None, recorded['preset']) else requested(
        preset, overrides)
    return {'preset': recorded['preset'], 'set': {**recorded['set'], **values}}


def settle(saved, asked, override=False, origin=None):
    """The config of a run that asks for `asked` (preset and --set values), and the keys
    it changes in `saved`.

    New run (saved is None): DEFAULTS + asked. Resumed run: its saved config decides; a
    value that differs from what config.py gives now for the run (`origin`: the preset and
    --set values it recorded, then the command's; see resumed_origin) raises ConfigError
    naming it, unless override, which applies it. Returns (config, sorted changed keys).
    """
    if saved is None:
        return get_config(**asked), []
    # A run without a recorded origin (ours from before run.json held it, the authors'
    # folders) cannot tell an edit of config.py from its own values: only the command's
    # values are compared.
    wanted = asked if origin is None else get_config(origin['preset'], **origin['set'])
    differing = sorted(k for k in wanted if wanted[k] != saved.get(k))
    if not differing:
        return saved, []
    merged = validate({**saved, **{k: wanted[k] for k in differing}})  # before a conflict
    if not override:
        raise ConfigError(_differences(differing, saved, wanted, asked))
    return merged, differing


def _differences(keys, saved, wanted, asked):
    """The refusal of a resume whose config.json differs from the command or config.py."""
    def source(k):
        return 'asked' if k in asked else 'in config.py'
    details = ', '.join(f'{k}: {saved.get(k)!r} in {CONFIG_FILE}, {wanted[k]!r} {source(k)}'
                        for k in keys)
    edited = [k for k in keys if k not in asked]
    what = ('the requested config' if not edited else 'config.py' if len(edited) == len(keys)
            else 'config.py and the requested config')
    how = ('resume with the same --preset/--set as the first run'
           + (' and config.py as it was' if edited else ''))
    return (f'the run\'s {CONFIG_FILE} differs from {what} ({details}). To keep '
            f'{CONFIG_FILE}\'s values, {how}; use another --model_dir, or pass '
            f'--override_config to go on with the new values (rewrites {CONFIG_FILE}).')
