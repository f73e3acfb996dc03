"""The partition summary and figure read back from a saved PiLoRA run."""

from __future__ import annotations

import pytest

from losia_factory.cli import main as cli_main
from losia_factory.pilora import PiloraConfig
from losia_factory.pilora.plot import load_partition, partition_summary, plot_partition
from tests.pilora.test_layer_and_model import tiny_llama, train_both_stages


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pilora_run")
    model = tiny_llama(seed=2)
    config = PiloraConfig(rank=4, supplementary_rank=1, alpha=8, dropout=0.0, probe_steps=4, partition="cumulative")
    pilora, masks = train_both_stages(model, config, steps=6)
    pilora.save_adapter(folder)
    return folder, pilora, masks


def test_summary_matches_the_saved_run(saved):
    folder, pilora, masks = saved
    rows = {r["layer"]: r for r in partition_summary(load_partition(folder))}
    assert set(rows) == set(pilora.layers)
    for name, (dominant, neurons) in pilora.partition_sizes().items():
        row, counter = rows[name], pilora.counters[name]
        assert (
            (row["dominant"], row["neurons"]) == (dominant, neurons) == (int(masks[name].sum()), masks[name].numel())
        )
        assert row["dominant_fraction"] == pytest.approx(dominant / neurons)
        assert row["hit_rate"] == pytest.approx(counter.hits.double().mean().item() / 4)
        held = counter.total[masks[name]].sum() / counter.total.sum()
        assert row["importance_share"] == pytest.approx(held.item())
        assert row["importance_share"] >= 0.7  # the cumulative rule's threshold


def test_figure_and_cli(saved, tmp_path, capsys):
    folder, pilora, _ = saved
    rows = plot_partition(folder, tmp_path / "fig.png")
    data = (tmp_path / "fig.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000 and len(rows) == len(pilora.layers)
    assert cli_main(["pilora-plot", str(folder), "--max-layers", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("| model.layers.") == 3 and (folder / "pilora_partition.png").exists()


def test_a_folder_without_the_files_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="finetuning_type: pilora"):
        load_partition(tmp_path)
