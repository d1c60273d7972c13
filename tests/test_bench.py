"""The one timing helper (issue 17, item 4): minidiff.bench.timed wraps torch.utils.benchmark.Timer, and the
benchmarks and chapter 12 use it instead of hand-written timing loops."""

import json
import time
from pathlib import Path

import pytest
import torch

from minidiff import bench

ROOT = Path(__file__).resolve().parents[1]


def test_timed_measures_the_median_per_call_after_warmup():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002 if len(calls) > 1 else 0.05)     # a slow first call, as with lazy initialisation

    t = bench.timed(fn, reps=5, warmup=1, number=2)
    assert len(t.times) == 5 and t.median == sorted(t.times)[2]
    assert 0.0015 < t.median < 0.03                        # per call, the slow first call excluded by the warm-up
    assert len(calls) >= 1 + 5 * 2
    threads = torch.get_num_threads()
    seen = []
    bench.timed(lambda: seen.append(torch.get_num_threads()), reps=1, warmup=0)
    assert set(seen) == {threads}                          # the Timer's default of one thread is not imposed
    with pytest.raises(ValueError):
        bench.timed(fn, reps=0)


def test_benchmarks_and_chapter_12_use_the_one_timer():
    for name in ("bench_kernels.py", "train_throughput.py"):
        src = (ROOT / "benchmarks" / name).read_text()
        assert "minidiff.bench import timed" in src and "perf_counter" not in src and "cuda.Event" not in src, name
    assert "minidiff.bench import timed" in (ROOT / "benchmarks" / "ssl_knn_time.py").read_text()
    nb = json.loads((ROOT / "chapters" / "12_kernels_and_speed.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "from minidiff.bench import timed" in code and "def timed" not in code and "cuda.Event" not in code
