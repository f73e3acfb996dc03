import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from losia_factory.cli import main
from losia_factory.delta import BaseMismatchError, apply_delta, export_delta
from losia_factory.delta.encoding import decode, encode
from losia_factory.model_files import NotAFullModelError, as_bits, weights_checksum


def nan_with_payload(payload: int) -> float:
    return struct.unpack("<f", struct.pack("<I", 0x7FC00000 | payload))[0]


def model_pair(tmp_path, sharded=False):
    """A base and a trained folder whose tensors exercise every encoding and bit-level corner."""
    generator = torch.Generator().manual_seed(0)
    base = {
        "a.sparse": torch.randn(64, 32, generator=generator),  # 3 changed entries: indices
        "b.many": torch.randn(64, 32, generator=generator),  # 1 in 4 changed: mask
        "c.all": torch.randn(16, generator=generator),  # everything changed: dense
        "d.bf16": torch.randn(32, 8, generator=generator).to(torch.bfloat16),
        "e.same": torch.randn(4, 4, generator=generator),
        "f.bits": torch.tensor([0.0, nan_with_payload(1), 1.0, 2.0]),
        "g.dropped": torch.ones(3),
    }
    trained = {k: v.clone() for k, v in base.items() if k != "g.dropped"}
    trained["a.sparse"][[0, 5, 63], [1, 2, 31]] += 1.0
    trained["b.many"].view(-1)[::4] *= 1.5
    trained["c.all"] += 0.5
    trained["d.bf16"][3] += 1.0
    trained["f.bits"][0] = -0.0  # equal as floats, different bits
    trained["f.bits"][1] = nan_with_payload(2)  # NaN -> another NaN
    trained["h.new"] = torch.arange(6, dtype=torch.int64)
    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    for folder, tensors in ((base_dir, base), (run_dir, trained)):
        folder.mkdir()
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if sharded:
        (run_dir / "model.safetensors").unlink()
        names = sorted(trained)
        shards = {"model-00001-of-00002.safetensors": names[:4], "model-00002-of-00002.safetensors": names[4:]}
        for file, members in shards.items():
            save_file({n: trained[n] for n in members}, str(run_dir / file), metadata={"format": "pt"})
        weight_map = {n: f for f, members in shards.items() for n in members}
        (run_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (run_dir / "config.json").write_text('{"model_type": "llama"}')
    (run_dir / "tokenizer_config.json").write_text("{}")
    return base_dir, run_dir, trained


def test_encodings_round_trip_bit_exactly():
    base = torch.tensor([0.0, nan_with_payload(1), 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0] * 8)
    trained = base.clone()
    trained[0] = -0.0
    trained[1] = nan_with_payload(7)
    encoding, tensors, changed = encode(base, trained)
    assert (encoding, changed) == ("indices", 2)
    assert torch.equal(as_bits(decode(base, encoding, tensors)), as_bits(trained))
    trained[::3] += 1
    encoding, tensors, changed = encode(base, trained)
    assert encoding == "mask" and tensors["mask"].numel() == 10
    assert torch.equal(as_bits(decode(base, encoding, tensors)), as_bits(trained))
    assert encode(base, base.clone()) is None


@pytest.mark.parametrize("sharded", [False, True])
def test_export_then_apply_rebuilds_the_trained_model_bit_exactly(tmp_path, sharded):
    base_dir, run_dir, trained = model_pair(tmp_path, sharded)
    manifest = export_delta(run_dir, base_dir, tmp_path / "delta")
    encodings = {name: entry["encoding"] for name, entry in manifest["tensors"].items()}
    assert encodings == {
        "a.sparse": "indices",
        "b.many": "mask",
        "c.all": "dense",
        "d.bf16": "indices",
        "f.bits": "mask",
        "h.new": "dense",
    }
    assert manifest["tensors"]["a.sparse"]["changed"] == 3 and manifest["tensors"]["f.bits"]["changed"] == 2
    assert manifest["removed"] == ["g.dropped"]
    assert manifest["base_sha256"] == weights_checksum(base_dir)
    assert manifest["sizes"]["delta_bytes"] < manifest["sizes"]["full_bytes"]
    result = apply_delta(tmp_path / "delta", base_dir, tmp_path / "merged")
    merged_files = sorted(p.name for p in (tmp_path / "merged").iterdir())
    assert merged_files == sorted(p.name for p in run_dir.iterdir())
    merged = {}
    for path in (tmp_path / "merged").glob("*.safetensors"):
        merged.update(load_file(str(path)))
    assert sorted(merged) == sorted(trained)
    for name, tensor in trained.items():
        assert merged[name].dtype == tensor.dtype and torch.equal(as_bits(merged[name]), as_bits(tensor)), name
    assert result["merged_sha256"] == weights_checksum(run_dir)
    if not sharded:  # same tensors, order and metadata: safetensors writes the very same bytes
        assert (tmp_path / "merged" / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()


def test_apply_refuses_another_base_naming_the_option(tmp_path):
    base_dir, run_dir, _ = model_pair(tmp_path)
    export_delta(run_dir, base_dir, tmp_path / "delta")
    other = load_file(str(base_dir / "model.safetensors"))
    other["e.same"][0, 0] += 1e-6
    (tmp_path / "other").mkdir()
    save_file(other, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(BaseMismatchError, match=r"--base .* is not the model this delta was made from"):
        apply_delta(tmp_path / "delta", tmp_path / "other", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()  # refused before writing anything


def test_bad_folders_are_refused_before_any_work(tmp_path):
    base_dir, run_dir, _ = model_pair(tmp_path)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(NotAFullModelError, match=r"RUN_DIR .* LoRA/PEFT adapter"):
        export_delta(adapter, base_dir, tmp_path / "d1")
    with pytest.raises(NotAFullModelError, match="--base"):
        export_delta(run_dir, tmp_path / "nowhere", tmp_path / "d2")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(FileExistsError, match="--out"):
        export_delta(run_dir, base_dir, tmp_path / "busy")
    with pytest.raises(FileNotFoundError, match="not a delta folder"):
        apply_delta(tmp_path / "busy", base_dir, tmp_path / "m")


def test_cli_reports_sizes_and_refuses_clearly(tmp_path, capsys):
    base_dir, run_dir, _ = model_pair(tmp_path)
    assert main(["delta", "export", str(run_dir), "--base", str(base_dir), "--out", str(tmp_path / "delta")]) == 0
    assert "ratio" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    save_file({"x": torch.zeros(2)}, str(other / "model.safetensors"))
    assert main(["delta", "apply", str(tmp_path / "delta"), "--base", str(other), "--out", str(tmp_path / "m")]) == 1
    assert "--base" in capsys.readouterr().err
    assert (
        main(["delta", "apply", str(tmp_path / "delta"), "--base", str(base_dir), "--out", str(tmp_path / "m")]) == 0
    )
