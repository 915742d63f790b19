"""An image's pixel count from its header, before decoding it.

TensorFlow's decoders refuse images over 2^29 decoded bytes, but below that a small
file can still claim an image far beyond any photo (a 0.5 MB PNG of 13000 x 13000
pixels decodes to 0.5 GB, and the pipeline's copies of it to several GB). Reading the
width and height from the header costs nothing, so images over a maximum pixel count
are refused before any decoding, as a corrupt file is.
"""

import tensorflow as tf

# Above any real photo (100-megapixel sensors; 134 MP is 0.4 GB as uint8 RGB).
DEFAULT_MAX_PIXELS = 2**27


def _uint(contents, offset, size, big_endian):
    raw = tf.io.decode_raw(tf.strings.substr(contents, offset, size), tf.uint8)
    weights = [256**i for i in range(size)]
    if big_endian:
        weights = weights[::-1]
    return tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant(weights, tf.int64))


def _int32_le(contents, offset):
    value = _uint(contents, offset, 4, big_endian=False)
    return tf.where(value >= 2**31, value - 2**32, value)  # BMP heights may be negative


def header_pixels(contents):
    """Width x height the header of a JPEG, PNG, GIF or BMP states (int64); -1 when the
    format is none of these or the header is too short to say."""
    length = tf.strings.length(contents)
    start = tf.strings.substr(contents, 0, 8)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(contents, output_type=tf.int64)
        return shape[0] * shape[1]

    def png():  # IHDR: width, height as big-endian uint32 at 16 and 20
        return _uint(contents, 16, 4, True) * _uint(contents, 20, 4, True)

    def gif():  # logical screen: little-endian uint16 at 6 and 8
        return _uint(contents, 6, 2, False) * _uint(contents, 8, 2, False)

    def bmp():  # BITMAPINFOHEADER: int32 width at 18, height at 22
        return tf.abs(_int32_le(contents, 18)) * tf.abs(_int32_le(contents, 22))

    def unknown():
        return tf.constant(-1, tf.int64)

    return tf.case(
        [
            (tf.strings.substr(start, 0, 2) == b"\xff\xd8", jpeg),
            (tf.logical_and(start == b"\x89PNG\r\n\x1a\n", length >= 24), png),
            (tf.logical_and(tf.strings.substr(start, 0, 3) == b"GIF", length >= 10), gif),
            (tf.logical_and(tf.strings.substr(start, 0, 2) == b"BM", length >= 26), bmp),
        ],
        default=unknown,
        exclusive=False,
    )


def check_pixels(contents, max_pixels):
    """`contents` unchanged, or an InvalidArgumentError (which the skipping decoder
    counts as a bad image) when the header claims more than `max_pixels` pixels."""
    pixels = header_pixels(contents)
    check = tf.debugging.assert_less_equal(
        pixels,
        tf.constant(max_pixels, tf.int64),
        message="image larger than --max_image_pixels (by its header)",
    )
    with tf.control_dependencies([check]):
        return tf.identity(contents)
