"""The partition summary and figure read back from a saved PiLoRA run, checked against the saved tensors."""

from __future__ import annotations

import json
import struct
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from losia_factory.cli import main as cli_main
from losia_factory.pilora import PiloraConfig, attach_pilora
from losia_factory.pilora.plot import load_partition, partition_summary, plot_partition, summary_markdown
from tests.pilora.test_layer_and_model import tiny_llama, train_both_stages

PROBES = 4
# The plotted order: module types as a decoder layer runs them, then the layer index.
ORDER = [
    f"model.layers.{index}.{block}.{module}"
    for block, module in [("self_attn", m) for m in ("q_proj", "k_proj", "v_proj")]
    + [("mlp", m) for m in ("up_proj", "down_proj")]
    for index in (0, 1)
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pilora_run")
    model = tiny_llama(seed=2)
    config = PiloraConfig(
        rank=4, supplementary_rank=1, alpha=8, dropout=0.0, probe_steps=PROBES, interval=1, partition="cumulative"
    )
    pilora, masks = train_both_stages(model, config, steps=6)
    pilora.save_adapter(folder)
    return folder, pilora, masks


def by_hand(folder):
    """Summary numbers straight from the files, with plain Python sums."""
    tensors = load_file(folder / "pilora_masks.safetensors")
    probes = json.loads((folder / "pilora_config.json").read_text())["probes"]
    expected = {}
    for key in tensors:
        if not key.endswith(".hits"):
            continue
        name = key.removesuffix(".hits")
        hits, total = tensors[key].tolist(), tensors[f"{name}.total"].tolist()
        mask = tensors[f"{name}.mask"].tolist()
        expected[name] = {
            "out_features": len(hits),
            "dominant": sum(mask),
            "hit_rate": sum(hits) / len(hits) / probes[name],
            "importance_share": sum(t for t, m in zip(total, mask) if m) / sum(total),
        }
    return expected


def test_summary_matches_the_saved_tensors(saved):
    folder, pilora, masks = saved
    rows = partition_summary(load_partition(folder))
    assert [r["name"] for r in rows] == ORDER and set(ORDER) == set(pilora.layers)
    expected, sizes = by_hand(folder), pilora.partition_sizes()
    for row in rows:
        name, hand = row["name"], expected[row["name"]]
        assert (row["dominant"], row["out_features"]) == sizes[name] == (int(masks[name].sum()), masks[name].numel())
        assert row["dominant"] == hand["dominant"] and row["out_features"] == hand["out_features"]
        assert row["dominant_fraction"] == pytest.approx(hand["dominant"] / hand["out_features"])
        assert row["hit_rate"] == pytest.approx(hand["hit_rate"])
        assert row["importance_share"] == pytest.approx(hand["importance_share"])
        assert row["importance_share"] >= 0.7  # the cumulative rule keeps the shortest prefix reaching its threshold
        assert torch.equal(pilora.counters[name].hits.cpu(), load_partition(folder)[name]["hits"])  # round trip
    table = summary_markdown(rows)
    assert len(table.splitlines()) == 2 + len(rows)
    first = rows[0]
    assert f"| {first['name']} | {first['out_features']} | {first['dominant']} |" in table


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figure_is_a_png_and_returns_the_summary(saved, tmp_path):
    folder = saved[0]
    out = tmp_path / "figures" / "partition.png"  # the folder is created
    rows = plot_partition(folder, out)
    data = out.read_bytes()
    width, height = png_size(data)
    assert len(data) > 10_000 and width == 1440 and height > 300
    assert rows == partition_summary(load_partition(folder))
    assert len(plot_partition(folder, out, max_layers=3)) == 3


def test_cli_writes_the_figure_and_prints_the_table(saved, capsys):
    folder, _, _ = saved
    assert cli_main(["pilora-plot", str(folder), "--max-layers", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("| model.layers.") == 3 and "| model.layers.1.self_attn.k_proj |" not in out
    assert png_size((folder / "pilora_partition.png").read_bytes())[0] == 1440
    assert cli_main(["pilora-plot", str(folder / "missing")]) == 1
    assert "pilora_masks.safetensors not found" in capsys.readouterr().err


def test_a_run_saved_in_stage_one_has_no_partition_yet(tmp_path):
    model = tiny_llama(seed=3)
    pilora = attach_pilora(model, PiloraConfig(rank=2, supplementary_rank=1, dropout=0.0, probe_steps=4))
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    pilora.observe(0)
    pilora.save_adapter(tmp_path)
    rows = plot_partition(tmp_path, tmp_path / "stage1.png")
    assert all(r["dominant"] is None and r["importance_share"] is None for r in rows)
    assert all(0 <= r["hit_rate"] <= 1 for r in rows) and "| - |" in summary_markdown(rows)


def test_missing_or_foreign_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pilora_masks\.safetensors not found.*save_adapter"):
        load_partition(tmp_path)
    masks = {"model.layers.0.mlp.up_proj.hits": torch.zeros(4, dtype=torch.int64)}
    masks["model.layers.0.mlp.up_proj.total"] = torch.zeros(4, dtype=torch.float64)
    save_file(masks, tmp_path / "pilora_masks.safetensors")
    with pytest.raises(FileNotFoundError, match=r"pilora_config\.json not found.*finetuning_type: pilora"):
        load_partition(tmp_path)
    (tmp_path / "pilora_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_partition(tmp_path)
    (tmp_path / "pilora_config.json").write_text(json.dumps({"probes": {}}))
    with pytest.raises(ValueError, match=r"no probe count for model\.layers\.0\.mlp\.up_proj"):
        load_partition(tmp_path)
    save_file({"lm_head.weight": torch.zeros(2)}, tmp_path / "pilora_masks.safetensors")
    with pytest.raises(ValueError, match=r"unexpected tensor 'lm_head\.weight'"):
        load_partition(tmp_path)
    (tmp_path / "pilora_masks.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_partition(tmp_path)


def test_missing_matplotlib_names_the_extra(saved, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # None in sys.modules: the import fails
    with pytest.raises(ImportError, match=r'pip install "losia-factory\[bench\]"'):
        plot_partition(saved[0], tmp_path / "never.png")
