"""A twenty-seventh round: quantizer and training-framework outputs no earlier round covered, each run through the six
commands: ExLlamaV3's EXL3 folders, Meta's fbgemm_fp8 checkpoints (Llama 3.1 405B FP8's layout), HIGGS, SpQR, VPTQ
and FP-Quant checkpoints as transformers reads them, nanotron checkpoints (one safetensors file per parameter and
rank) and ColossalAI's booster saves (modeling/ and optimizer/ beside running_states.json). AutoRound (`auto-round`,
GPTQ packing) was run too and needed nothing.

None of exllamav3, fbgemm-gpu, flute, spqr_quant, vptq, fp_quant, nanotron or ColossalAI is installed; their files are
reproduced from their own code: exllamav3's LinearEXL3.get_tensors (exllamav3/modules/quant/exl3.py: `trellis` int16 [in
/ 16, out / 16, 16 x bits], `suh` / `svh` fp16 sign vectors it asserts are torch.half, `mcg` an int32 [1] codebook
marker; quantization_config {"quant_method": "exl3", "bits": 4.0, "head_bits": 6, ...}); transformers 5.25.0's
FbgemmFp8Linear (float8_e4m3fn `weight`, float32 `weight_scale` [out, 1] and `input_scale_ub` [1]) and HiggsLinear (its
state_dict taken from the installed class); spqr_quant's QuantizedLinear (SpQR's
inference_lib/src/spqr_quant/inference.py: `dense_weights` int64 [tiles x 16], CSR `row_offsets` / `col_vals`,
`in_perm`), checked against transformers' SpQRConfig; VPTQ's VQuantLinear (microsoft/VPTQ's vptq/layers/vqlinear.py,
is_indice_packed: int32 `indices`, nn.Embedding codebooks `centroids` / `res_centroids`, `weight_scale` / `weight_bias`,
`perm`; config_for_layers holding its init_args), checked against transformers' VptqConfig; FP-Quant's FPQuantLinear
(IST-DASLab/FP-Quant's inference_lib/src/fp_quant/module/linear.py, MXFP4: `qweight` uint8 [out, in / 2], `scales`, the
Hadamard rotations), checked against transformers' FPQuantConfig; nanotron's serialize/weights.py and serialize/utils.py
get_path (model/<module path>/model_<param>_pp-rank-0-of-1_tp-rank-0-of-1.safetensors, one tensor "data" each, beside
checkpoint_metadata.json, model_config.json, config.yaml, optimizer/, lr_scheduler/, random/ and the run's latest.txt)
and its examples/llama/convert_nanotron_to_hf.py; ColossalAI's checkpoint_io/utils.py (model-00001.safetensors shards
without "-of-N" and model.safetensors.index.json; pytorch_optim-00001.bin holding {parameter number: Adam state},
pytorch_optim.bin.index.json, pytorch_optim_group.bin). Models are tiny Llamas under the names and shapes of
transformers' LlamaForCausalLM.

Found: an EXL3 checkpoint's parameters were its stored int16 values plus its sign vectors (32,271 for a model of 90,432:
"0 packed tensor(s)"); `convert --dtype bf16` cast every `suh` / `svh` to bfloat16, which exllamav3 refuses ("suh is
wrong datatype"), and check-dtype checked them as weights; diff-keys called each `trellis` and the weight it stands for
"unknown: no known cause" (errors), plan-devices said only "the library that quantized it loads it". fbgemm_fp8's
`input_scale_ub` was counted as a parameter, cast by `convert --dtype` and "unknown" in diff-keys. HIGGS' int16 weights
were counted one an int16 (42,528 for 90,432) and its `tables` / `tables2` codebooks counted, cast and "unknown"; SpQR's
int64 `dense_weights` one an int64 (23,380 for 90,432), every SpQR tensor "unknown"; VPTQ's packed `indices` as stored
(52,672), its codebooks counted, cast and "unknown"; FP-Quant's uint8 `qweight` one a byte (82,240), its Hadamard
rotations counted, cast and "unknown". `convert --dtype bf16` of an SpQR model (fp32 of a HIGGS one) wrote a config.json
dtype its transformers quantizer raises ValueError on, without a word. A nanotron step folder said "weights are in
subfolders (lr_scheduler/, random/): point at one, e.g. .../lr_scheduler", its model/ tree and the run folder "no weight
file" and no more. ColossalAI's optimizer/ was read through its pytorch_optim.bin.index.json as the model's shards
("pick one with --key" of each parameter's Adam state) and offered as a folder of weights; its group file was "a list, 1
item". EXL2 / EXL3 weights under a config.json without quantization_config were planned as the base model's clean load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json

HIDDEN, INTER, LAYERS, VOCAB = 64, 128, 2, 128
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
          "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
          "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float16"}
LLAMA_PARAMETERS = 2 * VOCAB * HIDDEN + LAYERS * (2 * HIDDEN * HIDDEN + 2 * 32 * HIDDEN + 3 * HIDDEN * INTER
                                                  + 2 * HIDDEN) + HIDDEN


def _llama_state_dict() -> dict[str, torch.Tensor]:
    """A tiny Llama's state dict as LlamaForCausalLM names it (fp16, seeded)."""
    generator = torch.Generator().manual_seed(27)
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,),
              "lm_head.weight": (VOCAB, HIDDEN)}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}."
        shapes |= {p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (32, HIDDEN),
                   p + "self_attn.v_proj.weight": (32, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                   p + "mlp.gate_proj.weight": (INTER, HIDDEN), p + "mlp.up_proj.weight": (INTER, HIDDEN),
                   p + "mlp.down_proj.weight": (HIDDEN, INTER), p + "input_layernorm.weight": (HIDDEN,),
                   p + "post_attention_layernorm.weight": (HIDDEN,)}
    return {name: (torch.randn(shape, generator=generator) * 0.02).half() for name, shape in shapes.items()}


def _base(folder: Path) -> Path:
    folder.mkdir(parents=True)
    save_file(_llama_state_dict(), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def _quantized_linears(pack: Callable[[str, torch.Tensor], dict[str, torch.Tensor]],
                       dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The tiny Llama's tensors as a quantizer saves them: each Linear but lm_head replaced by `pack(base, weight)`
    (its stored parts, keyed by their names under the layer's `base`), the rest kept at `dtype`."""
    tensors: dict[str, torch.Tensor] = {}
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name or name.startswith("lm_head"):
            tensors[name] = weight.to(dtype)
            continue
        base = name.removesuffix(".weight")
        tensors |= {f"{base}.{leaf}": value for leaf, value in pack(base, weight).items()}
    return tensors


def _exl3(folder: Path) -> Path:
    """A folder as exllamav3's convert.py writes it: every Linear as LinearEXL3.get_tensors saves it (4 bits, the
    head at 6), embeddings and norms in fp16."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(3)
    tensors: dict[str, torch.Tensor] = {}
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name:
            tensors[name] = weight
            continue
        out_features, in_features = weight.shape
        bits = 6 if name.startswith("lm_head") else 4
        base = name.removesuffix(".weight")
        tensors[base + ".trellis"] = torch.randint(-32768, 32767, (in_features // 16, out_features // 16, 16 * bits),
                                                   dtype=torch.int16, generator=generator)
        tensors[base + ".suh"] = torch.randn(in_features, generator=generator).half()
        tensors[base + ".svh"] = torch.randn(out_features, generator=generator).half()
        tensors[base + ".mcg"] = torch.tensor([-877912083], dtype=torch.int32)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = CONFIG | {"quantization_config": {"quant_method": "exl3", "version": "0.0.15", "bits": 4.0,
                                               "head_bits": 6, "calibration": {"rows": 250, "cols": 2048},
                                               "out_scales": "auto", "codebook": "mcg"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _fbgemm(folder: Path) -> Path:
    """A folder as transformers' FbgemmFp8HfQuantizer saves one (meta-llama/Llama-3.1-405B-Instruct-FP8's layout):
    each Linear but lm_head a float8_e4m3fn `weight` with float32 `weight_scale` [out, 1] and `input_scale_ub` [1]."""
    folder.mkdir(parents=True)

    def pack(base: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        scale = weight.float().abs().amax(dim=1, keepdim=True) / 448
        return {"weight": (weight.float() / scale).to(torch.float8_e4m3fn), "weight_scale": scale,
                "input_scale_ub": torch.tensor([1200.0])}

    tensors = _quantized_linears(pack, torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = CONFIG | {"torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0, "modules_to_not_convert": ["lm_head"]}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_exl3_checkpoint_counts_the_weights_its_trellises_stand_for(tmp_path: Path) -> None:
    """inspect said "exl3: 32,271 parameters once unpacked; 0 packed tensor(s), 0 side tensor(s)": the int16
    trellis values (a quarter of a 4-bit layer's weights) plus every sign vector, for a model of 90,432."""
    folder = _exl3(tmp_path / "exl3")
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"] == {"method": "exl3", "bits": None, "packed_tensors": 15, "side_tensors": 45,
                                 "parameters": LLAMA_PARAMETERS}
    assert LLAMA_PARAMETERS == 90_432
    text = " ".join(run_cli("inspect", str(folder)).stdout.split())
    assert "exl3: 90,432 parameters (90.4K) once unpacked; 15 packed" in text, text
    assert "modules 90.4K parameters once unpacked ├── lm_head 8.2K" in text, text


def test_convert_and_check_dtype_leave_exl3_sign_vectors_in_half(tmp_path: Path) -> None:
    """`convert --dtype bf16` cast all 30 `suh` / `svh` to bfloat16: LinearEXL3 asserts `suh.dtype == torch.half`
    ("suh is wrong datatype"), so the converted model no longer loads. They are kept now, as GPTQ's scales are, and
    check-dtype no longer checks them as weights."""
    folder = _exl3(tmp_path / "exl3")
    out = tmp_path / "bf16"
    result = run_cli("convert", str(folder), "-o", str(out), "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    assert "30 quantizer scale/state tensors kept as stored" in " ".join(result.stderr.split())
    with safe_open(str(out / "model.safetensors"), "pt") as converted:
        assert converted.get_slice("model.layers.0.self_attn.q_proj.suh").get_dtype() == "F16"
        assert converted.get_slice("lm_head.svh").get_dtype() == "F16"
        assert converted.get_slice("lm_head.trellis").get_dtype() == "I16"
        assert converted.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
    code, data = run_json("check-dtype", str(folder))
    assert code == 0 and data["tensors_checked"] == 6
    kept = {entry["name"] for entry in data["skipped"] if entry["reason"].startswith("a quantizer's scale or state")}
    assert len(kept) == 30 and "model.layers.1.mlp.down_proj.svh" in kept


def test_diff_keys_and_plan_devices_name_exllamav3(tmp_path: Path) -> None:
    """Against the model it was quantized from, each trellis, suh, svh and each weight they stand for was "unknown:
    no known cause" (60 errors); plan-devices said "the library that quantized it loads it"."""
    folder, base = _exl3(tmp_path / "exl3"), _base(tmp_path / "base")
    code, data = run_json("diff-keys", str(folder), str(base))
    assert code == 1
    reasons = {entry["reason"] for entry in data["missing"] + data["unexpected"]}
    assert "unknown" not in reasons, data
    missing = {entry["name"]: entry["detail"] for entry in data["missing"]}
    assert missing["model.layers.0.mlp.up_proj.weight"] == (
        "A stores it quantized as model.layers.0.mlp.up_proj.trellis; a model without that quantizer gets it only "
        "once the checkpoint is dequantized")
    unexpected = {entry["name"]: entry["detail"] for entry in data["unexpected"]}
    assert unexpected["model.layers.1.self_attn.k_proj.suh"].startswith(
        "written by ExLlamaV3 (EXL3) beside its quantized weight")
    assert unexpected["lm_head.trellis"].startswith("written by ExLlamaV3 (EXL3) as the quantized weight")
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB")
    assert result.exit_code == 2
    assert "exllamav3 (TabbyAPI) runs it" in " ".join(result.stderr.split())


def test_a_tensor_named_trellis_without_sign_vectors_is_not_read_as_exl3(tmp_path: Path) -> None:
    """Only a trellis beside its `suh` / `svh` is an EXL3 layer: a model's own int16 `trellis` buffer stays one."""
    path = tmp_path / "own.safetensors"
    save_file({"grid.trellis": torch.zeros(2, 3, 16, dtype=torch.int16), "grid.weight": torch.ones(4, 4)}, str(path))
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["quantized"] is None and data["num_params"] == 2 * 3 * 16 + 16


def test_fbgemm_fp8_input_scale_ub_is_a_quantizer_state_not_a_parameter(tmp_path: Path) -> None:
    """FbgemmFp8Linear's `input_scale_ub` (the activation scale's upper bound, float32 [1]) was counted as a parameter
    (90,446 for 90,432), cast to bfloat16 by `convert --dtype bf16` beside the kept `weight_scale`, and "unknown: no
    known cause" in diff-keys."""
    folder, base = _fbgemm(tmp_path / "fbgemm"), _base(tmp_path / "base")
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"]["parameters"] == LLAMA_PARAMETERS and data["quantized"]["side_tensors"] == 28
    out = tmp_path / "bf16"
    result = run_cli("convert", str(folder), "-o", str(out), "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    assert "28 quantizer scale/state tensors kept as stored" in " ".join(result.stderr.split())
    with safe_open(str(out / "model.safetensors"), "pt") as converted:
        assert converted.get_slice("model.layers.0.mlp.up_proj.input_scale_ub").get_dtype() == "F32"
    code, data = run_json("diff-keys", str(folder), str(base))
    unexpected = {entry["name"]: entry for entry in data["unexpected"]}
    entry = unexpected["model.layers.0.mlp.up_proj.input_scale_ub"]
    assert entry["reason"] == "quantization" and entry["severity"] == "warn"
    assert entry["detail"].startswith("written by fbgemm_fp8 (its activation scale's upper bound) beside its "
                                      "quantized weight"), entry
    assert data["worst_severity"] == "warn"


@pytest.mark.parametrize("make", [_exl3, _fbgemm])
def test_shard_keeps_every_quantized_tensor_byte_for_byte(tmp_path: Path, make: Any) -> None:
    """shard writes each packed and side tensor as stored, with the config that names the quantizer."""
    folder = make(tmp_path / "q")
    out = tmp_path / "shards"
    result = run_cli("shard", str(folder), "-o", str(out), "--max", "20KB")
    assert result.exit_code == 0, result.output
    index = json.loads((out / "model.safetensors.index.json").read_text())
    with safe_open(str(folder / "model.safetensors"), "pt") as source:
        names = list(source.keys())
        assert set(index["weight_map"]) == set(names)
        for name in names:
            with safe_open(str(out / index["weight_map"][name]), "pt") as shard:
                assert torch.equal(shard.get_tensor(name).view(torch.uint8), source.get_tensor(name).view(torch.uint8))
    assert "quantization_config" in json.loads((out / "config.json").read_text())


def _nanotron_run(run: Path) -> Path:
    """A nanotron run folder after one save, as its serialize/ code writes it (LlamaForTraining's names: qkv and
    gate_up fused), with latest.txt naming the step."""
    step = run / "10"
    state = _llama_state_dict()

    def put(name: str, tensor: torch.Tensor) -> None:
        *path, leaf = name.split(".")
        file = step / "model" / Path(*path) / f"model_{leaf}_pp-rank-0-of-1_tp-rank-0-of-1.safetensors"
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"data": tensor.contiguous()}, str(file), metadata={"version": "1.4"})

    put("model.token_position_embeddings.pp_block.token_embedding.weight", state["model.embed_tokens.weight"])
    for layer in range(LAYERS):
        hf, nt = f"model.layers.{layer}.", f"model.decoder.{layer}.pp_block."
        put(nt + "attn.qkv_proj.weight", torch.cat([state[hf + f"self_attn.{x}_proj.weight"] for x in "qkv"]))
        put(nt + "attn.o_proj.weight", state[hf + "self_attn.o_proj.weight"])
        put(nt + "mlp.gate_up_proj.weight", torch.cat([state[hf + "mlp.gate_proj.weight"],
                                                       state[hf + "mlp.up_proj.weight"]]))
        put(nt + "mlp.down_proj.weight", state[hf + "mlp.down_proj.weight"])
        put(nt + "input_layernorm.weight", state[hf + "input_layernorm.weight"])
        put(nt + "post_attention_layernorm.weight", state[hf + "post_attention_layernorm.weight"])
    put("model.final_layer_norm.pp_block.weight", state["model.norm.weight"])
    put("model.lm_head.pp_block.weight", state["lm_head.weight"])
    (step / "checkpoint_metadata.json").write_text(json.dumps(
        {"dp": 1, "metas": {"consumed_train_samples": 80, "last_train_step": 10}, "tp": 1, "version": "1.4"}))
    (step / "model_config.json").write_text(json.dumps({k: v for k, v in CONFIG.items() if k != "architectures"}))
    (step / "config.yaml").write_text("general:\n  project: tiny\n")
    for folder, name in (("random", "tp-0-of-1_dp-0-of-1_pp-0-of-1.pt"),
                         ("optimizer", "optimizer_pp-0-of-1_tp-0-of-1_exp-0-of-1.pt"),
                         ("lr_scheduler", "lr_scheduler_pp-0-of-1_tp-0-of-1.pt")):
        (step / folder).mkdir()
        torch.save({"last_epoch": 10}, step / folder / name)
    (run / "latest.txt").write_text("10")
    return step


@pytest.mark.parametrize(("where", "said"), [
    ("run", "its latest.txt names 10/, a nanotron checkpoint"),
    ("step", "it is a nanotron checkpoint"),
    ("model", "it is inside a nanotron checkpoint ({step})")])
@pytest.mark.parametrize("command", ["inspect", "diff-keys", "plan-devices", "convert", "shard", "check-dtype"])
def test_a_nanotron_checkpoint_is_named_with_its_converter(tmp_path: Path, where: str, said: str,
                                                           command: str) -> None:
    """A nanotron step folder was "weights are in subfolders (lr_scheduler/, random/): point at one, e.g.
    .../lr_scheduler" (the scheduler's state, not the model), its model/ folder and the run folder "folder holds no
    weight file" and no more. Each command names the layout and nanotron's own converter, for that step."""
    step = _nanotron_run(tmp_path / "run")
    source = {"run": tmp_path / "run", "step": step, "model": step / "model"}[where]
    args = {"inspect": [], "diff-keys": ["--model-class", "LlamaForCausalLM"], "plan-devices": ["--cpu", "1GB"],
            "convert": ["-o", str(tmp_path / "out")], "shard": ["-o", str(tmp_path / "out"), "--max", "1MB"],
            "check-dtype": []}[command]
    result = run_cli(command, str(source), *args)
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith(f"error: {source}: folder holds no weight file"), line
    assert said.format(step=step) in line, line
    assert "lr_scheduler" not in line and "point at one" not in line, line
    assert (f"torchrun --nproc_per_node=1 -m examples.llama.convert_nanotron_to_hf --checkpoint_path={step} "
            f"--save_path={step}.hf") in line, line
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_metadata_json_without_nanotron_files_is_not_called_nanotron(tmp_path: Path) -> None:
    """checkpoint_metadata.json beside an empty model/ folder is no nanotron save: nothing is said of nanotron."""
    folder = tmp_path / "other"
    (folder / "model").mkdir(parents=True)
    (folder / "checkpoint_metadata.json").write_text("{}")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and "nanotron" not in result.stderr


def _colossalai_save(step: Path) -> Path:
    """One save of a ColossalAI run (its Applications' save_checkpoint): booster.save_model(shard=True,
    use_safetensors=True) into modeling/, booster.save_optimizer(shard=True) into optimizer/, running_states.json."""
    state = _llama_state_dict()
    names = list(state)
    (step / "modeling").mkdir(parents=True)
    weight_map = {}
    for number, part in enumerate((names[:10], names[10:]), start=1):
        shard = f"model-{number:05d}.safetensors"  # get_shard_filename: no "-of-N"
        save_file({name: state[name] for name in part}, str(step / "modeling" / shard), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, shard)
    (step / "modeling" / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(t.numel() * 2 for t in state.values())}, "weight_map": weight_map}))
    (step / "modeling" / "config.json").write_text(json.dumps(CONFIG))
    (step / "optimizer").mkdir()
    states = {number: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(state[name].shape),
                       "exp_avg_sq": torch.zeros(state[name].shape)} for number, name in enumerate(names)}
    torch.save(states, step / "optimizer" / "pytorch_optim-00001.bin")
    (step / "optimizer" / "pytorch_optim.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 1, "param_groups": "pytorch_optim_group.bin"},
         "weight_map": dict.fromkeys(map(str, states), "pytorch_optim-00001.bin")}))
    torch.save([{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": list(states)}],
               step / "optimizer" / "pytorch_optim_group.bin")
    (step / "running_states.json").write_text(json.dumps({"epoch": 0, "step": 10, "sample_start_index": 80}))
    return step


def test_a_colossalai_optimizer_folder_is_training_state_not_shards(tmp_path: Path) -> None:
    """optimizer/'s pytorch_optim.bin.index.json was read as the model's shard index: "no state dict (a mapping of
    names to tensors) found; top-level entries: 0 (a state dict of 3 tensors: pick it with --key), ...", each
    parameter's Adam state offered as a model; the save folder pointed at optimizer/ as holding weights."""
    step = _colossalai_save(tmp_path / "epoch-0_step-10")
    result = run_cli("inspect", str(step / "optimizer"))
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert "it holds training state only (pytorch_optim-00001.bin, pytorch_optim_group.bin" in line, line
    assert "--key" not in line, line
    line = " ".join(run_cli("inspect", str(step)).stderr.split())
    assert f"weights are in subfolders (modeling/): point at one, e.g. {step / 'modeling'}" in line, line


def test_colossalai_optimizer_files_say_what_they_hold_and_where_the_model_is(tmp_path: Path) -> None:
    """Named on its own, a pytorch_optim-0000N.bin shard was "pick one with --key" (a parameter's Adam state is no
    model) and pytorch_optim_group.bin "the file holds a list, 1 item"."""
    step = _colossalai_save(tmp_path / "epoch-0_step-10")
    result = run_cli("inspect", str(step / "optimizer" / "pytorch_optim-00001.bin"))
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert "no model weights: the file holds an optimizer's per-parameter states keyed by parameter number, " \
           "without its param_groups (ColossalAI's pytorch_optim-0000N.bin shards" in line, line
    assert f"The weights are in a folder beside this one (modeling/): point weightdoctor at {step / 'modeling'}" \
        in line, line
    assert "its pickle is safe" in line and "--key" not in line, line
    line = " ".join(run_cli("inspect", str(step / "optimizer" / "pytorch_optim_group.bin")).stderr.split())
    assert "the file holds an optimizer's param_groups alone" in line, line
    # A Trainer's optimizer.pt in a folder of its own is not pointed at any folder beside it.
    (tmp_path / "run").mkdir()
    torch.save({"state": {}, "param_groups": []}, tmp_path / "run" / "optimizer.pt")
    line = " ".join(run_cli("inspect", str(tmp_path / "run" / "optimizer.pt")).stderr.split())
    assert "a folder beside this one" not in line and "epoch-0_step-10" not in line, line


def test_a_colossalai_modeling_folder_runs_through_all_six_commands(tmp_path: Path) -> None:
    """modeling/ (shards named model-0000N.safetensors, no "-of-N", with their index) reads as the model it is."""
    step = _colossalai_save(tmp_path / "epoch-0_step-10")
    modeling, base = step / "modeling", _base(tmp_path / "base")
    code, data = run_json("inspect", str(modeling))
    assert code == 0 and data["num_params"] == LLAMA_PARAMETERS and data["sharded"]
    code, data = run_json("diff-keys", str(modeling), str(base))
    assert code == 0 and not data["missing"] and not data["unexpected"]
    code, data = run_json("plan-devices", str(modeling), "--gpu", "1GB", "--cpu", "1GB")
    assert code == 0 and data["verdict"] == "fits-on-gpus" and data["num_params"] == LLAMA_PARAMETERS, data
    out = tmp_path / "one.safetensors"
    assert run_cli("convert", str(modeling), "-o", str(out)).exit_code == 0
    with safe_open(str(out), "pt") as converted:
        assert len(list(converted.keys())) == 21
    assert run_cli("shard", str(modeling), "-o", str(tmp_path / "shards"), "--max", "50KB").exit_code == 0
    assert json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())["weight_map"]
    code, data = run_json("check-dtype", str(modeling))
    assert code == 0 and data["tensors_checked"] == 21


def _higgs(folder: Path, bits: int = 4) -> Path:
    """A HIGGS-quantized Llama as transformers' save_pretrained writes it: each Linear but lm_head a HiggsLinear
    of `bits` (2, 3 or 4), whose state_dict (names, shapes, dtypes) is taken from the installed transformers' own
    class."""
    from transformers.integrations.higgs import HiggsLinear

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(5)

    def pack(base: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        layer = HiggsLinear(weight.shape[1], weight.shape[0], num_bits=bits, bias=False, dtype=torch.float16,
                            device="meta", group_size=64, hadamard_size=64)
        return {leaf: torch.randint(-32768, 32767, like.shape, dtype=torch.int16, generator=generator)
                if like.dtype == torch.int16 else torch.randn(like.shape, generator=generator).half()
                for leaf, like in layer.state_dict().items()}

    tensors = _quantized_linears(pack)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = CONFIG | {"quantization_config": {"quant_method": "higgs", "bits": bits, "p": 2, "group_size": 64,
                                               "hadamard_size": 64, "modules_to_not_convert": ["lm_head"]}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_higgs_checkpoint_counts_its_int16_weights_and_keeps_its_codebooks(tmp_path: Path) -> None:
    """HiggsLinear's int16 `weight` [out x 4 / 16, in] holds four 4-bit weights an int16: inspect counted one
    (42,528 parameters for 90,432, "0 packed tensor(s)"), its codebooks `tables` / `tables2` as parameters;
    `convert --dtype bf16` cast those codebooks (the values every weight dequantizes to) and diff-keys called them
    "unknown: no known cause"."""
    folder, base = _higgs(tmp_path / "higgs"), _base(tmp_path / "base")
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"] == {"method": "higgs", "bits": 4, "packed_tensors": 14, "side_tensors": 42,
                                 "parameters": LLAMA_PARAMETERS}
    out = tmp_path / "bf16"
    result = run_cli("convert", str(folder), "-o", str(out), "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    assert "42 quantizer scale/state tensors kept as stored" in " ".join(result.stderr.split())
    with safe_open(str(out / "model.safetensors"), "pt") as converted:
        assert converted.get_slice("model.layers.0.mlp.up_proj.tables2").get_dtype() == "F16"
        assert converted.get_slice("model.layers.0.mlp.up_proj.weight").get_dtype() == "I16"
        assert converted.get_slice("model.norm.weight").get_dtype() == "BF16"
    code, data = run_json("diff-keys", str(folder), str(base))
    unexpected = {entry["name"]: entry for entry in data["unexpected"]}
    assert "unknown" not in {entry["reason"] for entry in data["unexpected"]}, data["unexpected"]
    assert unexpected["model.layers.1.self_attn.o_proj.tables"]["detail"].startswith(
        "written by transformers' HIGGS quantization beside its quantized weight")


def _spqr(folder: Path) -> Path:
    """An SpQR-quantized Llama as transformers' SpQR quantizer reads it: each Linear but lm_head spqr_quant's
    QuantizedLinear (inference_lib/src/spqr_quant/inference.py: `dense_weights` int64 [tiles x 16], CSR
    `row_offsets` int32 [rows + 1] and `col_vals` int32 [nnz], `in_perm` int32 [cols / 2], uint16 pairs), with the
    `shapes` SpQRConfig needs to build the layers."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(7)
    shapes: dict[str, int] = {}

    def pack(base: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        rows, cols = weight.shape
        parts = {"dense_weights": torch.randint(-2**62, 2**62, (rows // 16 * cols // 16 * 16,), dtype=torch.int64,
                                                generator=generator),
                 "row_offsets": torch.sort(torch.randint(0, 37, (rows + 1,), dtype=torch.int32,
                                                         generator=generator)).values,
                 "col_vals": torch.randint(-2**31, 2**31 - 1, (37,), dtype=torch.int32, generator=generator),
                 "in_perm": torch.randint(-2**31, 2**31 - 1, (cols // 2,), dtype=torch.int32, generator=generator)}
        shapes.update({f"{base}.{leaf}.shape": value.numel() for leaf, value in parts.items()})
        return parts

    tensors = _quantized_linears(pack)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = CONFIG | {"quantization_config": {"quant_method": "spqr", "bits": 3, "beta1": 16, "beta2": 16,
                                               "shapes": shapes, "modules_to_not_convert": ["lm_head"]}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_spqr_checkpoint_counts_its_dense_weights_and_names_its_tensors(tmp_path: Path) -> None:
    """SpQR's int64 `dense_weights` hold 16 3-bit weights each: inspect counted one (23,380 parameters, "0 packed
    tensor(s), 0 side tensor(s)", for 90,432); diff-keys called every SpQR tensor and every weight it stands for
    "unknown: no known cause"."""
    from transformers.utils.quantization_config import SpQRConfig

    folder, base = _spqr(tmp_path / "spqr"), _base(tmp_path / "base")
    SpQRConfig.from_dict(json.loads((folder / "config.json").read_text())["quantization_config"])  # a valid config
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"] == {"method": "spqr", "bits": 3, "packed_tensors": 14, "side_tensors": 42,
                                 "parameters": LLAMA_PARAMETERS}
    code, data = run_json("diff-keys", str(folder), str(base))
    entries = data["missing"] + data["unexpected"]
    assert "unknown" not in {entry["reason"] for entry in entries}, entries
    details = {entry["name"]: entry["detail"] for entry in entries}
    assert details["model.layers.0.mlp.down_proj.weight"].startswith(
        "A stores it quantized as model.layers.0.mlp.down_proj.dense_weights")
    assert details["model.layers.0.mlp.down_proj.col_vals"].startswith("written by SpQR beside its quantized weight")
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert data["worst_severity"] == "info", data


@pytest.mark.parametrize(("make", "dtype", "said"), [
    (_spqr, "bf16", "--dtype bfloat16 on an SpQR checkpoint: transformers' quantizer for it takes float16 only, "
                    "and from_pretrained hands it the dtype config.json names (a converted folder's follows the "
                    "cast): it raises ValueError, so such a folder does not load unless given dtype=torch.float16 "
                    "(--dtype fp16 keeps it loadable)"),
    (_higgs, "fp32", "--dtype float32 on a HIGGS checkpoint: transformers' quantizer for it takes float16 or "
                     "bfloat16 only"),
    (_fbgemm, "fp16", "--dtype float16 on an fbgemm_fp8 checkpoint: transformers' quantizer for it takes bfloat16 "
                      "only, and from_pretrained hands it the dtype config.json names (a converted folder's follows "
                      "the cast): it runs the model in bfloat16 anyway (with a warning)")])
def test_convert_says_when_a_quantizer_refuses_the_dtype_it_casts_to(tmp_path: Path, make: Any, dtype: str,
                                                                    said: str) -> None:
    """`convert --dtype bf16` of an SpQR model wrote config.json's dtype bfloat16 without a word: transformers'
    SpQR quantizer raises ValueError for any dtype but float16 (HIGGS for any but float16 / bfloat16), and
    from_pretrained's dtype="auto" is the config's, so the converted folder no longer loaded as it was."""
    folder = make(tmp_path / "q")
    result = run_cli("convert", str(folder), "-o", str(tmp_path / "out"), "--dtype", dtype)
    assert result.exit_code == 0, result.output
    assert f"warning: {said}" in " ".join(result.stderr.split()), result.stderr
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}[dtype] in (
        written.get("dtype"), written.get("torch_dtype"))


def test_convert_to_a_dtype_the_quantizer_takes_says_nothing_of_it(tmp_path: Path) -> None:
    """HIGGS in bfloat16 and SpQR kept in float16 load as converted: no such warning."""
    for make, dtype in ((_higgs, "bf16"), (_spqr, "fp16")):
        folder = make(tmp_path / f"{make.__name__}-{dtype}")
        result = run_cli("convert", str(folder), "-o", str(tmp_path / f"out-{make.__name__}"), "--dtype", dtype)
        assert result.exit_code == 0 and "transformers' quantizer for it takes" not in result.stderr


@pytest.mark.parametrize("kind", ["exl3", "exl2"])
def test_exllama_weights_under_a_config_without_quantization_config_are_not_planned_as_the_base(
        tmp_path: Path, kind: str) -> None:
    """EXL2 repos from before exllamav2 wrote its settings into config.json (and any EXL2 / EXL3 folder given the base
    model's config.json) have no quantization_config: plan-devices planned a clean load of the base model ("fits")
    and inspect said nothing, where from_pretrained leaves every quantized layer at its init."""
    from tests.test_third_party_layouts4 import _exl2_llama

    folder = tmp_path / kind
    if kind == "exl3":
        _exl3(folder)
    else:
        _exl2_llama(folder)
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (folder / "config.json").write_text(json.dumps(config))
    result = run_cli("plan-devices", str(folder), "--cpu", "1GB")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    library = {"exl3": "ExLlamaV3 (EXL3) trellis-packed", "exl2": "ExLlamaV2 (EXL2) q_weight-packed"}[kind]
    runner = {"exl3": "exllamav3 (TabbyAPI) runs it",
              "exl2": "exllamav2 (TabbyAPI, text-generation-webui) runs it"}[kind]
    assert f"layers hold {library} weights" in line, line
    assert ("but config.json has no quantization_config: from_pretrained builds the model unquantized, leaves these "
            f"layers' weights at their init (missing keys) and drops the packed tensors (unexpected keys); "
            f"transformers has no quantizer for {kind}: {runner}; no device map to plan") in line, line
    code, data = run_json("inspect", str(folder))
    assert code == 0 and any(f"hold {library} weights" in warning for warning in data["warnings"]), data["warnings"]
    code, data = run_json("plan-devices", str(folder), "--cpu", "1GB", "--dtype", "fp16")
    assert code == 0 and any(w.startswith("planned as the unquantized model at fp16: ") for w in data["warnings"])


def _vptq(folder: Path, *, shared: bool = False) -> Path:
    """A VPTQ-quantized Llama (VPTQ-community's layout) as transformers' VPTQ quantizer reads it: each Linear but
    lm_head VQuantLinear's parameters (vptq/layers/vqlinear.py, is_indice_packed: `indices` int32 [codebooks,
    out / vector_len, ceil(group_size x index bits / 32)], `centroids` / `res_centroids` nn.Embedding weights, the
    norm's `weight_scale` / `weight_bias` [in], `perm` int16 [in]), with its init_args in config_for_layers (or one
    entry of shared_layer_config, under the key transformers looks it up by)."""
    import math

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(11)
    vector, centroids, residual = 8, 256, 16
    layers: dict[str, dict[str, Any]] = {}

    def pack(base: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        out_features, in_features = weight.shape
        bits = int(math.log2(centroids)) + int(math.log2(residual))
        layers[base] = {"bias": False, "enable_norm": True, "enable_perm": True, "group_num": 1,
                        "group_size": in_features, "in_features": in_features, "out_features": out_features,
                        "indices_as_float": False, "is_indice_packed": True, "num_centroids": [-1, centroids],
                        "num_res_centroids": [-1, residual], "outlier_size": 0, "vector_lens": [-1, vector]}
        return {
            "indices": torch.randint(-2**31, 2**31 - 1, (1, out_features // vector, math.ceil(in_features * bits / 32)),
                                     dtype=torch.int32, generator=generator),
            "centroids.weight": torch.randn(1, centroids * vector, generator=generator).half(),
            "res_centroids.weight": torch.randn(1, residual * vector, generator=generator).half(),
            "weight_scale": torch.rand(in_features, generator=generator).half(),
            "weight_bias": torch.randn(in_features, generator=generator).half(),
            "perm": torch.randperm(in_features, generator=generator).to(torch.int16)}

    tensors = _quantized_linears(pack)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    settings: dict[str, Any] = {"quant_method": "vptq", "config_for_layers": layers, "shared_layer_config": {}}
    if shared:  # one entry for every layer, without in / out features, keyed as transformers reads it ("layers")
        one = next(iter(layers.values()))
        settings |= {"config_for_layers": {}, "shared_layer_config": {"layers": {
            k: v for k, v in one.items() if k not in ("in_features", "out_features", "group_size")} | {
            "group_size": HIDDEN}}}
    (folder / "config.json").write_text(json.dumps(CONFIG | {"quantization_config": settings}))
    return folder


def test_a_vptq_checkpoint_counts_its_layers_and_keeps_its_codebooks(tmp_path: Path) -> None:
    """VPTQ's packed int32 `indices` were counted as stored (52,672 parameters for 90,432, "0 packed tensor(s)"),
    its codebooks (`centroids.weight`, `res_centroids.weight`) and norm as parameters; `convert --dtype bf16` cast
    the codebooks every weight is looked up in, and diff-keys called the indices, codebooks and permutation
    "unknown: no known cause"."""
    from transformers.utils.quantization_config import VptqConfig

    folder, base = _vptq(tmp_path / "vptq"), _base(tmp_path / "base")
    VptqConfig.from_dict(json.loads((folder / "config.json").read_text())["quantization_config"])
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"] == {"method": "vptq", "bits": None, "packed_tensors": 14, "side_tensors": 70,
                                 "parameters": LLAMA_PARAMETERS}
    out = tmp_path / "bf16"
    result = run_cli("convert", str(folder), "-o", str(out), "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    assert "56 quantizer scale/state tensors kept as stored" in " ".join(result.stderr.split())
    with safe_open(str(out / "model.safetensors"), "pt") as converted:
        assert converted.get_slice("model.layers.0.mlp.up_proj.centroids.weight").get_dtype() == "F16"
        assert converted.get_slice("model.layers.0.mlp.up_proj.weight_bias").get_dtype() == "F16"
        assert converted.get_slice("model.norm.weight").get_dtype() == "BF16"
    code, data = run_json("diff-keys", str(folder), str(base))
    entries = data["missing"] + data["unexpected"]
    assert "unknown" not in {entry["reason"] for entry in entries}, entries
    details = {entry["name"]: entry["detail"] for entry in entries}
    assert details["model.layers.1.mlp.gate_proj.weight"].startswith(
        "A stores it quantized as model.layers.1.mlp.gate_proj.indices")
    assert details["model.layers.1.mlp.gate_proj.res_centroids.weight"].startswith(
        "written by VPTQ beside its quantized weight")
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert data["worst_severity"] == "info", data


def test_a_vptq_shared_layer_config_counts_from_the_indices(tmp_path: Path) -> None:
    """With shared_layer_config alone (no in / out features per layer, one group_size for all), each layer is the
    inputs its permutation holds (transformers builds it at the model's in_features) by vector_len outputs per index
    row: down_proj's 128 inputs, not the shared group_size's 64."""
    folder = _vptq(tmp_path / "vptq", shared=True)
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["quantized"]["parameters"] == LLAMA_PARAMETERS, data["quantized"]


def _fp_quant(folder: Path) -> Path:
    """An FP-Quant (MXFP4, real quantization) Llama as transformers saves it: each Linear but lm_head
    FPQuantLinear's buffers (IST-DASLab/FP-Quant's inference_lib/src/fp_quant/module/linear.py: `qweight` uint8
    [out, in / 2], `scales` uint8 [out, in / 32], `forward_hadamard_matrix` / `backward_hadamard_matrix`
    [group, group] in the model's bfloat16)."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(13)

    def pack(base: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        out_features, in_features = weight.shape
        return {"qweight": torch.randint(0, 255, (out_features, in_features // 2), dtype=torch.uint8,
                                         generator=generator),
                "scales": torch.randint(0, 255, (out_features, in_features // 32), dtype=torch.uint8,
                                        generator=generator),
                "forward_hadamard_matrix": torch.randn(32, 32, generator=generator).bfloat16(),
                "backward_hadamard_matrix": torch.randn(32, 32, generator=generator).bfloat16()}

    tensors = _quantized_linears(pack, torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = CONFIG | {"torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "fp_quant", "forward_dtype": "mxfp4", "forward_method": "abs_max", "backward_dtype": "bf16",
        "store_master_weights": False, "hadamard_group_size": 32, "pseudoquantization": False,
        "modules_to_not_convert": ["lm_head"], "transform_init": "hadamard"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_fp_quant_checkpoint_counts_two_fp4_weights_a_byte_and_keeps_its_rotations(tmp_path: Path) -> None:
    """FP-Quant's uint8 `qweight` holds two FP4 weights a byte: inspect counted one (82,240 parameters for 90,432,
    "0 packed tensor(s)") and its Hadamard rotations as parameters; `convert --dtype fp16` cast the rotations and
    diff-keys called them "unknown: no known cause" (errors), also against the model class its config quantizes."""
    from transformers.utils.quantization_config import FPQuantConfig

    folder, base = _fp_quant(tmp_path / "fpquant"), _base(tmp_path / "base")
    FPQuantConfig.from_dict(json.loads((folder / "config.json").read_text())["quantization_config"])
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"] == {"method": "fp_quant", "bits": None, "packed_tensors": 14, "side_tensors": 42,
                                 "parameters": LLAMA_PARAMETERS}
    out = tmp_path / "fp16"
    result = run_cli("convert", str(folder), "-o", str(out), "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    assert "28 quantizer scale/state tensors kept as stored" in " ".join(result.stderr.split())
    with safe_open(str(out / "model.safetensors"), "pt") as converted:
        assert converted.get_slice("model.layers.0.mlp.up_proj.forward_hadamard_matrix").get_dtype() == "BF16"
        assert converted.get_slice("model.norm.weight").get_dtype() == "F16"
    code, data = run_json("diff-keys", str(folder), str(base))
    entries = data["missing"] + data["unexpected"]
    assert "unknown" not in {entry["reason"] for entry in entries}, entries
    details = {entry["name"]: entry["detail"] for entry in entries}
    assert details["model.layers.0.self_attn.o_proj.backward_hadamard_matrix"].startswith(
        "written by FP-Quant (its Hadamard rotation) beside its quantized weight")
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert data["worst_severity"] == "info", data


def test_a_models_own_indices_buffer_is_not_called_vptq(tmp_path: Path) -> None:
    """`indices` is a name a model may give its own buffer: only one beside a VPTQ codebook is VPTQ's."""
    own, other = tmp_path / "own.safetensors", tmp_path / "other.safetensors"
    save_file({"emb.indices": torch.zeros(4, dtype=torch.int64), "emb.weight": torch.ones(4, 4)}, str(own))
    save_file({"emb.weight": torch.ones(4, 4)}, str(other))
    code, data = run_json("diff-keys", str(own), str(other))
    (entry,) = data["unexpected"]
    # No quantizer's at all (review 75): the reason it had before VPTQ was read, not a warn that names quantizers.
    assert "VPTQ" not in entry["detail"] and entry["reason"] == "unknown", entry
