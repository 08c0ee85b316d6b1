"""A twenty-first round: training-run folders and model-merging outputs as their own save code writes them: a
Trainer's output_dir (its checkpoint-N/ saves beside the final model), its training_args.bin, ..."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import one_error_line, run_cli, train_tiny_gpt2

# Words of a security refusal: none may appear for a genuine file.
_REFUSAL_WORDS = ("suspicious", "dangerous", "unsafe", "may run code")


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Trainer's output_dir: checkpoint-1/ and checkpoint-2/ (model.safetensors, optimizer.pt, scheduler.pt,
    rng_state.pth, trainer_state.json, training_args.bin) beside the final model of Trainer.save_model."""
    pytest.importorskip("transformers")
    output_dir = tmp_path_factory.mktemp("trainer") / "run"
    trainer = train_tiny_gpt2(output_dir, max_steps=2)
    trainer.save_model(str(output_dir))
    assert {"checkpoint-1", "checkpoint-2", "model.safetensors", "training_args.bin"} <= {
        p.name for p in output_dir.iterdir()}
    return output_dir


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_converting_a_trainer_output_dir_leaves_its_checkpoint_saves_out(
        trainer_run: Path, tmp_path: Path, command: str) -> None:
    """`convert output_dir -o elsewhere` copied every checkpoint-N/ whole beside the final model (their optimizer.pt,
    rng_state.pth, training_args.bin pickles and weights): the output of a conversion run to get one model in
    safetensors held the whole run, though the same training_args.bin at the top was left out."""
    output = tmp_path / "out"
    result = run_cli(command, str(trainer_run), "-o", str(output), *(["--max", "1GB"] if command == "shard" else []))
    assert result.exit_code == 0, result.stderr
    written = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    assert not any(name.startswith("checkpoint-") for name in written), written
    assert "config.json" in written and not any(name.endswith((".pt", ".pth", ".bin")) for name in written), written
    assert ("checkpoint-1/, checkpoint-2/ (saves to resume training from, not part of this model; convert one on its "
            "own)") in " ".join(result.stderr.split())


@pytest.mark.parametrize("command", [
    ["inspect"], ["inspect", "--stats"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"], ["diff-keys", "{model}"],
    ["convert", "-o", "{out}/x.safetensors"], ["shard", "-o", "{out}/shards", "--max", "1GB"]])
def test_a_trainers_training_args_bin_is_named_as_its_settings_not_refused_as_suspicious(
        trainer_run: Path, tmp_path: Path, command: list[str]) -> None:
    """training_args.bin, torch.save(TrainingArguments) as every Trainer writes it, names TrainingArguments, the
    transformers enums of its fields (SchedulerType, OptimizerNames, IntervalStrategy, SaveStrategy, HubStrategy),
    AcceleratorConfig and accelerate's PartialState / DistributedType: each command refused the genuine file as
    "suspicious: ... (unknown ...)". It is data, read as inert stand-ins; and once read it holds no weights, which is
    what the one line says (not a model of 0 tensors, which inspect showed and convert wrote)."""
    path = trainer_run / "checkpoint-2" / "training_args.bin"
    args = [part.format(model=trainer_run, out=tmp_path) for part in command]
    line = one_error_line(run_cli(args[0], str(path), *args[1:]))
    assert not any(word in line.lower() for word in _REFUSAL_WORDS), line
    assert ("no model weights: the file holds a Trainer's TrainingArguments (training_args.bin: the run's settings, "
            "read as inert data, never imported)") in line
    beside = path.parent / "model.safetensors"
    assert f"The weights beside it: model.safetensors: point weightdoctor at {beside}" in line
    assert not any(tmp_path.iterdir())


def test_an_fsdp_trainer_output_dir_points_at_the_latest_saves_dcp_model(trainer_run: Path, tmp_path: Path) -> None:
    """A Trainer under FSDP (its default SHARDED_STATE_DICT) saves each checkpoint-N/'s model with accelerate's
    save_fsdp_model: dcp.save({"model": state_dict}) into pytorch_model_fsdp_0/, its optimizer into optimizer_0/, beside
    scheduler.pt, rng_state_0.pth, rng_state_1.pth, trainer_state.json. Its output_dir, given mid-run, was "folder holds
    no weight file" and not a word more; the latest save's DCP folder is named, with the command that merges it."""
    import shutil

    dcp = pytest.importorskip("torch.distributed.checkpoint")
    from safetensors.torch import load_file

    state = load_file(str(trainer_run / "model.safetensors"))
    run = tmp_path / "run"
    for step in (10, 9):  # 10 sorts before 9 by name: the latest is found by number
        save = run / f"checkpoint-{step}"
        with pytest.warns(UserWarning):  # one process, no process group: what dcp says and does
            dcp.save({"model": state}, checkpoint_id=str(save / "pytorch_model_fsdp_0"))
        for name in ("scheduler.pt", "trainer_state.json", "training_args.bin"):
            shutil.copy(trainer_run / "checkpoint-2" / name, save / name)
        for rank in (0, 1):
            shutil.copy(trainer_run / "checkpoint-2" / "rng_state.pth", save / f"rng_state_{rank}.pth")
    for command in (["inspect"], ["check-dtype"], ["diff-keys", str(trainer_run)]):
        line = one_error_line(run_cli(command[0], str(run), *command[1:]))
        assert ("its subfolders checkpoint-9/, checkpoint-10/ are one run's saves, whose model is a "
                "torch.distributed.checkpoint (DCP) folder (checkpoint-10/pytorch_model_fsdp_0/, FSDP's sharded state "
                f"dict, as a Trainer under FSDP saves it): accelerate merge-weights {run / 'checkpoint-10'}"
                f"/pytorch_model_fsdp_0 {run / 'checkpoint-10'}.merged writes the latest save's as one "
                "model.safetensors") in line, line


@pytest.mark.parametrize("command", [["inspect"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"]])
def test_a_trainer_output_dir_says_its_final_model_is_read_and_names_the_latest_save(
        trainer_run: Path, command: list[str]) -> None:
    """A Trainer's output_dir holds Trainer.save_model's final model at its top and the run's checkpoint-N/ saves
    below: every command read the final model (as from_pretrained(output_dir) does) without a word of the saves, so
    a user wanting the latest step (or who ran with load_best_model_at_end, where the final model is the best save's)
    was not told which one was read, nor where the others are."""
    import json

    result = run_cli(command[0], str(trainer_run), *command[1:], "--json")
    assert result.exit_code == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert (f"checkpoint-1/, checkpoint-2/ beside the model are a run's saves to resume training from (a Trainer's "
            "checkpoint-N/), not read: this reads the model at the folder's top, as from_pretrained(folder) loads it; "
            f"point at {trainer_run / 'checkpoint-2'} to read the highest-numbered, latest save") in warnings, warnings
    # A save itself says nothing of the kind.
    result = run_cli("inspect", str(trainer_run / "checkpoint-2"), "--json")
    assert not any("saves to resume" in w for w in json.loads(result.stdout)["warnings"])


def _w4a16_llama(folder: Path) -> int:
    """llm-compressor's W4A16 (group 32, asymmetric) as compressed-tensors' pack-quantized compressor saves a Llama
    layer: int32 `weight_packed` [out, in / 8], bf16 `weight_scale` [out, in / 32], int32 `weight_zero_point`
    [out / 8, in / 32], `weight_shape`; lm_head in its `ignore`, stored in bf16. Returns the dense parameter count."""
    import json

    from safetensors.torch import save_file

    torch.manual_seed(0)
    hidden, inter, vocab = 64, 128, 256
    linears = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (32, hidden),
               "self_attn.v_proj": (32, hidden), "self_attn.o_proj": (hidden, hidden),
               "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter)}
    tensors = {"model.embed_tokens.weight": torch.randn(vocab, hidden).bfloat16(),
               "lm_head.weight": torch.randn(vocab, hidden).bfloat16(),
               "model.norm.weight": torch.ones(hidden).bfloat16(),
               "model.layers.0.input_layernorm.weight": torch.ones(hidden).bfloat16(),
               "model.layers.0.post_attention_layernorm.weight": torch.ones(hidden).bfloat16()}
    for name, (rows, cols) in linears.items():
        prefix = f"model.layers.0.{name}."
        tensors[prefix + "weight_packed"] = torch.randint(-2**31, 2**31 - 1, (rows, cols // 8), dtype=torch.int32)
        tensors[prefix + "weight_scale"] = (torch.rand(rows, cols // 32) * 0.01).bfloat16()
        tensors[prefix + "weight_zero_point"] = torch.randint(-2**31, 2**31 - 1, (rows // 8, cols // 32),
                                                              dtype=torch.int32)
        tensors[prefix + "weight_shape"] = torch.tensor([rows, cols])
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
        "vocab_size": vocab, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
        "quantization_config": {
            "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 32}}},
            "ignore": ["lm_head"]}}))
    return 2 * vocab * hidden + 3 * hidden + sum(rows * cols for rows, cols in linears.values())


def test_plan_devices_counts_the_quantized_linear_layers_not_lm_head_left_unquantized(tmp_path: Path) -> None:
    """plan-devices said "the quantized Linear layers are sized at the bytes the checkpoint stores for them (packed
    weights, scales, zero points: 8 of 8)" of a W4A16 Llama layer whose 7 Linear layers are quantized: lm_head, in
    the recipe's `ignore` and stored in bf16, was counted among them."""
    import json

    folder = tmp_path / "w4a16"
    dense = _w4a16_llama(folder)
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert ("the quantized Linear layers are sized at the bytes the checkpoint stores for them (packed weights, "
            "scales, zero points: 7 of 8); 1 other (lm_head) stored unquantized, at its stored size"
            ) in data["warnings"]
    # What inspect counts of the same file: every stored value, and the dense weights the packed ones stand for.
    inspected = json.loads(run_cli("inspect", str(folder), "--json").stdout)
    assert inspected["quantized"]["parameters"] == dense and inspected["quantized"]["bits"] == 4


def test_a_training_state_file_of_a_peft_checkpoint_names_the_adapter_beside_it(tmp_path: Path) -> None:
    """A Trainer's checkpoint-N/ of a PEFT (LoRA) run keeps adapter_model.safetensors beside optimizer.pt,
    scheduler.pt, rng_state.pth and training_args.bin. Pointed at one of those, the line said the weights are in
    "model.safetensors or pytorch_model.bin in the same checkpoint-N folder", files that folder does not hold."""
    import random

    import numpy as np
    from safetensors.torch import save_file

    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    torch.manual_seed(0)
    lora = {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": torch.randn(4, 16),
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": torch.zeros(48, 4)}
    save_file(lora, str(checkpoint / "adapter_model.safetensors"), metadata={"format": "pt"})
    (checkpoint / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8, '
                                                    '"target_modules": ["c_attn"], "task_type": "CAUSAL_LM"}')
    parameters = [torch.nn.Parameter(t.clone()) for t in lora.values()]
    optimizer = torch.optim.AdamW(parameters)
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), checkpoint / "optimizer.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()},
               checkpoint / "rng_state.pth")
    for name in ("optimizer.pt", "rng_state.pth"):
        line = one_error_line(run_cli("inspect", str(checkpoint / name)))
        assert ("The weights beside it: adapter_model.safetensors: point weightdoctor at "
                f"{checkpoint / 'adapter_model.safetensors'} or at the folder") in line, line
        assert "model.safetensors or pytorch_model.bin" not in line


def test_a_trl_trainers_training_args_bin_is_named_as_its_config_not_refused(tmp_path: Path) -> None:
    """TRL's trainers save their config as training_args.bin: `@dataclass class SFTConfig(TrainingArguments)` in
    trl/trainer/sft_config.py (DPOConfig, GRPOConfig, RewardConfig, ... alike), pickled under that name. TRL is not
    installed here: the class is defined as TRL defines it, under its module's name, and torch.save writes what TRL's
    Trainer writes. It was refused as "suspicious: trl.trainer.sft_config.SFTConfig (unknown ...)"."""
    import dataclasses
    import sys
    import types

    transformers = pytest.importorskip("transformers")
    names = ("trl", "trl.trainer", "trl.trainer.sft_config")
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name in names:
            sys.modules[name] = types.ModuleType(name)

        @dataclasses.dataclass
        class SFTConfig(transformers.TrainingArguments):  # type: ignore[misc]
            max_length: int | None = 1024
            packing: bool = False
            dataset_text_field: str = "text"

        SFTConfig.__module__, SFTConfig.__qualname__ = "trl.trainer.sft_config", "SFTConfig"
        sys.modules["trl.trainer.sft_config"].SFTConfig = SFTConfig  # type: ignore[attr-defined]
        path = tmp_path / "training_args.bin"
        torch.save(SFTConfig(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True), path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    line = one_error_line(run_cli("inspect", str(path)))
    assert not any(word in line.lower() for word in _REFUSAL_WORDS), line
    assert ("no model weights: the file holds a TRL trainer's SFTConfig (its TrainingArguments, training_args.bin: the "
            "run's settings, read as inert data, never imported)") in line


def test_converting_a_deepspeed_trainer_checkpoint_leaves_its_step_folder_latest_and_script_out(
        trainer_run: Path, tmp_path: Path) -> None:
    """A Trainer checkpoint-N/ under DeepSpeed (ZeRO-2) holds model.safetensors beside global_stepN/ (its
    mp_rank_00_model_states.pt and *_optim_states.pt), `latest` naming that folder, and zero_to_fp32.py. convert
    copied global_stepN/ whole, and once that was left out, copied `latest` and zero_to_fp32.py without it: an output
    whose `latest` names a folder it lacks, and a script with nothing to gather."""
    import shutil

    from safetensors.torch import load_file

    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(trainer_run / "checkpoint-2", checkpoint)
    for name in ("optimizer.pt", "scheduler.pt"):  # DeepSpeed keeps them in its step folder
        (checkpoint / name).unlink()
    step = checkpoint / "global_step2"
    step.mkdir()
    state = load_file(str(checkpoint / "model.safetensors"))
    torch.save({"module": state, "buffer_names": [], "optimizer": None, "global_steps": 2, "ds_version": "0.16.0",
                "ds_config": {"train_batch_size": 2}}, step / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": 2, "loss_scaler": None, "partition_count": [1],
                                         "single_partition_of_fp32_groups": [torch.zeros(8)]},
                "ds_version": "0.16.0"}, step / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (checkpoint / "latest").write_text("global_step2")
    (checkpoint / "zero_to_fp32.py").write_text("# what DeepSpeed copies beside its checkpoints\n")
    output = tmp_path / "out"
    result = run_cli("convert", str(checkpoint), "-o", str(output))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    said = " ".join(result.stderr.split())
    assert "latest (DeepSpeed's pointer to the step to resume from: left out with the global_step folders)" in said
    assert ("zero_to_fp32.py (DeepSpeed's script that gathers the weights of a step: left out with the global_step "
            "folders)") in said
    assert "global_step2/ (a save to resume training from, not part of this model" in said
