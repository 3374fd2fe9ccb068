"""DIST (Huang et al. 2022): the loss against a computation from its definition in plain Python, on numbers small
enough to follow by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kdcli.interfaces import ModelOutput
from kdcli.methods.dist import dist_terms
from tests.conftest import ZERO, build_method

STUDENT = [[1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.5, -1.0, 2.0]]
TEACHER = [[2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [1.0, 1.0, -1.0]]
"""Three examples: with two, each class's correlation over the batch is ±1 whatever the numbers."""


def softmax(row: list[float], tau: float) -> list[float]:
    exps = [math.exp(v / tau) for v in row]
    return [e / sum(exps) for e in exps]


def pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - ma for x in a], [y - mb for y in b]
    norms = math.sqrt(sum(x * x for x in da)) * math.sqrt(sum(y * y for y in db))
    return sum(x * y for x, y in zip(da, db, strict=True)) / (norms + 1e-8)


def by_hand(tau: float) -> tuple[float, float]:
    p_s = [softmax(row, tau) for row in STUDENT]
    p_t = [softmax(row, tau) for row in TEACHER]
    inter = 1 - sum(pearson(s, t) for s, t in zip(p_s, p_t, strict=True)) / 3
    columns = [([r[j] for r in p_s], [r[j] for r in p_t]) for j in range(3)]
    intra = 1 - sum(pearson(s, t) for s, t in columns) / 3
    return tau**2 * inter, tau**2 * intra


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_dist_terms_match_the_definition(tau: float) -> None:
    inter, intra = dist_terms(torch.tensor(STUDENT), torch.tensor(TEACHER), tau)
    expected = by_hand(tau)
    assert float(inter) == pytest.approx(expected[0], rel=1e-4, abs=1e-6)
    assert float(intra) == pytest.approx(expected[1], rel=1e-4, abs=1e-6)


def test_the_same_predictions_cost_nothing_and_the_weights_apply() -> None:
    logits = torch.tensor(TEACHER)
    inter, intra = dist_terms(logits, logits, 1.0)  # (at τ = 4 the 1e-8 beside small norms leaves ~1e-5)
    assert float(inter) == pytest.approx(0.0, abs=1e-5) and float(intra) == pytest.approx(0.0, abs=1e-5)
    method = build_method("dist", 3, ce_weight=0.5, beta=3.0, gamma=0.25, temperature=2.0)
    labels = torch.tensor([0, 2, 1])
    losses = method(ModelOutput(torch.tensor(STUDENT)), ModelOutput(torch.tensor(TEACHER)), labels, ZERO)
    inter_hand, intra_hand = by_hand(2.0)
    ce = -sum(math.log(softmax(row, 1.0)[y]) for row, y in zip(STUDENT, (0, 2, 1), strict=True)) / 3
    assert float(losses["ce"]) == pytest.approx(0.5 * ce, rel=1e-5)
    assert float(losses["inter"]) == pytest.approx(3.0 * inter_hand, rel=1e-5)
    assert float(losses["intra"]) == pytest.approx(0.25 * intra_hand, rel=1e-5)
