"""The demo video: each camera frame with the instruction, the action and the gripper drawn on it.

Drawn with OpenCV on the frame scaled up ``scale`` times, plus a status band
below it:

- the decoded action as an arrow from the end effector (projected into the
  image with the camera model) towards where the step's delta moves it,
  lengthened ``ARROW_GAIN`` times so a 1 cm step is visible;
- the instruction, the step, the delta in cm and degrees, the gripper's
  command and measured closedness, TERMINATE when the policy said so, and
  the policy's name;
- a last frame, held a moment, with the success detector's verdict.

Written as mp4 (H.264 through ``imageio-ffmpeg``) when that package is
installed, else as an animated GIF at half size (Pillow).
"""
from __future__ import annotations

import math
import queue
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rt2_ros.demo.records import FrameRecord

__all__ = ["annotate", "result_frame", "VideoWriter", "video_format", "ARROW_GAIN"]

#: The arrow shows the step's delta this many times longer (a 1 cm step -> 6 cm arrow).
ARROW_GAIN = 6.0
_BAND_PX = 112
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _GREY, _YELLOW = (255, 255, 255), (190, 190, 190), (255, 215, 0)
_GREEN, _RED, _CYAN = (60, 220, 90), (235, 60, 50), (80, 200, 255)
_BAND = (28, 30, 36)


def video_format() -> str:
    """``"mp4"`` when imageio-ffmpeg is installed, else ``"gif"``."""
    import importlib.util

    return "mp4" if importlib.util.find_spec("imageio_ffmpeg") is not None else "gif"


def _text(img: np.ndarray, text: str, org: tuple[int, int], color=_WHITE, scale: float = 0.5,
          thickness: int = 1) -> None:
    cv2.putText(img, text, org, _FONT, scale, color, thickness, cv2.LINE_AA)


def _fit(text: str, width_px: int, scale: float) -> str:
    """``text`` cut with "..." so that it fits ``width_px``."""
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width_px:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, 1)[0][0] > width_px:
        text = text[:-1]
    return text + "..."


def _label(img: np.ndarray, text: str, org: tuple[int, int], color, scale: float = 0.6) -> None:
    """Text on a dark box (readable on any background)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 2)
    x, y = org
    cv2.rectangle(img, (x - 4, y - h - 5), (x + w + 4, y + base + 3), (0, 0, 0), cv2.FILLED)
    _text(img, text, org, color, scale, 2)


def _zeroed(value: float) -> float:
    return 0.0 if abs(value) < 0.05 else value


def _size(shape: tuple[int, ...], scale: int) -> tuple[int, int]:
    """Output (height, width), multiples of 16 so H.264 needs no resizing."""
    h, w = shape[0] * scale, shape[1] * scale
    return (h + _BAND_PX + 15) // 16 * 16, (w + 15) // 16 * 16


def annotate(frame: FrameRecord, instruction: str, policy: str, scale: int = 3) -> np.ndarray:
    """The frame scaled ``scale`` times with the overlay and status band (HxWx3 uint8 RGB)."""
    image = frame.image
    h, w = image.shape[0] * scale, image.shape[1] * scale
    out_h, out_w = _size(image.shape, scale)
    canvas = np.empty((out_h, out_w, 3), np.uint8)
    canvas[:] = _BAND
    canvas[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    view = canvas[:h, :w]
    action = frame.action
    if action is not None and frame.camera is not None and frame.ee_position is not None \
            and not action.terminate:
        start = frame.camera.project(frame.ee_position)
        tip = frame.camera.project(np.asarray(frame.ee_position) + ARROW_GAIN * np.asarray(action.delta_position))
        if start is not None and tip is not None:
            p0 = (int(round(start[0] * scale)), int(round(start[1] * scale)))
            p1 = (int(round(tip[0] * scale)), int(round(tip[1] * scale)))
            length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
            cv2.circle(view, p0, 5, _YELLOW, 2, cv2.LINE_AA)
            if length >= 3:
                cv2.arrowedLine(view, p0, p1, (0, 0, 0), 6, cv2.LINE_AA, tipLength=min(0.4, 18 / length))
                cv2.arrowedLine(view, p0, p1, _GREEN, 3, cv2.LINE_AA, tipLength=min(0.4, 18 / length))
    _label(view, _fit(instruction, w - 24, 0.6), (12, 26), _WHITE)
    if action is not None and action.terminate:
        _label(view, "TERMINATE", (12, 58), _RED, 0.8)
    if frame.success:
        _label(view, "success detector: yes", (12, h - 14), _GREEN, 0.55)

    band_y = h + 24
    if action is None:
        _text(canvas, "waiting for the first action", (12, band_y), _GREY, 0.55)
    else:
        # The centre bin of an even bin count is a hair off zero: show it as 0.
        dx, dy, dz = (_zeroed(100.0 * v) for v in action.delta_position)
        rr, rp, ry = (_zeroed(math.degrees(v)) for v in action.delta_rotation)
        _text(canvas, f"step {action.step:3d}   move {dx:+5.1f} {dy:+5.1f} {dz:+5.1f} cm   "
                      f"turn {rr:+4.1f} {rp:+4.1f} {ry:+4.1f} deg", (12, band_y), _WHITE, 0.55)
        _text(canvas, "tokens " + " ".join(str(t) for t in action.tokens)
              + f"     inference {action.inference_ms:.1f} ms", (12, band_y + 26), _GREY, 0.5)
    gripper = "gripper"
    if frame.gripper_command is not None:
        gripper += f"  command {'closed' if frame.gripper_command >= 0.5 else 'open'} ({frame.gripper_command:.2f})"
    if frame.gripper_closedness is not None:
        gripper += f"  fingers {100 * frame.gripper_closedness:3.0f}% closed"
    _text(canvas, gripper, (12, band_y + 52), _CYAN, 0.5)
    _text(canvas, _fit("policy: " + policy, out_w - 24, 0.45), (12, band_y + 76), _GREY, 0.45)
    return canvas


def result_frame(last: np.ndarray, success: bool | None, detail: str) -> np.ndarray:
    """``last`` (an annotated frame) with the episode's verdict across it."""
    out = last.copy()
    h, w = out.shape[:2]
    overlay = out.copy()
    cv2.rectangle(overlay, (0, h // 2 - 60), (w, h // 2 + 50), (0, 0, 0), cv2.FILLED)
    out = cv2.addWeighted(overlay, 0.6, out, 0.4, 0)
    verdict = {True: ("SUCCESS", _GREEN), False: ("NOT SOLVED", _RED), None: ("NO VERDICT", _YELLOW)}[success]
    (tw, _), _ = cv2.getTextSize(verdict[0], _FONT, 1.6, 3)
    _text(out, verdict[0], ((w - tw) // 2, h // 2), verdict[1], 1.6, 3)
    detail = _fit(detail, w - 24, 0.55)
    (dw, _), _ = cv2.getTextSize(detail, _FONT, 0.55, 1)
    _text(out, detail, ((w - dw) // 2, h // 2 + 34), _WHITE, 0.55)
    return out


class VideoWriter:
    """Annotates and writes frames on a background thread (``add`` never blocks the caller for long).

    ``close(success, detail)`` appends the verdict frame, finishes the file
    and returns its path (None when no frame was written).
    """

    def __init__(self, path_without_suffix: Path, instruction: str, policy: str, fps: float,
                 scale: int = 3, hold_s: float = 2.0) -> None:
        self.format = video_format()
        self.path = Path(f"{path_without_suffix}.{self.format}")
        self.instruction = instruction
        self.policy = policy
        self.fps = float(fps)
        self.scale = scale
        self.hold_s = hold_s
        self.frames = 0
        self.error: str = ""
        self._queue: queue.Queue[FrameRecord | None] = queue.Queue(maxsize=256)
        self._writer: Any = None
        self._last: np.ndarray | None = None
        self._gif_frames: list[np.ndarray] = []
        self._thread = threading.Thread(target=self._run, name="demo-video", daemon=True)
        self._thread.start()

    def add(self, frame: FrameRecord) -> None:
        """Queue ``frame`` (dropped, and counted as an error, if the writer fell far behind)."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.error = "video writer fell behind; frames were dropped"

    def _write(self, image: np.ndarray) -> None:
        if self.format == "gif":
            self._gif_frames.append(image)
        else:
            if self._writer is None:
                import imageio.v2 as imageio

                self._writer = imageio.get_writer(str(self.path), fps=self.fps, codec="libx264",
                                                  quality=7, macro_block_size=16,
                                                  ffmpeg_log_level="error")
            self._writer.append_data(image)
        self.frames += 1

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self.error.startswith("writing failed"):
                continue
            try:
                self._last = annotate(frame, self.instruction, self.policy, self.scale)
                self._write(self._last)
            except Exception as exc:  # noqa: BLE001 - a broken video must not stop the demo
                self.error = f"writing failed: {type(exc).__name__}: {exc}"

    def close(self, success: bool | None = None, detail: str = "") -> Path | None:
        """Finish the file (with the verdict frame held ``hold_s``); its path, or None without frames."""
        self._queue.put(None)
        self._thread.join()
        try:
            if self._last is not None:
                verdict = result_frame(self._last, success, detail)
                for _ in range(max(1, int(round(self.hold_s * self.fps)))):
                    self._write(verdict)
            if self.format == "gif" and self._gif_frames:
                from PIL import Image

                # GIFs get big: half resolution is plenty to see what happened.
                small = [Image.fromarray(cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2),
                                                    interpolation=cv2.INTER_AREA))
                         for f in self._gif_frames]
                small[0].save(self.path, save_all=True, append_images=small[1:],
                              duration=int(round(1000.0 / self.fps)), loop=0)
        finally:
            if self._writer is not None:
                self._writer.close()
        return self.path if self.frames else None

    @property
    def last_frame(self) -> np.ndarray | None:
        """The newest annotated frame (for a preview PNG)."""
        return self._last
