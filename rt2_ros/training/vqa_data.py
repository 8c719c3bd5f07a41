"""VQA and caption data: JSONL files and Hugging Face ``datasets`` directories.

JSONL (one object per line, UTF-8)::

    {"image": "images/000012.png", "question": "what color is the cube?", "answer": "red"}

``image`` is a path relative to the JSONL file's directory (or absolute);
``question`` and ``answer`` are non-empty strings.  Other keys (ids, sources)
are allowed and ignored.  A caption is a question like ``describe the
image`` with the caption as its answer.  The question is given to the model
exactly as written (after the image), the answer is its target.

Hugging Face datasets: a directory saved with ``Dataset.save_to_disk`` (or a
``DatasetDict``, whose ``split`` is chosen) with an image column (PIL images
or ``{"bytes"/"path"}`` dicts) and question/answer columns; the column names
are options.  Needs the optional ``datasets`` package, imported only when
such a directory is given.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from rt2_ros.errors import ConfigError, Rt2RosError

__all__ = ["VqaError", "VqaItem", "read_vqa_jsonl", "write_vqa_jsonl", "read_hf_vqa", "load_image",
           "is_hf_dataset_dir", "iter_vqa_source"]


class VqaError(Rt2RosError):
    """A VQA source is malformed (the message names the file, line and key)."""


@dataclass
class VqaItem:
    """One question about one image, loaded on demand by ``load()``; ``image_id`` names the image
    (items with the same id share it)."""

    question: str
    answer: str
    source: str
    image_id: str
    load: Callable[[], np.ndarray]
    #: Where in the image the answer is, as (x, y) fractions of the width and height (optional):
    #: what ``rt2-ros train --grounding-weight`` points the decoder's attention at.
    point: tuple[float, float] | None = None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (VqaError naming the file if it cannot be read)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise VqaError(f"{path}: cannot read the image ({exc})") from None


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise VqaError(f"{where}: {key}: expected a non-empty string, got {value!r}")
    return " ".join(value.split())


def _point(value: Any, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value)):
        raise VqaError(f"{where}: point: expected [x, y] fractions of the image in 0..1, got {value!r}")
    return (float(value[0]), float(value[1]))


def read_vqa_jsonl(path: str | Path) -> list[VqaItem]:
    """Read a VQA JSONL file (see the module doc); images are checked to exist, not loaded."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VqaError(f"{path}: cannot read ({exc})") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise VqaError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict):
            raise VqaError(f"{where}: expected a JSON object with image, question, answer, got {record!r}")
        for key in ("image", "question", "answer"):
            if key not in record:
                raise VqaError(f"{where}: missing key {key!r}")
        image_path = Path(_text(record["image"], where, "image"))
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if not image_path.is_file():
            raise VqaError(f"{where}: image: no such file {str(image_path)!r}")
        items.append(VqaItem(question=_text(record["question"], where, "question"),
                             answer=_text(record["answer"], where, "answer"), source=where,
                             image_id=str(image_path.resolve()), load=lambda p=image_path: load_image(p),
                             point=_point(record.get("point"), where)))
    if not items:
        raise VqaError(f"{path}: no VQA items")
    return items


def write_vqa_jsonl(path: str | Path, records: Iterable[dict[str, str]]) -> int:
    """Write ``records`` (image, question, answer, ...) as JSONL; return how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def is_hf_dataset_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like a ``save_to_disk`` directory (Dataset or DatasetDict)."""
    path = Path(path)
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() \
        or (path / "state.json").is_file()


def _hf_image(value: Any, where: str) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    if hasattr(value, "convert"):
        return np.asarray(value.convert("RGB"))
    if isinstance(value, dict):
        if value.get("bytes"):
            with Image.open(BytesIO(value["bytes"])) as image:
                return np.asarray(image.convert("RGB"))
        if value.get("path"):
            return load_image(value["path"])
    if isinstance(value, str):
        return load_image(value)
    raise VqaError(f"{where}: image: expected a PIL image, bytes or a path, got {type(value).__name__}")


def read_hf_vqa(path: str | Path, *, split: str = "train", image_column: str = "image",
                question_column: str = "question", answer_column: str = "answer") -> list[VqaItem]:
    """Read a Hugging Face ``datasets`` directory (needs the optional ``datasets`` package).

    A list-valued answer column (several reference answers) uses the first.
    """
    path = Path(path)
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{path}: reading a Hugging Face datasets directory needs the 'datasets' "
                          f"package (pip install datasets), or convert it to JSONL") from None
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a bad directory
        raise VqaError(f"{path}: cannot load the dataset ({exc})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise VqaError(f"{path}: split {split!r} not found (splits: {', '.join(data)})")
        data = data[split]
    for column in (image_column, question_column, answer_column):
        if column not in data.column_names:
            raise VqaError(f"{path}: column {column!r} not found (columns: {', '.join(data.column_names)})")
    questions, answers = data[question_column], data[answer_column]
    items = []
    for index, (question, answer) in enumerate(zip(questions, answers)):
        where = f"{path}[{index}]"
        if isinstance(answer, list):
            answer = answer[0] if answer else ""
        items.append(VqaItem(question=_text(question, where, question_column),
                             answer=_text(answer, where, answer_column), source=where,
                             image_id=where, load=lambda i=index, w=where: _hf_image(data[i][image_column], w)))
    if not items:
        raise VqaError(f"{path}: no VQA items")
    return items


def iter_vqa_source(source: str | Path, **hf_options: Any) -> list[VqaItem]:
    """Items of one VQA source: a JSONL file, a datasets directory, or a ``collect`` output
    directory (its ``vqa/vqa.jsonl``)."""
    path = Path(source)
    if path.is_file():
        return read_vqa_jsonl(path)
    if path.is_dir():
        if (path / "vqa" / "vqa.jsonl").is_file():
            return read_vqa_jsonl(path / "vqa" / "vqa.jsonl")
        if (path / "vqa.jsonl").is_file():
            return read_vqa_jsonl(path / "vqa.jsonl")
        if is_hf_dataset_dir(path):
            return read_hf_vqa(path, **hf_options)
        raise VqaError(f"{path}: not a VQA source (expected a .jsonl file, a directory with vqa.jsonl "
                       f"or vqa/vqa.jsonl, or a Hugging Face datasets directory)")
    raise VqaError(f"{path}: no such file or directory")
