"""Data pipeline: decoding of every supported format to RGB in [-1, 1], file listing and
validation errors, skipping of bad files, batching and reshuffling, the FID uint8 reader.
All images are built in tmp_path with PIL (the generated shapes: test_shapes_data.py)."""
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

import data
import image_headers


def _scaled(values):
    """0-255 values -> [-1, 1] the way the pipeline computes it (float32)."""
    return np.asarray(values, np.float32) / np.float32(127.5) - np.float32(1.0)


def _random_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _decode(path, img_size, **kwargs):
    image = data.decode_image(str(path), img_size, **kwargs)
    assert image.shape == (img_size, img_size, 3)
    assert image.dtype == tf.float32
    image = image.numpy()
    assert image.min() >= -1.0 and image.max() <= 1.0
    return image


def _save(array_or_image, path, **kwargs):
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path, **kwargs)
    return str(path)


def _solid_pngs(directory, n, size=4):
    """n PNGs, image i solid gray level 10 * i, so a decoded pixel identifies its file."""
    os.makedirs(directory, exist_ok=True)
    return [_save(np.full((size, size, 3), 10 * i, np.uint8), os.path.join(directory, f'{i:03d}.png'))
            for i in range(n)]


def _ids(batch):
    """Which of _solid_pngs' images are in a batch, in order."""
    return [int(round(v)) for v in (batch[:, 0, 0, 0] + 1.0) * 127.5 / 10]


# ---------------------------------------------------------------------------------------
# Decoding: every format and channel layout -> (img_size, img_size, 3) float32 in [-1, 1]
# ---------------------------------------------------------------------------------------

def test_solid_colour_png_gives_exactly_that_colour(tmp_path):
    path = _save(np.full((8, 8, 3), (200, 40, 90), np.uint8), tmp_path / 'c.png')
    np.testing.assert_array_equal(_decode(path, 8), np.broadcast_to(_scaled((200, 40, 90)), (8, 8, 3)))


def test_rgb_png_values_are_pixel_exact(tmp_path):
    rgb = _random_rgb(6, 6)
    np.testing.assert_array_equal(_decode(_save(rgb, tmp_path / 'r.png'), 6), _scaled(rgb))


def test_extremes_map_to_minus_one_and_one(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = 255
    image = _decode(_save(rgb, tmp_path / 'e.png'), 4)
    assert (image[:2] == 1.0).all() and (image[2:] == -1.0).all()


def test_grayscale_value_v_gives_v_v_v(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (5, 5), dtype=np.uint8)
    image = _decode(_save(gray, tmp_path / 'g.png'), 5)
    np.testing.assert_array_equal(image, np.repeat(_scaled(gray)[..., None], 3, axis=-1))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 120, 250)
    rgba[..., 3] = np.arange(16).reshape(4, 4) * 17  # from fully transparent to opaque
    image = _decode(_save(rgba, tmp_path / 'a.png'), 4)
    np.testing.assert_array_equal(image, np.broadcast_to(_scaled((10, 120, 250)), (4, 4, 3)))


def test_gray_alpha_gives_gray_rgb(tmp_path):
    gray = np.random.default_rng(2).integers(0, 256, (4, 4), dtype=np.uint8)
    la = Image.fromarray(gray).convert('LA')
    la.putalpha(Image.fromarray(np.full((4, 4), 30, np.uint8)))
    path = _save(la, tmp_path / 'la.png')
    assert Image.open(path).mode == 'LA'
    np.testing.assert_array_equal(_decode(path, 4), np.repeat(_scaled(gray)[..., None], 3, axis=-1))


def test_palette_png_gives_palette_colours(tmp_path):
    palette_image = Image.fromarray(_random_rgb(6, 6, seed=3)).convert('P', palette=Image.Palette.ADAPTIVE, colors=8)
    path = _save(palette_image, tmp_path / 'p.png')
    assert Image.open(path).mode == 'P'
    expected = np.array(Image.open(path).convert('RGB'))
    np.testing.assert_array_equal(_decode(path, 6), _scaled(expected))


def test_palette_png_with_transparency_drops_alpha(tmp_path):
    palette_image = Image.fromarray(_random_rgb(6, 6, seed=4)).convert('P', palette=Image.Palette.ADAPTIVE, colors=4)
    path = _save(palette_image, tmp_path / 'pt.png', transparency=0)
    expected = np.array(Image.open(path).convert('RGB'))
    np.testing.assert_array_equal(_decode(path, 6), _scaled(expected))


def test_16bit_gray_png_is_scaled_exactly_to_the_8bit_range(tmp_path):
    rng = np.random.default_rng(5)
    gray16 = rng.integers(0, 65536, (6, 6)).astype(np.uint16)
    gray16[0, :3] = (0, 65535, 257 * 200)
    path = _save(Image.fromarray(gray16), tmp_path / 'g16.png')
    image = _decode(path, 6)
    # exact 16-bit value (v / 257), not the truncated v >> 8 of a uint8 decode
    np.testing.assert_allclose(image[..., 0], _scaled(gray16 / 257.0), atol=1e-5)
    assert np.allclose(image[0, :3, 0], _scaled((0, 255, 200)), atol=1e-6)
    # and within 1/2 level of its 8-bit version
    path8 = _save(np.round(gray16 / 257.0).astype(np.uint8), tmp_path / 'g8.png')
    assert np.abs(image - _decode(path8, 6)).max() <= 0.5 / 127.5 + 1e-6
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_16bit_rgb_png_equals_its_8bit_version(tmp_path):
    rgb8 = _random_rgb(5, 7, seed=6)
    rgb16 = rgb8.astype(np.uint16) * 257  # the 16-bit version of the same picture
    path16 = str(tmp_path / 'c16.png')
    tf.io.write_file(path16, tf.io.encode_png(rgb16))
    path8 = _save(rgb8, tmp_path / 'c8.png')
    np.testing.assert_allclose(_decode(path16, 8), _decode(path8, 8), atol=1e-5)
    np.testing.assert_allclose(_decode(path16, 7)[:5], _decode(path8, 7)[:5], atol=1e-5)


def test_bmp_is_pixel_exact(tmp_path):
    rgb = _random_rgb(5, 5, seed=7)
    np.testing.assert_array_equal(_decode(_save(rgb, tmp_path / 'b.bmp'), 5), _scaled(rgb))


def test_grayscale_bmp_is_pixel_exact(tmp_path):
    gray = np.random.default_rng(8).integers(0, 256, (5, 5), dtype=np.uint8)
    image = _decode(_save(gray, tmp_path / 'g.bmp'), 5)
    np.testing.assert_array_equal(image, np.repeat(_scaled(gray)[..., None], 3, axis=-1))


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new('RGB', (6, 6), colour).convert('P', palette=Image.Palette.ADAPTIVE)
              for colour in ((250, 20, 20), (20, 20, 250))]
    path = str(tmp_path / 'anim.gif')
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    expected = np.array(Image.open(path).convert('RGB'))  # PIL opens frame 0
    assert expected[0, 0, 0] > 200 and expected[0, 0, 2] < 50
    np.testing.assert_array_equal(_decode(path, 6), _scaled(expected))


def test_lossless_webp_is_pixel_exact(tmp_path):
    rgb = _random_rgb(9, 9, seed=21)
    np.testing.assert_array_equal(_decode(_save(rgb, tmp_path / 'x.webp', lossless=True), 9), _scaled(rgb))


def test_rgba_webp_drops_alpha_without_compositing(tmp_path):
    rgba = _random_rgb(6, 6, seed=22)
    rgba = np.concatenate([rgba, np.zeros((6, 6, 1), np.uint8)], axis=-1)  # fully transparent
    path = _save(rgba, tmp_path / 'a.webp', lossless=True, exact=True)
    np.testing.assert_array_equal(_decode(path, 6), _scaled(rgba[..., :3]))


def test_lossy_webp_matches_libwebp_decoding(tmp_path):
    path = _save(_random_rgb(16, 16, seed=23), tmp_path / 'x.webp', quality=80)
    np.testing.assert_array_equal(_decode(path, 16), _scaled(np.array(Image.open(path).convert('RGB'))))


def test_jpeg_solid_colour_is_close(tmp_path):
    path = _save(np.full((16, 16, 3), (200, 40, 90), np.uint8), tmp_path / 'c.jpg', quality=100)
    image = _decode(path, 16)
    assert np.abs(image - _scaled((200, 40, 90))).max() <= 3 / 127.5


@pytest.mark.parametrize('subsampling', [0, 2])  # 4:4:4 and 4:2:0 chroma
def test_jpeg_matches_accurate_libjpeg_decoding(tmp_path, subsampling):
    rgb = np.kron(_random_rgb(4, 4, seed=9), np.ones((4, 4, 1), np.uint8))  # sharp 4x4 blocks
    path = _save(rgb, tmp_path / 'r.jpeg', quality=95, subsampling=subsampling)
    expected = np.array(Image.open(path).convert('RGB'))  # PIL: libjpeg's accurate integer IDCT
    # TF's default fast IDCT is off by 10+ levels here
    assert np.abs(_decode(path, 16) - _scaled(expected)).max() <= 1 / 127.5 + 1e-6


def test_grayscale_jpeg_gives_three_equal_channels(tmp_path):
    path = _save(np.full((8, 8), 77, np.uint8), tmp_path / 'g.jpg', quality=100)
    image = _decode(path, 8)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert np.abs(image - _scaled(77)).max() <= 1 / 127.5


def test_resize_is_bilinear_without_antialias_by_default(tmp_path):
    rgb = _random_rgb(12, 20, seed=10)  # non-square: squashed to a square, no crop
    path = _save(rgb, tmp_path / 'big.png')
    for antialias in (False, True):
        expected = tf.image.resize(rgb.astype(np.float32), [8, 8], 'bilinear', antialias=antialias)
        np.testing.assert_allclose(_decode(path, 8, antialias=antialias), _scaled(expected.numpy()), atol=1e-5)
    assert np.abs(_decode(path, 8) - _decode(path, 8, antialias=True)).max() > 0.05


def test_upscaling_a_solid_image_keeps_its_colour(tmp_path):
    path = _save(np.full((3, 5, 3), (0, 128, 255), np.uint8), tmp_path / 's.png')
    np.testing.assert_allclose(_decode(path, 16), np.broadcast_to(_scaled((0, 128, 255)), (16, 16, 3)), atol=1e-6)


def test_decode_image_accepts_bytes_and_path_objects(tmp_path):
    rgb = _random_rgb(4, 4, seed=11)
    path = tmp_path / 'x.png'
    _save(rgb, path)
    np.testing.assert_array_equal(data.decode_image(path.read_bytes(), 4).numpy(), _scaled(rgb))
    np.testing.assert_array_equal(data.decode_image(path, 4).numpy(), _scaled(rgb))


def test_mixed_formats_and_sizes_make_one_dataset(tmp_path):
    rng = np.random.default_rng(12)
    d = tmp_path / 'mixed'
    d.mkdir()
    _save(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8), d / 'a.png')
    _save(rng.integers(0, 256, (20, 20), dtype=np.uint8), d / 'b.jpg')
    _save(rng.integers(0, 256, (5, 5, 4), dtype=np.uint8), d / 'c.PNG')
    _save(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), d / 'd.bmp')
    _save(Image.fromarray(rng.integers(0, 256, (7, 3, 3), dtype=np.uint8)).convert('P'), d / 'e.gif')
    _save(Image.fromarray(rng.integers(0, 65536, (4, 9)).astype(np.uint16)), d / 'f.png')
    _save(rng.integers(0, 256, (12, 8, 4), dtype=np.uint8), d / 'g.webp')
    ds = data.make_dataset(str(d), 16, 7, repeat=False)
    assert ds.n_files == 7
    batches = [b.numpy() for b in ds]
    assert len(batches) == 1 and batches[0].shape == (7, 16, 16, 3) and batches[0].dtype == np.float32
    assert batches[0].min() >= -1 and batches[0].max() <= 1


# ---------------------------------------------------------------------------------------
# EXIF orientation (JPEG): applied as PIL's ImageOps.exif_transpose shows the image
# ---------------------------------------------------------------------------------------

def _blocks(h_blocks, w_blocks, seed):
    """Random colour 8x8 blocks: JPEG keeps them to a level or two, and any turn or mirror
    of the image moves them."""
    return np.kron(_random_rgb(h_blocks, w_blocks, seed=seed), np.ones((8, 8, 1), np.uint8))


def _exif_jpeg(path, rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(rgb, path, quality=95, exif=exif.tobytes())


def _shown(path):
    """The image as PIL shows it after applying its EXIF orientation, float32 0-255."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert('RGB'), np.float32)


def _resized(rgb, size):
    return tf.image.resize(np.asarray(rgb, np.float32), [size, size], 'bilinear').numpy()


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_decodes_as_pil_shows_it(tmp_path, orientation):
    stored = _blocks(3, 5, seed=30)  # 24 x 40, not square: turns swap the sides
    path = _exif_jpeg(tmp_path / 'o.jpg', stored, orientation)
    shown = _shown(path)
    if orientation != 1:  # the reference really differs from the stored pixels
        assert shown.shape != stored.shape or np.abs(shown - stored).max() > 50
    info = image_headers.inspect_file(path)
    assert info.orientation == orientation and info.size == (shown.shape[1], shown.shape[0])
    tolerance = 1 / 127.5 + 1e-5  # PIL and TF's accurate IDCT: at most one level apart
    np.testing.assert_allclose(_decode(path, 16), _scaled(_resized(shown, 16)), atol=tolerance)
    # Used directly with bytes; and through the FID reader.
    np.testing.assert_allclose(data.decode_image(open(path, 'rb').read(), 16).numpy(),
                               _scaled(_resized(shown, 16)), atol=tolerance)
    (batch,) = data.decode_uint8_images([path], 16)
    assert np.abs(batch[0] - np.round(_resized(shown, 16))).max() <= 1


def test_exif_orientation_in_the_training_pipeline(tmp_path):
    paths = [_exif_jpeg(tmp_path / f'{o}.jpg', _blocks(3, 5, seed=30 + o), o) for o in range(1, 9)]
    ds = data.make_dataset(paths, 24, 8, crop='center', shuffle=False, repeat=False, seed=0)
    (batch,) = [b.numpy() for b in ds]
    for path, image in zip(paths, batch):
        shown = _shown(path)
        top, left = (shown.shape[0] - 24) // 2, (shown.shape[1] - 24) // 2
        expected = _scaled(shown[top:top + 24, left:left + 24])  # the square: no resize
        assert np.abs(image - expected).max() <= 1 / 127.5 + 1e-5, path
    assert 'rotated by EXIF: 7' in ds.summary


def test_decode_image_on_a_path_tensor_in_a_graph_reads_the_orientation(tmp_path):
    path = _exif_jpeg(tmp_path / 'six.jpg', _blocks(2, 3, seed=31), 6)  # turned: 16 x 24 shown
    ds = tf.data.Dataset.from_tensor_slices([path]).map(lambda p: data.decode_image(p, 8))
    np.testing.assert_allclose(next(iter(ds)).numpy(), _scaled(_resized(_shown(path), 8)),
                               atol=1 / 127.5 + 1e-5)


def _segment(marker, payload):
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, 'big') + payload


def _little_endian_exif(orientation):
    """An APP1 payload with an Intel-order TIFF header and one IFD0 entry: the orientation."""
    entry = (0x0112).to_bytes(2, 'little') + (3).to_bytes(2, 'little') + (1).to_bytes(4, 'little')
    entry += orientation.to_bytes(2, 'little') + b'\0\0'
    return (b'Exif\0\0II*\0' + (8).to_bytes(4, 'little') + (1).to_bytes(2, 'little') + entry
            + b'\0\0\0\0')


def test_exif_and_frame_size_found_after_large_segments(tmp_path):
    # A 6 KB comment and an XMP APP1 push the EXIF and the frame header past the first 2 KiB.
    plain = open(_save(_blocks(2, 3, seed=32), tmp_path / 'plain.jpg', quality=95), 'rb').read()
    xmp = _segment(0xE1, b'http://ns.adobe.com/xap/1.0/\0' + b'<x/>' * 10)
    exif = _segment(0xE1, _little_endian_exif(8))
    encoded = plain[:2] + _segment(0xFE, b'c' * 6000) + xmp + exif + plain[2:]
    path = tmp_path / 'late.jpg'
    path.write_bytes(encoded)
    assert encoded.index(b'Exif') > 2048 and encoded.index(b'\xff\xc0') > 2048
    assert image_headers.inspect_file(str(path)) == image_headers.ImageInfo(None, (16, 24), 8)
    assert image_headers.read_orientation(str(path)) == 8
    shown = _shown(path)
    assert shown.shape == (24, 16, 3)  # PIL read the same tag
    np.testing.assert_allclose(_decode(path, 8), _scaled(_resized(shown, 8)), atol=1 / 127.5 + 1e-5)


def test_untagged_and_non_jpeg_files_keep_orientation_one(tmp_path):
    assert image_headers.read_orientation(_save(_blocks(1, 1, seed=33), tmp_path / 'a.jpg')) == 1
    assert image_headers.read_orientation(_save(_blocks(1, 1, seed=33), tmp_path / 'a.png')) == 1
    encoded = open(_exif_jpeg(tmp_path / 'bad.jpg', _blocks(1, 1, seed=33), 9), 'rb').read()
    assert image_headers.read_orientation(encoded) == 1  # 9 is no orientation: left as stored


# ---------------------------------------------------------------------------------------
# crop: 'none' squashes to a square (the authors'), 'center' takes the centred square
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(8, 16), (17, 8)])  # 2:1 wide; tall with an odd margin
def test_center_crop_is_the_centre_square_resized(tmp_path, shape):
    rgb = _random_rgb(*shape, seed=34)
    path = _save(rgb, tmp_path / 'wide.png')
    side = min(shape)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    square = rgb[top:top + side, left:left + side]
    np.testing.assert_array_equal(_decode(path, 8, crop='center'), _scaled(square))
    np.testing.assert_allclose(_decode(path, 4, crop='center'), _scaled(_resized(square, 4)),
                               atol=1e-5)
    np.testing.assert_allclose(_decode(path, 4), _scaled(_resized(rgb, 4)), atol=1e-5)  # none
    (batch,) = data.decode_uint8_images([path], 4, crop='center')
    np.testing.assert_array_equal(batch[0], np.round(_resized(square, 4)))
    (batch,) = data.make_dataset([path], 8, 1, crop='center', repeat=False)
    np.testing.assert_array_equal(batch[0], _scaled(square))


def test_unknown_crop_is_refused(tmp_path):
    path = _save(_random_rgb(4, 4), tmp_path / 'x.png')
    for call in (lambda: data.decode_image(path, 4, crop='centre'),
                 lambda: data.make_dataset([path], 4, 1, crop='centre'),
                 lambda: next(data.decode_uint8_images([path], 4, crop='centre'))):
        with pytest.raises(data.DataError, match="crop must be one of \\['none', 'center'\\]"):
            call()


# ---------------------------------------------------------------------------------------
# Sizes from the file headers, and the one-line summary
# ---------------------------------------------------------------------------------------

def test_header_sizes_equal_pil_sizes_in_every_format(tmp_path):
    rgb = _random_rgb(7, 13, seed=35)  # 13 wide, 7 high
    paths = [_save(rgb, tmp_path / 'a.png'), _save(rgb, tmp_path / 'b.jpg'),
             _save(rgb, tmp_path / 'c.bmp'), _save(rgb, tmp_path / 'd.gif'),
             _save(rgb, tmp_path / 'e.webp', quality=80),
             _save(rgb, tmp_path / 'f.webp', lossless=True),
             _save(np.dstack([rgb, rgb[..., :1]]), tmp_path / 'g.webp', quality=80),
             _save(_random_rgb(300, 2, seed=36), tmp_path / 'h.jpg')]
    chunks = {open(p, 'rb').read()[12:16] for p in paths if p.endswith('.webp')}
    assert chunks == {b'VP8 ', b'VP8L', b'VP8X'}  # lossy, lossless, extended (alpha)
    scan = data.scan_images(paths)
    for path, info in zip(paths, scan.infos):
        with Image.open(path) as image:
            assert info.size == image.size, path


def test_summary_counts_images_skips_sizes_and_treatment(tmp_path):
    _save(_random_rgb(8, 8), tmp_path / 'a.png')
    _save(_random_rgb(8, 16), tmp_path / 'b.png')
    _exif_jpeg(tmp_path / 'c.jpg', _blocks(1, 2, seed=37), 6)  # 16 x 8 stored, 8 x 16 shown
    (tmp_path / 'd.jpg').write_text('not an image')
    encoded = open(_save(_random_rgb(16, 16), tmp_path / 'e.jpg'), 'rb').read()
    (tmp_path / 'e.jpg').write_bytes(encoded[:len(encoded) // 2])
    with pytest.warns(data.DataWarning):
        ds = data.make_dataset(str(tmp_path), 8, 2, cache=False)
    assert ds.summary == ('3 images (2 skipped: 1 not an image, 1 truncated JPEG); '
                          'sizes 8x8 to 16x8 (3 distinct), 2 non-square; rotated by EXIF: 1, '
                          'squashed to 8x8 (crop=none), decoded again every epoch')
    with pytest.warns(data.DataWarning):
        ds = data.make_dataset(str(tmp_path), 8, 2, crop='center', antialias=True)
    assert ds.summary.endswith('; rotated by EXIF: 1, centre-cropped and resized to 8x8 '
                               'with antialias, cached in memory')


def test_summary_of_square_images(tmp_path):
    _solid_pngs(tmp_path / 'same', 3, size=8)
    assert data.make_dataset(str(tmp_path / 'same'), 8, 2).summary == (
        '3 images; all 8x8; used at 8x8 as they are, cached in memory')
    _save(_random_rgb(16, 16), tmp_path / 'same' / 'big.png')
    assert data.make_dataset(str(tmp_path / 'same'), 8, 2).summary == (
        '4 images; sizes 8x8 to 16x16 (2 distinct); resized to 8x8, cached in memory')


# ---------------------------------------------------------------------------------------
# Listing files and input errors
# ---------------------------------------------------------------------------------------

def test_list_image_files_recursive_sorted_any_case(tmp_path):
    (tmp_path / 'sub' / 'deeper').mkdir(parents=True)
    for name in ('b.JPG', 'a.png', 'sub/c.Jpeg', 'sub/deeper/d.bmp', 'sub/e.GIF', 'notes.txt', 'f.WebP'):
        (tmp_path / name).write_bytes(b'x')
    expected = sorted(str(tmp_path / n) for n in ('b.JPG', 'a.png', 'sub/c.Jpeg', 'sub/deeper/d.bmp', 'sub/e.GIF', 'f.WebP'))
    assert data.list_image_files(str(tmp_path)) == expected
    assert data.list_image_files(tmp_path) == expected  # os.PathLike
    assert data.list_image_files(str(tmp_path / '**' / '*')) == expected
    assert data.list_image_files(str(tmp_path / '*.png')) == [str(tmp_path / 'a.png')]


def test_images_tensorflow_cannot_decode_are_left_out_with_a_warning(tmp_path):
    _solid_pngs(tmp_path, 2)
    for name in ('scan.tif', 'photo.HEIC', 'notes.txt'):
        (tmp_path / name).write_bytes(b'x')
    with pytest.warns(data.DataWarning, match=r'Leaving out 2 images .*photo\.HEIC.*convert them'):
        files = data.list_image_files(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ['000.png', '001.png']


def test_only_images_tensorflow_cannot_decode_raises_saying_to_convert(tmp_path):
    (tmp_path / 'scan.tiff').write_bytes(b'x')
    for pattern in (str(tmp_path), str(tmp_path / '*')):
        with pytest.raises(data.DataError, match=r'only images in formats .*scan\.tiff.*convert'):
            data.list_image_files(pattern)


def test_glob_matching_nothing_raises_with_the_pattern(tmp_path):
    pattern = str(tmp_path / 'nothing_here' / '*.png')
    with pytest.raises(data.DataError, match='nothing_here'):
        data.list_image_files(pattern)
    with pytest.raises(data.DataError, match='nothing_here'):
        data.make_dataset(pattern, 8, 2)


def test_empty_pattern_raises(tmp_path):
    with pytest.raises(data.DataError, match="''"):
        data.list_image_files('')


def test_glob_matching_only_non_images_raises_with_the_pattern(tmp_path):
    (tmp_path / 'a.txt').write_text('hello')
    with pytest.raises(data.DataError, match=r"a\.txt' matches 1 files but no image"):
        data.list_image_files(str(tmp_path / 'a.txt'))


def test_directory_without_images_raises_with_its_name(tmp_path):
    d = tmp_path / 'no_images_dir'
    d.mkdir()
    (d / 'readme.txt').write_text('no images')
    with pytest.raises(data.DataError, match='no_images_dir.*no image files'):
        data.list_image_files(str(d))
    with pytest.raises(data.DataError, match='no_images_dir'):
        data.make_dataset(str(d), 8, 1)


def test_data_error_is_a_value_error():
    assert issubclass(data.DataError, ValueError)


def test_fewer_files_than_a_batch_raises_with_counts_and_a_batch_size_that_works(tmp_path):
    _solid_pngs(tmp_path, 3)
    with pytest.raises(data.DataError,
                       match=r'Only 3 usable .*\(batch_size=4\): use --set batch_size=2 or add'):
        data.make_dataset(str(tmp_path), 4, 4)
    data.make_dataset(str(tmp_path), 4, 3)  # exactly one batch is enough
    _solid_pngs(tmp_path / 'six', 6)
    with pytest.raises(data.DataError, match=r'Only 6 .*use --set batch_size=4 '):
        data.make_dataset(str(tmp_path / 'six'), 4, 128)
    assert len(next(iter(data.make_dataset(str(tmp_path / 'six'), 4, 4)))) == 4


# ---------------------------------------------------------------------------------------
# Bad files: found, named, skipped
# ---------------------------------------------------------------------------------------

def _bad_files(directory):
    """Files that look like images by name but cannot be decoded, keyed by a short tag."""
    os.makedirs(directory, exist_ok=True)
    jpeg = _save(_random_rgb(32, 32, seed=13), os.path.join(directory, 'full.jpg'))
    encoded = open(jpeg, 'rb').read()
    os.remove(jpeg)
    png = open(_save(_random_rgb(8, 8, seed=14), os.path.join(directory, 'full.png')), 'rb').read()
    os.remove(os.path.join(directory, 'full.png'))
    contents = {
        'text.jpg': b'this is not an image\n',
        'truncated.jpg': encoded[:len(encoded) // 2],
        'truncated.png': png[:len(png) - 20],
        'random.png': np.random.default_rng(15).integers(0, 256, 500, dtype=np.uint8).tobytes(),
        'empty.gif': b'',
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = os.path.join(directory, name)
        with open(paths[name], 'wb') as f:
            f.write(content)
    paths['one_bit.bmp'] = _save(Image.fromarray(_random_rgb(8, 8)).convert('1'), os.path.join(directory, 'one_bit.bmp'))
    paths['palette.bmp'] = _save(Image.fromarray(_random_rgb(8, 8)).convert('P'), os.path.join(directory, 'palette.bmp'))
    return paths


def test_check_images_finds_every_kind_of_bad_file(tmp_path):
    good = _solid_pngs(tmp_path / 'good', 3)
    good.append(_save(_random_rgb(8, 8), tmp_path / 'good' / 'ok.jpg'))
    good.append(_save(_random_rgb(8, 8), tmp_path / 'good' / 'ok.gif'))
    good.append(_save(_random_rgb(8, 8), tmp_path / 'good' / 'ok.bmp'))
    bad = sorted(_bad_files(tmp_path / 'bad').values())
    with pytest.warns(data.DataWarning):
        found_good, found_bad = data.check_images(good + bad)
    assert found_good == good
    assert sorted(found_bad) == bad


def _webp_bytes(tmp_path, frames=1):
    images = [Image.fromarray(_random_rgb(8, 8, seed=24 + i)) for i in range(frames)]
    path = tmp_path / f'{frames}_frames.webp'
    images[0].save(path, save_all=frames > 1, append_images=images[1:], duration=100)
    encoded = path.read_bytes()
    path.unlink()
    return encoded


def test_check_images_flags_truncated_and_animated_webp(tmp_path):
    # Decoding an animated WebP corrupts TensorFlow's memory (the process dies), so the
    # check must stop it before make_dataset decodes it.
    still = _webp_bytes(tmp_path)
    files = {'still.webp': still, 'truncated.webp': still[:len(still) - 10],
             'header.webp': still[:16], 'animated.webp': _webp_bytes(tmp_path, frames=2)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert image_headers.inspect_file(str(tmp_path / 'still.webp')).problem is None
    assert 'truncated' in image_headers.inspect_file(str(tmp_path / 'truncated.webp')).problem
    assert 'truncated' in image_headers.inspect_file(str(tmp_path / 'header.webp')).problem
    assert 'animated WebP' in image_headers.inspect_file(str(tmp_path / 'animated.webp')).problem
    _solid_pngs(tmp_path, 2)
    with pytest.warns(data.DataWarning, match=r'Skipping 3 of 6.*animated\.webp'):
        ds = data.make_dataset(str(tmp_path), 8, 3, repeat=False)
    assert ds.n_files == 3 and len(next(iter(ds))) == 3


def test_check_images_accepts_good_files_silently(tmp_path):
    files = _solid_pngs(tmp_path, 4)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert data.check_images(files) == (files, [])


def test_warning_counts_bad_files_and_names_at_most_five(tmp_path):
    bad = sorted(_bad_files(tmp_path).values())  # 7 files
    good = _solid_pngs(tmp_path / 'good', 2)
    with pytest.warns(data.DataWarning, match='Skipping 7 of 9') as record:
        data.check_images(bad + good)
    message = str(record[0].message)
    assert sum(os.path.basename(f) in message for f in bad) == 5
    assert 'and 2 more' in message


def test_bad_files_are_skipped_with_a_warning_and_the_rest_loads(tmp_path):
    good = _solid_pngs(tmp_path, 5)
    text_jpg = tmp_path / 'fake.jpg'
    text_jpg.write_text('not a jpeg')
    corrupt = tmp_path / 'corrupt.png'
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    with pytest.warns(data.DataWarning, match=r'Skipping 2 of 7.*corrupt\.png.*fake\.jpg'):
        ds = data.make_dataset(str(tmp_path), 4, 1, repeat=False)
    assert ds.n_files == 5
    assert sorted(_ids(np.concatenate([b.numpy() for b in ds]))) == list(range(len(good)))


def test_only_bad_files_raises(tmp_path):
    _bad_files(tmp_path)
    with pytest.warns(data.DataWarning), pytest.raises(data.DataError, match='None of the 7'):
        data.make_dataset(str(tmp_path), 8, 1)


def test_damage_the_check_cannot_see_is_skipped_while_decoding(tmp_path):
    files = _solid_pngs(tmp_path, 4, size=8)
    # valid JPEG header and end marker around garbage: passes check_images, fails decoding
    encoded = open(_save(_random_rgb(16, 16), tmp_path / 'x.jpg'), 'rb').read()
    (tmp_path / 'x.jpg').write_bytes(encoded[:20] + b'\x00' * 200 + encoded[-2:])
    assert data.check_images([str(tmp_path / 'x.jpg')])[0] == [str(tmp_path / 'x.jpg')]
    ds = data.make_dataset(str(tmp_path), 8, 1, repeat=False, shuffle=False)
    assert ds.n_files == 5
    assert sorted(_ids(np.concatenate([b.numpy() for b in ds]))) == list(range(len(files)))


# ---------------------------------------------------------------------------------------
# Batching and shuffling
# ---------------------------------------------------------------------------------------

def test_batches_have_a_fixed_size(tmp_path):
    _solid_pngs(tmp_path, 10)
    ds = data.make_dataset(str(tmp_path), 4, 4, repeat=False)
    assert ds.element_spec.shape == (4, 4, 4, 3)  # static, for the XLA train step
    assert [b.shape[0] for b in ds] == [4, 4]  # the 2 leftover images are dropped
    ds = data.make_dataset(str(tmp_path), 4, 4)
    assert [b.shape for b in ds.take(7)] == [(4, 4, 4, 3)] * 7


@pytest.mark.parametrize('cache', [True, False])
def test_every_epoch_has_every_image_once_in_a_new_order(tmp_path, cache):
    n = 16
    _solid_pngs(tmp_path, n)
    # seeded: decoding order is deterministic, so only reshuffling can change the order
    ds = data.make_dataset(str(tmp_path), 4, n, cache=cache, seed=0)
    epochs = [_ids(b.numpy()) for b in ds.take(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert epochs[0] != list(range(n))


def test_default_cache_choice_still_reshuffles(tmp_path):
    _solid_pngs(tmp_path, 12)
    ds = data.make_dataset(str(tmp_path), 4, 12)  # small: cached in memory
    epochs = [_ids(b.numpy()) for b in ds.take(2)]
    assert epochs[0] != epochs[1]


def test_seed_makes_the_order_reproducible(tmp_path):
    _solid_pngs(tmp_path, 12)
    orders = [[_ids(b.numpy()) for b in data.make_dataset(str(tmp_path), 4, 12, seed=3, cache=cache).take(2)]
              for cache in (True, True, False, False)]
    assert orders[0] == orders[1] and orders[2] == orders[3]
    assert orders[0][0] != orders[0][1]


def test_no_shuffle_keeps_file_order(tmp_path):
    _solid_pngs(tmp_path, 6)
    ds = data.make_dataset(str(tmp_path), 4, 3, shuffle=False, seed=0, repeat=False)
    assert [_ids(b.numpy()) for b in ds] == [[0, 1, 2], [3, 4, 5]]


def test_make_dataset_accepts_a_file_list(tmp_path):
    files = _solid_pngs(tmp_path, 6)
    ds = data.make_dataset(files[:4], 4, 2, repeat=False)
    assert ds.n_files == 4
    assert sorted(_ids(np.concatenate([b.numpy() for b in ds]))) == [0, 1, 2, 3]
    with pytest.raises(data.DataError):
        data.make_dataset([], 4, 2)


# ---------------------------------------------------------------------------------------
# uint8 reader for FID
# ---------------------------------------------------------------------------------------

def test_decode_uint8_images_gives_rounded_uint8_batches_in_file_order(tmp_path):
    files = _solid_pngs(tmp_path / 'solid', 5)
    batches = list(data.decode_uint8_images(files, 4, batch_size=2))
    assert [b.shape for b in batches] == [(2, 4, 4, 3), (2, 4, 4, 3), (1, 4, 4, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches)[:, 0, 0, 0], [0, 10, 20, 30, 40])
    rgb = _random_rgb(9, 14, seed=16)
    path = _save(rgb, tmp_path / 'r.png')
    (batch,) = data.decode_uint8_images(path, 6)
    resized = tf.image.resize(rgb.astype(np.float32), [6, 6], 'bilinear').numpy()
    np.testing.assert_array_equal(batch[0], np.round(resized).astype(np.uint8))
    assert np.abs(batch[0].astype(np.float32) - resized).max() > 0.01  # really rounded, not exact


def test_decode_uint8_images_skips_bad_files(tmp_path):
    files = _solid_pngs(tmp_path, 3)
    (tmp_path / 'bad.png').write_text('nope')
    with pytest.warns(data.DataWarning, match='bad.png'):
        batches = list(data.decode_uint8_images(str(tmp_path), 4))
    assert np.concatenate(batches).shape[0] == len(files)
