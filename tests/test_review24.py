"""review24: thirdparty13's Flax / GGUF / ONNX layouts, the kept `format` metadata, and its warnings."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers import run_json


def _metadata(path: Path) -> dict[str, str] | None:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def _flax_file(path: Path, *, with_norm: bool = True, fmt: str | None = "flax") -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {"enc.dense.kernel": torch.randn(4, 4, generator=g), "enc.out.kernel": torch.randn(4, 6, generator=g),
               "enc.dense.bias": torch.zeros(4)}
    if with_norm:
        tensors |= {"enc.ln.scale": torch.ones(4), "emb.embedding": torch.randn(8, 4, generator=g)}
    save_file(tensors, str(path), metadata={"format": fmt} if fmt else None)


def test_renaming_flax_kernels_to_pytorch_weights_says_they_stay_transposed(tmp_path: Path) -> None:
    # `convert --rename kernel=weight` on a Flax file wrote PyTorch's names over [in, out] kernels, exit 0 with no
    # warning: the square ones then load transposed into nn.Linear without an error.
    _flax_file(tmp_path / "flax.safetensors")
    code, data = run_json("convert", str(tmp_path / "flax.safetensors"), "-o", str(tmp_path / "out.safetensors"),
                          "--rename", "kernel=weight", "--rename", "scale=weight", "--rename", "embedding=weight")
    assert code == 0, data
    warning = next((w for w in data["warnings"] if "Flax kernel" in w), "")
    assert warning.startswith("2 Flax kernels renamed to PyTorch's .weight (e.g. enc.dense.kernel → "
                              "enc.dense.weight) keep their values: a Flax Dense kernel is [in, out]"), data["warnings"]
    assert "a rename transposes nothing" in warning
    # The layout is still Flax's: the format kept says so.
    assert _metadata(tmp_path / "out.safetensors") == {"format": "flax"}


def test_a_pytorch_modules_own_kernel_renamed_is_no_flax_transpose(tmp_path: Path) -> None:
    # No format "flax" and no Flax .scale / .embedding beside it: a PyTorch module's `kernel` parameter.
    _flax_file(tmp_path / "torch.safetensors", with_norm=False, fmt="pt")
    code, data = run_json("convert", str(tmp_path / "torch.safetensors"), "-o", str(tmp_path / "out.safetensors"),
                          "--rename", "kernel=weight")
    assert code == 0, data
    assert not any("Flax" in w for w in data["warnings"]), data["warnings"]
    assert _metadata(tmp_path / "out.safetensors") == {"format": "pt"}
    # A PyTorch model's `kernel` beside a layer scale's `.scale` (Mimi's) and PyTorch `.weight`s: no Flax either.
    save_file({"conv.kernel": torch.zeros(4, 4), "layer_scales.scale": torch.ones(4), "proj.weight": torch.zeros(4, 4)},
              str(tmp_path / "mimi.safetensors"), metadata={"format": "pt"})
    code, data = run_json("convert", str(tmp_path / "mimi.safetensors"), "-o", str(tmp_path / "mimi.out.safetensors"),
                          "--rename", "kernel=weight")
    assert code == 0 and not any("Flax" in w for w in data["warnings"]), data
    # A Flax tree flattened with '.' and saved with no metadata (safetensors.flax.save_file) is Flax's all the same.
    _flax_file(tmp_path / "bare.safetensors", fmt=None)
    code, data = run_json("convert", str(tmp_path / "bare.safetensors"), "-o", str(tmp_path / "bare.out.safetensors"),
                          "--rename", "kernel=weight")
    assert code == 0 and any(w.startswith("2 Flax kernels renamed") for w in data["warnings"]), data


def test_a_flax_format_file_under_pytorch_names_is_not_said_to_be_refused_by_transformers_4(tmp_path: Path) -> None:
    # A Flax file renamed to PyTorch's names keeps format "flax" (its kernels are still [in, out]); inspect said
    # "transformers 4's from_pretrained refuses such a file", though transformers 4 refuses only formats it does
    # not know: it takes a "flax" file for Flax's and converts it on load.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    save_file({"enc.dense.weight": torch.zeros(4, 4), "enc.dense.bias": torch.zeros(4)},
              str(folder / "model.safetensors"), metadata={"format": "flax"})
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    warning = next((w for w in data["warnings"] if "format 'flax'" in w), "")
    assert warning.startswith("the safetensors metadata says format 'flax' though no tensor has Flax's names: "
                              "transformers 4's from_pretrained takes the file for Flax's and converts it on load"), \
        data["warnings"]
    assert "refuses" not in warning
    # An unknown format is still said to be refused by transformers 4.
    save_file({"enc.dense.weight": torch.zeros(4, 4)}, str(folder / "model.safetensors"), metadata={"format": "np"})
    code, data = run_json("inspect", str(folder))
    assert any("transformers 4's from_pretrained refuses such a file" in w for w in data["warnings"]), data


def test_format_pt_and_no_format_convert_to_pt_and_an_index_holds_none(tmp_path: Path) -> None:
    for name, fmt in (("pt", "pt"), ("none", None)):
        save_file({"a.weight": torch.zeros(2, 2)}, str(tmp_path / f"{name}.safetensors"),
                  metadata={"format": fmt} if fmt else None)
        code, data = run_json("convert", str(tmp_path / f"{name}.safetensors"), "-o", str(tmp_path / f"{name}.out"),
                              "--to", "safetensors")
        assert code == 0, data
        assert _metadata(tmp_path / f"{name}.out") == {"format": "pt"}
    _flax_file(tmp_path / "flax.safetensors")
    code, data = run_json("shard", str(tmp_path / "flax.safetensors"), "-o", str(tmp_path / "shards"), "--max", "100B")
    assert code == 0, data
    shards = sorted((tmp_path / "shards").glob("*.safetensors"))
    assert len(shards) > 1 and all(_metadata(p) == {"format": "flax"} for p in shards)
    index = json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())
    assert "format" not in index["metadata"], index["metadata"]


def test_metadata_without_a_format_is_said_to_fail_transformers_4(tmp_path: Path) -> None:
    # save_file(state_dict, "model.safetensors", metadata={"merged_from": ...}) beside config.json: transformers 4's
    # from_pretrained raised "Incompatible safetensors file ... but None"; inspect and plan-devices said nothing.
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    folder = tmp_path / "merged"
    GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8)).save_pretrained(folder)
    state = {k: v.contiguous() for k, v in GPT2Model.from_pretrained(folder).state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"merged_from": "a+b"})
    said = ("the safetensors metadata (merged_from) holds no format: transformers 4's from_pretrained refuses such a "
            "file (\"Incompatible safetensors file. File metadata is not ['pt', 'tf', 'flax', 'mlx'] but None\")")
    for command in (("inspect", str(folder)), ("plan-devices", str(folder), "--gpu", "1GB")):
        code, data = run_json(*command)
        assert code == 0 and any(w.startswith(said) for w in data["warnings"]), data["warnings"]
    # convert writes format "pt" (the metadata kept), and its output is said nothing of.
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "out"))
    assert code == 0, data
    assert _metadata(tmp_path / "out" / "model.safetensors") == {"format": "pt", "merged_from": "a+b"}
    code, data = run_json("inspect", str(tmp_path / "out"))
    assert code == 0 and not any("format" in w for w in data["warnings"]), data["warnings"]
    # No metadata at all loads in transformers 4: nothing said.
    save_file(state, str(folder / "model.safetensors"))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and not any("format" in w for w in data["warnings"]), data["warnings"]
