"""Unit tests of batched augmentation: every image gets its own offset, drawn from the whole
range in both directions (and its own mirror for crop_flip), from the generator it is given."""

import torch

from mlp.data import augment, batches_per_epoch, epoch_batches


def _marked(b, c, h, w, row, col):
    """A batch of black images (value -1, as the padding) with one bright pixel at (row, col)."""
    x = torch.full((b, c, h, w), -1.0)
    x[:, :, row, col] = 5.0
    return x


def _where(out):
    """(row, col) of the bright pixel in each image of the batch."""
    flat = out[:, 0].flatten(1).argmax(1)
    return flat // out.shape[-1], flat % out.shape[-1]


def test_shift_draws_every_offset_of_up_to_two_pixels_in_both_directions():
    x = _marked(600, 1, 28, 28, 14, 9)
    out = augment(x, "shift", torch.Generator().manual_seed(3), torch.tensor([-1.0]))
    rows, cols = _where(out)
    assert set((rows - 14).tolist()) == set(range(-2, 3))
    assert set((cols - 9).tolist()) == set(range(-2, 3))
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 25  # rows and columns drawn apart
    assert (out.amax((1, 2, 3)) == 5.0).all() and out.shape == x.shape  # the pixel moved, never lost
    assert ((out == 5.0).sum((1, 2, 3)) == 1).all()
    assert set(out.unique().tolist()) == {-1.0, 5.0}  # what came in from outside is the pad value


def test_the_same_generator_state_gives_the_same_offsets_and_another_seed_others():
    x = _marked(64, 1, 28, 28, 14, 14)
    pad = torch.tensor([-1.0])
    a = augment(x, "shift", torch.Generator().manual_seed(5), pad)
    assert torch.equal(a, augment(x, "shift", torch.Generator().manual_seed(5), pad))
    assert not torch.equal(a, augment(x, "shift", torch.Generator().manual_seed(6), pad))


def test_crop_flip_shifts_up_to_four_pixels_and_mirrors_about_half():
    x = _marked(800, 3, 32, 32, 16, 10)
    out = augment(x, "crop_flip", torch.Generator().manual_seed(0), torch.tensor([-1.0, -1.0, -1.0]))
    rows, cols = _where(out)
    assert set((rows - 16).tolist()) == set(range(-4, 5))
    flipped = cols > 15  # column 10 lands in 6..14 unmirrored, in 17..25 (21 ± 4) mirrored
    assert set((cols[~flipped] - 10).tolist()) == set(range(-4, 5))
    assert set((cols[flipped] - 21).tolist()) == set(range(-4, 5))
    assert 0.4 < flipped.float().mean().item() < 0.6
    assert torch.equal(out[:, 0], out[:, 2])  # every channel of an image moves together


def test_a_last_batch_joins_the_one_before_only_when_smaller_than_the_least_allowed():
    def sizes(n, min_last):
        batches = epoch_batches(n, 64, torch.Generator().manual_seed(0), torch.device("cpu"), min_last=min_last)
        assert len(batches) == batches_per_epoch(n, 64, min_last)
        return [len(b) for b in batches]

    assert sizes(130, 2) == [64, 64, 2]  # two images: enough for batch norm
    assert sizes(129, 2) == [64, 65]  # one: it joins the batch before
    assert sizes(129, 1) == [64, 64, 1]
    assert sizes(1, 2) == [1]  # nothing to join
