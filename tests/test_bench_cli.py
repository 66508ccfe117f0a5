"""`captum-ext bench` and the report builder: a real (small) benchmark run end to end, and the committed results."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from captum_ext import cli

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_report_module():
    spec = importlib.util.spec_from_file_location("bench_report", BENCHMARKS / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_a_benchmark_and_writes_the_report(tmp_path):
    status = cli.main(["bench", "--quick", "--only", "datasets", "--bench-dir", str(BENCHMARKS),
                       "--out-dir", str(tmp_path)])
    assert status == 0
    run = json.loads((tmp_path / "bench_run.json").read_text())
    assert run["quick"] and [r["benchmark"] for r in run["runs"]] == ["datasets"]
    assert run["runs"][0]["exit_status"] == 0
    record = json.loads((tmp_path / "datasets.json").read_text())
    assert record["n"] == 1000 and set(record["seconds"]) >= {"scenes_single", "scenes_roi", "ellipses_ds1"}
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Benchmark ground" in report and "scenes_roi" in report
    assert "Not run:" in report and "`roi_attention`" in report  # the others are listed as missing


def test_bench_bad_arguments_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.py"):
        cli.bench(bench_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark"):
        cli.bench(only=["nope"], bench_dir=BENCHMARKS, out_dir=tmp_path)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="`out_dir` .*afile' is a file, not a folder"):  # before: "File exists"
        cli.bench(only=["datasets"], bench_dir=BENCHMARKS, out_dir=tmp_path / "afile")


def test_report_from_the_committed_results(tmp_path):
    for path in (BENCHMARKS / "results").glob("*.*"):
        if path.suffix in (".json", ".md") and not path.name.startswith("REPORT"):
            shutil.copy(path, tmp_path / path.name)
    report = load_report_module().build(tmp_path)
    for method in ("NodeBacktrack", "MultiLayerClassDiffSaliency", "SensitivityBBox",
                   "SelfSupervisedAttentionRegressor"):
        # written as <code> with word-break opportunities between the words of the name
        assert f"<code>{method}</code>" in report.replace("<wbr>", "")
    # every claim row names the paper's authors and states whether the paper's number was matched
    claims = report.split("## Paper claims", 1)[1].split("## Speed and memory", 1)[0]
    claim_rows = [line for line in claims.splitlines() if line.startswith("| ") and "<code>" in line]
    authors = {line.split(" | ")[0][2:] for line in claim_rows}
    assert authors == {"Gandikota & Mishra", "Shimoda & Yanai", "Ebrahimpour & Noelle", "Eppel", "Li & Shimada"}
    assert all(line.rstrip().endswith(("| **yes** |", "| no |")) for line in claim_rows)
    assert "## NodeBacktrack (Gandikota & Mishra)" in report
    assert "seed 00" not in report and "design.md" not in report
    assert (tmp_path / "plots" / "node_backtrack.png").stat().st_size > 5_000
