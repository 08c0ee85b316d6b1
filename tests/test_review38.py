"""Review of the third-party and tar-scan merges (thirdparty18, thirdparty19, redteam21): what they broke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_cli, runs_when_loaded_from_memory, write_legacy_save_with_frame_past_stop


def _folder_with_auto_map(folder: Path, auto_map: dict[str, str]) -> Path:
    folder.mkdir()
    torch.manual_seed(0)
    save_file({"w": torch.randn(2, 2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "not_in_transformers", "auto_map": auto_map}))
    return folder


def test_an_auto_map_module_name_too_long_for_a_file_name_does_not_end_inspect(tmp_path: Path) -> None:
    # The name is looked up beside the weights: Path.is_file raised "File name too long" (errno 36), and inspect
    # ended with "cannot read or write", reading nothing of a file it reads well.
    folder = _folder_with_auto_map(tmp_path / "model", {"AutoModel": "m" * 300 + ".MyModel"})
    result = run_cli("inspect", folder, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    warning = next(w for w in report["warnings"] if "auto_map names code of its own" in w)
    assert "not in this folder" in warning
    assert "characters left out" in warning and len(warning) < 600  # the name is cut, not written whole


def test_a_training_output_dir_names_its_save_as_a_path_a_shell_reads_back(tmp_path: Path) -> None:
    # "point at one, e.g. /x/run 1/checkpoint-5/unet": pasted, the shell read two words; and one save was "its
    # subfolders checkpoint-5/ are one run's saves".
    unet = tmp_path / "run 1" / "checkpoint-5" / "unet"
    unet.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(unet / "diffusion_pytorch_model.safetensors"))
    result = run_cli("inspect", tmp_path / "run 1")
    assert result.exit_code != 0
    line = " ".join(result.stderr.split())
    assert "its subfolder checkpoint-5/ is a run's save" in line, line
    assert f"e.g. '{unet}'" in line, line


def test_the_quantizer_check_keeps_what_an_installed_quantizer_package_prints_off_stdout(tmp_path: Path) -> None:
    # transformers' GPTQ quantizer imports optimum.gptq as it is built, where optimum is installed; a package that
    # prints as it is imported printed onto stdout, ahead of diff-keys' --json report.
    package = tmp_path / "site" / "optimum"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "gptq.py").write_text(
        "print('optimum banner on stdout')\n"
        "class GPTQQuantizer:\n"
        "    @classmethod\n"
        "    def from_dict(cls, config):\n"
        "        return cls()\n")
    code = ("from weightdoctor.quantized import quantizer_load_error\n"
            "import sys\n"
            "said = quantizer_load_error({'quant_method': 'gptq', 'bits': 4, 'group_size': 128})\n"
            "sys.stderr.write(repr(said))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)]),
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "optimum banner" not in done.stdout and done.stdout == ""
    # The fake optimum was imported (it is what from_pretrained would import), and the check still answered.
    assert "from_pretrained raises" in done.stderr, done.stderr


def _plan_warnings(folder: Path) -> list[str]:
    result = run_cli("plan-devices", folder, "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["warnings"]


def test_an_old_architecture_name_without_auto_map_is_not_called_remote_code(tmp_path: Path) -> None:
    # decapoda-research/llama-7b-hf's config: "LLaMAForCausalLM", model_type llama, no auto_map. It was "remote code,
    # which weightdoctor never runs ... with it [trust_remote_code] the repo's own code builds the model": the repo
    # has no code, and trust_remote_code changes nothing.
    folder = tmp_path / "llama"
    folder.mkdir()
    config = {"architectures": ["LLaMAForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000}
    (folder / "config.json").write_text(json.dumps(config))
    said = next(w for w in _plan_warnings(folder) if "LLaMAForCausalLM" in w)
    assert "remote code" not in said and "trust_remote_code" not in said, said
    assert "no auto_map names code for it: planned as LlamaForCausalLM" in said, said
    # With an auto_map naming the repo's code, the warning says so, as before.
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {
        "AutoModelForCausalLM": "modeling_llama_old.LLaMAForCausalLM"}}))
    said = next(w for w in _plan_warnings(folder) if "LLaMAForCausalLM" in w)
    assert "remote code its auto_map names" in said and "without trust_remote_code" in said, said


def test_a_long_remote_architecture_name_is_cut_in_the_warning(tmp_path: Path) -> None:
    folder = tmp_path / "mpt"
    folder.mkdir()
    config = {"architectures": ["M" * 5000 + "ForCausalLM"], "model_type": "mpt", "d_model": 64, "n_heads": 4,
              "n_layers": 2, "vocab_size": 1000, "max_seq_len": 128}
    (folder / "config.json").write_text(json.dumps(config))
    said = next(w for w in _plan_warnings(folder) if "is no transformers class" in w)
    assert "characters left out" in said and len(said) < 600, len(said)


def test_a_frame_past_the_stop_is_refused_when_a_second_frame_nested_in_it_ends_at_the_stop(tmp_path: Path) -> None:
    # The magic-number pickle of a legacy torch.save opens a FRAME that runs past its STOP into the next pickle's
    # bytes value (a protocol-less STACK_GLOBAL call of posix.system), and inside it a second FRAME that ends at the
    # STOP. C's unpickler reads each frame's bytes off a stream without peek: io.BytesIO is left after the first,
    # outer frame, and torch.load(io.BytesIO(data)) runs the call; a file is read on after the STOP. The walk kept
    # only the last frame's end, at the STOP, and called the file safe.
    from weightdoctor.security.scan import scan_file

    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    write_legacy_save_with_frame_past_stop(path, sentinel, nested=True)
    assert torch.equal(torch.load(path, weights_only=False)["w"], torch.ones(3))  # the file's reading

    report = scan_file(path)
    assert report.verdict != "safe", report.summary()
    assert any("FRAME runs 7 bytes past its STOP" in p.message for p in report.problems), report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "past its STOP" in result.stderr, result.stderr
    assert not sentinel.exists()
    assert runs_when_loaded_from_memory(path, sentinel)  # the payload is live when the same bytes are loaded so


def _diff_json(a: Path, b: Path) -> dict:
    result = run_cli("diff-keys", a, b, "--json")
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def _tied_base(folder: Path) -> Path:
    # GPT-2's save_pretrained: lm_head.weight is tied to transformer.wte.weight and stored once, as the latter.
    folder.mkdir()
    torch.manual_seed(0)
    save_file({"transformer.wte.weight": torch.randn(100, 8), "transformer.h.0.attn.c_attn.weight": torch.randn(8, 24),
               "transformer.ln_f.weight": torch.ones(8)}, str(folder / "model.safetensors"))
    return folder


def test_an_adapter_on_the_tied_output_embedding_is_in_b(tmp_path: Path) -> None:
    # peft's TrainableTokensConfig(target_modules=["wte"]) on a tied model saves lm_head's delta too; a LoRA on
    # lm_head saves its pair. B (save_pretrained) stores lm_head.weight once, as transformer.wte.weight: "targets
    # lm_head, which B does not have: the adapter's weights for it are dropped", worst severity error, where peft
    # loads both into the model B builds.
    base = _tied_base(tmp_path / "base")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    save_file({"base_model.model.lm_head.trainable_tokens_delta": torch.randn(2, 8),
               "base_model.model.transformer.wte.trainable_tokens_delta": torch.randn(2, 8)},
              str(tokens / "adapter_model.safetensors"))
    report = _diff_json(tokens, base)
    assert report["worst_severity"] != "error", report["groups"]
    assert "Trainable Tokens on 2 modules, 2 of them in B" in report["notes"][0], report["notes"]

    lora = tmp_path / "lora"
    lora.mkdir()
    save_file({"base_model.model.lm_head.lora_A.weight": torch.randn(4, 8),
               "base_model.model.lm_head.lora_B.weight": torch.zeros(100, 4)}, str(lora / "adapter_model.safetensors"))
    report = _diff_json(lora, base)
    assert report["worst_severity"] != "error", report["groups"]
    assert "LoRA (rank 4) on 1 module, 1 of them in B with shapes that fit" in report["notes"][0], report["notes"]

    # The shapes are still compared with the embedding it is tied to: an adapter for another vocabulary is caught.
    save_file({"base_model.model.lm_head.lora_A.weight": torch.randn(4, 8),
               "base_model.model.lm_head.lora_B.weight": torch.zeros(120, 4)}, str(lora / "adapter_model.safetensors"))
    report = _diff_json(lora, base)
    assert report["worst_severity"] == "error" and "0 of them in B" in report["notes"][0], report["notes"]


def test_a_config_whose_model_type_is_not_a_string_is_read_as_before(tmp_path: Path) -> None:
    # The composite encoder-decoder check looked model_type up in a set: a list there (a damaged config.json) was
    # "unexpected TypeError: unhashable type: 'list'" from inspect and plan-devices --kv-cache, which read it before.
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": ["bert"], "hidden_size": 8,
                                                    "num_hidden_layers": 2, "num_attention_heads": 2}))
    result = run_cli("inspect", folder, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["config"]["hidden_size"] == 8
    result = run_cli("plan-devices", folder, "--gpu", "1GB", "--kv-cache", "--seq-len", "16", "--json")
    assert "TypeError" not in result.stderr, result.stderr
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kv_cache"], result.stdout
