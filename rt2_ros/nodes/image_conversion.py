"""Camera messages -> the HxWx3 uint8 RGB arrays the policies take (numpy only, no rclpy).

The functions read the fields of ``sensor_msgs/Image`` (``encoding``,
``height``, ``width``, ``step``, ``data``) and return a *view* of the
message's buffer wherever the layout allows it: ``np.frombuffer`` over
``msg.data`` costs nothing, while copying a 640x480 frame costs a fraction of
a millisecond and assigning arrays back to messages costs ~50 ms (DESIGN
section 8).  Row padding (``step`` larger than ``width * channels``) is
honoured with strides, not copied away.

==========  ==========================================
encoding    result
==========  ==========================================
``rgb8``    the buffer itself (no copy)
``rgba8``   the first three channels (view)
``bgr8``    channels reversed (view, negative stride)
``bgra8``   channels 2, 1, 0 (view, negative stride)
``mono8``   the grey channel broadcast to three (read-only view)
==========  ==========================================

Consumers that need C-contiguous memory (a JPEG encoder, ``torch.from_numpy``)
call :func:`as_contiguous_rgb`, which copies only when the view is not
contiguous already.  An image that cannot be used raises
:class:`ImageConversionError`, whose ``cause`` is a short key (``encoding``,
``empty``, ``step``, ``data_size``, ``compressed``) so a node reports each
kind of problem once instead of once per frame.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rt2_ros.errors import Rt2RosError

__all__ = ["ENCODINGS", "ImageConversionError", "image_to_rgb", "compressed_to_rgb",
           "as_contiguous_rgb", "image_fields_to_rgb"]

#: Supported encodings and their bytes per pixel.
ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}

CAUSES = ("encoding", "empty", "step", "data_size", "compressed")


class ImageConversionError(Rt2RosError, ValueError):
    """A camera message that cannot be turned into an RGB image.

    ``cause`` is one of ``CAUSES``; the message names the field and its value.
    """

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def image_fields_to_rgb(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    """Return an HxWx3 uint8 RGB view of raw image fields (see the module table).

    ``data`` is anything exposing the buffer protocol (``array.array``,
    ``bytes``, ``memoryview``).  Raises :class:`ImageConversionError` for an
    unsupported encoding, a zero-sized image, a ``step`` smaller than one row
    of pixels, or a buffer whose length is not ``step * height``.
    """
    channels = ENCODINGS.get(encoding)
    if channels is None:
        raise ImageConversionError(
            "encoding", f"image: unsupported encoding {encoding!r} "
                        f"(supported: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageConversionError(
            "empty", f"image: zero size (height {height}, width {width})")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            "step", f"image: step {step} is smaller than one row of pixels "
                    f"(width {width} x {channels} bytes = {row_bytes}) for {encoding}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageConversionError(
            "data_size", f"image: data holds {buffer.size} bytes, expected step {step} x "
                         f"height {height} = {step * height}")
    # Rows of `step` bytes, of which the first `row_bytes` are pixels: a view
    # with the row stride kept, so padded rows are never copied.
    pixels = np.lib.stride_tricks.as_strided(
        buffer, shape=(height, width, channels), strides=(step, channels, 1), writeable=False)
    if encoding == "rgb8":
        return pixels
    if encoding == "rgba8":
        return pixels[:, :, :3]
    if encoding == "bgr8":
        return pixels[:, :, ::-1]
    if encoding == "bgra8":
        return pixels[:, :, 2::-1]
    # mono8: one grey byte per pixel, shown as three equal channels.
    return np.broadcast_to(pixels, (height, width, 3))


def image_to_rgb(msg: Any) -> np.ndarray:
    """:func:`image_fields_to_rgb` for a ``sensor_msgs/Image`` (read by attribute)."""
    return image_fields_to_rgb(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                               msg.data)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) into an HxWx3 uint8 RGB array.

    Decoding needs OpenCV (a dependency of rt2_ros); the result is a new,
    contiguous array.  Raises :class:`ImageConversionError` (cause
    ``compressed``) for empty or undecodable data.
    """
    import cv2

    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageConversionError("compressed", f"compressed image: no data (format {msg.format!r})")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(
            "compressed", f"compressed image: cannot decode {buffer.size} bytes of format "
                          f"{msg.format!r}")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def as_contiguous_rgb(image: np.ndarray) -> np.ndarray:
    """Return ``image`` itself if it is C-contiguous, else a contiguous copy."""
    return image if image.flags.c_contiguous else np.ascontiguousarray(image)
