"""A thirteenth round: .safetensors files that other frameworks write, not PyTorch state dicts: a transformers 4 Flax
model's save_pretrained (metadata format "flax", `.kernel` / `.embedding` / `.scale`, Dense kernels [in, out]), JAX
params trees flattened with "/", PaddleNLP's unified checkpoints (format "np", Linear weights [in, out]), MLX's."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import run_cli, run_json

_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 50, "hidden_size": 16,
           "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 20,
           "type_vocab_size": 2}


def _header_metadata(path: Path) -> dict[str, str] | None:
    with path.open("rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return json.loads(handle.read(size)).get("__metadata__")


def _bert_state() -> dict[str, np.ndarray]:
    """A tiny BertModel's state dict, as save_pretrained stores it (PyTorch's names and layout)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**{k: v for k, v in _CONFIG.items() if k != "architectures"}))
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if not k.endswith("position_ids")}


def _flax_name(name: str) -> str:
    """FlaxBertModel's name of a BertModel weight: Dense `kernel`, Embed `embedding`, LayerNorm `scale`."""
    module, leaf = name.rsplit(".", 1)
    if leaf != "weight":
        return name
    if module.endswith("LayerNorm"):
        return f"{module}.scale"
    return f"{module}.embedding" if module.endswith("embeddings") else f"{module}.kernel"


def _flax_folder(folder: Path) -> None:
    """A FlaxBertModel as transformers 4's FlaxPreTrainedModel.save_pretrained(safe_serialization=True) writes it:
    flatten_dict(params, sep=".") to model.safetensors with metadata {"format": "flax"}, each Dense kernel [in, out]
    (the transpose of nn.Linear's weight), and config.json (architectures without the Flax prefix)."""
    from safetensors.numpy import save_file

    folder.mkdir()
    flax = {}
    for name, array in _bert_state().items():
        new = _flax_name(name)
        flax[new] = np.ascontiguousarray(array.T) if new.endswith(".kernel") else array
    save_file(flax, str(folder / "model.safetensors"), metadata={"format": "flax"})
    (folder / "config.json").write_text(json.dumps(_CONFIG))


def _torch_folder(folder: Path) -> None:
    from safetensors.numpy import save_file

    folder.mkdir()
    save_file(_bert_state(), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_CONFIG))


def test_a_flax_safetensors_file_against_pytorchs_is_flaxs_layout_not_renames(tmp_path: Path) -> None:
    """diff-keys offered `--rename kernel=weight`, `scale=weight`, `embedding=weight` as the fix: a Dense kernel is
    [in, out], so the renamed square ones (query, key, value, every attention output) load transposed without an
    error. Said now as Flax's layout, with what loads it: transformers 4 converted it (from_flax), 5 does not."""
    _flax_folder(tmp_path / "flax")
    _torch_folder(tmp_path / "torch")
    for a, b, flax_side in (("flax", "torch", "A"), ("torch", "flax", "B")):
        code, data = run_json("diff-keys", str(tmp_path / a), str(tmp_path / b))
        assert code == 1, data
        assert data["suggested_renames"] == [], data["suggested_renames"]
        rows = {row["name"]: row for row in data["missing"] + data["unexpected"]}
        assert {row["reason"] for row in rows.values()} == {"foreign-layout"}, rows
        query = rows["encoder.layer.0.attention.self.query.kernel"]
        assert query["detail"] == (f"Flax's Dense / Conv kernel (in {flax_side}): [in, out], the transpose of "
                                   f"{'B' if flax_side == 'A' else 'A'}'s query.weight"), query
        [note] = [n for n in data["notes"] if "Flax's layout" in n]
        assert note.startswith(f"{flax_side} is in Flax's layout (.kernel, .embedding, .scale"), note
        assert "a Dense kernel is [in, out], the transpose of nn.Linear's [out, in]" in note
        assert ("transformers 5 has no Flax support and loads the names as they are" in note) is (flax_side == "A")
    code, data = run_json("diff-keys", str(tmp_path / "flax"), "--model-class", "BertModel")
    assert code == 1 and data["suggested_renames"] == [] and data["matched"] < data["total_b"], data
    assert {row["reason"] for row in data["unexpected"]} == {"foreign-layout"}, data["unexpected"]
    assert any("from_pretrained(A, from_flax=True), then save_pretrained" in n for n in data["notes"]), data["notes"]
    # A PyTorch checkpoint with a LayerNorm renamed is still a rename, not Flax's layout.
    state = _bert_state()
    renamed = {k.replace("embeddings.LayerNorm", "embeddings.ln"): v for k, v in state.items()}
    from safetensors.numpy import save_file

    save_file(renamed, str(tmp_path / "renamed.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "renamed.safetensors"), str(tmp_path / "torch"))
    assert data["suggested_renames"] and not data["notes"], data


def test_inspect_and_plan_devices_say_a_flax_file_does_not_load_into_transformers_5(tmp_path: Path) -> None:
    """plan-devices said "fits on the GPUs" and inspect nothing but `format=flax`, though transformers 5's
    from_pretrained ignores the format, loads the Flax names as they are and leaves every such weight random."""
    _flax_folder(tmp_path / "flax")
    _torch_folder(tmp_path / "torch")
    said = "the safetensors metadata says format \"flax\" and 13 of the 23 tensors have Flax's names"
    code, data = run_json("plan-devices", str(tmp_path / "flax"), "--gpu", "1GB")
    assert code == 0, data
    warning = next((w for w in data["warnings"] if "Flax" in w), "")
    assert warning.startswith(said) and "transformers 5 ignores the format and loads the names as they are" \
        in warning and "transformers 4's from_pretrained converted such a file on load" in warning, data["warnings"]
    code, data = run_json("inspect", str(tmp_path / "flax"))
    assert code == 0 and any(w.startswith(said) for w in data["warnings"]), data["warnings"]
    for command in (("plan-devices", str(tmp_path / "torch"), "--gpu", "1GB"), ("inspect", str(tmp_path / "torch"))):
        code, data = run_json(*command)
        assert code == 0 and not any("safetensors metadata says format" in w for w in data["warnings"]), data


@pytest.mark.parametrize("framework", ["flax", "mlx", "np"])
def test_convert_and_shard_keep_the_format_of_the_framework_the_layout_is_in(tmp_path: Path, framework: str) -> None:
    """convert and shard wrote `format: pt` over a Flax file's "flax" (and MLX's, PaddleNLP's "np"), though the
    names and layout stay that framework's: transformers 4 then loaded the Flax kernels as PyTorch weights instead
    of converting them. To a .bin, which holds no metadata, the loss is said."""
    _flax_folder(tmp_path / "src")
    source = tmp_path / "src" / "model.safetensors"
    if framework != "flax":
        from safetensors.numpy import load_file, save_file

        save_file(load_file(str(source)), str(source), metadata={"format": framework})
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "out.safetensors"), "--dtype", "bf16")
    assert code == 0, data
    assert _header_metadata(tmp_path / "out.safetensors") == {"format": framework}
    code, data = run_json("shard", str(tmp_path / "src"), "-o", str(tmp_path / "shards"), "--max", "4KB")
    assert code == 0, data
    shards = sorted((tmp_path / "shards").glob("*.safetensors"))
    assert len(shards) > 1 and all(_header_metadata(p) == {"format": framework} for p in shards)
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "out.bin"))
    assert code == 0, data
    assert any(f"a .bin file holds no metadata: the source's format {framework!r} is not written, and a .bin's "
               "tensors are taken as PyTorch's" in w for w in data["warnings"]), data["warnings"]
    # A PyTorch source stays "pt", and its .bin says nothing of a format.
    _torch_folder(tmp_path / "torch")
    code, data = run_json("convert", str(tmp_path / "torch" / "model.safetensors"), "-o", str(tmp_path / "t.bin"))
    assert code == 0 and not any("format" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("convert", str(tmp_path / "torch" / "model.safetensors"), "-o", str(tmp_path / "t.sft"))
    assert _header_metadata(tmp_path / "t.sft") == {"format": "pt"}


def test_a_paddlenlp_checkpoint_names_paddles_layout_and_what_each_transformers_does(tmp_path: Path) -> None:
    """PaddleNLP's save_pretrained / unified checkpoints write safetensors with format "np" beside a config.json
    that records paddlenlp_version, Linear weights [in, out]. plan-devices planned it without a word and diff-keys
    --model-class called the transposed weights Conv1D's; transformers 4 refuses the file, 5 loads the square Linear
    weights transposed."""
    from safetensors.numpy import save_file

    folder = tmp_path / "ernie-paddle"
    folder.mkdir()
    state = {k: np.ascontiguousarray(v.T) if v.ndim == 2 and "embeddings" not in k else v
             for k, v in _bert_state().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "np"})
    (folder / "config.json").write_text(json.dumps({**_CONFIG, "paddlenlp_version": None, "dtype": "float32"}))
    said = ("a PaddleNLP checkpoint (config.json records paddlenlp_version; safetensors format 'np'): its names are "
            "PaddleNLP's, and Paddle stores a Linear layer's weight as [in, out], the transpose of PyTorch's")
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and any(w.startswith(said) and "the square Linear weights transposed without an error" in w
                             for w in data["warnings"]), data["warnings"]
    code, data = run_json("diff-keys", str(folder), "--model-class", "BertModel")
    assert code == 1 and any(n.startswith(f"A: {said}") for n in data["notes"]), data["notes"]
    # Without PaddleNLP's config key, "np" says only what transformers 4 and 5 do with the format.
    (folder / "config.json").write_text(json.dumps(_CONFIG))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and any(w.startswith("the safetensors metadata says format 'np', not PyTorch's \"pt\"") and
                             "transformers 4's from_pretrained refuses such a file" in w for w in data["warnings"])


def test_a_jax_tree_flattened_with_slashes_is_named_not_called_a_path(tmp_path: Path) -> None:
    """safetensors.flax.save_file(flatten_dict(params, sep="/")): every name `params/Dense_0/kernel`. Refused as
    "tensor name ... contains a path separator", as if the file were damaged; a name that is a path (`..`) still is."""
    from safetensors.numpy import save_file

    path = tmp_path / "params.safetensors"
    save_file({"params/Dense_0/kernel": np.ones((4, 8), np.float32), "params/Dense_0/bias": np.zeros(8, np.float32),
               "params/LayerNorm_0/scale": np.ones(8, np.float32)}, str(path), metadata={"format": "flax"})
    for command in (("inspect", str(path)), ("diff-keys", str(path), str(path)),
                    ("convert", str(path), "-o", str(tmp_path / "out.bin"))):
        result = run_cli(*command)
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and result.stdout == "" and "path separator" not in line, line
        assert "every tensor name is a path joined with '/' (safetensors metadata format 'flax', e.g. " in line
        assert "a JAX / Flax params tree flattened with sep='/', not a PyTorch state dict" in line
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.bin").exists()
    save_file({"../escape/w": np.ones(2, np.float32), "a/b": np.ones(2, np.float32)}, str(tmp_path / "bad.safetensors"))
    result = run_cli("inspect", str(tmp_path / "bad.safetensors"))
    assert result.exit_code == 2 and "contains a path separator" in result.stderr


def test_llama_cpp_tensor_names_against_transformers_name_the_gguf_loader(tmp_path: Path) -> None:
    """A dequantized safetensors copy of a GGUF file keeps llama.cpp's names (token_embd, blk.N.attn_q, ffn_gate,
    output_norm): against transformers' Llama every key was "unknown", with no word of what they are, nor of the
    attn_q / attn_k permutation that transformers' GGUF loader reverses and no rename does."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(tmp_path / "llama")
    state = model.state_dict()
    gguf = {"token_embd.weight": state["model.embed_tokens.weight"], "output_norm.weight": state["model.norm.weight"],
            "output.weight": state["lm_head.weight"].clone()}
    for ours, theirs in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
                         ("attn_output", "self_attn.o_proj"), ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                         ("ffn_down", "mlp.down_proj"), ("attn_norm", "input_layernorm"),
                         ("ffn_norm", "post_attention_layernorm")):
        gguf[f"blk.0.{ours}.weight"] = state[f"model.layers.0.{theirs}.weight"].clone()
    save_file(gguf, str(tmp_path / "dequantized.safetensors"))
    for args, side in (((str(tmp_path / "dequantized.safetensors"), str(tmp_path / "llama")), "A"),
                       ((str(tmp_path / "llama"), str(tmp_path / "dequantized.safetensors")), "B"),
                       ((str(tmp_path / "dequantized.safetensors"), "--model-class", "LlamaForCausalLM", "--config",
                         str(tmp_path / "llama")), "A")):
        code, data = run_json("diff-keys", *args)
        assert code == 1 and data["suggested_renames"] == [], data
        assert {row["reason"] for row in data["missing"] + data["unexpected"]} == {"foreign-layout"}, data
        [note] = [n for n in data["notes"] if "llama.cpp's GGUF tensor names" in n]
        assert note.startswith(f"{side} is in llama.cpp's GGUF tensor names (token_embd, blk.N.attn_q"), note
        assert ("from_pretrained given its folder and gguf_file=, its name" in note) is (side == "A"), note


def test_an_onnx_exports_initializers_say_what_their_exporter_named(tmp_path: Path) -> None:
    """An ONNX BERT's initializers saved as safetensors: torch.onnx.export keeps the embeddings', biases' and norms'
    names but folds each Linear weight, transposed, into `onnx::MatMul_N`. diff-keys called them "unknown"."""
    from safetensors.numpy import save_file

    _torch_folder(tmp_path / "torch")
    initializers: dict[str, np.ndarray] = {}
    for number, (name, array) in enumerate(_bert_state().items(), start=1500):
        linear = array.ndim == 2 and "embeddings" not in name
        initializers[f"onnx::MatMul_{number}" if linear else name] = np.ascontiguousarray(array.T) if linear else array
    save_file(initializers, str(tmp_path / "initializers.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "initializers.safetensors"), str(tmp_path / "torch"))
    assert code == 1 and data["suggested_renames"] == [], data
    assert {row["reason"] for row in data["unexpected"]} == {"foreign-layout"}, data["unexpected"]
    assert data["unexpected"][0]["detail"].startswith("an ONNX exporter's name for a folded constant (in A)")
    [note] = [n for n in data["notes"] if "ONNX" in n]
    assert note.startswith("A holds an ONNX export's initializers (7 named by the exporter, e.g. onnx::MatMul_"), note
    assert "stores it [in, out], the transpose of nn.Linear's weight" in note
