import pytest
import torch

from fakedata import write_cifar, write_mnist
from mlp.config import Config
from mlp.data import augment, epoch_batches, load_data
from mlp.errors import UserError


def _cfg(**data):
    return Config.model_validate({"data": {"val_size": 100, **data}}).data


@pytest.mark.parametrize("dataset,shape,classes,n_train,n_test", [
    ("mnist", (1, 28, 28), 10, 1200, 300), ("fashion_mnist", (1, 28, 28), 10, 1200, 300),
    ("cifar10", (3, 32, 32), 10, 1000, 200)])
def test_fabricated_files_load_as_normalised_device_tensors(dataset, shape, classes, n_train, n_test):
    data = load_data(_cfg(dataset=dataset), torch.device("cpu"), seed=0)
    assert data.input_shape == shape and len(data.classes) == classes
    assert data.train.images.shape[1:] == shape and data.train.images.dtype == torch.float32
    assert len(data.val) == 100 and len(data.train) + len(data.val) == n_train
    assert len(data.test) == n_test
    # normalised with the training images' own statistics
    per_channel = data.train.images.transpose(0, 1).reshape(shape[0], -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(shape[0]), atol=1e-4)
    assert torch.allclose(per_channel.std(1), torch.ones(shape[0]), atol=1e-3)


def test_cifar100_layout(tmp_path, monkeypatch):
    write_cifar(tmp_path, n_train=300, n_test=50, num_classes=100)
    monkeypatch.setenv("MLP_DATA_ROOT", str(tmp_path))
    data = load_data(_cfg(dataset="cifar100", val_size=50), torch.device("cpu"), seed=0)
    assert len(data.classes) == 100 and data.classes[7] == "class7"
    assert len(data.train) == 250 and len(data.test) == 50


def test_validation_split_is_seeded_and_disjoint():
    a = load_data(_cfg(), torch.device("cpu"), seed=3)
    b = load_data(_cfg(), torch.device("cpu"), seed=3)
    c = load_data(_cfg(), torch.device("cpu"), seed=4)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    train_rows = {tuple(r.tolist()) for r in a.train.images.flatten(1)[:, ::37]}
    assert not any(tuple(r.tolist()) in train_rows for r in a.val.images.flatten(1)[:, ::37])


def test_missing_files_name_the_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_DATA_ROOT", str(tmp_path))
    with pytest.raises(UserError) as e:
        load_data(_cfg(download=False), torch.device("cpu"), seed=0)
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg
    assert "MLP_DATA_ROOT" in msg and "\n" not in msg


def test_download_failure_is_reported_in_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(self, *a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror, got: no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    monkeypatch.setenv("MLP_DATA_ROOT", str(tmp_path))
    with pytest.raises(UserError, match=r"download failed .*no network.*MNIST/raw") as e:
        load_data(_cfg(download=True), torch.device("cpu"), seed=0)
    assert "\n" not in str(e.value)


def test_damaged_file_is_a_user_error(tmp_path, monkeypatch):
    raw = write_mnist(tmp_path, n_train=50, n_test=10)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # a download cut short: the header promises more
    monkeypatch.setenv("MLP_DATA_ROOT", str(tmp_path))
    with pytest.raises(UserError, match="cannot read data set 'mnist'.* bytes of data for shape"):
        load_data(_cfg(val_size=5), torch.device("cpu"), seed=0)


def test_val_size_larger_than_training_split():
    with pytest.raises(UserError, match="data.val_size"):
        load_data(_cfg(val_size=5000), torch.device("cpu"), seed=0)


def test_epoch_batches_cover_every_index_once_and_follow_the_seed():
    batches = epoch_batches(130, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert [len(b) for b in batches] == [64, 64, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(130))
    again = epoch_batches(130, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(batches, again))
    shards = epoch_batches(130, 64, torch.Generator().manual_seed(0), torch.device("cpu"), rank=1, world_size=2)
    assert torch.equal(shards[0], batches[0][1::2])


@pytest.mark.parametrize("kind,max_shift", [("shift", 2), ("crop_flip", 4)])
def test_augment_moves_each_image_by_its_own_offset(kind, max_shift):
    x = torch.zeros(256, 1, 8, 8)
    x[:, :, 4, 4] = 1.0  # one bright pixel per image
    out = augment(x, kind, torch.Generator().manual_seed(0), torch.tensor([-1.0]))
    assert out.shape == x.shape
    pos = (out[:, 0] == 1).flatten(1).float().argmax(1)
    rows, cols = pos // 8, pos % 8
    assert (rows - 4).abs().max() <= max_shift
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # offsets differ per image
    assert (out == -1).any()  # padding is the given background value
    again = augment(x, kind, torch.Generator().manual_seed(0), torch.tensor([-1.0]))
    assert torch.equal(out, again)


@pytest.mark.parametrize("name", sorted(__import__("mlp.data", fromlist=["DATASETS"]).DATASETS))
def test_registry_matches_torchvisions_layout(name, tmp_path):
    """mlp reads the files itself (importing torchvision is slow); torchvision downloads them."""
    import os

    import torchvision.datasets

    from mlp.data import DATASETS, expected_files

    info = DATASETS[name]
    cls = getattr(torchvision.datasets, info.torchvision_class)
    folder, files = expected_files(name, tmp_path)
    if info.file_format == "idx":
        assert folder == tmp_path / cls.__name__ / "raw"
        assert sorted(files) == sorted(os.path.splitext(os.path.basename(u))[0] for u, _ in cls.resources)
        assert list(info.classes) == list(cls.classes)
    else:
        assert folder == tmp_path / cls.base_folder
        assert list(info.train_files) == [f for f, _ in cls.train_list]
        assert list(info.test_files) == [f for f, _ in cls.test_list]
        assert (info.meta_file, info.meta_key) == (cls.meta["filename"], cls.meta["key"])


def test_idx_files_read_the_same_as_torchvision(fake_root):
    import torchvision.datasets

    from mlp.data import read_split

    for train in (True, False):
        ours = read_split("mnist", fake_root, train)
        theirs = torchvision.datasets.MNIST(str(fake_root), train=train)
        assert torch.equal(ours[0][:, 0], theirs.data) and torch.equal(ours[1], theirs.targets)


def _py2_cifar_pickle(pixels: bytes, shape: tuple[int, int], labels: list[int]) -> bytes:
    """The bytes Python 2's cPickle wrote for torchvision's CIFAR batches: protocol 2, numpy 1's
    module names (numpy.core.multiarray), the pixels as a Python 2 str."""
    import struct

    def string(text: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(text)]) + text

    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
             + b"(K\x01" + b"".join(b"J" + struct.pack("<i", n) for n in shape) + b"\x86"
             + b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
             + b"\x89T" + struct.pack("<i", len(pixels)) + pixels + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


def test_cifar_pickles_of_every_origin_load(tmp_path):
    """Python 2 with numpy 1 (the real files), and numpy 2 with every pickle protocol."""
    import pickle

    import numpy as np

    from mlp.data import _unpickle

    pixels = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    (tmp_path / "py2").write_bytes(_py2_cifar_pickle(pixels.tobytes(), (2, 3072), [3, 7]))
    loaded = _unpickle(tmp_path / "py2")
    assert loaded["labels"] == [3, 7] and np.array_equal(loaded["data"], pixels)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "new").write_bytes(pickle.dumps({"data": pixels, "labels": [3, 7], "names": ["a"]}, protocol))
        assert np.array_equal(_unpickle(tmp_path / "new")["data"], pixels), protocol


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.path}'",))


@pytest.mark.parametrize("make", ["os.system", "object array", "set", "structured array", "codec"])
def test_cifar_pickles_that_hold_anything_else_are_refused(make, tmp_path):
    import pickle

    import numpy as np

    from mlp.data import _unpickle

    marker = tmp_path / "PWNED"
    value = {"os.system": _Marker(marker), "object array": np.array([1, "x"], dtype=object), "set": {1, 2},
             "structured array": np.zeros(2, dtype=[("a", "u1")]), "codec": None}[make]
    data = pickle.dumps({"data": value, "labels": [1]}, protocol=2)
    if make == "codec":  # bytes decoded with another codec than Python 3's latin-1
        data = pickle.dumps({"data": b"x"}, protocol=2).replace(b"latin1", b"utf_16")
    (tmp_path / "data_batch_1").write_bytes(data)
    with pytest.raises(UserError, match=r"refusing to read .*data_batch_1: it (asks for|holds|decodes)"):
        _unpickle(tmp_path / "data_batch_1")
    assert not marker.exists()
