"""A folder of image files as a data set (``data.dataset: folder``, ``data.root: DIR``).

DIR holds one sub-folder per class, torchvision's ImageFolder layout (``DIR/cat/1.png``,
``DIR/dog/x.jpg``), or ``DIR/train`` and ``DIR/test`` each in that layout.  torchvision finds the
classes and lists the files (``find_classes``, ``make_dataset``: sorted, so the order is the same
on every machine); each file is read the way ``mlp predict`` reads an image (its own bit depth,
transparency over white, grey or RGB, resized), so a training image and the same file given to
``mlp predict`` become the same pixels.

Without ``DIR/test``, the test images are ``data.test_fraction`` of each class, chosen by a hash
of the file's path inside DIR: the same on every run, seed and machine, so runs with different
seeds are measured on the same images and ``mlp eval`` finds them again.

The size (``data.image_size``) and channels (``data.channels``) default to what the training
images are: the most common size, its longer side capped at ``MAX_SIDE``, and grey only when
every image is grey.  Problems with the files are one line each: an error for what leaves no
data set (no class folders, one class, a class with no readable image, a set too large for
memory), a warning naming the skipped files and how many for the rest.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlp.errors import UserError, first_line

MAX_SIDE = 64  # the default size's longer side: 64×64×3 = 12,288 inputs is already a wide first layer
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
NAMED = 5  # files named in a warning; the rest are counted


@dataclass
class FolderSplits:
    train: tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels
    test: tuple[torch.Tensor, torch.Tensor]
    classes: list[str]
    input_shape: tuple[int, int, int]
    notes: list[str] = field(default_factory=list)  # lines for the run's output; "warning: ..." for stderr


def layout(root: Path) -> tuple[Path, Path | None]:
    """The training folder and the test folder (None: split off the training one)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file, not a folder"
        raise UserError(f"data.root {root} {what}; point it at a folder with one sub-folder of images per class")
    subfolders = {entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")}
    if "train" in subfolders and subfolders <= {"train", "test"}:
        return root / "train", (root / "test" if "test" in subfolders else None)
    return root, None


def class_folders(folder: Path, minimum: int = 2) -> list[str]:
    """The class names (torchvision's sorted sub-folders, less hidden ones such as .ipynb_checkpoints)."""
    from torchvision.datasets.folder import find_classes

    try:
        classes = [c for c in find_classes(folder)[0] if not c.startswith(".")]
    except FileNotFoundError:
        classes = []
    loose = _loose_files(folder)
    if not classes:
        found = f" (it holds {len(loose)} files directly: {_named(loose)})" if loose else ""
        raise UserError(f"{folder} holds no class folders{found}; put each class's images in a sub-folder "
                        f"named after the class ({folder}/cat/1.png, {folder}/dog/2.png, ...)")
    if len(classes) == 1 and minimum > 1:
        raise UserError(f"{folder} has one class folder ({classes[0]}); a classifier needs at least two: "
                        "add a folder for each other class")
    return classes


def list_files(folder: Path, classes: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) for every image file under the class folders, and the other files there."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

    others: list[str] = []

    def is_image(path: str) -> bool:
        ok = has_file_allowed_extension(path, IMG_EXTENSIONS)
        if not ok and not os.path.basename(path).startswith("."):
            others.append(path)
        return ok

    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, is_valid_file=is_image,
                           allow_empty=True)
    return samples, others


def in_test(path: str, root: Path, fraction: float) -> bool:
    """Whether a file of a folder without a test sub-folder is a test image: a hash of its path."""
    key = Path(path).relative_to(root).as_posix().encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") < fraction * 2**64


def read_folder(data_cfg, device: torch.device) -> FolderSplits:
    """Both splits of ``data.root`` as uint8 tensors, with the size and channels resolved."""
    root = Path(data_cfg.root).expanduser()
    train_dir, test_dir = layout(root)
    classes = class_folders(train_dir)
    train, notes = _files_of(train_dir, classes, "training")
    if test_dir is None:
        test = [s for s in train if in_test(s[0], train_dir, data_cfg.test_fraction)]
        train = [s for s in train if not in_test(s[0], train_dir, data_cfg.test_fraction)]
        notes.append(f"note: {root} has no test/ folder: {len(test)} of its {len(test) + len(train)} images "
                     f"(data.test_fraction {data_cfg.test_fraction}, chosen by a hash of each path, the same "
                     "for every seed) are the test split")
    else:
        extra = sorted(set(class_folders(test_dir, minimum=1)) - set(classes))
        if extra:
            raise UserError(f"{test_dir} has class folders that {train_dir} lacks ({', '.join(extra)}); "
                            "the test classes must be training classes")
        test, test_notes = _files_of(test_dir, classes, "test", require_all=False)
        notes += test_notes
    headers, unreadable = _headers([*train, *test])
    train, test = [s for s in train if s[0] in headers], [s for s in test if s[0] in headers]
    _require_every_class(train, classes, train_dir, "training")
    if not test:
        raise UserError(f"{test_dir} has no readable image; add test images" if test_dir else
                        f"none of the {len(train)} images in {root} falls in the test split (data.test_fraction "
                        f"{data_cfg.test_fraction}); add images, raise data.test_fraction or add test/ and train/")
    shape = _input_shape(data_cfg, [headers[p] for p, _ in train], notes)
    check_fits(len(train) + len(test), shape, root, device)
    train_t, bad = read_pixels(train, shape)
    test_t, bad_test = read_pixels(test, shape)
    _warn_unreadable({**unreadable, **bad, **bad_test}, notes)
    return FolderSplits(train_t, test_t, classes, shape, notes)


def read_eval_split(data_cfg, root: Path, classes: list[str], shape: tuple[int, int, int],
                    split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the folder a checkpoint was trained on (``train`` before the validation split),
    in the checkpoint's size, channels and class order; warnings to stderr."""
    train_dir, test_dir = layout(root)
    if split == "test" and test_dir is not None:
        samples, notes = _files_of(test_dir, classes, "test", require_all=False)
    else:
        samples, notes = _files_of(train_dir, classes, "training", require_all=False)
        if test_dir is None:
            samples = [s for s in samples if in_test(s[0], train_dir, data_cfg.test_fraction) == (split == "test")]
    (images, labels), bad = read_pixels(samples, shape)
    _warn_unreadable(bad, notes)
    for note in notes:
        print(note, file=sys.stderr)
    if not len(labels):
        raise UserError(f"{root} has no readable images for the {split} split")
    return images, labels


def _files_of(folder: Path, classes: list[str], role: str, require_all: bool = True):
    samples, others = list_files(folder, classes)
    notes = []
    loose = [p for p in _loose_files(folder) if not os.path.basename(p).startswith(".")]
    if loose:
        notes.append(f"warning: {len(loose)} files in {folder} are not in a class folder and are not used "
                     f"({_named(loose)}); move each into its class's folder")
    if others:
        notes.append(f"warning: skipped {len(others)} files that are not images by their name ({_named(others)}); "
                     "images end in .png, .jpg, .jpeg, .bmp, .ppm, .pgm, .tif, .tiff or .webp")
    if require_all:
        _require_every_class(samples, classes, folder, role)
    return samples, notes


def _require_every_class(samples, classes: list[str], folder: Path, role: str) -> None:
    counts = Counter(label for _, label in samples)
    empty = [c for i, c in enumerate(classes) if not counts[i]]
    if empty:
        raise UserError(f"class folder{'s' * (len(empty) > 1)} {', '.join(str(folder / c) for c in empty)} "
                        f"hold{'s' * (len(empty) == 1)} no readable {role} image; add images or remove the folder")


def _loose_files(folder: Path) -> list[str]:
    return sorted(str(folder / entry.name) for entry in os.scandir(folder) if entry.is_file())


def _named(paths: list[str]) -> str:
    shown = ", ".join(paths[:NAMED])
    return shown + (f" and {len(paths) - NAMED} more" if len(paths) > NAMED else "")


def _headers(samples) -> tuple[dict[str, tuple[tuple[int, int], str]], dict[str, str]]:
    """Each readable file's (width, height) and mode, read from its header; why the others are not."""
    from PIL import Image

    from mlp.commands.predict import UNREADABLE

    headers, unreadable = {}, {}
    for path, _ in samples:
        try:
            with Image.open(path) as image:
                headers[path] = (image.size, image.mode)
        except UNREADABLE as e:
            unreadable[path] = first_line(e)
    return headers, unreadable


def _input_shape(data_cfg, headers: list[tuple[tuple[int, int], str]], notes: list[str]) -> tuple[int, int, int]:
    """(C, H, W): data.channels and data.image_size, or what the training images are."""
    sizes, modes = Counter(size for size, _ in headers), Counter(mode for _, mode in headers)
    (width, height), _ = sizes.most_common(1)[0]
    if data_cfg.image_size is not None:
        size = data_cfg.image_size
        height, width = (size, size) if isinstance(size, int) else size
        how = "data.image_size"
    else:
        scale = min(1.0, MAX_SIDE / max(width, height))
        how = f"the most common size, {width}×{height}" if scale == 1 else \
            f"the most common size, {width}×{height}, its longer side capped at {MAX_SIDE}"
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    channels = data_cfg.channels or (1 if set(modes) <= GREY_MODES else 3)
    chosen = "data.channels" if data_cfg.channels else ("every image is grey" if channels == 1 else "some are colour")
    notes.append(f"note: images read as {'grey' if channels == 1 else 'RGB'} ({chosen}), {height}×{width} ({how}; "
                 "set data.image_size: [H, W] to change it)")
    if len(sizes) > 1:
        shown = ", ".join(f"{w}×{h} ({n})" for (w, h), n in sizes.most_common(3))
        notes.append(f"note: the training images come in {len(sizes)} sizes ({shown}{', ...' * (len(sizes) > 3)}); "
                     f"each is resized to {height}×{width}")
    if len(modes) > 1:
        shown = ", ".join(f"{m} ({n})" for m, n in modes.most_common())
        notes.append(f"note: the training images come in {len(modes)} modes ({shown}); each is made "
                     f"{'grey' if channels == 1 else 'RGB'}")
    return channels, height, width


def check_fits(n: int, shape: tuple[int, int, int], root: Path, device: torch.device) -> None:
    """Refuse, before reading pixels, a set whose tensors (a byte a value as read, four as the
    float images on the device) exceed the free memory of the machine or the device."""
    from mlp.device import free_memory
    from mlp.model import _bytes

    values, cpu = n * math.prod(shape), torch.device("cpu")
    for where, needed in ((cpu, values * (5 if device.type == "cpu" else 1)), (device, values * 4)):
        free = free_memory(where)
        if free is not None and needed > free:
            raise UserError(f"{root}: {n:,} images of {shape[0]}×{shape[1]}×{shape[2]} need {_bytes(needed)} as "
                            f"tensors, more than the {_bytes(free)} free on {where}; set a smaller data.image_size "
                            "(or data.channels: 1)")
        if device.type == "cpu":
            break


def read_pixels(samples, shape) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, str]]:
    """The images as uint8 (N, C, H, W) and labels, and why each file that could not be read was not."""
    from tqdm.auto import tqdm

    from mlp.commands.predict import UNREADABLE, read_image

    images = torch.empty((len(samples), *shape), dtype=torch.uint8)
    labels, bad, n = [], {}, 0
    for path, label in tqdm(samples, desc="reading images", leave=False, disable=len(samples) < 2000 or None):
        try:
            images[n] = read_image(Path(path), list(shape))
        except UNREADABLE as e:
            bad[path] = first_line(e)
            continue
        labels.append(label)
        n += 1
    return (images[:n], torch.tensor(labels, dtype=torch.long)), bad


def _warn_unreadable(bad: dict[str, str], notes: list[str]) -> None:
    if bad:
        shown = ", ".join(f"{p} ({why})" for p, why in list(bad.items())[:NAMED])
        more = f" and {len(bad) - NAMED} more" if len(bad) > NAMED else ""
        notes.append(f"warning: skipped {len(bad)} unreadable image files: {shown}{more}")
