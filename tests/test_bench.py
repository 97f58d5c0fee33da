"""``diffir bench``: table columns, consistent numbers, MACs as ``diffir info`` counts them, fresh worker processes,
one-line size errors.  Tiny models, tiny sizes, a small peak matmul."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import diffir
from conftest import tiny_model
from diffir.bench import format_table, run_bench
from diffir.bench.table import COLUMNS, SPEEDUP_COLUMN
from diffir.cli import main
from diffir.profile import count_macs
from diffir.runtime import reference_path

SIZE = 16  # LQ side: a multiple of the tiny SR model's size multiple (8)


@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny_sr.safetensors"
    diffir.save_model(tiny_model("diffir_sr_x4_s2"), path)
    return path


def _check_row_numbers(report, row) -> None:
    assert row.out_height == row.height * 4 and row.out_width == row.width * 4
    assert math.isclose(row.megapixels, row.out_height * row.out_width / 1e6)
    assert row.params > 0 and row.macs > 0
    for name, res in row.results.items():
        assert len(res.runs) == report.env["repeats"]
        assert all(r.seconds > 0 for r in res.runs)
        assert 0 < res.min_ms <= res.median_ms <= res.max_ms
        assert math.isclose(row.ms_per_megapixel(name), res.median_ms / row.megapixels)
        assert math.isclose(row.gflops(name), 2 * row.macs / (res.median_ms / 1e3) / 1e9)
        assert math.isclose(report.peak_share(row, name), row.gflops(name) / report.peak_median)
        assert res.maxrss is not None and res.maxrss > 0
        assert res.minflt is not None and res.minflt >= 0
    if len(row.results) == 2:
        assert math.isclose(row.speedup(), row.results["reference"].median_ms / row.results["fast"].median_ms)


def test_in_process_both_paths(capsys) -> None:
    model = tiny_model("diffir_sr_x4_s2")
    report = run_bench([("tiny_sr", model)], ["16x24"], device="cpu", path="both", repeats=2, threads=1,
                       peak_size=256)
    assert report.env["mode"] == "in-process" and report.env["threads"] == 1
    assert len(report.peak_samples) == 2 and all(s > 0 for s in report.peak_samples)  # one sample per round
    (row,) = report.rows
    assert (row.height, row.width, row.out_height, row.out_width) == (16, 24, 64, 96)
    assert list(row.results) == ["fast", "reference"]
    assert row.rss_scope in ("row", "process")
    _check_row_numbers(report, row)
    # the papers' count (reference formulation) for both paths; the fast path's own count is lower
    def counted(reference: bool) -> int:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad(), reference_path(reference):
            model(torch.zeros(1, 3, 16, 24))
        return counter.get_total_flops() // 2

    assert row.macs == counted(True) > counted(False)
    # non-square: between the square counts `diffir info` gives for the two sides
    assert count_macs(model, 16) < row.macs < count_macs(model, 24)

    text = format_table(report)
    header = next(line for line in text.splitlines() if line.startswith("model"))
    assert header.split() == [w for c in (*COLUMNS, SPEEDUP_COLUMN) for w in c.split()]
    body = [line for line in text.splitlines() if line.startswith("tiny_sr") or line.startswith(" ")]
    assert len(body) == 2 and body[0].rstrip().endswith("x")  # the ratio sits on the fast row
    assert "matmul 256x256" in text


def test_cli_table_json_and_info_macs(sr_weights, tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "-m", str(sr_weights), "--size", str(SIZE), "--repeats", "1", "--threads", "1",
                 "--device", "cpu", "--peak-size", "256", "--json", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    for column in COLUMNS:
        assert column in header
    assert SPEEDUP_COLUMN not in header  # one path only
    rows = [line for line in lines if line.startswith(str(sr_weights))]
    assert len(rows) == 1 and " fast " in rows[0]

    data = json.loads(out.read_text())
    assert data["paths"] == ["fast"] and data["peak"]["matmul_size"] == 256 and data["peak"]["gflops_median"] > 0
    row = data["rows"][0]
    assert row["lq"] == [SIZE, SIZE] and row["output"] == [4 * SIZE, 4 * SIZE]
    fast = row["paths"]["fast"]
    assert math.isclose(fast["ms_per_megapixel"], fast["ms_median"] / row["output_megapixels"])

    # the same MAC count as `diffir info`
    assert main(["info", str(sr_weights), "--size", str(SIZE)]) == 0
    info = capsys.readouterr().out
    assert f"MACs at {SIZE}x{SIZE} input: {row['macs'] / 1e9:.2f} G" in info
    assert row["macs"] == count_macs(diffir.load_model(sr_weights), SIZE)


def test_fresh_runs_a_worker_process(sr_weights, monkeypatch) -> None:
    import subprocess

    import diffir.bench.worker as worker

    calls = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        calls.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(worker.subprocess, "run", spy)
    report = run_bench([str(sr_weights)], [SIZE], device="cpu", path="reference", repeats=1, threads=1, fresh=True,
                       fresh_warmup=False, peak_size=256)
    assert len(calls) == 1 and calls[0][1:3] == ["-m", "diffir.bench.worker"]
    spec = json.loads(calls[0][-1])
    assert spec["path"] == "reference" and spec["threads"] == 1 and (spec["height"], spec["width"]) == (SIZE, SIZE)
    assert report.env["mode"] == "fresh" and isinstance(report.env["keep_freed_memory"], bool)
    (row,) = report.rows
    assert row.rss_scope == "run"
    _check_row_numbers(report, row)
    run = row.results["reference"].runs[0]
    assert run.minflt > 0  # a cold forward faults its fresh pages in
    assert run.maxrss > 50 * 2**20  # the whole worker process, torch loaded
    assert "fresh Python process" in format_table(report)


def test_fresh_alternates_paths(sr_weights, monkeypatch) -> None:
    import diffir.bench.suite as suite

    specs = []

    def fake_worker(spec, threads):
        specs.append(spec)
        return {"seconds": 0.01 if spec["path"] == "fast" else 0.03, "minflt": 5, "majflt": 0, "maxrss": 2**28,
                "device_peak": None, "threads": threads, "keep_freed_memory": True}

    monkeypatch.setattr(suite, "run_worker_checked", fake_worker)
    report = run_bench([str(sr_weights)], [SIZE], device="cpu", path="both", repeats=2, threads=1, fresh=True,
                       peak_size=64)
    # one untimed warm-up process per path at the timed size, then fast, reference, fast, reference
    assert [s["path"] for s in specs] == ["fast", "reference"] * 3
    assert [(s["height"], s["width"]) for s in specs] == [(SIZE, SIZE)] * 6
    assert all(s["source"] == {"model": str(sr_weights.resolve())} for s in specs)
    row = report.rows[0]
    assert math.isclose(row.speedup(), 3.0) and math.isclose(row.paired_speedup(), 3.0)
    assert len(report.peak_samples) == 2


@pytest.mark.parametrize("size", ["20x16", "12", "abc"])
def test_bad_size_one_line_error(sr_weights, capsys, size) -> None:
    code = main(["bench", "-m", str(sr_weights), "--size", size, "--threads", "1", "--peak-size", "64"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffir: error: --size")
    if size == "20x16":
        assert "multiples of 8" in err[0] and "24x16" in err[0]


def test_bad_model_and_path_arguments(capsys) -> None:
    assert main(["bench", "-m", "diffir_sr_x4_s1", "--threads", "1"]) == 2  # stage 1: needs the ground truth
    assert "stage-1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--path", "sideways"])
