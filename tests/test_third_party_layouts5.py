"""A fifth round of checkpoints as other tools write them: Accelerate's save_state with several models, peft's IA3
adapters, DeepSpeed universal checkpoints, timm's train.py output folders, sentence-transformers' Dense modules."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _accelerate_state(folder: Path, safe: bool = True) -> None:
    """accelerator.save_state(folder) after prepare(generator, discriminator, optimizers): one weight file per model,
    the first under transformers' name, the i-th with `_i` before the suffix (save_accelerator_state's
    `weights_name.replace(".", f"_{i}.")`), then optimizer.bin, optimizer_1.bin, random_states_0.pkl."""
    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    generator = {"0.weight": torch.randn(16, 8), "0.bias": torch.zeros(16), "1.weight": torch.randn(4, 16)}
    discriminator = {"0.weight": torch.randn(32, 4), "0.bias": torch.zeros(32), "1.weight": torch.randn(1, 32),
                     "1.bias": torch.zeros(1)}
    for i, weights in enumerate((generator, discriminator)):
        if safe:
            save_file(weights, str(folder / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")),
                      metadata={"format": "pt"})
        else:
            torch.save(weights, folder / ("pytorch_model.bin" if i == 0 else f"pytorch_model_{i}.bin"))
        torch.save({"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
                   folder / ("optimizer.bin" if i == 0 else f"optimizer_{i}.bin"))
    torch.save({"step": 1, "random_state": (3, (1, 2), None), "torch_manual_seed": torch.zeros(8, dtype=torch.uint8)},
               folder / "random_states_0.pkl")


def test_an_accelerate_state_with_two_models_names_the_second_models_file(tmp_path: Path) -> None:
    """A GAN's save_state folder holds model.safetensors (the generator) and model_1.safetensors (the
    discriminator). Every command read the first alone and said nothing of the second, as if the folder held one
    model."""
    for safe, second in ((True, "model_1.safetensors"), (False, "pytorch_model_1.bin")):
        folder = tmp_path / f"gan-{safe}"
        _accelerate_state(folder, safe)
        code, data = run_json("inspect", str(folder))
        assert code == 0 and data["num_tensors"] == 3, data
        said = [w for w in data["warnings"] if second in w]
        assert len(said) == 1 and "save_state" in said[0] and "name one to read it" in said[0], data["warnings"]
        result = run_cli("check-dtype", str(folder))
        assert second in " ".join(result.stderr.split()), result.stderr
        # Named, the second model is read.
        code, data = run_json("inspect", str(folder / second))
        assert code == 0 and data["num_tensors"] == 4 and data["warnings"] == [], data


def _ia3_adapter(folder: Path, trained: bool) -> None:
    """peft's IA3Config on GPT-2 (target c_attn and mlp.c_proj, the latter a feedforward module): one `ia3_l` vector
    per target, (out, 1) on attention, (1, in) on a feedforward module, initialized to ones (init_ia3_weights)."""
    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    weights = {}
    for layer in range(2):
        for module, shape in (("attn.c_attn", (96, 1)), ("mlp.c_proj", (1, 128))):
            value = torch.ones(shape) + (0.05 * torch.randn(shape) if trained else 0)
            weights[f"base_model.model.transformer.h.{layer}.{module}.ia3_l"] = value
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "auto_mapping": None, "base_model_name_or_path": "openai-community/gpt2", "fan_in_fan_out": True,
        "feedforward_modules": ["mlp.c_proj"], "inference_mode": True, "init_ia3_weights": True,
        "modules_to_save": None, "peft_type": "IA3", "peft_version": "0.13.2", "revision": None,
        "target_modules": ["mlp.c_proj", "c_attn"], "task_type": "CAUSAL_LM"}, indent=2))


def test_an_ia3_adapter_at_its_initialization_is_named_as_one(tmp_path: Path) -> None:
    """peft starts every IA3 vector at ones (scaling by 1 changes nothing). inspect --stats said of each "every value
    is 1 where variation is expected: a constant weight never breaks symmetry", as of a broken layer, and nothing
    of the adapter as a whole."""
    _ia3_adapter(tmp_path / "ia3", trained=False)
    code, data = run_json("inspect", str(tmp_path / "ia3"), "--stats")
    assert code == 0, data
    findings = [f for f in data["findings"] if f["tensor"] is not None]
    assert len(findings) == 4 and all(f["tensor"].endswith(".ia3_l") for f in findings), findings
    for finding in findings:
        assert "where variation is expected" not in finding["message"] and "symmetry" not in finding["hint"], finding
        assert "an IA3 adapter still at its initialization" in finding["hint"], finding
    # Trained, the vectors vary about 1: nothing to say of them.
    _ia3_adapter(tmp_path / "ia3-trained", trained=True)
    code, data = run_json("inspect", str(tmp_path / "ia3-trained"), "--stats")
    assert code == 0 and not [f for f in data["findings"] if f["code"] == "constant"], data["findings"]


_UNIVERSAL_PARAMETERS = {"embed.weight": (16, 8), "layers.0.attn.weight": (8, 8), "layers.0.attn.bias": (8,),
                         "head.weight": (4, 8)}


def _universal_checkpoint(run: Path, zero3: bool) -> Path:
    """A step converted by DeepSpeed's ds_to_universal.py: global_step10_universal/ holds the model states files
    copied from the step (mp_rank_00_model_states.pt; under ZeRO-3 its parameters are torch.empty(0) placeholders)
    and zero/, one folder per parameter, named by it, holding fp32.pt ({"param": the fp32 value}), exp_avg.pt and
    exp_avg_sq.pt (Adam's moments) and step.pt; zero/optimizer_state.pt holds the rest of the optimizer state. The
    run folder gets latest_universal naming it."""
    step = run / "global_step10_universal"
    (step / "zero").mkdir(parents=True)
    torch.manual_seed(0)
    for name, shape in _UNIVERSAL_PARAMETERS.items():
        folder = step / "zero" / name
        folder.mkdir()
        torch.save({"param": torch.randn(shape)}, folder / "fp32.pt")
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.save({"param": torch.zeros(shape)}, folder / f"{moment}.pt")
        torch.save(torch.tensor(10.0), folder / "step.pt")
    torch.save({"optimizer_state_dict": {"param_groups": [{"lr": 1e-3, "params": [0, 1, 2, 3]}]}},
               step / "zero" / "optimizer_state.pt")
    module = {name: torch.empty(0, dtype=torch.bfloat16) if zero3 else torch.zeros(shape, dtype=torch.bfloat16)
              for name, shape in _UNIVERSAL_PARAMETERS.items()}
    torch.save({"module": module, "buffer_names": [], "optimizer": None, "ds_version": "0.14.4", "global_steps": 10,
                "param_shapes": [{name: torch.Size(shape) for name, shape in _UNIVERSAL_PARAMETERS.items()}],
                "dp_world_size": 2, "mp_world_size": 1}, step / "mp_rank_00_model_states.pt")
    (run / "latest_universal").write_text("global_step10_universal")
    return step


def test_a_deepspeed_universal_checkpoint_says_where_its_weights_are(tmp_path: Path) -> None:
    """ds_to_universal.py output. The ZeRO-3 step folder was sent to zero_pp_rank_*_optim_states.pt partitions and
    zero_to_fp32.py, neither of which a universal checkpoint has; zero/ pointed at a parameter's folder, which was
    "several weight files and no index (exp_avg.pt, exp_avg_sq.pt, fp32.pt, step.pt)", as if they were shards."""
    step = _universal_checkpoint(tmp_path / "run", zero3=True)
    for source in (step, step / "mp_rank_00_model_states.pt", step / "zero"):
        result = run_cli("inspect", str(source))
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, (source, result.stdout)
        assert "a DeepSpeed universal checkpoint (ds_to_universal.py)" in message, message
        assert "zero/<name>/fp32.pt" in message and "4 parameters" in message, message
        assert "zero_pp_rank" not in message and "zero_to_fp32" not in message, message
        assert "point at one" not in message, message
    result = run_cli("inspect", str(step / "zero" / "layers.0.attn.weight"))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "several weight files and no index" not in message, message
    assert "one parameter of a DeepSpeed universal checkpoint" in message and "fp32.pt" in message, message
    # ZeRO-3 on two data-parallel ranks: one model states file per rank beside zero/.
    (step / "mp_rank_00_model_states.pt").rename(step / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    (step / "zero_pp_rank_1_mp_rank_00_model_states.pt").write_bytes(
        (step / "zero_pp_rank_0_mp_rank_00_model_states.pt").read_bytes())
    message = " ".join(run_cli("inspect", str(step)).stderr.split())
    assert "a DeepSpeed universal checkpoint" in message and "zero_to_fp32" not in message, message
    # A parameter's fp32.pt, named, is read.
    code, data = run_json("inspect", str(step / "zero" / "layers.0.attn.weight" / "fp32.pt"))
    assert code == 0 and data["num_params"] == 64, data
    # ZeRO-1/2: the model states hold the weights (in the training dtype): read as before.
    code, data = run_json("inspect", str(_universal_checkpoint(tmp_path / "run2", zero3=False)))
    assert code == 0 and data["num_params"] == 16 * 8 + 64 + 8 + 32 and data["nested_key"] == "module", data


def test_a_timm_train_output_folder_names_its_pth_tar_checkpoints(tmp_path: Path) -> None:
    """timm's train.py (its CheckpointSaver) writes checkpoint-N.pth.tar, last.pth.tar and model_best.pth.tar beside
    args.yaml and summary.csv, as PyTorch's ImageNet example names them. Named, each reads; the folder was "holds no
    weight file", as if the run had saved nothing."""
    import argparse

    folder = tmp_path / "20240101-120000-resnet18-224"
    folder.mkdir()
    torch.manual_seed(0)
    state = {"conv1.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(10, 8), "fc.bias": torch.zeros(10)}
    saved = {"epoch": 10, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
             "version": 2, "args": argparse.Namespace(model="resnet18", lr=0.1), "metric": 71.2,
             "state_dict_ema": {k: v + 0.01 for k, v in state.items()}}
    for name in ("checkpoint-9.pth.tar", "checkpoint-10.pth.tar", "last.pth.tar", "model_best.pth.tar"):
        torch.save(saved, folder / name)
    (folder / "args.yaml").write_text("model: resnet18\nlr: 0.1\n")
    (folder / "summary.csv").write_text("epoch,train_loss,eval_top1\n10,1.2,71.2\n")
    result = run_cli("inspect", str(folder))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.stdout
    assert ("checkpoint-9.pth.tar, checkpoint-10.pth.tar, last.pth.tar, model_best.pth.tar" in message
            and "name one to read it" in message), message
    code, data = run_json("inspect", str(folder / "model_best.pth.tar"))
    assert code == 0 and data["nested_key"] == "state_dict" and data["num_tensors"] == 3, data


def test_check_dtype_says_how_sentence_transformers_loads_a_dense_module(tmp_path: Path) -> None:
    """A sentence-transformers Dense module folder (2_Dense/: its own config.json of in_features, out_features,
    bias, activation_function, and model.safetensors): Dense.load builds the layer in float32 and copies the weights
    in. check-dtype said "dtype='auto' goes by the weights", which is from_pretrained's rule, not this loader's."""
    from safetensors.torch import save_file

    folder = tmp_path / "2_Dense"
    folder.mkdir()
    save_file({"linear.weight": torch.randn(16, 32).half(), "linear.bias": torch.zeros(16).half()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 16, "bias": True,
                                                    "activation_function": "torch.nn.modules.activation.Tanh"}))
    code, data = run_json("check-dtype", str(folder))
    assert code == 0, data
    message = data["config_agreement"]["message"]
    assert "dtype='auto'" not in message and "a sentence-transformers Dense config" in message, message
    assert "float32" in message and "float16 weights are up-cast" in message, message


def test_shards_of_an_original_controlnet_or_vae_say_their_loaders_read_one_file(tmp_path: Path) -> None:
    """lllyasviel's ControlNet 1.1 files (control_v11p_sd15_canny.pth: input_blocks.*, zero_convs.*,
    input_hint_block.*, middle_block_out.*, no prefix), their extracted fp16 copies (control_model.*), and
    Stability's original-layout VAE (vae-ft-mse-840000-ema-pruned: encoder.down.N.*, post_quant_conv.*) are loaded
    as one file by AUTOMATIC1111, ComfyUI and from_single_file: shard split them into model-*.safetensors with
    nothing said."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    controlnet = {"input_blocks.0.0.weight": torch.randn(32, 4, 3, 3), "zero_convs.0.0.weight":
                  torch.zeros(32, 32, 1, 1), "input_hint_block.0.weight": torch.randn(16, 3, 3, 3),
                  "middle_block_out.0.weight": torch.zeros(32, 32, 1, 1), "time_embed.0.weight": torch.randn(64, 32)}
    vae = {"encoder.conv_in.weight": torch.randn(16, 3, 3, 3), "encoder.down.0.block.0.conv1.weight":
           torch.randn(16, 16, 3, 3), "decoder.up.0.block.0.conv1.weight": torch.randn(16, 16, 3, 3),
           "quant_conv.weight": torch.randn(8, 8, 1, 1), "post_quant_conv.weight": torch.randn(4, 4, 1, 1)}
    torch.save(controlnet, tmp_path / "control_v11p_sd15_canny.pth")
    save_file({f"control_model.{k}": v.half() for k, v in controlnet.items()},
              tmp_path / "control_canny-fp16.safetensors")
    save_file(vae, tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    for name, kind in (("control_v11p_sd15_canny.pth", "an original-layout ControlNet"),
                       ("control_canny-fp16.safetensors", "an original-layout ControlNet"),
                       ("vae-ft-mse-840000-ema-pruned.safetensors", "an original-layout Stable Diffusion VAE")):
        code, data = run_json("shard", str(tmp_path / name), "--max", "2KB", "-o", str(tmp_path / f"out-{name}"))
        assert code == 0 and data["plan"]["index"] is not None, data
        said = [w for w in data["plan"]["warnings"] if "one file" in w]
        assert len(said) == 1 and said[0].startswith(f"{kind} is loaded from one file"), data["plan"]["warnings"]

    # diffusers' own VAE layout (encoder.down_blocks.*) in a folder with its config: diffusers reads shards.
    folder = tmp_path / "vae"
    folder.mkdir()
    save_file({"encoder.down_blocks.0.resnets.0.conv1.weight": torch.randn(16, 16, 3, 3), "post_quant_conv.weight":
               torch.randn(4, 4, 1, 1)}, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0"}))
    code, data = run_json("shard", str(folder), "--max", "2KB", "-o", str(tmp_path / "out-vae"))
    assert code == 0 and not any("one file" in w for w in data["plan"]["warnings"]), data["plan"]["warnings"]


def test_an_ia3_adapter_into_its_base_is_an_adapter_not_unknown_keys(tmp_path: Path) -> None:
    """diff-keys ADAPTER BASE for a LoRA adapter calls the base weights `adapter-base` (info) and checks each pair
    against its module; for an IA3 adapter every base weight was "unknown: no known cause: these weights will not
    load" (error), exit 1, though PeftModel.from_pretrained(base, adapter) loads it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(tmp_path / "gpt2")
    _ia3_adapter(tmp_path / "ia3", trained=True)
    code, data = run_json("diff-keys", str(tmp_path / "ia3"), str(tmp_path / "gpt2"))
    assert code == 0 and data["worst_severity"] == "info", data
    reasons = {i["name"]: (i["reason"], i["severity"], i["detail"]) for i in data["missing"] + data["unexpected"]}
    assert reasons["transformer.wte.weight"][:2] == ("adapter-base", "info"), reasons
    assert reasons["base_model.model.transformer.h.1.mlp.c_proj.ia3_l"] == (
        "adapter", "info", "IA3 on transformer.h.1.mlp.c_proj.weight"), reasons
    assert any("PEFT adapter: IA3 on 4 modules, 4 of them in B" in n for n in data["notes"]), data["notes"]
    # An IA3 vector for a wider model does not fit.
    GPT2LMHeadModel(GPT2Config(n_embd=48, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(tmp_path / "gpt2-wider")
    code, data = run_json("diff-keys", str(tmp_path / "ia3"), str(tmp_path / "gpt2-wider"))
    assert code == 1 and any(i["severity"] == "error" and "does not fit" in i["detail"] for i in data["unexpected"])


def test_a_distributed_hugging_face_dcp_save_says_how_to_consolidate_it(tmp_path: Path) -> None:
    """torch.distributed.checkpoint's HuggingFaceStorageWriter (torchtitan's HF export) with save_distributed=True
    writes each rank's pieces of the tensors as shard-<rank>-model-<i>-of-<n>.safetensors (their offsets in the
    DCP_SHARDING_INFO metadata) and no index: the folder was "the 2 shards of one checkpoint but not their index:
    fetch it from where the shards came from, or name one shard to read it alone"; there is no index to fetch, and
    one rank's file holds slices, not tensors."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    torch.manual_seed(0)
    state = {"model.embed_tokens.weight": torch.randn(64, 16).bfloat16(), "lm_head.weight":
             torch.randn(64, 16).bfloat16(), "model.layers.0.mlp.up_proj.weight": torch.randn(32, 16).bfloat16()}
    mapping = {"model.embed_tokens.weight": 1, "model.layers.0.mlp.up_proj.weight": 2, "lm_head.weight": 2}
    folder = tmp_path / "hf-dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(folder), fqn_to_index_mapping=mapping,
                                                                save_distributed=True), no_dist=True)
    assert sorted(p.name for p in folder.iterdir()) == ["shard-00001-model-00001-of-00002.safetensors",
                                                        "shard-00001-model-00002-of-00002.safetensors"]
    for args in (["inspect", str(folder)], ["convert", str(folder), "-o", str(tmp_path / "out")]):
        result = run_cli(*args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, result.stdout
        assert "HuggingFaceStorageWriter" in message and "consolidate_safetensors_files" in message, message
        assert "fetch it from where the shards came from" not in message and "name one shard" not in message, message


# Written in a child interpreter: a process group (gloo, one rank, on the CPU) is global state this process keeps out
# of. FSDP2's fully_shard makes every parameter a DTensor, which model.state_dict() returns as they are.
_FSDP2_RANK_FILE = r'''
import sys, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + "/pg", rank=0, world_size=1)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
torch.manual_seed(0)
mesh = init_device_mesh("cpu", (1,))
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
for layer in model:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
torch.save(model.state_dict(), sys.argv[1] + "/model_rank0.pt")
dist.destroy_process_group()
'''


def test_a_per_rank_state_dict_of_dtensors_says_what_it_holds(tmp_path: Path) -> None:
    """torch.save(model.state_dict()) on each rank of an FSDP2 (fully_shard) or tensor-parallel run pickles DTensors:
    the refusal listed eight torch.distributed classes as unknown and stopped there, as if the file were a stranger's
    code; torch's own weights_only loader reads them (once torch.distributed.tensor is imported)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _FSDP2_RANK_FILE, str(tmp_path)], check=True, capture_output=True)
    result = run_cli("inspect", str(tmp_path / "model_rank0.pt"))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "torch.distributed.tensor.DTensor" in message, message
    assert "DTensors" in message and "fully_shard" in message, message
    assert "get_model_state_dict" in message and "full_state_dict=True" in message, message


def _lora_adapter(folder: Path, trained: bool) -> None:
    """peft's LoraConfig(r=8, target_modules=["c_attn", "c_proj"]) on GPT-2 (Conv1D: lora_A r×in, lora_B out×r):
    lora_A starts kaiming_uniform(a=√5) as nn.Linear does, lora_B at zero. Trained (a few hundred AdamW steps),
    lora_B holds small normal-looking values and lora_A has drifted off its uniform plateau."""
    import math

    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    weights = {}
    for layer in range(2):
        for module, (out, inp) in (("attn.c_attn", (96, 32)), ("attn.c_proj", (32, 32)), ("mlp.c_proj", (32, 128))):
            prefix = f"base_model.model.transformer.h.{layer}.{module}"
            bound = 1 / math.sqrt(inp)
            lora_a = torch.empty(8, inp).uniform_(-bound, bound)
            lora_b = torch.zeros(out, 8)
            if trained:
                lora_a += 0.05 * torch.randn(8, inp)
                lora_b = 0.01 * torch.randn(out, 8)
            weights[f"{prefix}.lora_A.weight"], weights[f"{prefix}.lora_B.weight"] = lora_a, lora_b
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "openai-community/gpt2", "fan_in_fan_out": True, "init_lora_weights": True,
        "lora_alpha": 16, "lora_dropout": 0.0, "peft_type": "LORA", "r": 8, "target_modules": ["c_attn", "c_proj"],
        "task_type": "CAUSAL_LM", "use_dora": False}, indent=2))


def test_a_trained_lora_is_not_called_untrained(tmp_path: Path) -> None:
    """A LoRA's B half starts at zero, not at nn.Linear's kaiming_uniform: inspect --stats of a trained adapter said
    of every lora_B "still matches its initialization kaiming_uniform(a=√5, fan_in) U(±0.35) (found normal(0,
    0.011))", a normal at a thirtieth of that scale, and called the checkpoint mixed. The adapter at its init is
    still named as one."""
    _lora_adapter(tmp_path / "trained", trained=True)
    code, data = run_json("inspect", str(tmp_path / "trained"), "--stats")
    assert code == 0, data
    assert data["weights"]["state"] == "trained" and data["findings"] == [], data["findings"]
    expected = {t["name"]: t["init"]["expected"] for t in data["tensors"]}
    assert expected["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]["label"] == "zeros", expected

    _lora_adapter(tmp_path / "init", trained=False)
    code, data = run_json("inspect", str(tmp_path / "init"), "--stats")
    codes = sorted({(f["severity"], f["code"]) for f in data["findings"]})
    assert codes == [("error", "all-zero"), ("warn", "checkpoint-at-init")], data["findings"]
    assert data["weights"]["state"] == "initialization", data["weights"]


def _tensorrt_llm_checkpoint(folder: Path, tp: int) -> None:
    """A Llama as TensorRT-LLM's convert_checkpoint.py writes it (trtllm-build's input): config.json naming the model
    in `architecture` with its `dtype`, `mapping` (world, tp and pp sizes) and `quantization`, no model_type; one
    rank<N>.safetensors per rank, each holding that rank's slices (qkv fused, the head split by rows)."""
    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    hidden, inter, vocab = 64, 128, 128
    for rank in range(tp):
        weights = {"transformer.vocab_embedding.weight": torch.randn(vocab, hidden).half(),
                   "transformer.ln_f.weight": torch.ones(hidden).half(),
                   "lm_head.weight": torch.randn(vocab // tp, hidden).half()}
        for layer in range(2):
            prefix = f"transformer.layers.{layer}."
            weights |= {prefix + "input_layernorm.weight": torch.ones(hidden).half(),
                        prefix + "post_layernorm.weight": torch.ones(hidden).half(),
                        prefix + "attention.qkv.weight": torch.randn(3 * hidden // tp, hidden).half(),
                        prefix + "attention.dense.weight": torch.randn(hidden, hidden // tp).half(),
                        prefix + "mlp.fc.weight": torch.randn(inter // tp, hidden).half(),
                        prefix + "mlp.gate.weight": torch.randn(inter // tp, hidden).half(),
                        prefix + "mlp.proj.weight": torch.randn(hidden, inter // tp).half()}
        save_file(weights, str(folder / f"rank{rank}.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "LlamaForCausalLM", "dtype": "float16", "logits_dtype": "float32", "vocab_size": vocab,
        "max_position_embeddings": 4096, "hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "head_size": 16, "hidden_act": "silu", "intermediate_size": inter,
        "norm_epsilon": 1e-05, "position_embedding_type": "rope_gpt_neox", "use_parallel_embedding": False,
        "embedding_sharding_dim": 0, "share_embedding_table": False,
        "mapping": {"world_size": tp, "tp_size": tp, "pp_size": 1},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}, "rotary_base": 10000.0}, indent=4))


def test_a_tensorrt_llm_checkpoint_is_not_called_a_timm_one(tmp_path: Path) -> None:
    """TensorRT-LLM's checkpoint config names its model in `architecture` with no model_type, as timm's does: the
    planner called it "a timm LlamaForCausalLM config", diff-keys --model-class refused it as one, and shard said
    "timm loads one model.safetensors" where trtllm-build reads rank<N>.safetensors. Two ranks were "several weight
    files and no index"."""
    folder = tmp_path / "tllm_checkpoint_1gpu"
    _tensorrt_llm_checkpoint(folder, tp=1)
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
    assert result.exit_code == 0, result.stderr
    assert "timm" not in result.stderr and "a TensorRT-LLM LlamaForCausalLM checkpoint config" in " ".join(
        result.stderr.split()), result.stderr
    result = run_cli("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "timm" not in message and "TensorRT-LLM" in message, message
    code, data = run_json("shard", str(folder), "--max", "20KB", "-o", str(tmp_path / "sharded"))
    assert code == 0 and not any("timm" in w for w in data["plan"]["warnings"]), data["plan"]["warnings"]
    assert any(w.startswith("TensorRT-LLM reads rank0.safetensors") for w in data["plan"]["warnings"]), data["plan"]

    folder = tmp_path / "tllm_checkpoint_2gpu_tp2"
    _tensorrt_llm_checkpoint(folder, tp=2)
    result = run_cli("inspect", str(folder))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "several weight files and no index" not in message, message
    assert "a TensorRT-LLM checkpoint of 2 ranks" in message and "name one" in message, message


def test_torchserve_and_executorch_files_say_what_they_are(tmp_path: Path) -> None:
    """A TorchServe .mar (torch-model-archiver: a zip of the weights file, its handler and MAR-INF/MANIFEST.json) was
    "zip archive has no data.pkl record (not a torch.save file, or damaged)", as if damaged; an ExecuTorch .pte (a
    FlatBuffer with file identifier ET12) was "not a safetensors file nor a PyTorch pickle"."""
    import io
    import zipfile

    saved = io.BytesIO()
    torch.save({"fc.weight": torch.randn(4, 4)}, saved)
    with zipfile.ZipFile(tmp_path / "resnet-18.mar", "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({
            "createdOn": "01/06/2024 10:00:00", "runtime": "python", "archiverVersion": "0.9.0",
            "model": {"modelName": "resnet-18", "serializedFile": "resnet18-f37072fd.pth",
                      "handler": "image_classifier", "modelFile": "model.py", "modelVersion": "1.0"}}))
        archive.writestr("resnet18-f37072fd.pth", saved.getvalue())
        archive.writestr("model.py", "import torchvision\n")
        archive.writestr("index_to_name.json", "{}")
    # The first bytes of a .pte: the FlatBuffer's root table offset, then its file identifier.
    (tmp_path / "model.pte").write_bytes(b"\x1c\x00\x00\x00ET12eh00" + bytes(64))
    for name, said in (("resnet-18.mar", "a TorchServe model archive (.mar, torch-model-archiver) holding "
                        "resnet18-f37072fd.pth"), ("model.pte", "an ExecuTorch program (.pte")):
        result = run_cli("inspect", str(tmp_path / name))
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and said in message, message
        assert "damaged" not in message and "nor a PyTorch pickle" not in message, message


def test_a_merged_model_beside_its_adapter_is_not_described_as_the_adapter(tmp_path: Path) -> None:
    """torchtune's FullModelHFCheckpointer writes epoch_N/ with the merged model (model-0000i-of-0000N.safetensors, its
    index, config.json) and, beside it, the LoRA it merged (adapter_model.safetensors, adapter_config.json). inspect
    read the merged model and headed it "PEFT adapter LORA r=8 ... load it onto its base with
    PeftModel.from_pretrained", and plan-devices said it planned an adapter's base: neither is what was read."""
    from safetensors.torch import save_file

    folder = tmp_path / "epoch_0"
    _lora_adapter(folder, trained=True)  # adapter_model.safetensors + adapter_config.json
    torch.manual_seed(1)
    names = {"transformer.wte.weight": (64, 32), "transformer.wpe.weight": (32, 32), "transformer.ln_f.weight": (32,),
             "transformer.ln_f.bias": (32,)}
    weights = {name: torch.randn(shape) for name, shape in names.items()}
    save_file({k: weights[k] for k in list(weights)[:2]}, str(folder / "model-00001-of-00002.safetensors"),
              metadata={"format": "pt"})
    save_file({k: weights[k] for k in list(weights)[2:]}, str(folder / "model-00002-of-00002.safetensors"),
              metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 9472}, "weight_map": {
        name: f"model-0000{1 + (i >= 2)}-of-00002.safetensors" for i, name in enumerate(names)}}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32, "n_layer": 1, "n_head": 2,
        "vocab_size": 64, "n_positions": 32, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32"}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["num_tensors"] == 4 and data["adapter"] is None, data
    said = [w for w in data["warnings"] if "adapter_model.safetensors" in w]
    assert len(said) == 1 and "not the weights read here" in said[0] and "loads the adapter onto" in said[0], data
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
    assert result.exit_code == 0 and "this is a PEFT adapter" not in result.stderr, result.stderr
    # The adapter folder alone is still described as one.
    (tmp_path / "adapter").mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (tmp_path / "adapter" / name).write_bytes((folder / name).read_bytes())
    code, data = run_json("inspect", str(tmp_path / "adapter"))
    assert code == 0 and data["adapter"]["peft_type"] == "LORA" and data["warnings"] == [], data


def test_a_megatron_save_with_the_distributed_optimizer_points_at_the_model_file(tmp_path: Path) -> None:
    """Megatron-LM run with --use-distributed-optimizer saves distrib_optim.pt (the optimizer's flat fp32 buckets:
    param, exp_avg, exp_avg_sq) beside each rank's model_optim_rng.pt. The save folder said "whose weights are in
    .../mp_rank_00/distrib_optim.pt: point at that file" (the optimizer state, which then had "no state dict"), and
    the rank folder was "several weight files and no index"."""
    from tests.test_third_party_layouts4 import _megatron_save

    root = _megatron_save(tmp_path / "megatron", ranks=1)
    rank = root / "iter_0001000" / "mp_rank_00"
    buckets = {(torch.bfloat16, torch.float32): [{"param": torch.zeros(720), "exp_avg": torch.zeros(720),
                                                  "exp_avg_sq": torch.zeros(720)}]}
    torch.save({"buckets_coalesced": True, "per_bucket_numel": [{(torch.bfloat16, torch.float32): [720]}],
                "per_bucket_numel_unpadded": [{(torch.bfloat16, torch.float32): [708]}], 0: buckets},
               rank / "distrib_optim.pt")
    result = run_cli("inspect", str(root))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and f"whose weights are in {rank / 'model_optim_rng.pt'}" in message, message
    code, data = run_json("inspect", str(rank))
    assert code == 0 and data["nested_key"] == "model.language_model" and data["num_tensors"] == 6, data
    assert [f["path"] for f in data["files"] if f["role"] == "weights"] == ["model_optim_rng.pt"], data["files"]


def test_a_lightning_sharded_fsdp_checkpoint_is_named_not_read_as_its_meta_pt(tmp_path: Path) -> None:
    """Lightning's FSDPStrategy(state_dict_type="sharded") saves epoch=N-step=M.ckpt as a folder: the model's and
    optimizer's shards as a torch.distributed.checkpoint (.metadata, __<rank>_0.distcp) and meta.pt (epoch, loops,
    callbacks, hyper_parameters). inspect read meta.pt as the checkpoint: "no state dict found; pick one with --key"."""
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "epoch=0-step=100.ckpt"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save({"model": {"l1.weight": torch.randn(16, 8), "l1.bias": torch.zeros(16)},
                  "optimizer_0": {"state": {}, "param_groups": []}}, checkpoint_id=str(folder), no_dist=True)
    torch.save({"epoch": 0, "global_step": 100, "pytorch-lightning_version": "2.4.0", "loops": {}, "callbacks": {},
                "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-3}}, folder / "meta.pt")
    for command in ("inspect", "check-dtype"):
        result = run_cli(command, str(folder))
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "no state dict" not in message and "--key" not in message, message
        assert "a Lightning checkpoint saved sharded" in message and "consolidate_checkpoint" in message, message


def test_a_modelopt_nvfp4_checkpoint_counts_its_packed_weights(tmp_path: Path) -> None:
    """NVIDIA ModelOpt's NVFP4 exports (nvidia/*-FP4, run by vLLM and TensorRT-LLM): each Linear's `weight` is uint8,
    two FP4 values a byte, beside `weight_scale` (FP8, one per 16 values), `weight_scale_2` and `input_scale`
    (float32 scalars); quantization_config {"quant_method": "modelopt", "quant_algo": "NVFP4"}. inspect counted the
    packed bytes as the weights (half of them) and weight_scale_2 as parameters: "modelopt: 35,015 parameters"
    where the model has 53,440."""
    from safetensors.torch import save_file

    from tests.test_third_party_layouts4 import _LINEARS, _llama_config

    folder = tmp_path / "Llama-FP4"
    folder.mkdir()
    torch.manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(128, 64).bfloat16(),
               "lm_head.weight": torch.randn(128, 64).bfloat16()}
    for norm in ("model.norm", "model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"):
        tensors[norm + ".weight"] = torch.ones(64).bfloat16()
    for module, (out, inp) in _LINEARS.items():
        prefix = f"model.layers.0.{module}."
        tensors |= {prefix + "weight": torch.randint(0, 255, (out, inp // 2), dtype=torch.uint8),
                    prefix + "weight_scale": torch.rand(out, inp // 16).to(torch.float8_e4m3fn),
                    prefix + "weight_scale_2": torch.tensor(0.01), prefix + "input_scale": torch.tensor(0.02)}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config={
        "quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "kv_cache_quant_algo": None,
        "exclude_modules": ["lm_head"]})))
    (folder / "hf_quant_config.json").write_text(json.dumps({"producer": {"name": "modelopt", "version": "0.29.0"},
                                                             "quantization": {"quant_algo": "NVFP4", "group_size": 16,
                                                                              "exclude_modules": ["lm_head"]}}))
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    quantized = data["quantized"]
    assert (quantized["bits"], quantized["packed_tensors"], quantized["side_tensors"]) == (4, 7, 21), quantized
    assert quantized["parameters"] == 2 * 128 * 64 + 3 * 64 + sum(o * i for o, i in _LINEARS.values()), quantized


def test_an_adapter_saving_a_tied_head_loads_into_a_base_that_stores_it_once(tmp_path: Path) -> None:
    """LoraConfig(modules_to_save=["lm_head"]) on GPT-2 saves base_model.model.lm_head.weight whole; GPT-2's
    model.safetensors stores lm_head only as the transformer.wte.weight it is tied to. diff-keys ADAPTER BASE called
    it an error, "saved for lm_head.weight, which B does not have", and exited 1, though PeftModel loads it onto the
    model's lm_head."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(tmp_path / "gpt2")
    assert "lm_head.weight" not in load_file(tmp_path / "gpt2" / "model.safetensors")  # tied: stored as wte
    adapter = tmp_path / "adapter"
    _lora_adapter(adapter, trained=True)
    weights = load_file(adapter / "adapter_model.safetensors")
    weights["base_model.model.lm_head.weight"] = torch.randn(64, 32)
    save_file(weights, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "gpt2"))
    assert code == 0 and data["worst_severity"] == "info", data
    head = next(i for i in data["unexpected"] if i["name"] == "base_model.model.lm_head.weight")
    assert (head["reason"], head["severity"]) == ("adapter", "info"), head
    assert "transformer.wte.weight" in head["detail"], head
    # A head of another size is still an error.
    weights["base_model.model.lm_head.weight"] = torch.randn(80, 32)
    save_file(weights, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "gpt2"))
    assert code == 1 and data["worst_severity"] == "error", data
