"""How long a generation usually takes (`bot.eta`): the median of the recent ones."""

from __future__ import annotations

import pytest

from bot.eta import GenerationTimes, rounded_seconds


def test_no_estimate_before_the_first_generation() -> None:
    assert GenerationTimes().estimate(model="gpt-image-2", quality="high") is None


def test_median_of_the_last_twenty_per_model_and_quality() -> None:
    times = GenerationTimes()
    for seconds in (10, 12, 11, 90):  # one slow outlier does not move the median much
        times.record(model="gpt-image-2", quality="high", seconds=seconds)
    times.record(model="gpt-image-2", quality="low", seconds=3)
    times.record(model="dall-e-3", quality=None, seconds=20)
    assert times.estimate(model="gpt-image-2", quality="high") == 11.5
    assert times.estimate(model="gpt-image-2", quality="low") == 3
    assert times.estimate(model="dall-e-3", quality=None) == 20
    assert times.estimate(model="dall-e-3", quality="hd") is None
    for _ in range(20):
        times.record(model="gpt-image-2", quality="high", seconds=40)
    assert times.estimate(model="gpt-image-2", quality="high") == 40  # the old ones are gone


def test_negative_durations_are_ignored() -> None:
    times = GenerationTimes()
    times.record(model="m", quality=None, seconds=-1)
    assert times.estimate(model="m", quality=None) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, 1),
        (0.4, 1),
        (1.6, 2),
        (9.4, 9),
        (10.0, 10),
        (12.4, 10),
        (12.6, 15),
        (41, 40),
        (88, 90),
    ],
)
def test_rounded_for_people(seconds: float, shown: int) -> None:
    assert rounded_seconds(seconds) == shown
