"""Parameters and generator multiply-accumulates of every preset, counted from the models.

    python bench/model_stats.py           # prints a table
    python bench/model_stats.py --record  # ... and appends it to bench/RESULTS.md
"""
import argparse

from common import record


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--record', action='store_true',
                        help='append the result lines to bench/RESULTS.md')
    args = parser.parse_args()
    import config
    import model
    lines = []
    for preset in config.PRESETS:
        conf = config.get_config(preset)
        g = model.build_generator(conf)
        d = model.build_discriminator(conf)
        g_train, g_fixed = model.count_parameters(g)
        d_train, d_fixed = model.count_parameters(d)
        macs = model.count_macs(g, (conf['noise_dim'],))
        lines.append(f'{preset}: G {g_train + g_fixed:,} params ({g_fixed:,} non-trainable), '
                     f'{macs / 1e9:.3f} GMAC/image; D {d_train:,} trainable + {d_fixed:,} '
                     f'BatchNorm statistics')
    print('\n'.join(lines))
    if args.record:
        record('model_stats.py', lines)


if __name__ == '__main__':
    main()
