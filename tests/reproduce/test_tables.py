"""The paper numbers file, the markdown tables with ours beside the paper's, and the loss-curve plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from losia_factory.reproduce.settings import TABLES, experiments_for
from losia_factory.reproduce.tables import (
    load_paper_results,
    plot_loss_curves,
    read_loss_log,
    render_all,
    render_table,
    smooth,
    with_average,
)

ROOT = Path(__file__).resolve().parents[2]
PAPER = load_paper_results()


def test_every_reproducible_table_is_in_the_file():
    assert set(PAPER) == set(TABLES)
    for table_id, spec in PAPER.items():
        assert spec["rows"] == list(spec["values"]), table_id
        assert set(spec["column_labels"]) == set(spec["columns"]), table_id
        assert all(set(cells) <= set(spec["columns"]) for cells in spec["values"].values()), table_id


@pytest.mark.parametrize(
    ("table", "row", "column", "value"),
    [  # typed from the papers, independently of the file
        ("losia_t1", "Gemma 2B / FFT", "gsm8k_5shot", 46.4),
        ("losia_t1", "LLaMA 2-7B / LoSiA", "latency_pro_us_per_token", 244.8),
        ("losia_t1", "LLaMA 2-13B / FFT-8Bit", "mem_gb", 77.1),
        ("losia_t1", "LLaMA 2-7B / DoRA", "mbpp_pass@10", 34.4),
        ("losia_t2", "LoSiA", "hellaswag", 65.05),
        ("losia_t2", "GaLore", "boolq", 82.60),
        ("losia_t3", "WDS", "gsm8k", 38.06),
        ("losia_t4", "T=75", "at_70k", 47.46),
        ("losia_t5", "Seq-LoRA", "bwt", -8.04),
        ("losia_t11", "LLaMA-2 7B", "p_1_2", 48.45),
        ("losia_t13", "Seq-LoSiA / boolq", "stage_5", 81.99),
        ("losia_t13", "Seq-LoRA / social_iqa", "st", 56.86),
        ("pilora_t1", "LLaMA2-7B / PiLoRA", "params_pct", 0.63),
        ("pilora_t1", "LLaMA3-8B / PiLoRA", "arc_challenge", 82.4),
        ("pilora_t1", "ChatGPT", "avg", 77.0),
    ],
)
def test_spot_values(table, row, column, value):
    assert PAPER[table]["values"][row][column] == value


@pytest.mark.parametrize("table", ["losia_t1", "losia_t2", "losia_t3", "pilora_t1"])
def test_the_papers_averages_are_means_of_their_columns(table):
    spec = PAPER[table]
    for row, cells in spec["values"].items():
        if all(c in cells for c in spec["avg_of"]):
            mean = sum(cells[c] for c in spec["avg_of"]) / len(spec["avg_of"])
            # LoSiA prints two decimals (13B PiSSA's 48.1167 is printed 48.11), PiLoRA one.
            assert cells["avg"] == pytest.approx(mean, abs=0.051 if table == "pilora_t1" else 0.007), row


def test_every_measured_paper_cell_is_filled_by_an_experiment():
    """Each accuracy cell of the LoSiA tables (and PiLoRA's own row) has a run whose evaluation fills it."""
    skipped = {"mem_gb", "latency_us_per_token", "latency_pro_us_per_token", "time_h", "avg", "params_pct"}
    for table in ("losia_t1", "losia_t2", "losia_t3", "losia_t4", "losia_t11", "losia_t13", "pilora_t1"):
        filled = {(c.row, c.column) for e in experiments_for(table) for c in e.cells if c.table == table}
        paper = {(r, c) for r, cells in PAPER[table]["values"].items() for c in cells if c not in skipped}
        if table == "pilora_t1":  # the other methods' rows are quoted from other papers
            paper = {(r, c) for r, c in paper if r.endswith("PiLoRA")}
        assert paper == filled, (table, sorted(paper ^ filled)[:5])


def test_render_with_ours():
    ours = {"LoSiA": {"gsm8k": 45.0, "mmlu": 44.0}, "SL": {"gsm8k": 40.0}, "Extra": {"gsm8k": 1.0}}
    text = render_table("losia_t3", ours)
    lines = text.splitlines()
    assert lines[2] == "| Row | GSM8K | MMLU | Avg. |"
    assert "| LoSiA | 44.66 → 45.00 (+0.34) | 44.95 → 44.00 (-0.95) | 44.81 → 44.50 (-0.31) |" in lines
    assert "| SL | 42.76 → 40.00 (-2.76) | 44.13 → – | 43.45 → – |" in lines  # no average without MMLU
    assert "| Extra | – → 1.00 | – → – | – → – |" in lines or "| Extra | – → 1.00 |  |  |" in lines
    assert lines.index("| ReLO | 42.76 → – | 43.81 → – | 43.29 → – |") < lines.index(
        next(line for line in lines if line.startswith("| Extra"))
    )


def test_render_paper_only_and_all():
    text = render_table("losia_t4")
    assert "| T=100 | 40.49 | 44.66 | 46.17 |" in text and "→" not in text
    everything = render_all({"losia_t5": {"Seq-LoSiA": {"ap": 70.0}}})
    assert everything.count("### ") == len(PAPER) and "70.48 → 70.00 (-0.48)" in everything
    with pytest.raises(KeyError, match="losia_t9"):
        render_table("losia_t9")


def test_average_is_the_papers_definition():
    values = with_average("losia_t1", {"r": {c: 10.0 * i for i, c in enumerate(PAPER["losia_t1"]["avg_of"])}})
    assert values["r"]["avg"] == pytest.approx(25.0)


def _run(tmp_path: Path, name: str, losses: list[float], as_state: bool = False) -> Path:
    run = tmp_path / name
    run.mkdir()
    if as_state:
        history = [{"step": 5 * (i + 1), "loss": v} for i, v in enumerate(losses)] + [{"step": 99, "eval_loss": 1}]
        (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    else:
        lines = [
            json.dumps({"current_steps": 5 * (i + 1), "total_steps": 50, "loss": v}) for i, v in enumerate(losses)
        ]
        (run / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_loss_logs_and_plot(tmp_path):
    a = _run(tmp_path, "a", [2.0, 1.5, 1.2, 1.0])
    b = _run(tmp_path, "b", [2.1, 1.7, 1.1], as_state=True)
    assert read_loss_log(a) == ([5, 10, 15, 20], [2.0, 1.5, 1.2, 1.0])
    assert read_loss_log(b) == ([5, 10, 15], [2.1, 1.7, 1.1])
    out = plot_loss_curves({"LoRA": a, "LoSiA": b}, tmp_path / "loss.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(FileNotFoundError, match=r"neither trainer_log\.jsonl nor trainer_state\.json"):
        read_loss_log(tmp_path)
    assert smooth([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: a constant stays put


def test_cli(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"tables": {"losia_t11": {"values": {"Gemma 2B": {"p_1_8": 43.0}}}}}))
    run = _run(tmp_path, "r", [1.0, 0.5])
    cmd = [sys.executable, "scripts/make_tables.py", "--results", str(results), "--tables", "losia_t11"]
    cmd += ["--out", str(tmp_path / "t.md"), "--loss-plot", str(tmp_path / "l.png"), "--run", f"LoSiA={run}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| Gemma 2B | 37.53 → – | 42.84 → 43.00 (+0.16) |" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "l.png").is_file()
    bad = subprocess.run([*cmd[:4], "--tables", "losia_t99"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown losia_t99" in bad.stderr
