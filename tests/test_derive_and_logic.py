"""Derived variables and the four-valued logic the engine combines rules with."""

from __future__ import annotations

import random
from datetime import date

import pytest

from cds_service.eligibility.logic import Res, Truth, all_of, any_of, lean
from cds_service.eligibility.rules import Window
from cds_service.fhir.derive import age_on, ckd_epi_2021, cockcroft_gault

T, F, U, R = Truth.TRUE, Truth.FALSE, Truth.UNKNOWN, Truth.REVIEW


def test_age_on_birthday_boundaries():
    assert age_on(date(2000, 2, 29), date(2018, 2, 28)) == 17
    assert age_on(date(2000, 2, 29), date(2018, 3, 1)) == 18
    assert age_on(date(1990, 6, 15), date(2026, 6, 15)) == 36


def test_cockcroft_gault():
    assert cockcroft_gault(40, 64, 0.8, female=True) == pytest.approx(94.44, abs=0.01)
    assert cockcroft_gault(60, 80, 1.2, female=False) == pytest.approx(74.07, abs=0.01)


def test_ckd_epi_2021_worked_by_hand():
    # 50-year-old woman, SCr 1.0: 142 x (1.0/0.7)^-1.200 [0.6518] x 0.9938^50 [0.7327] x 1.012 = 68.6
    assert ckd_epi_2021(50, 1.0, female=True) == pytest.approx(68.6, abs=0.1)
    # 60-year-old man, SCr 1.2: 142 x (1.2/0.9)^-1.200 [0.7083] x 0.9938^60 [0.6886] = 69.2
    assert ckd_epi_2021(60, 1.2, female=False) == pytest.approx(69.2, abs=0.1)
    # below kappa the alpha exponent applies: woman 30, SCr 0.5 -> 142 x (0.5/0.7)^-0.241 x 0.9938^30 x 1.012
    assert ckd_epi_2021(30, 0.5, female=True) == pytest.approx(142 * 1.0845 * 0.8298 * 1.012, rel=0.002)


@pytest.mark.parametrize(
    ("window", "start", "expected"),
    [
        ("2 months", date(2026, 11, 23), date(2026, 9, 23)),
        ("1 month", date(2026, 3, 31), date(2026, 2, 28)),
        ("5 years", date(2028, 2, 29), date(2023, 2, 28)),
        ("1 week", date(2026, 1, 3), date(2025, 12, 27)),
        ("30 days", date(2026, 1, 15), date(2025, 12, 16)),
    ],
)
def test_window_arithmetic(window, start, expected):
    assert Window.parse(window).start(start) == expected


def _res(t: Truth, until=None) -> Res:
    return Res(t, until)


@pytest.mark.parametrize(
    ("truths", "all_", "any_"),
    [
        ([T, T], T, T),
        ([T, F], F, T),
        ([F, U], F, U),
        ([T, U], U, T),
        ([T, R], R, T),
        ([U, R], U, U),
        ([F, F], F, F),
    ],
)
def test_kleene_combination(truths, all_, any_):
    assert all_of([_res(t) for t in truths]).truth == all_
    assert any_of([_res(t) for t in truths]).truth == any_


def test_until_combination():
    a, b = date(2027, 1, 1), date(2027, 3, 1)
    # any: true while any member is true -> lifts at the latest; a permanent member keeps it permanent
    assert any_of([_res(T, a), _res(T, b)]).until == b
    assert any_of([_res(T, a), _res(T, None)]).until is None
    # all: true while every member is true -> lifts at the earliest
    assert all_of([_res(T, a), _res(T, b)]).until == a


def _random_tree(rng, depth: int):
    """A random combination of results: (kind, items) nodes over leaves, reviews carrying evidence, notes and
    standing notes drawn from a small pool (so a note is sometimes another item's standing one)."""
    if depth == 0 or rng.random() < 0.3:
        truth = rng.choice(list(Truth))
        until = rng.choice([None, None, date(2027, 1, rng.randint(1, 28))])
        pool = ["a", "b", "c"]
        return Res(
            truth,
            until,
            evidence=rng.choice([(), ("ev",)]),
            missing=rng.choice([(), ("m",)]),
            notes=tuple(rng.sample(pool, rng.randint(0, 2))),
            why=rng.choice([(), ("w",)]),
            standing=tuple(rng.sample(pool, rng.randint(0, 2))),
        )
    return (rng.choice(["all", "any", "not"]), [_random_tree(rng, depth - 1) for _ in range(rng.randint(1, 4))])


def _combine(tree, join):
    if isinstance(tree, Res):
        return tree
    kind, items = tree
    rs = [_combine(i, join) for i in items]
    if kind == "not":  # as engine._not: the truth flipped, the lists kept
        r = rs[0]
        t = {T: F, F: T}.get(r.truth, r.truth)
        return Res(t, r.until, r.evidence, r.missing, r.notes, r.why, r.standing)
    return (all_of if kind == "all" else any_of)(rs, join)


def test_a_lean_result_decides_what_the_full_one_decides():
    """logic.lean (a verdict's combinators) drops the lists of every result that is not a review: the truth,
    the date it flips and whether a review is one the record raised (Res.doubt, all `decide` reads) stay those
    of the full result, over random nestings."""
    rng = random.Random(25)
    doubts = 0
    for _ in range(3000):
        tree = _random_tree(rng, 4)
        full, thin = _combine(tree, None), _combine(tree, lean)
        assert (thin.truth, thin.until, thin.doubt) == (full.truth, full.until, full.doubt), tree
        doubts += full.doubt
    assert doubts > 50  # the case the lists matter for was drawn often
