from srilib.timing import median_seconds


def test_median_seconds_counts_calls_and_stops_after_a_slow_one():
    calls = []
    median_seconds(lambda: calls.append(1), repeats=4)
    assert len(calls) == 5  # warm-up + 4
    calls.clear()
    median_seconds(lambda: calls.append(1), repeats=4, warmup=False, slow=-1.0)  # every call counts as slow
    assert len(calls) == 1


def test_every_benchmark_prints_the_cpu_it_ran_on():
    """Timings are only read beside the CPU that produced them: each benchmark prints srilib.timing.cpu_model()."""
    import ast
    from pathlib import Path

    from srilib.timing import cpu_model

    assert cpu_model().strip()
    benches = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))
    assert benches
    for f in benches:
        tree = ast.parse(f.read_text())
        imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        prints = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
        assert "srilib.timing" in imports and any(isinstance(c, ast.Call) and getattr(c.func, "id", "") == "cpu_model"
                                                  for p in prints for c in ast.walk(p)), f.name
