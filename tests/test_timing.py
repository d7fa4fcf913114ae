from srilib.timing import median_seconds


def test_median_seconds_counts_calls_and_stops_after_a_slow_one():
    calls = []
    median_seconds(lambda: calls.append(1), repeats=4)
    assert len(calls) == 5  # warm-up + 4
    calls.clear()
    median_seconds(lambda: calls.append(1), repeats=4, warmup=False, slow=-1.0)  # every call counts as slow
    assert len(calls) == 1
