"""Camera messages -> RGB arrays: views where possible, every bad message refused with its cause."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rt2_ros.nodes.image_conversion import (ENCODINGS, ImageConversionError, as_contiguous_rgb,
                                            compressed_to_rgb, image_fields_to_rgb, image_to_rgb)

RNG = np.random.default_rng(7)


def _packed(pixels: np.ndarray, step: int) -> bytes:
    """Rows of ``pixels`` (H x W x C) written into rows of ``step`` bytes (padding = 0xAB)."""
    height, width, channels = pixels.shape
    rows = np.full((height, step), 0xAB, dtype=np.uint8)
    rows[:, :width * channels] = pixels.reshape(height, width * channels)
    return rows.tobytes()


def _rgb_from(encoding: str, pixels: np.ndarray) -> np.ndarray:
    if encoding == "rgb8":
        return pixels
    if encoding == "bgr8":
        return pixels[:, :, ::-1]
    if encoding == "rgba8":
        return pixels[:, :, :3]
    if encoding == "bgra8":
        return pixels[:, :, 2::-1]
    return np.repeat(pixels, 3, axis=2)


def test_rgb8_is_the_message_buffer_itself():
    pixels = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    data = bytearray(pixels.tobytes())
    image = image_fields_to_rgb("rgb8", 4, 5, 15, data)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert np.array_equal(image, pixels)
    assert image.flags.c_contiguous
    assert np.shares_memory(image, np.frombuffer(data, np.uint8))  # no copy
    data[0] = (int(pixels[0, 0, 0]) + 1) % 256  # a view: it sees the buffer change
    assert image[0, 0, 0] == data[0]
    assert as_contiguous_rgb(image) is image


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding_with_padded_rows(encoding):
    channels = ENCODINGS[encoding]
    height, width = 3, 7
    pixels = RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)
    step = width * channels + 5  # drivers pad rows to an alignment
    data = _packed(pixels, step)
    image = image_fields_to_rgb(encoding, height, width, step, data)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert np.array_equal(image, _rgb_from(encoding, pixels))
    assert np.shares_memory(image, np.frombuffer(data, np.uint8))  # padding honoured, not copied
    contiguous = as_contiguous_rgb(image)
    assert contiguous.flags.c_contiguous and np.array_equal(contiguous, image)


@pytest.mark.parametrize("encoding, height, width, step, size, cause, words", [
    ("yuv422", 2, 2, 4, 8, "encoding", ["unsupported encoding 'yuv422'", "rgb8"]),
    ("16UC1", 2, 2, 4, 8, "encoding", ["'16UC1'"]),
    ("", 2, 2, 6, 12, "encoding", ["unsupported encoding ''"]),
    ("rgb8", 0, 4, 12, 0, "empty", ["zero size", "height 0", "width 4"]),
    ("rgb8", 4, 0, 0, 0, "empty", ["zero size", "width 0"]),
    ("rgb8", 2, 4, 11, 22, "step", ["step 11", "width 4 x 3 bytes = 12"]),
    ("bgra8", 2, 4, 12, 24, "step", ["step 12", "= 16"]),
    ("rgb8", 2, 4, 12, 23, "data_size", ["23 bytes", "step 12 x height 2 = 24"]),
    ("rgb8", 2, 4, 12, 25, "data_size", ["25 bytes"]),
    ("mono8", 3, 3, 3, 0, "data_size", ["0 bytes", "= 9"]),
])
def test_unusable_images_are_refused_with_their_cause(encoding, height, width, step, size, cause,
                                                      words):
    with pytest.raises(ImageConversionError) as info:
        image_fields_to_rgb(encoding, height, width, step, bytes(size))
    assert info.value.cause == cause
    for word in words:
        assert word in str(info.value)


@settings(max_examples=60, deadline=None)
@given(encoding=st.sampled_from(sorted(ENCODINGS)), height=st.integers(1, 9),
       width=st.integers(1, 9), padding=st.integers(0, 9), seed=st.integers(0, 2**16))
def test_conversion_matches_a_reference(encoding, height, width, padding, seed):
    channels = ENCODINGS[encoding]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    step = width * channels + padding
    image = image_fields_to_rgb(encoding, height, width, step, _packed(pixels, step))
    assert np.array_equal(image, _rgb_from(encoding, pixels))


def test_image_message_fields_are_read_by_attribute():
    pixels = RNG.integers(0, 256, (2, 3, 4), dtype=np.uint8)
    msg = SimpleNamespace(encoding="bgra8", height=2, width=3, step=12, data=pixels.tobytes())
    assert np.array_equal(image_to_rgb(msg), pixels[:, :, 2::-1])


def test_ros_image_message_buffer_is_not_copied():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    pixels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = sensor_msgs.Image(height=4, width=6, encoding="rgb8", step=18)
    msg.data = pixels.tobytes()  # rclpy stores uint8[] as array.array
    image = image_to_rgb(msg)
    assert np.array_equal(image, pixels)
    assert np.shares_memory(image, np.frombuffer(msg.data, np.uint8))


def test_compressed_images_decode_to_rgb():
    cv2 = pytest.importorskip("cv2")
    pixels = RNG.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", pixels[:, :, ::-1])  # OpenCV writes BGR
    assert ok
    image = compressed_to_rgb(SimpleNamespace(format="png", data=png.tobytes()))
    assert image.dtype == np.uint8 and np.array_equal(image, pixels)


@pytest.mark.parametrize("data, words", [(b"", ["no data", "'jpeg'"]),
                                         (b"not an image at all", ["cannot decode 19 bytes"])])
def test_undecodable_compressed_images_are_refused(data, words):
    pytest.importorskip("cv2")
    with pytest.raises(ImageConversionError) as info:
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=data))
    assert info.value.cause == "compressed"
    for word in words:
        assert word in str(info.value)
