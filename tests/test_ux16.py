"""ux16: a new user's first hour with README and docs: what the printed lines say, checked against the numbers
beside them (the KV cache's per-token product, a sliding window's note placed with the figures it explains)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli

MISTRAL = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 256,
           "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
           "vocab_size": 1000, "torch_dtype": "bfloat16", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
           "sliding_window": 64}


def _config(tmp_path: Path, **changes: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({**MISTRAL, **changes}))
    return tmp_path / "config.json"


def _kv_line(stdout: str) -> str:
    """The KV cache sentence, its wrapped lines joined, up to the verdict."""
    return " ".join(stdout.split("\n")).split("KV cache: ")[1].split("verdict:")[0]


def test_kv_per_token_is_a_product_that_multiplies_out(tmp_path: Path) -> None:
    """'(2.05 KB/token, 4 layers x 2 KV heads x 64 at bfloat16)' multiplied to 512 bytes, not 2,048: the keys and
    values' 2 and the 2 bytes of bfloat16 were left out, and '64' had no unit."""
    result = run_cli("plan-devices", _config(tmp_path, sliding_window=None), "--gpu", "8GB", "--kv-cache",
                     "--seq-len", "128")
    assert result.exit_code == 0, result.stderr
    line = _kv_line(result.stdout)
    # 2 x 4 x 2 x 64 x 2 = 2,048 bytes a token
    assert "(2.05 KB/token: 2 (keys and values) x 4 layers x 2 KV heads x 64 values a head x 2 bytes (bfloat16))" \
        in line, line


def test_sliding_window_note_sits_with_the_figures_it_explains(tmp_path: Path) -> None:
    """The total (4 layers keeping 64 tokens) is not per-token x 128 tokens; the note saying why came after the
    room sentence, as a second parenthesis, far from the figures."""
    result = run_cli("plan-devices", _config(tmp_path), "--gpu", "8GB", "--kv-cache", "--seq-len", "128")
    assert result.exit_code == 0, result.stderr
    line = _kv_line(result.stdout)
    assert "for batch 1 x 128 tokens (2.05 KB/token: " in line, line
    # plan6: the note also says what DynamicCache holds right after a longer prompt; it still ends the parentheses
    assert "(bfloat16); sliding-window layers keep at most 64 tokens while generating (right after a longer prompt, " \
        "transformers' DynamicCache still holds all of it there until the next token)); fits in the " in line, line
    assert line.index("sliding-window") < line.index("fits in"), line


COMMANDS = ("inspect", "diff-keys", "plan-devices", "convert", "shard", "check-dtype")


def test_every_commands_help_says_its_exit_codes() -> None:
    """Only plan-devices' --help said what its exit codes mean; a CI author reading `shard --help` or
    `diff-keys --help` could not tell 1 (findings) from 2 (bad input) without the README."""
    for command in COMMANDS:
        result = run_cli(command, "--help")
        text = " ".join(result.stdout.split())
        assert result.exit_code == 0 and "Exit codes: 0 " in text, (command, text[:400])
        assert " 2 " in text.split("Exit codes:")[1][:300], command
        # Every command has an exit 1 now: convert and shard's --fail-on info|warn weighs their warnings.
        assert "; 1 " in text.split("Exit codes:")[1][:200], command


def test_shard_help_says_max_is_required_unless_single() -> None:
    """`--max` showed no default and nothing said it is required: without it (or --single) shard refuses."""
    text = " ".join(run_cli("shard", "--help").stdout.split())
    assert "Required unless --single" in text, text
    refused = run_cli("shard", "fixtures/example", "-o", "unused-out")
    assert refused.exit_code == 2 and "give --max SIZE" in refused.stderr, refused.stderr


LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 100, "max_position_embeddings": 128}


def test_architectures_given_as_a_string_is_fixed_by_advice_every_command_takes(tmp_path: Path) -> None:
    """'pass --model-class' was the one advice, also in inspect --stats' warning, where no such flag exists
    (pasted: 'No such option'). The fix that works everywhere is the list the string should have been."""
    import torch
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "architectures": "LlamaForCausalLM"}))
    torch.manual_seed(0)
    save_file({"model.embed_tokens.weight": torch.randn(100, 64)}, str(tmp_path / "model.safetensors"))
    result = run_cli("inspect", tmp_path, "--stats")
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert 'not a list of model class names; nothing was built from it: write it as a list, ["LlamaForCausalLM"]' \
        in said, said
    refused = run_cli("plan-devices", tmp_path / "config.json", "--gpu", "1GB")
    assert refused.exit_code == 2
    from tests.test_compat_load import architectures_advice_end

    assert " ".join(refused.stderr.split()).endswith(
        f'write it as a list, ["LlamaForCausalLM"] {architectures_advice_end("LlamaForCausalLM")}'), refused.stderr


def test_a_refused_quantization_config_says_which_number_is_a_string_and_does_not_contradict_the_plan(
        tmp_path: Path) -> None:
    """GPTQ's bits "4" was said as transformers words it, 'Only support quantization to [2,3,4,8] bits but found 4'
    (no fault a reader can see), and 'planned as the config says once that is fixed' beside 'planned at the floating
    dtype ... an upper bound': fixed, bits 4 is planned at int4, not as this plan."""
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "architectures": ["LlamaForCausalLM"],
                                                      "quantization_config": {"quant_method": "gptq", "bits": "4"}}))
    result = run_cli("plan-devices", tmp_path / "config.json", "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    [refused] = [line for line in warnings if "refuses config.json's quantization_config" in line]
    assert 'but found 4; bits is the string "4", not the number 4)' in refused, refused
    assert "once that is fixed" not in refused and refused.endswith(
        "from_pretrained fails on it as it is, so this plan is of a model that does not load until the config is "
        "fixed"), refused


def test_diff_keys_help_example_of_rename_is_anchored_as_its_own_suggestion(tmp_path: Path) -> None:
    """--help showed --rename 'module\\.=', which renames 'encoder.submodule.w' to 'encoder.subw' (re.sub, first
    match anywhere); the suggested fix diff-keys prints is '^module\\.='. Pasted, the help's form must not harm a
    key that does not start with the prefix."""
    import torch
    from safetensors.torch import save_file

    text = " ".join(run_cli("diff-keys", "--help").stdout.split())
    assert "e.g. --rename '^module\\.='" in text, text
    tensors = {"encoder.submodule.w": torch.zeros(2), "head.w": torch.zeros(2)}
    save_file({f"module.{k}" if k == "head.w" else k: v for k, v in tensors.items()}, str(tmp_path / "a.safetensors"))
    save_file(tensors, str(tmp_path / "b.safetensors"))
    result = run_cli("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--rename", "^module\\.=",
                     "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["matched"] == 2, result.stdout
