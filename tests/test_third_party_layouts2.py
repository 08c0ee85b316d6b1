"""More checkpoints as other libraries write them: open_clip, sentence-transformers, ... (convert and shard must
write what the layout's own loader reads back)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _open_clip_folder(folder: Path, weights: str) -> dict[str, torch.Tensor]:
    """An open_clip Hub repo as open_clip's push_to_hf_hub writes it: `open_clip_config.json` and the weights under
    HF_WEIGHTS_NAME (`open_clip_pytorch_model.bin`) or HF_SAFE_WEIGHTS_NAME (`open_clip_model.safetensors`)."""
    from safetensors.torch import save_file

    folder.mkdir()
    state = {"positional_embedding": torch.randn(16, 32), "text_projection": torch.randn(32, 32),
             "logit_scale": torch.tensor(4.6052), "visual.conv1.weight": torch.randn(32, 3, 4, 4),
             "transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32),
             "token_embedding.weight": torch.randn(100, 32)}
    if weights.endswith(".bin"):
        torch.save(state, folder / weights)
    else:
        save_file(state, folder / weights)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 32}}))
    return state


def test_open_clip_weights_convert_to_the_names_open_clip_loads(tmp_path: Path) -> None:
    """open_clip loads `open_clip_model.safetensors` or `open_clip_pytorch_model.bin` only: converting its .bin wrote
    `open_clip_pytorch_model.safetensors`, a file no open_clip loader looks for."""
    from safetensors.torch import load_file

    state = _open_clip_folder(tmp_path / "oc-bin", "open_clip_pytorch_model.bin")
    code, data = run_json("convert", str(tmp_path / "oc-bin"), "-o", str(tmp_path / "st"))
    assert code == 0, data
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["open_clip_config.json",
                                                                   "open_clip_model.safetensors"]
    back = load_file(tmp_path / "st" / "open_clip_model.safetensors")
    assert all(torch.equal(back[k], v) for k, v in state.items()) and back.keys() == state.keys()

    code, data = run_json("convert", str(tmp_path / "st"), "-o", str(tmp_path / "bin"), "--to", "bin")
    assert code == 0, data
    assert (tmp_path / "bin" / "open_clip_pytorch_model.bin").is_file()


def test_open_clip_shards_keep_its_name_and_say_it_cannot_load_them(tmp_path: Path) -> None:
    """`shard` of an open_clip folder wrote `model-*.safetensors` beside open_clip_config.json (and `model.safetensors`
    with --single), none of which open_clip reads."""
    _open_clip_folder(tmp_path / "oc", "open_clip_model.safetensors")
    code, data = run_json("shard", str(tmp_path / "oc"), "--single", "-o", str(tmp_path / "one"))
    assert code == 0, data
    assert (tmp_path / "one" / "open_clip_model.safetensors").is_file()
    assert not any("open_clip loads one" in w for w in data["plan"]["warnings"])

    result = run_cli("shard", str(tmp_path / "oc"), "--max", "10KB", "-o", str(tmp_path / "many"))
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "many").iterdir())
    assert "open_clip_model.safetensors.index.json" in names and "open_clip_model-00001-of-00004.safetensors" in names
    assert not any(n.startswith("model") for n in names)
    line = " ".join(result.stderr.split())
    assert "open_clip loads one open_clip_model.safetensors" in line and "cannot load these shards" in line, line


def _deepspeed_step(step: Path, module: dict[str, torch.Tensor], stage: int) -> None:
    """global_stepN/ as DeepSpeed's save_checkpoint writes it: the model states (the module's state dict under
    `module`, its real shapes under `param_shapes`) and one ZeRO optimizer partition per data-parallel rank."""
    step.mkdir(parents=True)
    shapes = {name: torch.Size([4, 8]) for name in module}
    torch.save({"module": module, "buffer_names": [], "optimizer": None, "param_shapes": [shapes],
                "frozen_param_shapes": None, "shared_params": {}, "lr_scheduler": None, "global_steps": 5,
                "dp_world_size": 2, "mp_world_size": 1, "ds_config": {"zero_optimization": {"stage": stage}},
                "ds_version": "0.14.0"}, step / "mp_rank_00_model_states.pt")
    for rank in range(2):
        torch.save({"optimizer_state_dict": {"zero_stage": stage, "fp32_flat_groups": [torch.zeros(32)]},
                    "ds_version": "0.14.0"}, step / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (step.parent / "latest").write_text(step.name)


def test_zero3_model_states_are_placeholders_not_weights(tmp_path: Path) -> None:
    """Under ZeRO-3 DeepSpeed saves each partitioned parameter as torch.empty(0): inspect said 0 parameters,
    plan-devices planned 0 B, check-dtype called every cast safe and convert wrote (and verified) empty tensors."""
    step = tmp_path / "run" / "global_step5"
    _deepspeed_step(step, {"encoder.weight": torch.empty(0, dtype=torch.float16),
                           "head.weight": torch.empty(0, dtype=torch.float16),
                           "norm.running_mean": torch.zeros(8)}, stage=3)
    for args in (["inspect", str(step)], ["plan-devices", str(step), "--gpu", "1GB"], ["check-dtype", str(step)],
                 ["convert", str(step / "mp_rank_00_model_states.pt"), "-o", str(tmp_path / "out.safetensors")]):
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stdout == "", (args, result.stdout)
        line = " ".join(result.stderr.split())
        assert "DeepSpeed ZeRO-3 model states file: placeholders, not weights (2 of 3 tensors are empty" in line, line
        assert "zero_to_fp32.py" in line and "Traceback" not in line
    assert not (tmp_path / "out.safetensors").exists()

    stage2 = tmp_path / "run2" / "global_step5"  # ZeRO-1/2 keep whole weights in the model states: read as before
    _deepspeed_step(stage2, {"encoder.weight": torch.ones(4, 8, dtype=torch.float16)}, stage=2)
    code, data = run_json("inspect", str(stage2))
    assert code == 0 and data["num_params"] == 32 and data["nested_key"] == "module"


def _sentence_transformers_repo(folder: Path, dense_weights: str) -> None:
    """A sentence-transformers repo: the Transformer module at the top (config.json, model.safetensors), then
    modules.json's numbered module folders, `2_Dense/` with weights of its own (`pytorch_model.bin` before
    sentence-transformers 2.3, `model.safetensors` since)."""
    from safetensors.torch import save_file

    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "2_Dense").mkdir()
    save_file({"embeddings.word_embeddings.weight": torch.randn(100, 32)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32}))
    (folder / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 16}))
    dense = {"linear.weight": torch.randn(16, 32), "linear.bias": torch.randn(16)}
    if dense_weights.endswith(".bin"):
        torch.save(dense, folder / "2_Dense" / dense_weights)
    else:
        save_file(dense, folder / "2_Dense" / dense_weights)


def test_a_pickle_copied_into_a_safetensors_conversion_is_said(tmp_path: Path) -> None:
    """Converting an older sentence-transformers repo to safetensors copied `2_Dense/pytorch_model.bin` with its module
    folder: the output still held a pickle, and (without --dtype) nothing said so."""
    _sentence_transformers_repo(tmp_path / "st", "pytorch_model.bin")
    for command, extra in (("convert", []), ("shard", ["--single"])):
        out = tmp_path / f"{command}-out"
        result = run_cli(command, str(tmp_path / "st"), "-o", str(out), *extra)
        assert result.exit_code == 0, result.stderr
        assert (out / "2_Dense" / "pytorch_model.bin").is_file()  # copied, as before: the folder stays whole
        line = " ".join(result.stderr.split())
        assert "copied as they are, still PyTorch pickles: 2_Dense/pytorch_model.bin" in line, line
        assert f"weightdoctor convert {tmp_path / 'st' / '2_Dense'}" in line, line

    # The way out it names: the module folder converts to the name sentence-transformers' Dense loads first.
    code, data = run_json("convert", str(tmp_path / "st" / "2_Dense"), "-o", str(tmp_path / "dense"))
    assert code == 0 and (tmp_path / "dense" / "model.safetensors").is_file(), data

    # Nothing to say where the module's weights are safetensors already, or the output is .bin anyway.
    _sentence_transformers_repo(tmp_path / "st-new", "model.safetensors")
    code, data = run_json("convert", str(tmp_path / "st-new"), "-o", str(tmp_path / "new-out"))
    # The folder names are taken out first: pytest names tmp_path after this test, which holds "pickle".
    warnings = [w.replace(str(tmp_path), "") for w in data["plan"]["warnings"]]
    assert code == 0 and not any("pickle" in w for w in warnings), warnings
    code, data = run_json("convert", str(tmp_path / "st"), "-o", str(tmp_path / "bin-out"), "--to", "bin")
    # The folder names are taken out first: pytest names tmp_path after this test, which holds "pickle".
    warnings = [w.replace(str(tmp_path), "") for w in data["plan"]["warnings"]]
    assert code == 0 and not any("pickle" in w for w in warnings), warnings


def test_a_bitsandbytes_4bit_plan_names_its_bits_once(tmp_path: Path) -> None:
    """A bitsandbytes-4bit repo (nf4 packed uint8 `weight` beside its absmax and quant_state): the plan's warning read
    "(bitsandbytes 4-bit, 4-bit)"; GPTQ's still names method and bits."""
    from safetensors.torch import save_file

    bnb = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    for method, config in (("bnb", bnb), ("gptq", {"quant_method": "gptq", "bits": 4, "group_size": 32})):
        folder = tmp_path / method
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 100,
            "quantization_config": config}))
        save_file({"model.embed_tokens.weight": torch.zeros(100, 32, dtype=torch.float16),
                   "model.layers.0.self_attn.q_proj.weight": torch.zeros(512, 1, dtype=torch.uint8),
                   "model.layers.0.self_attn.q_proj.weight.absmax": torch.zeros(16, dtype=torch.uint8)},
                  folder / "model.safetensors")
        code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
        assert code == 0, data
        said = next(w for w in data["warnings"] if w.startswith("the config quantizes the weights"))
        expected = "(bitsandbytes 4-bit)" if method == "bnb" else "(gptq, 4-bit)"
        assert said.startswith(f"the config quantizes the weights {expected}: planned as int4"), said


def test_shards_of_single_file_libraries_keep_their_name_and_say_so(tmp_path: Path) -> None:
    """diffusers' save_lora_weights writes `pytorch_lora_weights.safetensors`, which load_lora_weights loads as one
    file; timm writes `model.safetensors` + a config.json with `architecture`, which create_model loads as one file.
    shard split both into `model-*.safetensors` with nothing said (and the LoRA lost its name under --single)."""
    from safetensors.torch import save_file

    lora = tmp_path / "lora"
    lora.mkdir()
    save_file({f"unet.down_blocks.0.attentions.0.transformer_blocks.{i}.attn1.to_q.lora_{ab}.weight":
               torch.randn(4, 320) if ab == "A" else torch.zeros(320, 4) for i in range(3) for ab in "AB"},
              lora / "pytorch_lora_weights.safetensors")
    result = run_cli("shard", str(lora), "--max", "12KB", "-o", str(tmp_path / "lora-shards"))
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "lora-shards").iterdir())
    assert "pytorch_lora_weights.safetensors.index.json" in names and not any(n.startswith("model") for n in names)
    assert "diffusers' load_lora_weights loads one pytorch_lora_weights file" in " ".join(result.stderr.split())
    code, data = run_json("shard", str(lora), "--single", "-o", str(tmp_path / "lora-one"))
    assert code == 0 and [s["filename"] for s in data["plan"]["shards"]] == ["pytorch_lora_weights.safetensors"]
    assert not any("load_lora_weights" in w for w in data["plan"]["warnings"])

    timm = tmp_path / "timm"
    timm.mkdir()
    save_file({"conv1.weight": torch.randn(8, 3, 7, 7), "fc.weight": torch.randn(10, 8)}, timm / "model.safetensors")
    (timm / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 10}))
    code, data = run_json("shard", str(timm), "--max", "2KB", "-o", str(tmp_path / "timm-shards"))
    assert code == 0 and data["plan"]["index"] == "model.safetensors.index.json"
    assert any(w.startswith("timm loads one model.safetensors") for w in data["plan"]["warnings"]), data["plan"]
    code, data = run_json("shard", str(timm), "--single", "-o", str(tmp_path / "timm-one"))
    assert code == 0 and not any(w.startswith("timm") for w in data["plan"]["warnings"])


def test_a_kohya_lora_at_init_is_named_as_a_lora(tmp_path: Path) -> None:
    """kohya-ss sd-scripts start each `lora_up` at zero, as peft starts lora_B: inspect --stats called an untrained
    kohya LoRA's lora_up "a layer that was never initialized or was zeroed", and a peft one an adapter at init."""
    from safetensors.torch import save_file

    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    save_file({f"{name}.lora_down.weight": torch.randn(4, 32, dtype=torch.float16) * 0.02,
               f"{name}.lora_up.weight": torch.zeros(32, 4, dtype=torch.float16),
               f"{name}.alpha": torch.tensor(4.0, dtype=torch.float16)},
              tmp_path / "my_lora.safetensors", metadata={"ss_network_module": "networks.lora", "ss_network_dim": "4"})
    code, data = run_json("inspect", str(tmp_path / "my_lora.safetensors"), "--stats")
    assert code == 0, data
    zero = [f for f in data["findings"] if f["code"] == "all-zero"]
    assert [f["tensor"] for f in zero] == [f"{name}.lora_up.weight"], zero
    assert zero[0]["hint"].startswith("a LoRA adapter still at its initialization"), zero[0]


def test_a_dora_adapter_with_a_saved_head_is_said_plainly(tmp_path: Path) -> None:
    """peft writes a SEQ_CLS adapter saved with modules_to_save=["classifier"] as ["classifier", "classifier",
    "score"] (it appends its task's heads), and DoRA as use_dora: true beside peft_type LORA: the line read
    "LORA r=4 ... saves classifier, classifier, score whole", the DoRA unsaid."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    base = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, vocab_size=100, num_labels=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query"], use_dora=True,
                                                modules_to_save=["classifier"], task_type="SEQ_CLS"))
        model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    # As peft writes it: 0.21 appends its task's heads (one more "classifier"), 0.22 only those not listed yet.
    assert saved["modules_to_save"].count("classifier") in (1, 2) and "score" in saved["modules_to_save"]
    assert saved["use_dora"] is True
    line = " ".join(run_cli("inspect", str(tmp_path / "adapter")).stdout.replace("│", " ").split())
    # The file holds the classifier alone, though the config lists score too (test_lead26).
    assert "PEFT adapter LoRA (DoRA) r=4 alpha=8 on query; saves classifier whole (SEQ_CLS)" in line, line


def test_an_accelerate_fsdp_state_folder_names_where_the_weights_are(tmp_path: Path) -> None:
    """Accelerate's save_state under FSDP's SHARDED_STATE_DICT writes the model as a DCP folder
    (pytorch_model_fsdp_0/), the optimizer as another (optimizer_0/), beside scheduler.bin and random_states_0.pkl:
    the error said the folder "holds training state only ... not the model's weights"."""
    import pickle
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "checkpoint"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP says it saves from one process
        dcp.save({"model": {"w": torch.ones(2, 2)}}, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
        dcp.save({"optimizer": {"state": {"w": {"exp_avg": torch.ones(2, 2)}}}},
                 checkpoint_id=str(folder / "optimizer_0"))
    torch.save({"last_epoch": 1}, folder / "scheduler.bin")
    (folder / "random_states_0.pkl").write_bytes(pickle.dumps({"step": 1}))
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    assert "not the model's weights" not in line, line
    assert ("the model's weights are in pytorch_model_fsdp_0/, a torch.distributed.checkpoint (DCP) folder" in line
            and f"accelerate merge-weights {folder / 'pytorch_model_fsdp_0'} {folder}.merged" in line), line

    (folder / "pytorch_model_fsdp_0" / ".metadata").unlink()  # no model DCP folder: training state only, as before
    line = " ".join(run_cli("inspect", str(folder)).stderr.split())
    assert "training state only" in line and "merge-weights" not in line, line


def test_a_deepspeed_run_folder_points_at_the_step_latest_names(tmp_path: Path) -> None:
    """A DeepSpeed run folder holds global_step900/, global_step1000/ and `latest` (the tag load_checkpoint resumes
    from): the error's example was the first name sorted as text (global_step1000), whatever `latest` said."""
    run = tmp_path / "run"
    for step in (900, 1000):
        (run / f"global_step{step}").mkdir(parents=True)
        torch.save({"module": {"w": torch.ones(2, 2)}, "global_steps": step},
                   run / f"global_step{step}" / "mp_rank_00_model_states.pt")
    (run / "latest").write_text("global_step900")
    line = " ".join(run_cli("inspect", str(run)).stderr.split())
    assert ("weights are in subfolders (global_step900/, global_step1000/): point at one, e.g. "
            f"{run / 'global_step900'} (the one DeepSpeed's `latest` file names)") in line, line
    (run / "latest").unlink()
    line = " ".join(run_cli("inspect", str(run)).stderr.split())
    # Without `latest`, the highest step (fixlist12: it was the first, the earliest).
    assert line.endswith(f"e.g. {run / 'global_step1000'} (the highest-numbered, the run's latest save)"), line
    assert "DeepSpeed" not in line, line


def test_a_pickle_beside_the_safetensors_file_read_is_named(tmp_path: Path) -> None:
    """diffusers and open_clip repos keep both copies (diffusion_pytorch_model.bin beside .safetensors,
    open_clip_pytorch_model.bin beside open_clip_model.safetensors): the safetensors one was read, the other
    left unread with nothing said (from_pretrained's own names get a warning)."""
    _open_clip_folder(tmp_path / "oc", "open_clip_model.safetensors")
    torch.save({"logit_scale": torch.tensor(4.6)}, tmp_path / "oc" / "open_clip_pytorch_model.bin")
    code, data = run_json("inspect", str(tmp_path / "oc"))
    assert code == 0 and [f["path"] for f in data["files"] if f["role"] == "weights"] == ["open_clip_model.safetensors"]
    assert any(w.startswith("open_clip_pytorch_model.bin ignored: open_clip_model.safetensors is read")
               for w in data["warnings"]), data["warnings"]

    peft = tmp_path / "peft"  # an adapter saved both ways: peft loads adapter_model.safetensors first
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q"]}))
    torch.save({"base_model.model.q.lora_A.weight": torch.zeros(4, 8)}, peft / "adapter_model.bin")
    from safetensors.torch import save_file

    save_file({"base_model.model.q.lora_A.weight": torch.zeros(4, 8)}, peft / "adapter_model.safetensors")
    code, data = run_json("inspect", str(peft))
    assert code == 0 and any(w.startswith("adapter_model.bin ignored: adapter_model.safetensors is read (")
                             and "peft" in w for w in data["warnings"]), data["warnings"]

    single = tmp_path / "single"  # one safetensors file alone: nothing to say
    _open_clip_folder(single, "open_clip_model.safetensors")
    code, data = run_json("inspect", str(single))
    assert code == 0 and not any("ignored" in w for w in data["warnings"]), data["warnings"]


def test_key_reaches_an_int_keyed_entry(tmp_path: Path) -> None:
    """AUTOMATIC1111's hypernetworks key their layers by the attention width, an int ({320: [state dict, ...], 640:
    ..., "name": ...}): the error listed "entries: 320, 640, ..." and asked for --key, then `--key 320.0` answered
    "no entry '320'"."""
    def layers(width: int) -> list[dict[str, torch.Tensor]]:
        return [{"linear.0.weight": torch.randn(2 * width, width), "linear.1.weight": torch.randn(width, 2 * width)}
                for _ in range(2)]

    torch.save({320: layers(8), 640: layers(16), "name": "hn", "step": 100, "layer_structure": [1, 2, 1],
                True: "a bool key, never matched by 1"}, tmp_path / "hypernet.pt")
    code, data = run_json("inspect", str(tmp_path / "hypernet.pt"), "--key", "640.1")
    assert code == 0 and data["nested_key"] == "640.1", data
    shapes = {t["name"]: t["shape"] for t in data["tensors"]}
    assert shapes == {"linear.0.weight": [32, 16], "linear.1.weight": [16, 32]}
    code, data = run_json("convert", str(tmp_path / "hypernet.pt"), "--key", "320.0", "-o", str(tmp_path / "hn.st"))
    assert code == 0, data
    for missing in ("321", "1"):
        result = run_cli("inspect", str(tmp_path / "hypernet.pt"), "--key", missing)
        assert result.exit_code == 2 and f"no entry '{missing}'" in result.stderr, result.stderr


def test_convert_a_file_into_a_folder_named_with_a_trailing_slash(tmp_path: Path) -> None:
    """`convert v1-5-pruned.ckpt -o out/` (a folder, as cp reads it) wrote a file named `out`: Path() drops the
    slash. The file now goes inside, under the name a folder's conversion gives it."""
    from safetensors.torch import load_file

    state = {"model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3), "first_stage_model.quant_conv.bias":
             torch.randn(8)}
    torch.save({"state_dict": state, "global_step": 10}, tmp_path / "v1-5-pruned.ckpt")
    (tmp_path / "out").mkdir()
    code, data = run_json("convert", str(tmp_path / "v1-5-pruned.ckpt"), "-o", f"{tmp_path / 'out'}/")
    assert code == 0, data
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["v1-5-pruned.safetensors"]
    back = load_file(tmp_path / "out" / "v1-5-pruned.safetensors")
    assert back.keys() == state.keys() and all(torch.equal(back[k], v) for k, v in state.items())

    result = run_cli("convert", str(tmp_path / "v1-5-pruned.ckpt"), "-o", f"{tmp_path / 'missing'}/", "--to", "bin")
    assert result.exit_code == 2 and not (tmp_path / "missing").exists()
    assert f"{tmp_path / 'missing' / 'v1-5-pruned.bin'}: cannot write the output: the output folder does not exist" \
        in " ".join(result.stderr.split()), result.stderr


def test_shards_of_flux_and_diffusers_layout_loras_say_their_loaders_read_one_file(tmp_path: Path) -> None:
    """Black Forest Labs' flux1-dev.safetensors (double_blocks.*, single_blocks.*, no prefix) and a Flux LoRA in
    diffusers' layout under its own name (ai-toolkit: transformer.*.lora_A.weight) are loaded as one file (ComfyUI,
    from_single_file, load_lora_weights): shard split them with nothing said."""
    from safetensors.torch import save_file

    save_file({"double_blocks.0.img_attn.qkv.weight": torch.randn(96, 32), "single_blocks.0.linear1.weight":
               torch.randn(96, 32), "img_in.weight": torch.randn(32, 64)}, tmp_path / "flux1-dev.safetensors")
    save_file({f"transformer.single_transformer_blocks.{i}.attn.to_k.lora_{ab}.weight": torch.randn(16, 64)
               for i in range(3) for ab in "AB"}, tmp_path / "my_flux_lora.safetensors")
    for name, kind in (("flux1-dev", "an original-layout Flux checkpoint"),
                       ("my_flux_lora", "a LoRA in diffusers' layout")):
        source = tmp_path / f"{name}.safetensors"
        code, data = run_json("shard", str(source), "--max", "5KB", "-o", str(tmp_path / name))
        assert code == 0 and data["plan"]["index"] is not None, data
        assert any(w.startswith(f"{kind} is loaded from one file") for w in data["plan"]["warnings"]), data["plan"]

    plain = tmp_path / "plain.safetensors"  # a transformers-style model: nothing to say
    save_file({"model.layers.0.mlp.up_proj.weight": torch.randn(64, 32), "lm_head.weight": torch.randn(64, 32)}, plain)
    code, data = run_json("shard", str(plain), "--max", "5KB", "-o", str(tmp_path / "plain"))
    assert code == 0 and not any("one file" in w for w in data["plan"]["warnings"]), data["plan"]["warnings"]


def test_a_zero3_step_folder_with_one_model_states_file_per_rank_says_how_to_gather(tmp_path: Path) -> None:
    """Under ZeRO-3 DeepSpeed writes zero_pp_rank_<dp>_mp_rank_00_model_states.pt, one per data-parallel rank, beside
    the bf16_zero_pp_rank_* optimizer partitions: the step folder was "several weight files and no index; name one",
    and the run folder holding zero_to_fp32.py did not name it."""
    run = tmp_path / "run"
    step = run / "global_step5"
    step.mkdir(parents=True)
    for rank in range(2):
        torch.save({"module": {"w": torch.empty(0, dtype=torch.bfloat16)}, "param_shapes": [{"w": torch.Size([4, 4])}],
                    "ds_version": "0.14.0"}, step / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": {"zero_stage": 3}},
                   step / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (run / "latest").write_text("global_step5")
    (run / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    result = run_cli("inspect", str(step))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "folder holds DeepSpeed ZeRO-3 model states, one per data-parallel rank" in line
    assert "zero_to_fp32.py" in line and "name one" not in line, line
    line = " ".join(run_cli("inspect", str(run)).stderr.split())
    assert f"python {run / 'zero_to_fp32.py'} {run} {run}.fp32 --safe_serialization" in line, line


def test_a_megatron_torch_dist_checkpoint_is_named_as_its_dcp_shards(tmp_path: Path) -> None:
    """Megatron-Core's torch_dist format writes iter_0001000/ as a DCP folder plus common.pt (the run's args,
    iteration, RNG) and metadata.json: common.pt was read as the weights, "no state dict found ... pick one with
    --key"."""
    import argparse
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "iter_0001000"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"decoder.layers.self_attention.linear_qkv.weight": torch.ones(2, 4, 4)}, checkpoint_id=str(folder))
    torch.save({"args": argparse.Namespace(num_layers=2), "checkpoint_version": 3.0, "iteration": 1000},
               folder / "common.pt")
    (folder / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist", "common_backend": "torch"}))
    result = run_cli("inspect", str(folder))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "a Megatron-Core torch_dist checkpoint" in line and "--key" not in line, line
    assert "dcp_to_torch_save" in line
    code, _ = run_json("inspect", str(folder / "common.pt"))  # named itself: no state dict in it, as before
    assert code == 2


def test_a_deepspeed_pipeline_parallel_step_folder_says_what_it_is(tmp_path: Path) -> None:
    """DeepSpeed's pipeline engine (GPT-NeoX) saves global_stepN/layer_00-model_00-model_states.pt, one per layer,
    each under names without its layer number, beside an mp_rank_00 file whose module is None: the folder was
    "several weight files and no index; name one"."""
    step = tmp_path / "global_step10"
    step.mkdir()
    for layer in range(3):
        torch.save({"attention.dense.weight": torch.randn(4, 4)}, step / f"layer_{layer:02d}-model_00-model_states.pt")
    torch.save({"module": None, "global_steps": 10, "ds_version": "0.14.0"}, step / "mp_rank_00_model_states.pt")
    result = run_cli("inspect", str(step))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "a DeepSpeed pipeline-parallel checkpoint: 3 layer files" in line, line
    code, data = run_json("inspect", str(step / "layer_01-model_00-model_states.pt"))  # one layer, as asked
    assert code == 0 and data["num_params"] == 16


def test_a_folder_of_one_sft_file_is_read(tmp_path: Path) -> None:
    """Flux's releases name safetensors files `.sft` (ae.sft): named directly it read fine, but a folder holding
    only it said it held no weight file."""
    from safetensors.torch import save_file

    folder = tmp_path / "flux-ae"
    folder.mkdir()
    save_file({"decoder.conv_in.weight": torch.ones(4, 2), "encoder.conv_in.bias": torch.zeros(4)}, folder / "ae.sft")
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["num_tensors"] == 2 and data["format"] == "safetensors"
    assert [f["path"] for f in data["files"]] == ["ae.sft"]
