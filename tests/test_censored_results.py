"""A censored lab result ("<5", ">100") decides a threshold only when its bound lies on one side."""

import pytest

from cds_service.eligibility.labs import _censored_decides


@pytest.mark.parametrize(
    ("op", "comparator", "value", "threshold", "expected"),
    [
        (">=", "<", 5, 10, False),  # true value < 5, so not >= 10
        ("<", "<", 5, 10, True),  # true value < 5, so < 10
        ("<=", "<=", 10, 10, True),
        (">=", "<", 20, 10, None),  # < 20 may or may not be >= 10
        ("<", ">", 200, 100, False),  # true value > 200, so not < 100
        (">=", ">", 200, 100, True),
        ("<", ">", 50, 100, None),  # > 50 may or may not be < 100
        ("==", "<", 5, 10, None),  # equality is never decided by a bound
    ],
)
def test_censored_result_decides_only_from_its_side(op, comparator, value, threshold, expected):
    assert _censored_decides(op, comparator, value, threshold) is expected
