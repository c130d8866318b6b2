"""Data sets as whole tensors on the training device, the batch iterator, batched augmentation.

Files are read in torchvision's on-disk layout (``ROOT/MNIST/raw/...``,
``ROOT/cifar-10-batches-py/...``).  When they are missing, torchvision's download (with
its checksum checks) is tried if ``data.download`` is on; otherwise, or when that fails
for want of a network, the error names the missing files and the folder they belong in.

After loading, a split is two tensors on the device: normalised float images (N, C, H, W)
and int64 labels.  A batch is an index slice of a seeded permutation, and augmentation is
done on the whole batch at once, so there is no per-sample Python on the training path.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlp.errors import UserError, first_line

DATA_ROOT_ENV = "MLP_DATA_ROOT"


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_class: str  # the class in torchvision.datasets that downloads it
    input_shape: tuple[int, int, int]
    augment: str  # "shift" (small translations) or "crop_flip" (padded crop + mirror)
    folder: str  # torchvision's folder for it under the data root
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    classes: tuple[str, ...] = ()  # MNIST family; CIFAR keeps its class names in meta_file
    meta_file: str = ""
    meta_key: str = ""

    @property
    def file_format(self) -> str:
        return "cifar" if self.meta_file else "idx"


# torchvision's on-disk layouts (tests/test_data.py checks them against torchvision's own
# lists).  The files are read here rather than through torchvision.datasets, because
# importing torchvision costs about two seconds per process; it is imported to download.
_IDX_FILES = dict(train_files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  test_files=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", (1, 28, 28), "shift", "MNIST/raw", **_IDX_FILES, classes=(
        "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
        "8 - eight", "9 - nine")),
    "fashion_mnist": DatasetInfo("FashionMNIST", (1, 28, 28), "shift", "FashionMNIST/raw", **_IDX_FILES, classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "kmnist": DatasetInfo("KMNIST", (1, 28, 28), "shift", "KMNIST/raw", **_IDX_FILES, classes=(
        "o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    "cifar10": DatasetInfo("CIFAR10", (3, 32, 32), "crop_flip", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           meta_file="batches.meta", meta_key="label_names"),
    "cifar100": DatasetInfo("CIFAR100", (3, 32, 32), "crop_flip", "cifar-100-python", ("train",), ("test",),
                            meta_file="meta", meta_key="fine_label_names"),
}


def resolve_root(configured: str | os.PathLike) -> Path:
    """``MLP_DATA_ROOT`` wins over ``data.root``, so one machine can point every run at its copy."""
    return Path(os.environ.get(DATA_ROOT_ENV) or configured).expanduser()


def expected_files(name: str, root: Path) -> tuple[Path, list[str]]:
    """The folder torchvision keeps this data set in, and the files that must be there."""
    info = DATASETS[name]
    files = [*info.train_files, *info.test_files] + ([info.meta_file] if info.meta_file else [])
    return Path(root) / info.folder, files


def files_in_place(data_cfg) -> bool:
    """Whether a named data set's files are all there, so that reading them downloads nothing (and
    imports nothing: mlp.imports.import_meanwhile); False for an image folder."""
    if data_cfg.dataset == "folder":
        return False
    folder, files = expected_files(data_cfg.dataset, resolve_root(data_cfg.root))
    return all((folder / f).is_file() for f in files)


def ensure_files(name: str, root: Path, download: bool, for_eval: bool = False,
                 point: str = f"point data.root (or ${DATA_ROOT_ENV}) at the folder that holds {{folder}}/") -> None:
    """Download the missing files if asked to; else a UserError naming them and the fix.

    ``for_eval``: the command takes ``--data-root`` rather than a config, so that is the fix named
    (and nothing is downloaded).  ``point``: how the user points mlp at the folder that holds
    ``{folder}`` (MNIST/raw, ...).
    """
    folder, files = expected_files(name, root)
    missing = [f for f in files if not (folder / f).is_file()]
    if not missing:
        return
    if for_eval:
        raise UserError(
            f"data set '{name}' is missing {', '.join(missing)} in {folder}/: give --data-root DIR, the "
            f"folder that holds {folder.relative_to(root)}/ (or set ${DATA_ROOT_ENV})")
    reason = "set data.download=true to fetch them where there is a network"
    if download:
        try:
            import torchvision.datasets

            getattr(torchvision.datasets, DATASETS[name].torchvision_class)(str(root), train=True, download=True)
            return
        except Exception as e:  # no network, a mirror down, a checksum mismatch ...
            reason = f"the download failed ({first_line(e, last=True)})"
            missing = [f for f in files if not (folder / f).is_file()]
    raise UserError(
        f"data set '{name}' is missing {', '.join(missing)} in {folder}/: {reason}; "
        f"or copy torchvision's files there, or {point.format(folder=folder.relative_to(root))}"
    )


def read_split(name: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images (N, C, H, W), int64 labels (N,) and the class names of one split."""
    info = DATASETS[name]
    folder, _ = expected_files(name, root)
    files = info.train_files if train else info.test_files
    try:
        if info.file_format == "idx":
            images = _read_idx(folder / files[0], ndim=3).unsqueeze(1)
            labels = _read_idx(folder / files[1], ndim=1).long()
            classes = list(info.classes)
        else:
            chunks, label_list = [], []
            for filename in files:
                entry = _unpickle(folder / filename)
                chunks.append(_uint8_pixels(entry["data"], filename))
                label_list.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
            images = torch.from_numpy(np.concatenate(chunks)).reshape(-1, *info.input_shape)
            labels = torch.tensor(label_list, dtype=torch.long)
            classes = list(_unpickle(folder / info.meta_file)[info.meta_key])
            if not all(isinstance(c, str) for c in classes):
                raise ValueError(f"{info.meta_file}: the class names are not all text")
    except UserError:
        raise
    except OSError as e:  # the file system's refusal, not damage: say which file and why
        from mlp.files import why_unreadable

        raise UserError(f"cannot read data set '{name}': {e.filename or folder} is {why_unreadable(e)}"
                        f"{'; give your user read access to it' if e.errno in (errno.EACCES, errno.EPERM) else ''}"
                        ) from None
    except Exception as e:
        raise UserError(
            f"cannot read data set '{name}' in {folder}/ ({type(e).__name__}: {first_line(e)}); "
            "the files are damaged or not in torchvision's format: replace them"
        ) from None
    if images.shape[1:] != info.input_shape or len(images) != len(labels):
        raise UserError(
            f"data set '{name}' in {folder}/ has images of shape {tuple(images.shape[1:])} and "
            f"{len(labels)} labels for {len(images)} images; expected {info.input_shape}, one label each"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise UserError(f"data set '{name}' in {folder}/ has labels outside 0..{len(classes) - 1}")
    return images, labels, classes


def _read_idx(path: Path, ndim: int) -> torch.Tensor:
    """An uncompressed IDX file of unsigned bytes (type code 0x08), as the MNIST family ships."""
    data = path.read_bytes()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path.name}: expected an IDX file of {ndim}-d unsigned bytes, magic number {magic:#x}")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    header = 4 + 4 * ndim
    if len(data) - header != math.prod(shape):
        raise ValueError(f"{path.name}: {len(data) - header} bytes of data for shape {shape}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).reshape(shape)  # one copy


def _unpickle(path: Path) -> dict:
    """A CIFAR batch or meta file: a Python pickle (the format torchvision downloads), read with
    an unpickler that can build only what those files hold, so a crafted file runs nothing."""
    with open(path, "rb") as f:
        try:
            entry = _CifarUnpickler(f, encoding="latin1").load()
            _check_plain(entry)
        except _Refused as e:
            raise UserError(f"refusing to read {path}: {e}; the CIFAR files hold only numbers, text and "
                            "numeric arrays, so this one is damaged or was made to run code: replace it "
                            "with torchvision's download") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name} holds a {type(entry).__name__}, not the dict of a CIFAR batch")
    return entry


class _Refused(Exception):
    pass


def _check_plain(entry) -> None:
    """Dicts, lists, tuples, strings, bytes, numbers and numeric arrays, and nothing else."""
    stack, seen = [entry], set()
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if item.dtype.kind not in "biufc":
                raise _Refused(f"it holds an array of {item.dtype} values, not numbers")
        elif isinstance(item, (dict, list, tuple)):
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend([*item.keys(), *item.values()] if isinstance(item, dict) else item)
        elif not isinstance(item, (str, bytes, int, float, type(None))):
            raise _Refused(f"it holds a {type(item).__name__}")


def _uint8_pixels(data, filename: str) -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        what = f"an array of {data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray) else \
            f"a {type(data).__name__}"
        raise ValueError(f"{filename}: its 'data' is {what}, not rows of uint8 pixels")
    return data


def _numeric_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.kind not in "biufc":
        raise _Refused(f"it holds an array of {dtype} values, not numbers")
    return dtype


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # How a pickle written by Python 3 with protocol 2 stores bytes (numpy's array data among them).
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"it decodes bytes with the codec {encoding!r}")
    return text.encode("latin1")


def _numpy_core():
    return np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core


class _CifarUnpickler(pickle.Unpickler):
    """Only the globals a CIFAR pickle uses: numpy's array and dtype rebuilders, under the
    module names of numpy 1 (``numpy.core``, as in the original files) and numpy 2 (``numpy._core``),
    and Python 3's way of storing bytes.  Plain dicts, lists, strings and numbers need none.
    Every dtype is checked as it is built, and every array once loaded: only numbers load."""

    def find_class(self, module: str, name: str):
        core = _numpy_core()
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _numeric_dtype,
                   ("_codecs", "encode"): _latin1_bytes}
        for package in ("numpy.core", "numpy._core"):
            allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
            allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
        if (module, name) not in allowed:
            raise _Refused(f"it asks for {module}.{name}")
        return allowed[(module, name)]


@dataclass
class Split:
    images: torch.Tensor  # float32, normalised, (N, C, H, W), on the device
    labels: torch.Tensor  # int64 (N,), on the device

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    name: str
    train: Split
    val: Split | None  # None when data.val_size is 0
    test: Split
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    notes: list[str] = field(default_factory=list)  # what reading a folder chose or skipped (mlp.image_folder)


def to_unit(images_u8: torch.Tensor, device) -> torch.Tensor:
    """uint8 images as float32 on ``device``, on the 0..1 scale."""
    return images_u8.to(device=device, dtype=torch.float32).div_(255)


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images (N, C, H, W) on the 0..1 scale (``to_unit``)."""
    return pixels.mean(dim=(0, 2, 3)).tolist(), pixels.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()


def standardise_(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """Subtract ``mean`` and divide by ``std`` per channel, in place."""
    shape, device = (1, -1, 1, 1), pixels.device
    return pixels.sub_(torch.tensor(mean, device=device).view(shape)).div_(torch.tensor(std, device=device).view(shape))


def normalise(images_u8: torch.Tensor, mean, std, device) -> torch.Tensor:
    return standardise_(to_unit(images_u8, device), mean, std)


def load_data(data_cfg, device: torch.device, seed: int, splits=("train", "test")) -> Data:
    """Read the files once and hold every split as normalised tensors on ``device``.

    The validation images are a seeded random ``val_size`` of the training split; the
    normalisation statistics are those of the remaining training images.
    """
    name, notes = data_cfg.dataset, []
    if name == "folder":  # the images under data.root (mlp.image_folder)
        from mlp.image_folder import read_folder

        folder = read_folder(data_cfg, device)
        (images, labels), (test_images, test_labels) = folder.train, folder.test
        classes, input_shape, notes, name = folder.classes, folder.input_shape, folder.notes, str(data_cfg.root)
    else:
        root = resolve_root(data_cfg.root)
        ensure_files(name, root, data_cfg.download)
        images, labels, classes = read_split(name, root, train=True)
        test_images, test_labels, _ = read_split(name, root, train=False)
        input_shape = DATASETS[name].input_shape
    n_val = val_count(data_cfg.val_size, len(labels))
    if n_val >= len(labels):
        raise UserError(
            f"data.val_size is {data_cfg.val_size} but '{name}' has only {len(labels)} training images; "
            "choose a smaller data.val_size"
        )
    val_idx, train_idx = split_indices(len(labels), n_val, seed)
    train_pixels = to_unit(images[train_idx], device)  # the one float copy: statistics, then normalised
    mean, std = channel_stats(train_pixels)

    def split(imgs, labs):
        return Split(normalise(imgs, mean, std, device), labs.to(device))

    train = Split(standardise_(train_pixels, mean, std), labels[train_idx].to(device))
    val = split(images[val_idx], labels[val_idx]) if n_val else None
    return Data(name, train, val, split(test_images, test_labels), classes, input_shape, mean, std, notes)


def val_count(val_size: int | float, n: int) -> int:
    """``data.val_size`` as a number of images: a count, or a fraction of the ``n`` training images
    (at least one when the fraction is not 0)."""
    return val_size if isinstance(val_size, int) else max(1, round(val_size * n)) if val_size else 0


def augment_kind(dataset: str) -> str:
    """The augmentation ``data.augment`` turns on: a data set's own, small shifts for a folder."""
    return DATASETS[dataset].augment if dataset in DATASETS else "shift"


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded validation and training indices of a training split (training and eval agree)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:val_size], order[val_size:]


def load_eval_split(dataset: str, root: Path, split: str, seed: int, val_size: int | float,
                    mean, std, device: torch.device, read=None) -> Split:
    """One split for evaluation, normalised with the statistics stored in a checkpoint.

    ``train`` and ``val`` are the same seeded partition the run trained with.  ``read(split)``,
    when given, returns the uint8 images and labels (a folder's, see mlp.image_folder).
    """
    if read is not None:
        images, labels = read(split)
    else:
        ensure_files(dataset, root, download=False, for_eval=True)
        images, labels, _ = read_split(dataset, root, train=split != "test")
    if split != "test":
        val_idx, train_idx = split_indices(len(labels), val_count(val_size, len(labels)), seed)
        idx = val_idx if split == "val" else train_idx
        images, labels = images[idx], labels[idx]
    return Split(normalise(images, mean, std, device), labels.to(device))


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
                  rank: int = 0, world_size: int = 1, min_last: int = 1) -> list[torch.Tensor]:
    """Index tensors for one epoch: consecutive slices of a seeded permutation.

    The permutation is drawn on the CPU so a seed gives the same order on every device.
    With several processes, each takes its own disjoint share of every global batch.  A last
    batch smaller than ``min_last`` joins the one before it (batch norm cannot train on one image).
    """
    perm = torch.randperm(n, generator=generator).to(device)
    batches = list(perm.split(batch_sizes(n, batch_size, min_last)))
    if world_size > 1:
        batches = [b[rank::world_size] for b in batches]
    return batches


def batch_sizes(n: int, batch_size: int, min_last: int = 1) -> list[int]:
    """The sizes of an epoch's batches of ``n`` images: full batches, then the rest, which joins
    the batch before it when it is smaller than ``min_last``."""
    full, rest = divmod(n, batch_size)
    sizes = [batch_size] * full + ([rest] if rest else [])
    if len(sizes) > 1 and sizes[-1] < min_last:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return sizes


def batches_per_epoch(n: int, batch_size: int, min_last: int = 1) -> int:
    """How many batches ``epoch_batches`` makes of ``n`` images."""
    return len(batch_sizes(n, batch_size, min_last))


def augment(x: torch.Tensor, kind: str, generator: torch.Generator, pad_value: torch.Tensor) -> torch.Tensor:
    """Per-sample random translation (and mirror for ``crop_flip``) of a whole batch in one gather.

    torchvision's batch transforms draw one set of parameters per call; here every image
    gets its own, drawn from ``generator`` so that a resumed run repeats them exactly.
    """
    b, c, h, w = x.shape
    pad = 2 if kind == "shift" else 4
    padded = pad_value.view(1, c, 1, 1).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device, generator=generator)
    rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    if kind == "crop_flip":
        flip = torch.rand(b, 1, 1, 1, device=x.device, generator=generator) < 0.5
        cols = torch.where(flip, cols.flip(3), cols)
    return padded.gather(2, rows).gather(3, cols)
