"""Small data sets written in torchvision's exact on-disk formats.

``write_mnist`` writes the four uncompressed IDX files into ``ROOT/<Class>/raw/``;
``write_cifar`` writes the pickled batches into ``ROOT/cifar-10-batches-py/`` (or
``cifar-100-python/``).  mlp then reads them through the same code as the real files.
Each class is a fixed random blocky pattern plus noise, so a small MLP learns it in a few epochs.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def _images(n: int, shape: tuple[int, ...], num_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    # One pattern per class, the same in every split: random 4×4-pixel blocks, coarse enough
    # that the small shifts of augmentation keep it recognisable.
    coarse = np.random.default_rng(1234).random((num_classes, *shape[:-2], shape[-2] // 4, shape[-1] // 4)) > 0.5
    prototypes = coarse.repeat(4, axis=-2).repeat(4, axis=-1)
    labels = rng.integers(0, num_classes, n)
    noise = rng.normal(0, 130, (n, *shape))
    images = np.clip(prototypes[labels] * 45 + 105 + noise, 0, 255).astype(np.uint8)
    return images, labels


def _idx(path: Path, array: np.ndarray) -> None:
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 1200, n_test: int = 300, folder: str = "MNIST") -> Path:
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = _images(n, (28, 28), 10, seed)
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_cifar(root: Path, n_train: int = 1000, n_test: int = 200, num_classes: int = 10) -> Path:
    if num_classes == 10:
        folder, train_files, label_key, meta = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], \
            "labels", ("batches.meta", "label_names")
    else:
        folder, train_files, label_key, meta = "cifar-100-python", ["train"], "fine_labels", ("meta", "fine_label_names")
    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)
    images, labels = _images(n_train, (3, 32, 32), num_classes, 0)
    for i, part in enumerate(np.array_split(np.arange(n_train), len(train_files))):
        _pickle(out / train_files[i], {"batch_label": f"training batch {i + 1}",
                                       label_key: labels[part].tolist(),
                                       "data": images[part].reshape(len(part), -1),
                                       "filenames": [f"img{j}.png" for j in part]})
    images, labels = _images(n_test, (3, 32, 32), num_classes, 1)
    _pickle(out / "test_batch" if num_classes == 10 else out / "test",
            {"batch_label": "testing batch", label_key: labels.tolist(),
             "data": images.reshape(n_test, -1), "filenames": [f"t{j}.png" for j in range(n_test)]})
    _pickle(out / meta[0], {meta[1]: [f"class{c}" for c in range(num_classes)]})
    return out


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


# Three classes a small MLP tells apart in a few epochs: the colour and the place of a square.
FOLDER_CLASSES = {"red": ((220, 40, 40), 0), "green": ((40, 200, 60), 1), "blue": ((50, 60, 230), 2)}


def write_image_folder(root: Path, per_class: int = 40, size: int = 16, jpeg_every: int = 8, seed: int = 0,
                       classes=("red", "green", "blue")) -> Path:
    """``ROOT/<class>/<n>.png`` (every ``jpeg_every``-th a JPEG): a coloured square on a grey noisy
    background, at a place that depends on the class too."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for name in classes:
        colour, place = FOLDER_CLASSES[name]
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = rng.normal(128, 30, (size, size, 3))
            half, x0 = size // 2, place * size // 4
            y0 = int(rng.integers(0, size - half + 1))
            pixels[y0:y0 + half, x0:x0 + half] = np.array(colour) + rng.normal(0, 20, (half, half, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            jpeg = jpeg_every and n % jpeg_every == jpeg_every - 1
            image.save(root / name / f"{n:03d}.{'jpg' if jpeg else 'png'}", quality=95)
    return root
