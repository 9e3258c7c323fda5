"""Small shared helpers: writing files atomically, and pictures (uint8 conversion, image
grids, attention-map figures)."""
import contextlib
import json
import os
import uuid

import numpy as np

TEMP_MARK = '.tmp-'  # in the name of every temp file atomic_write makes


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_write(path):
    """Yields a temp path beside `path`; when the block ends without error, the temp
    file is flushed to disk and renamed to `path`, else removed.

    A kill at any moment leaves the old file or the new one, never a half-written one.
    The temp name keeps the extension (libraries infer the format from it) and starts
    with a dot, so globs such as '*.png' do not see it. Parent folders are created.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f'.{stem}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}')
    os.makedirs(folder, exist_ok=True)
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_temp_files(folder):
    """Removes the temp files atomic_write left in folder when its process was killed;
    returns their names."""
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if n.startswith('.') and TEMP_MARK in n)
    for name in names:
        os.remove(os.path.join(folder, name))
    return names


def write_text(path, text):
    with atomic_write(path) as tmp, open(tmp, 'w') as f:
        f.write(text)


def write_json(path, data):
    write_text(path, json.dumps(data, indent=4))


# ---------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------

def to_uint8(images):
    """Generator output in [-1, 1] -> uint8, as the authors store samples: x*127.5 + 127.5,
    clipped to [0, 255], then truncated (numpy astype), so FIDs match theirs."""
    images = np.nan_to_num(np.asarray(images, dtype=np.float32))  # NaN casts are undefined
    return np.clip(images * 127.5 + 127.5, 0.0, 255.0).astype(np.uint8)


def image_grid(images, columns=None):
    """(N, H, W, 3) uint8 -> one (rows*H, columns*W, 3) uint8 grid, row-major."""
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def save_png(array, path):
    """uint8 (H, W, 3) -> a PNG file, written atomically."""
    from PIL import Image
    with atomic_write(path) as tmp:
        Image.fromarray(array).save(tmp, format='PNG')


def save_image_grid(images, path, columns=None):
    """Saves generator images (floats in [-1, 1]) as one PNG grid."""
    save_png(image_grid(to_uint8(images), columns), path)


def save_attention_maps(images, attention, path, titles=None):
    """attention_figure(images, attention, titles) as a PNG at path."""
    fig = attention_figure(images, attention, titles)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format='png')


def attention_figure(images, attention, titles=None):
    """One row per image: the image, then the attention map of every stage and head.

    attention: the generator's [attn_8, attn_16, attn_32], each (B, heads, tokens); each
    map is shown on its token grid (8x8, 16x16, 32x32) with its own colour scale.
    titles: one per image, above it (e.g. its class name); default 'sample'.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves notebooks' backend alone
    images = to_uint8(images)
    maps = [np.asarray(a, np.float32) for a in attention]
    heads = [m.shape[1] for m in maps]
    n_cols = 1 + sum(heads)
    fig = Figure(figsize=(1.6 * n_cols, 1.7 * len(images)))
    axes = fig.subplots(len(images), n_cols, squeeze=False)
    for row, image in enumerate(images):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title('sample' if titles is None else titles[row], fontsize=7)
        col = 1
        for stage_maps in maps:
            side = int(round(np.sqrt(stage_maps.shape[2])))
            for head in range(stage_maps.shape[1]):
                axes[row, col].imshow(stage_maps[row, head].reshape(side, side),
                                      cmap='inferno', interpolation='nearest')
                axes[row, col].set_title(f'{side}x{side} head {head}', fontsize=7)
                col += 1
    for ax in axes.flat:
        ax.axis('off')
    fig.tight_layout()
    return fig
