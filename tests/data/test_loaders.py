import torch
import torchvision.transforms.functional as TF

from kdcli.data import TensorLoader, crop_flip


def test_crop_flip_equals_torchvision_for_fixed_offsets() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [1, 7], [6, 2]])
    flips = torch.tensor([False, True, False, True, True])
    out = crop_flip(images, offsets, flips, padding=4)
    for i in range(5):
        reference = TF.crop(TF.pad(images[i], [4]), int(offsets[i, 0]), int(offsets[i, 1]), 8, 8)
        if flips[i]:
            reference = TF.hflip(reference)
        assert torch.equal(out[i], reference), i


def test_tensor_loader_epochs_are_reproducible_and_differ() -> None:
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 4, 4).contiguous()
    labels = torch.arange(20)
    loader = TensorLoader(images, labels, 6, torch.device("cpu"), shuffle=True, crop_padding=1, hflip=True, seed=3)
    first = [y for _, y in loader]
    again = [y for _, y in loader]
    loader.set_epoch(1)
    other = [y for _, y in loader]
    assert [len(y) for y in first] == [6, 6, 6, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(other))
    assert sorted(torch.cat(first).tolist()) == list(range(20))
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0


def test_drop_last_leaves_out_the_partial_training_batch_only() -> None:
    """``drop_last`` trains on the full batches of the same permutation (its step count sets the schedule's length);
    an evaluation split keeps every image whatever it says."""
    labels = torch.arange(20)
    images = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    kept = TensorLoader(images, labels, 6, torch.device("cpu"), shuffle=True, seed=3)
    dropped = TensorLoader(images, labels, 6, torch.device("cpu"), shuffle=True, seed=3, drop_last=True)
    assert (len(kept), len(dropped)) == (4, 3)
    batches = [y for _, y in dropped]
    assert [len(y) for y in batches] == [6, 6, 6]
    assert torch.equal(torch.cat(batches), torch.cat([y for _, y in kept])[:18])
    evaluation = TensorLoader(images, labels, 6, torch.device("cpu"), drop_last=True)
    assert len(evaluation) == 4 and sum(len(y) for _, y in evaluation) == 20
