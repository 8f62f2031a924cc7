import pytest

from calc import mean, median


def test_mean_of_numbers():
    assert mean([1, 2, 3, 4]) == 2.5


def test_mean_of_empty_sequence_is_a_value_error():
    with pytest.raises(ValueError, match="empty"):
        mean([])


def test_median_odd_and_even():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5


def test_median_of_empty_sequence_is_a_value_error():
    with pytest.raises(ValueError, match="empty"):
        median([])
