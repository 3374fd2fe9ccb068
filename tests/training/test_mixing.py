"""Consistent teaching (kdcli.data.mixing): the teacher labels exactly the mixed batch the student learns from, the
loss weighs both labels by λ, the draws are seeded (resume-exact) and the same split over ranks as in one process."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import kdcli
from kdcli.config import resolve
from kdcli.data import Mix, Mixing, TensorLoader
from kdcli.data.mixing import beta, cutmix
from kdcli.errors import Interrupted
from kdcli.interfaces import ModelOutput, Reporter
from kdcli.training.engine import train_epoch
from kdcli.training.run import setup
from kdcli.training.step import Trainable

from ..conftest import ZERO, build_method, tiny_config
from .test_engine import InterruptAfter


def loader(mixing: Mixing, shard: tuple[int, int] = (0, 1), seed: int = 3) -> TensorLoader:
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10
    return TensorLoader(images, labels, 16, torch.device("cpu"), shuffle=True, crop_padding=2, hflip=True, seed=seed,
                        shard=shard, mixing=mixing)  # fmt: skip


def test_beta_draws_follow_beta_and_repeat_with_the_seed() -> None:
    alpha = torch.tensor(0.4)
    draws = torch.stack([beta(alpha, torch.Generator().manual_seed(0)) for _ in range(3)])
    assert torch.equal(draws, draws[:1].expand(3))  # the same seed, the same λ
    generator = torch.Generator().manual_seed(1)
    many = torch.stack([beta(alpha, generator) for _ in range(4000)])
    assert float(many.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(many.var()) == pytest.approx(1 / (4 * (2 * 0.4 + 1)), rel=0.06)  # Beta(α, α): 1 / (4(2α + 1))


def test_cutmix_weight_is_the_share_of_own_pixels() -> None:
    own, partner = torch.zeros(2, 3, 10, 10), torch.ones(2, 3, 10, 10)
    mixed, weight = cutmix(own, partner, torch.tensor(0.64), torch.tensor([0.5, 0.5]))
    # side √0.36 · 10 = 6 → half 3 → rows and columns 2..7 come from the partner: 36 of 100 pixels
    assert float(weight) == pytest.approx(0.64)
    assert float(mixed.mean()) == pytest.approx(0.36)
    assert torch.equal(mixed[:, :, 2:8, 2:8], partner[:, :, 2:8, 2:8])
    _, clipped = cutmix(own, partner, torch.tensor(0.64), torch.tensor([0.0, 0.0]))  # a corner: rows, cols 0..2
    assert float(clipped) == pytest.approx(1 - 9 / 100)


def test_mixup_lerps_each_image_with_its_partner_in_reverse_order() -> None:
    data = loader(Mixing(0.4, 0.0))
    clean = list(data)
    for (images, labels, mix), (plain, plain_labels) in zip(data.training_batches(), clean, strict=True):
        assert mix is not None and torch.equal(labels, plain_labels)
        assert torch.equal(mix.partner_labels, plain_labels.flip(0))
        expected = mix.weight * plain + (1 - mix.weight) * plain.flip(0)
        torch.testing.assert_close(images, expected)
        assert 0.0 <= float(mix.weight) <= 1.0 and not torch.equal(images, plain)


def test_mixing_leaves_order_and_crops_as_they_were_and_never_touches_plain_iteration() -> None:
    plain = list(loader(Mixing(0.0, 0.0)))
    mixed = loader(Mixing(0.0, 1.0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(mixed, plain, strict=True))  # iterating a loader never mixes
    batches = list(mixed.training_batches())
    assert [torch.equal(b[1], p[1]) for b, p in zip(batches, plain, strict=True)] == [True] * 3
    assert all(mix is not None for _, _, mix in batches)
    assert all(mix is None for _, _, mix in loader(Mixing(0.0, 0.0)).training_batches())


def test_mix_prob_leaves_some_batches_whole() -> None:
    data = loader(Mixing(0.4, 1.0, prob=0.5))
    weights = []
    for epoch in range(6):
        data.set_epoch(epoch)
        weights += [float(mix.weight) for _, _, mix in data.training_batches() if mix is not None]
    assert 0 < weights.count(1.0) < len(weights)


def test_ranks_together_mix_as_one_process() -> None:
    """Every rank mixes its slice of the global batch with the partners one process would (other ranks' images)."""
    whole = list(loader(Mixing(0.4, 1.0)).training_batches())
    ranks = [list(loader(Mixing(0.4, 1.0), shard=(rank, 3)).training_batches()) for rank in range(3)]
    for step, (images, labels, mix) in enumerate(whole):
        parts = [rank[step] for rank in ranks]
        assert mix is not None and all(part[2] is not None for part in parts)
        torch.testing.assert_close(torch.cat([part[0] for part in parts]), images, rtol=0, atol=1e-6)
        assert torch.equal(torch.cat([part[1] for part in parts]), labels)
        assert torch.equal(torch.cat([part[2].partner_labels for part in parts]), mix.partner_labels)  # type: ignore[union-attr]
        assert all(torch.equal(part[2].weight, mix.weight) for part in parts)  # type: ignore[union-attr]


def test_mixed_loss_is_the_cross_entropy_with_mixed_one_hot_targets_plus_the_kd_term() -> None:
    """By hand: γ·CE(z_s, λ·onehot(y) + (1-λ)·onehot(y')) + α·T²·KL(p_t ‖ p_s), the KD term read once."""
    torch.manual_seed(0)
    method = build_method("vanilla", 5, temperature=2.0, ce_weight=0.3, kd_weight=0.7)

    class Student(torch.nn.Module):
        def outputs(self, images: torch.Tensor) -> ModelOutput:
            return ModelOutput(images, {})

    student_logits, teacher_logits = torch.randn(4, 5), torch.randn(4, 5)
    labels, partners = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])
    weight = torch.tensor(0.3)
    trainable = Trainable(Student(), method)  # type: ignore[arg-type]
    _, losses = trainable(student_logits, ModelOutput(teacher_logits, {}), labels, ZERO, Mix(partners, weight))
    targets = 0.3 * F.one_hot(labels, 5).float() + 0.7 * F.one_hot(partners, 5).float()
    ce = -(targets * F.log_softmax(student_logits, 1)).sum(1).mean()
    p_t = F.softmax(teacher_logits / 2, 1)
    kd = (p_t * (p_t.log() - F.log_softmax(student_logits / 2, 1))).sum(1).mean() * 4
    torch.testing.assert_close(losses["ce"], 0.3 * ce)
    torch.testing.assert_close(losses["kd"], 0.7 * kd)


def test_teacher_and_student_see_the_same_mixed_tensor(tmp_path: Path, teacher_file: Path) -> None:
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, data={"mixup": 0.4, "cutmix": 1.0},
                         train={"epochs": 1})  # fmt: skip
    run = setup(resolve([("test", config)]).config, tmp_path)
    assert run.teacher is not None
    seen: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}
    for name, model in (("teacher", run.teacher.module), ("student", run.student)):
        normalize = model.normalize

        def recording(images: torch.Tensor, name: str = name, normalize=normalize) -> torch.Tensor:  # type: ignore[no-untyped-def]
            seen[name].append(images.detach().clone())  # each model's input, before its own normalization
            return normalize(images)

        model.normalize = recording  # type: ignore[method-assign]
    clean = [images for images, _ in run.data.train]
    train_epoch(run, Reporter())
    assert len(seen["teacher"]) == len(seen["student"]) == len(clean) == 6
    for teacher_input, student_input, plain in zip(seen["teacher"], seen["student"], clean, strict=True):
        assert torch.equal(teacher_input, student_input)
        assert not torch.equal(student_input, plain)  # what they saw was mixed


@pytest.mark.slow
def test_a_mixed_run_resumes_to_the_same_weights(tmp_path: Path, teacher_file: Path) -> None:
    def config(out: Path) -> dict:  # type: ignore[type-arg]
        return tiny_config(out, teacher={"checkpoint": str(teacher_file)},
                           data={"mixup": 0.4, "cutmix": 1.0, "mix_prob": 0.8}, method={"ce_weight": 0.0})  # fmt: skip

    straight = kdcli.distill(config(tmp_path / "straight"))
    with pytest.raises(Interrupted):
        kdcli.distill(config(tmp_path / "stopped"), reporter=InterruptAfter(1))
    resumed = kdcli.resume(tmp_path / "stopped")
    expected = load_file(str(straight.student_path))
    for name, tensor in load_file(str(resumed.student_path)).items():
        assert torch.equal(tensor, expected[name]), name
    assert [r.train_losses for r in resumed.report.epochs] == [r.train_losses for r in straight.report.epochs]
