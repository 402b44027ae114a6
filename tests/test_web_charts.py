"""The dashboard's history of the queues and its charts: pure logic, no Kafka."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka.web.charts import line_chart
from dramatiq_kafka.web.history import QueueHistory, QueueSample


def sample(at: float, end: int, committed: int) -> QueueSample:
    return QueueSample(at=at, end=end, committed=committed, lag=end - committed)


def test_the_history_keeps_the_window_and_gives_the_rates() -> None:
    history = QueueHistory(window=60)
    assert history.rates("q") is None
    history.add("q", sample(1000, 0, 0))
    assert history.rates("q") is None
    history.add("q", sample(1010, 100, 50))
    assert history.rates("q") == (10.0, 5.0)
    history.add("q", sample(1010, 500, 500))  # the same reading again: ignored
    history.add("q", sample(1020, 90, 60))  # a topic recreated: offsets went back
    assert history.rates("q") == (0.0, 1.0)
    history.add("q", sample(1075, 90, 60))
    assert [s.at for s in history.samples("q")] == [1020, 1075]  # older than 60 s are gone
    assert history.samples("other") == []


def test_a_chart_needs_two_points_and_escapes_its_title() -> None:
    assert "collecting" in line_chart([], title="lag")
    assert "collecting" in line_chart([(1.0, 3.0)], title="lag")
    chart = line_chart([(0.0, 0.0), (60.0, 10.0), (120.0, 5.0)], title="<lag>")
    assert "&lt;lag&gt;" in chart and "<lag>" not in chart
    assert "5 now, at most 10 over 2 min" in chart


@given(
    st.lists(
        st.tuples(st.floats(0, 1e6, allow_nan=False), st.floats(0, 1e9, allow_nan=False)),
        min_size=2,
        max_size=50,
    ),
    st.integers(20, 800),
    st.integers(20, 200),
)
def test_a_chart_stays_in_its_frame(points: list[tuple[float, float]], width: int, height: int) -> None:
    points = sorted(points)
    chart = line_chart(points, title="t", width=width, height=height)
    found = re.search(r'points="([^"]*)"', chart)
    assert found is not None
    for pair in found.group(1).split():
        x, y = map(float, pair.split(","))
        assert 0 <= x <= width and 0 <= y <= height
