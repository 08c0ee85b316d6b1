"""`weightdoctor inspect` through the CLI: content of tables and JSON, exit codes, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_cli, run_json, run_subprocess


def test_inspect_json_schema(fx: dict[str, Path]) -> None:
    code, data = run_json("inspect", fx["bert"])
    assert code == 0
    for key in ("source", "format", "files", "num_tensors", "num_params", "total_bytes", "dtypes", "config", "tensors"):
        assert key in data
    assert data["format"] == "safetensors" and data["num_tensors"] == 41 and data["num_params"] == 20077
    assert data["dtypes"] == {"float32": 20077}
    assert data["config"]["model_type"] == "bert"
    row = next(t for t in data["tensors"] if t["name"] == "classifier.weight")
    assert row == {**row, "shape": [3, 32], "dtype": "float32", "num_params": 96}
    assert data["memory"]["fp16"] == 20077 * 2


def test_inspect_table_content(fx: dict[str, Path]) -> None:
    result = run_cli("inspect", fx["bert"])
    assert result.exit_code == 0
    out = result.stdout
    assert "20,077" in out and "safetensors" in out and "BertForSequenceClassification" in out
    assert "encoder.layer.{0..1} ×2" in out
    assert "initializer_range" in out and "0.02" in out
    assert result.stderr == ""


def test_inspect_filter(fx: dict[str, Path]) -> None:
    code, data = run_json("inspect", fx["bert"], "--filter", r"LayerNorm\.weight$")
    assert code == 0
    assert data["num_tensors"] == 41  # the summary covers everything
    assert {t["name"] for t in data["tensors"]} == {
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.output.LayerNorm.weight",
        "bert.encoder.layer.0.output.LayerNorm.weight",
        "bert.encoder.layer.1.attention.output.LayerNorm.weight",
        "bert.encoder.layer.1.output.LayerNorm.weight",
    }


def test_inspect_training_checkpoint(fx: dict[str, Path]) -> None:
    result = run_cli("inspect", fx["files"] / "training.pt")
    assert result.exit_code == 0
    assert "model_state_dict" in result.stdout and "optimizer_state_dict" in result.stdout
    code, data = run_json("inspect", fx["files"] / "ddp-nested.pth", "--key", "model.module")
    assert code == 0 and data["nested_key"] == "model.module"


def test_inspect_tied_gpt2(fx: dict[str, Path]) -> None:
    code, data = run_json("inspect", fx["files"] / "gpt2-tied.bin")
    assert data["shared_tensors"] == [["transformer.wte.weight", "lm_head.weight"]]
    assert data["format"] == "pytorch-zip"


def test_inspect_repo_id(fx: dict[str, Path], hub_env: Path) -> None:
    code, data = run_json("inspect", "weightdoctor-tests/tiny-bert")
    assert code == 0 and data["repo_id"] == "weightdoctor-tests/tiny-bert" and data["num_params"] == 20077


@pytest.mark.parametrize(
    "make_bad, expected",
    [
        (lambda d: d / "missing.safetensors", "no such file or directory"),
        (lambda d: _write(d / "junk.bin", b"garbage bytes here"), "not a safetensors file nor a PyTorch pickle"),
        (lambda d: _write(d / "cut.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"), "truncated"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, make_bad, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = make_bad(tmp_path)
    result = run_cli("inspect", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and path.name in lines[0]
    assert "Traceback" not in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_debug_shows_traceback(tmp_path: Path) -> None:
    bad = _write(tmp_path / "junk.bin", b"garbage bytes here")
    proc = run_subprocess("inspect", bad, "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_and_safetensors_inspect_do_not_import_torch(fx: dict[str, Path]) -> None:
    script = (
        "import sys, runpy\n"
        "sys.argv = ['weightdoctor'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('weightdoctor', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "torch_state = 'TORCH' if 'torch' in sys.modules else 'NO-TORCH'\n"
        "tf_state = 'TRANSFORMERS' if 'transformers' in sys.modules else 'NO-TRANSFORMERS'\n"
        "print(torch_state, tf_state, file=sys.stderr)\n"
    )
    import subprocess
    import sys

    for args in (["--help"], ["inspect", str(fx["bert"]), "--json"], ["inspect", str(fx["bert-sharded"])]):
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO_ROOT)
        assert "NO-TORCH NO-TRANSFORMERS" in proc.stderr, (args, proc.stderr)


def test_python_dash_m_and_exit_codes(fx: dict[str, Path]) -> None:
    proc = run_subprocess("inspect", fx["bert"], "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["num_tensors"] == 41
    usage = run_subprocess("inspect")
    assert usage.returncode == 2


def test_example_checkpoint_is_committed_and_small() -> None:
    example = REPO_ROOT / "fixtures" / "example"
    size = sum(p.stat().st_size for p in example.iterdir())
    assert size < 5_000_000
    code, data = run_json("inspect", example)
    assert code == 0 and data["config"]["model_type"] == "bert"


def test_escape_sequences_in_names_and_metadata_never_reach_the_terminal(tmp_path: Path) -> None:
    """A pickle's keys and a safetensors `__metadata__` are any strings: printed with their escapes visible."""
    from safetensors.torch import save_file

    from tests.helpers import run_cli

    evil = "evil\x1b]0;PWNED\x07\x1b[2J\u202e.w"
    pickled = tmp_path / "evil.bin"
    torch.save({"ok": torch.ones(2), evil: torch.randn(3)}, pickled)
    plain = tmp_path / "plain.bin"
    torch.save({"ok": torch.ones(2)}, plain)
    meta = tmp_path / "meta.safetensors"
    save_file({"w": torch.ones(2)}, str(meta), metadata={"note": "red\x1b[31m"})
    for args in (["inspect", pickled], ["inspect", pickled, "--stats"], ["diff-keys", pickled, plain],
                 ["check-dtype", pickled], ["inspect", meta]):
        result = run_cli(*map(str, args))
        shown = result.stdout + result.stderr
        assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown, args
    assert "evil\\x1b]0;PWNED\\x07\\x1b[2J\\u202e.w" in run_cli("inspect", str(pickled)).stdout


def test_module_tree_keeps_a_single_child_below_a_repeated_block(tmp_path: Path) -> None:
    """`enc.layers.N.self_attn.{q,v}_proj`: the repeated block is `enc.layers.{0..1}.self_attn`, not `{0..1}`."""
    from safetensors.torch import save_file

    path = tmp_path / "tree.safetensors"
    save_file({f"enc.layers.{i}.self_attn.{n}_proj.weight": torch.zeros(4, 4) for i in range(2) for n in "qv"},
              str(path))
    code, data = run_json("inspect", path)
    assert code == 0
    [node] = data["module_tree"]
    assert (node["name"], node["repeat"], node["num_params"]) == ("enc.layers.{0..1}.self_attn", 2, 64)
    assert [child["name"] for child in node["children"]] == ["q_proj", "v_proj"]


def test_a_collapsed_block_of_collapsed_blocks_repeats_every_innermost_block(tmp_path: Path) -> None:
    """Funnel's `encoder.blocks.B.L.*` (blocks of identical layers) collapse to `encoder.blocks.{0..1}.{0..2}`: six
    layers, so repeat 6 and `each` one layer, what its children (one layer's modules) add up to. It said x2
    and the parameters of three layers each. Found by scripts/inspect_sweep.py."""
    from safetensors.torch import save_file

    path = tmp_path / "tree.safetensors"
    save_file({f"encoder.blocks.{b}.{layer}.{part}.weight": torch.zeros(4, 4)
               for b in range(2) for layer in range(3) for part in ("attention", "ffn")}, str(path))
    code, data = run_json("inspect", path)
    assert code == 0
    [node] = data["module_tree"]
    assert (node["name"], node["repeat"], node["num_params"], node["num_tensors"]) == (
        "encoder.blocks.{0..1}.{0..2}", 6, 6 * 32, 12)
    assert sum(child["num_params"] for child in node["children"]) * node["repeat"] == node["num_params"]
    assert "×6" in run_cli("inspect", str(path)).stdout


def test_module_tree_does_not_chain_through_a_module_with_tensors_of_its_own(tmp_path: Path) -> None:
    """BERT's MLM head saved by save_pretrained: `cls.predictions` holds `bias` and one child `transform`. The
    chain stops at `cls.predictions` (its bias is its own), not at `cls.predictions.transform`, which would
    count the bias under transform's name; likewise wav2vec2's weight-norm conv (`conv.bias` beside
    `conv.parametrizations.weight.original0/1`). Found by scripts/inspect_sweep.py."""
    from safetensors.torch import save_file

    path = tmp_path / "tree.safetensors"
    save_file({"cls.predictions.bias": torch.zeros(10),
               "cls.predictions.transform.dense.weight": torch.zeros(4, 4),
               "cls.predictions.transform.LayerNorm.weight": torch.zeros(4),
               "enc.pos.conv.bias": torch.zeros(3),
               "enc.pos.conv.parametrizations.weight.original0": torch.zeros(1, 1, 5),
               "enc.pos.conv.parametrizations.weight.original1": torch.zeros(3, 1, 5)}, str(path))
    code, data = run_json("inspect", path)
    assert code == 0
    nodes = {node["name"]: node for node in data["module_tree"]}
    assert sorted(nodes) == ["cls.predictions", "enc.pos.conv"]
    assert (nodes["cls.predictions"]["num_params"], nodes["cls.predictions"]["num_tensors"]) == (30, 3)
    [transform] = nodes["cls.predictions"]["children"]
    assert (transform["name"], transform["num_params"], transform["num_tensors"]) == ("transform", 20, 2)
    assert (nodes["enc.pos.conv"]["num_params"], nodes["enc.pos.conv"]["num_tensors"]) == (23, 3)
    [weight_norm] = nodes["enc.pos.conv"]["children"]
    assert (weight_norm["name"], weight_norm["num_params"]) == ("parametrizations", 20)


def test_config_summary_reads_an_encoder_decoders_layers_and_heads_as_transformers_does(tmp_path: Path) -> None:
    """BART, Marian, Pegasus, Whisper write encoder_layers / encoder_attention_heads, no num_hidden_layers: the
    summary's num_layers / num_heads are those, as transformers' attribute_map reads num_hidden_layers /
    num_attention_heads (they were null). Found by scripts/inspect_sweep.py."""
    from safetensors.torch import save_file

    save_file({"model.shared.weight": torch.zeros(8, 4)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bart", "architectures": ["BartForConditionalGeneration"], "d_model": 4, "encoder_layers": 3,
        "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 2, "vocab_size": 8}))
    code, data = run_json("inspect", str(tmp_path))
    assert code == 0
    summary = data["config_summary"]
    assert (summary["hidden_size"], summary["num_layers"], summary["num_heads"]) == (4, 3, 4)
    assert "num_layers" in run_cli("inspect", str(tmp_path)).stdout


def _save_quantized(folder: Path, tensors: dict[str, torch.Tensor], quantization: dict | None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(tensors, folder / "model.safetensors")
    config = {"model_type": "llama"} | ({"quantization_config": quantization} if quantization else {})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_quantized_checkpoints_count_the_parameters_their_packed_tensors_stand_for(tmp_path: Path) -> None:
    """GPTQ packs 8 4-bit values in each int32 of a qweight, bitsandbytes 4-bit 2 in each uint8; scales, zero
    points and absmax are not parameters. Stored values stay `num_params`; `quantized.parameters` unpacks."""
    gptq = {"layer.q_proj.qweight": torch.zeros(64 // 8, 96, dtype=torch.int32),
            "layer.q_proj.qzeros": torch.zeros(1, 96 // 8, dtype=torch.int32),
            "layer.q_proj.scales": torch.zeros(1, 96, dtype=torch.float16),
            "layer.q_proj.g_idx": torch.zeros(64, dtype=torch.int32),
            "embed.weight": torch.zeros(10, 64, dtype=torch.float16)}
    folder = _save_quantized(tmp_path / "gptq", gptq, {"quant_method": "gptq", "bits": 4, "group_size": 64})
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["num_params"] == 8 * 96 + 12 + 96 + 64 + 640
    assert data["quantized"] == {"method": "gptq", "bits": 4, "packed_tensors": 1, "side_tensors": 3,
                                 "parameters": 64 * 96 + 640}
    assert data["memory"]["fp16"] == (64 * 96 + 640) * 2  # dequantized weights, no side tensors
    text = run_cli("inspect", str(folder)).stdout
    assert "gptq 4-bit: 6,784 parameters" in text and "once unpacked" in text
    # Without a config the bits are unknown: said, not guessed.
    (folder / "config.json").unlink()
    code, data = run_json("inspect", str(folder))
    assert data["quantized"]["parameters"] is None and data["quantized"]["method"].startswith("gptq-like")

    # 3-bit GPTQ packs 32 values into 3 int32s; bits a packed int32 cannot hold are unknown, not counted.
    three = {"layer.q_proj.qweight": torch.zeros(64 * 3 // 32, 96, dtype=torch.int32)}
    folder = _save_quantized(tmp_path / "gptq3", three, {"quant_method": "gptq", "bits": 3})
    assert run_json("inspect", str(folder))[1]["quantized"]["parameters"] == 64 * 96
    for index, bits in enumerate((True, -8, 0, 64, "4", 4.0)):
        folder = _save_quantized(tmp_path / f"odd{index}", three, {"quant_method": "gptq", "bits": bits})
        code, data = run_json("inspect", str(folder))
        assert code == 0 and (data["quantized"]["bits"], data["quantized"]["parameters"]) == (None, None), bits
    folder = _save_quantized(tmp_path / "compressed", three, {"quant_method": "compressed-tensors", "config_groups": {
        "g": {"weights": {"num_bits": -8}}}})
    assert run_json("inspect", str(folder))[1]["quantized"]["parameters"] is None

    bnb = {"layer.weight": torch.zeros(64 * 32 // 2, 1, dtype=torch.uint8),
           "layer.weight.absmax": torch.zeros(32), "layer.weight.quant_map": torch.zeros(16),
           "layer.weight.quant_state.bitsandbytes__nf4": torch.zeros(60, dtype=torch.uint8),
           "layer.bias": torch.zeros(64)}
    folder = _save_quantized(tmp_path / "bnb", bnb, {"quant_method": "bitsandbytes", "load_in_4bit": True})
    code, data = run_json("inspect", str(folder))
    assert data["quantized"]["method"] == "bitsandbytes 4-bit" and data["quantized"]["parameters"] == 64 * 32 + 64
    assert data["quantized"]["side_tensors"] == 3 and data["quantized"]["packed_tensors"] == 1

    plain = _save_quantized(tmp_path / "plain", {"layer.weight": torch.zeros(4, 4),
                                                 "layer.scale": torch.zeros(4)}, None)
    code, data = run_json("inspect", str(plain))
    assert data["quantized"] is None and data["memory"]["fp32"] == 20 * 4


def test_an_mlx_quantized_checkpoint_counts_its_unpacked_parameters(tmp_path: Path) -> None:
    """mlx-lm packs 32 / bits values in each uint32 of a `weight`, with `scales` and `biases` per group beside it,
    and says so in the config's `quantization` (newer mlx-lm: also `quantization_config`, without quant_method).
    It was read as a plain checkpoint: an eighth of the parameters, the biases counted as weights."""
    from safetensors.torch import save_file

    mlx = {"model.layers.0.q_proj.weight": torch.zeros(96, 64 // 8, dtype=torch.uint32),
           "model.layers.0.q_proj.scales": torch.zeros(96, 1, dtype=torch.float16),
           "model.layers.0.q_proj.biases": torch.zeros(96, 1, dtype=torch.float16),
           "model.norm.weight": torch.zeros(64, dtype=torch.float16)}
    for key in ("quantization", "quantization_config"):
        folder = tmp_path / key
        folder.mkdir()
        save_file(mlx, folder / "model.safetensors", metadata={"format": "mlx"})
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", key: {"group_size": 64, "bits": 4}}))
        code, data = run_json("inspect", str(folder))
        assert code == 0 and data["num_params"] == 96 * 8 + 96 + 96 + 64
        assert data["quantized"] == {"method": "mlx", "bits": 4, "packed_tensors": 1, "side_tensors": 2,
                                     "parameters": 96 * 64 + 64}, key
        assert data["memory"]["fp16"] == (96 * 64 + 64) * 2
    # A cast leaves the groups' scales and biases as the quantizer stored them.
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "bf16"), "--dtype", "bf16")
    assert code == 0, data
    from safetensors.torch import load_file

    cast = load_file(tmp_path / "bf16" / "model.safetensors")
    assert cast["model.layers.0.q_proj.biases"].dtype == torch.float16
    assert cast["model.norm.weight"].dtype == torch.bfloat16


def test_an_mlx_mixed_quantization_counts_each_layer_at_its_own_bits(tmp_path: Path) -> None:
    """mlx-lm's mixed recipes (mixed_3_6, ...) name the layers quantized unlike the rest in the config's
    `quantization`, with their own bits: an 8-bit layer holds 4 values per uint32, not the global 4 bits' 8."""
    from safetensors.torch import save_file

    mlx = {"model.layers.0.q_proj.weight": torch.zeros(96, 64 // 8, dtype=torch.uint32),
           "model.layers.0.q_proj.scales": torch.zeros(96, 2, dtype=torch.float16),
           "model.layers.0.q_proj.biases": torch.zeros(96, 2, dtype=torch.float16),
           "model.layers.0.down_proj.weight": torch.zeros(64, 96 // 4, dtype=torch.uint32),
           "model.layers.0.down_proj.scales": torch.zeros(64, 3, dtype=torch.float16),
           "model.layers.0.down_proj.biases": torch.zeros(64, 3, dtype=torch.float16)}
    save_file(mlx, tmp_path / "model.safetensors", metadata={"format": "mlx"})
    quantization = {"group_size": 32, "bits": 4, "model.layers.0.down_proj": {"group_size": 32, "bits": 8}}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "quantization": quantization,
                                                      "quantization_config": quantization}))
    code, data = run_json("inspect", str(tmp_path))
    assert code == 0 and data["quantized"]["parameters"] == 96 * 64 + 64 * 96


def test_a_peft_adapter_folder_says_what_it_adapts(tmp_path: Path) -> None:
    """adapter_config.json beside adapter_model.safetensors (as peft saves them): rank, targets, saved modules."""
    from fixtures.diff_pairs import build_peft_adapter

    folders = build_peft_adapter(tmp_path)
    code, data = run_json("inspect", str(folders["adapter"]))
    assert code == 0 and data["num_tensors"] == 12
    assert data["adapter"]["peft_type"] == "LORA" and data["adapter"]["r"] == 4
    assert sorted(data["adapter"]["target_modules"]) == ["embed_tokens", "q_proj", "v_proj"]
    assert data["adapter"]["modules_to_save"] == ["lm_head"]
    assert "LoRA r=4" in run_cli("inspect", str(folders["adapter"])).stdout
    code, data = run_json("inspect", str(folders["base"]))
    assert data["adapter"] is None
    assert not any("adapter_config" in w for w in data["warnings"])


@pytest.mark.parametrize(("text", "said"), [("{not json", "cannot be read"), ('{"r": 4}', "has no peft_type"),
                                            ('{"peft_type": null, "r": 4}', "has no peft_type"),
                                            ('{"peft_type": 1, "r": 4}', "has no peft_type")])
def test_an_unreadable_adapter_config_is_said(tmp_path: Path, text: str, said: str) -> None:
    """A broken adapter_config.json was dropped without a word (inspect showed no adapter, as for a plain
    model); PeftModel.from_pretrained fails on it, so it is a warning, and the weights are still described."""
    from fixtures.diff_pairs import build_peft_adapter

    adapter = build_peft_adapter(tmp_path)["adapter"]
    (adapter / "adapter_config.json").write_text(text)
    code, data = run_json("inspect", str(adapter))
    assert code == 0 and data["adapter"] is None and data["num_tensors"] == 12
    assert [w for w in data["warnings"] if "adapter_config.json" in w and said in w]


def test_odd_adapter_and_config_values_still_print(tmp_path: Path) -> None:
    """Files are not always written by peft or transformers: a number where a list of modules belongs, a
    lone surrogate (`"\\ud800"`, valid JSON) in a config's model_type, must not stop the report."""
    from fixtures.diff_pairs import build_peft_adapter

    adapter = build_peft_adapter(tmp_path)["adapter"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    config.update(modules_to_save=5, target_modules="q_proj|v_proj")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    text = run_cli("inspect", str(adapter)).stdout
    assert "on q_proj|v_proj; saves 5 whole" in text
    (adapter / "config.json").write_text('{"model_type": "llama\\ud800", "architectures": ["X\\udcff"]}')
    result = run_subprocess("inspect", adapter)
    assert result.returncode == 0, result.stderr
    assert "llama\\ud800" in result.stdout and "Traceback" not in result.stderr
    result = run_subprocess("inspect", adapter, "--json")
    assert json.loads(result.stdout)["config"]["model_type"] == "llama\ud800"


def test_the_module_tree_counts_tied_weights_once(tmp_path: Path) -> None:
    """GPT-2's .bin holds lm_head.weight as transformer.wte.weight: the top-level nodes add up to the total
    (model.num_parameters()), the tied name's parameters are said apart."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=99, n_positions=64))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    code, data = run_json("inspect", str(tmp_path / "pytorch_model.bin"))
    nodes = {node["name"]: node for node in data["module_tree"]}
    assert sum(node["num_params"] for node in nodes.values()) == data["num_params"] == model.num_parameters()
    assert (nodes["lm_head"]["num_params"], nodes["lm_head"]["tied_params"]) == (0, 99 * 32)
    assert "3.2K tied" in run_cli("inspect", str(tmp_path / "pytorch_model.bin")).stdout


def test_fp4_packed_formats_and_fp8_weights_are_counted_and_read(tmp_path: Path) -> None:
    """MXFP4 (gpt-oss `*_blocks` + `*_scales`) and compressed-tensors NVFP4 (uint8 `weight_packed`) hold two
    4-bit values per byte; fp8 weights with a repeated column go through --stats (fp8 has no arithmetic)."""
    experts, rows, hidden = 2, 8, 64
    mxfp4 = {"mlp.experts.gate_up_proj_blocks": torch.zeros(experts, rows, hidden // 32, 16, dtype=torch.uint8),
             "mlp.experts.gate_up_proj_scales": torch.zeros(experts, rows, hidden // 32, dtype=torch.uint8),
             "norm.weight": torch.ones(hidden)}
    folder = _save_quantized(tmp_path / "mxfp4", mxfp4, {"quant_method": "mxfp4"})
    code, data = run_json("inspect", str(folder))
    assert data["quantized"]["parameters"] == experts * rows * hidden + hidden, data["quantized"]
    assert (data["quantized"]["packed_tensors"], data["quantized"]["side_tensors"]) == (1, 1)
    nvfp4 = {"proj.weight_packed": torch.zeros(16, 32, dtype=torch.uint8),
             "proj.weight_scale": torch.ones(16, 4).to(torch.float8_e4m3fn),
             "proj.weight_global_scale": torch.ones(1)}
    folder = _save_quantized(tmp_path / "nvfp4", nvfp4, {"quant_method": "compressed-tensors", "config_groups": {
        "group_0": {"weights": {"num_bits": 4, "type": "float"}}}})
    code, data = run_json("inspect", str(folder))
    assert data["quantized"]["parameters"] == 16 * 64, data["quantized"]
    weight = torch.randn(32, 32).to(torch.float8_e4m3fn)
    weight[:, 5] = weight[:, 3]
    folder = _save_quantized(tmp_path / "fp8", {"proj.weight": weight, "proj.weight_scale_inv": torch.ones(1, 1)},
                             {"quant_method": "fp8", "weight_block_size": [128, 128]})
    code, data = run_json("inspect", str(folder), "--stats")
    assert code == 0, data
    # The scale is a quantizer's: no weight-health finding about it.
    assert not [f for f in data["findings"] if f["tensor"] == "proj.weight_scale_inv"]


def test_long_tensor_names_break_after_a_dot_in_a_narrow_table() -> None:
    """At 80 columns (a pipe, a CI log) the fixture's longest names do not fit: they break after a dot
    (`...output.dense.` / `bias`), never inside a segment (`...dense.bia` / `s`), and every name reads whole."""
    from safetensors import safe_open

    out = run_subprocess("inspect", REPO_ROOT / "fixtures" / "example", "--all", env={"COLUMNS": "80"}).stdout
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│") and line.count("│") == 5]
    names: list[str] = []
    continued = 0
    for cells in rows:
        name, rest = cells[0].strip(), [c.strip() for c in cells[1:]]
        if any(rest):
            names.append(name)
        else:  # the name's next line
            assert names[-1].endswith("."), names[-1]
            names[-1] += name
            continued += 1
    assert continued > 0 and max(len(line) for line in out.splitlines()) <= 80
    with safe_open(str(REPO_ROOT / "fixtures" / "example" / "model.safetensors"), "np") as handle:
        assert len(names) == len(set(names)) and set(names) == set(handle.keys())


@pytest.mark.parametrize("command", [["inspect"], ["check-dtype"], ["diff-keys"]])
def test_a_name_with_markup_broken_across_lines_prints_as_it_is(tmp_path: Path, command: list[str]) -> None:
    """A pickle key holding `[/bold.x]` (`[red.x]`) broken after its dot in a narrow table: each line was escaped
    on its own, and Rich reads a tag across lines, so `[/bold.` / `x]` became a closing tag (an unexpected
    MarkupError, exit 2) and `[red.` / `x]` a style that swallowed those characters."""
    names = ["model.[/bold.x]abcdefghijklmnopq.weight", "model.[red.x]abcdefghijklmnopqrst.bias"]
    path = tmp_path / "m.bin"
    torch.save({name: torch.full((4,), 70000.0) for name in names}, path)
    args = [*command, path] + ([path.with_name("b.bin")] if command == ["diff-keys"] else [])
    if command == ["diff-keys"]:
        torch.save({f"other.{name}": torch.zeros(4) for name in names}, path.with_name("b.bin"))
    for columns in ("60", "80", "100"):
        result = run_subprocess(*args, env={"COLUMNS": columns})
        assert result.returncode in (0, 1) and "Error" not in result.stderr, result.stderr
        flat = "".join(result.stdout.split())
        cells = "".join(c.strip() for line in result.stdout.splitlines() for c in line.split("│")[1:2])
        assert all(name in flat or name in cells for name in names), result.stdout
