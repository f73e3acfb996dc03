import json

import pytest

from losia_factory.analysis import report as report_module
from losia_factory.analysis.report import FILES, analyze
from losia_factory.analysis.run import load_run
from losia_factory.analysis.subnets import frequencies, trained_coverage
from losia_factory.cli import main
from tests.analysis.fake_run import Q, make_run

LOG_AND_WEIGHT_FIGURES = ["subnets", "frequency", "lr", "coverage", "similarity"]


def test_every_figure_from_logs_and_weights(tmp_path):
    folder = make_run(tmp_path / "run")
    results = analyze(folder, out=tmp_path / "out", base=tmp_path / "base", figures=LOG_AND_WEIGHT_FIGURES, top=4)
    for figure in LOG_AND_WEIGHT_FIGURES:
        assert (tmp_path / "out" / FILES[figure]).stat().st_size > 1000, figure
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    run = load_run(folder)
    assert saved["figures"]["frequency"]["data"] == json.loads(json.dumps(frequencies(run)))
    assert saved["figures"]["coverage"]["data"]["trained"] == pytest.approx(trained_coverage(run))
    assert saved["figures"]["coverage"]["data"]["changed"][Q] == pytest.approx(2 / 48)
    assert saved["figures"]["subnets"]["data"]["name"] == Q
    assert saved["figures"]["similarity"]["needs"] == "base and trained weights"
    assert saved["figures"]["subnets"]["needs"] == "logs"
    text = (tmp_path / "out" / "analysis.md").read_text()
    assert f"![subnets]({FILES['subnets']})" in text
    assert "| q_proj | out | 0.250 | 62.5% | " in text
    assert "entries changed outside every recorded block: 0" in text
    assert results["skipped"] == {}


def test_logs_alone_never_load_a_model(tmp_path, monkeypatch):
    """A big run's logs without weights: the log figures are drawn, the weight figures skipped with the reason."""
    folder = make_run(tmp_path / "run", with_weights=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(report_module, "probe_gradients", forbidden)
    results = analyze(folder)
    assert sorted(results["figures"]) == ["coverage", "frequency", "lr", "subnets"]
    assert set(results["skipped"]) == {"similarity", "gradient"}
    assert "holds no full model" in results["skipped"]["gradient"]
    assert results["figures"]["coverage"]["data"]["changed"] is None
    assert (folder / "analysis" / "analysis.md").exists()


def test_asked_for_figures_that_cannot_be_made_are_refused_up_front(tmp_path, capsys):
    folder = make_run(tmp_path / "run")
    (tmp_path / "base" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="--base"):
        analyze(folder, base=tmp_path / "base")
    with pytest.raises(ValueError, match=r"--figures similarity: .*pass --base"):
        analyze(folder, figures=["similarity"])
    with pytest.raises(ValueError, match="unknown figure"):
        analyze(folder, figures=["spectra"])
    assert not (folder / "analysis").exists()
    assert main(["analyze", str(tmp_path / "nowhere")]) == 1
    assert "losia_subnets.jsonl" in capsys.readouterr().err
