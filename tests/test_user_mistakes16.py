"""Round 16 of the common mistakes users make: an ML engineer's bad day, the checkpoint built by the real libraries.

Covers: an FSDP run (use_orig_params=False) whose weights were saved from named_parameters(), one 1-D
`_fsdp_wrapped_module._flat_param` holding the whole model, which diff-keys called "unknown: no known cause" on every
side and gave no fix; a tied model (Qwen3, BERT's MLM head) whose vocabulary was resized, where diff-keys' note said
"resize B's model first ... and then load_state_dict A", which raises on the tied output layer save_pretrained does
not store; a sharded upload with one shard replaced by a shard of another save (its index intact), refused as
"tensor X is in both shard 1 and shard 3" without naming the file to fetch again (from_pretrained loads it without
raising, the stranger's tensors in, the index's own ones at random); a PEFT adapter checked with --model-class, told
only "pass --config" (its adapter_config.json names the base) and, given one, that from_pretrained(A) "raises here:
rename it so" (it loads the base and the adapter onto it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, json_report, one_error_line, run_cli


def _tiny_llama_config(**overrides: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **overrides)


# --- FSDP's flat parameter ---------------------------------------------------------------------------------------

_FSDP_RUN = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from transformers import LlamaForCausalLM
    base, out, init = sys.argv[1:4]
    dist.init_process_group("gloo", init_method="file://" + init, rank=0, world_size=1)
    model = FSDP(LlamaForCausalLM.from_pretrained(base), device_id=torch.device("cpu"), use_orig_params=False)
    # The mistake: the parameters by name, as a training loop without FSDP saved them.
    torch.save({name: p.detach().clone() for name, p in model.named_parameters()}, out + "/named_params.pt")
    # The fix the note gives, pasted.
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    torch.save(full, out + "/full.pt")
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def fsdp_saves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded Llama saved by save_pretrained in `base/`, then wrapped in FSDP (one CPU rank, gloo) and saved
    twice: `named_params.pt` from named_parameters(), `full.pt` as the full state dict."""
    import torch
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("fsdp")
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config()).save_pretrained(root / "base")
    done = subprocess.run([sys.executable, "-c", _FSDP_RUN, str(root / "base"), str(root), str(root / "rendezvous")],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_an_fsdp_flat_parameter_is_named_with_the_save_that_loads(fsdp_saves: Path) -> None:
    """Every key was "unknown: no known cause: these weights will not load" (the flat parameter and the 21 weights
    of the model alike, lm_head "initialized at random (not tied)"), and nothing said how to save them."""
    import torch

    flat = torch.load(fsdp_saves / "named_params.pt", weights_only=True)
    assert list(flat) == ["_fsdp_wrapped_module._flat_param"]  # what FSDP really names it
    report = json_report("diff-keys", fsdp_saves / "named_params.pt", "--model-class", "LlamaForCausalLM",
                         "--config", fsdp_saves / "base")
    (unexpected,) = report["unexpected"]
    assert unexpected["reason"] == "fsdp-flat-param" and unexpected["severity"] == "error"
    size = flat["_fsdp_wrapped_module._flat_param"].numel()
    assert unexpected["detail"] == f"{size:,} values of the whole model in one 1-D tensor"
    # Each weight of the model, the output layer included, is said to be inside it; none is "unknown".
    assert len(report["missing"]) == 21
    assert {(row["reason"], row["detail"]) for row in report["missing"]} == {
        ("fsdp-flat-param", "flattened into A's _fsdp_wrapped_module._flat_param")}
    (note,) = [note for note in report["notes"] if "FSDP flat parameter" in note]
    assert "get_model_state_dict(fsdp_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))" in note

    # inspect showed one 1-D tensor and said nothing; it now says what it is and the same save.
    (warning,) = [w for w in json_report("inspect", fsdp_saves / "named_params.pt")["warnings"] if "FSDP" in w]
    assert warning.startswith(f"1 FSDP flat parameter (_fsdp_wrapped_module._flat_param, {size:,} values)")
    assert "get_model_state_dict(fsdp_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))" \
        in warning
    assert not any("FSDP" in w for w in json_report("inspect", fsdp_saves / "full.pt")["warnings"])

    # The save the note gives (run in the FSDP process above) loads whole.
    fixed = json_report("diff-keys", fsdp_saves / "full.pt", "--model-class", "LlamaForCausalLM",
                        "--config", fsdp_saves / "base")
    assert (fixed["matched"], fixed["missing"], fixed["unexpected"], fixed["worst_severity"]) == (21, [], [], None)


def test_a_local_state_dicts_nested_flat_parameters_hold_their_modules(tmp_path: Path) -> None:
    """FSDP's LOCAL_STATE_DICT names a wrapped layer's flat parameter `model.layers.0._flat_param`: the layer's
    weights are said to be in it, the rest in the root's."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_llama_config())
    model.save_pretrained(tmp_path / "base")
    layer0 = [p for n, p in model.named_parameters() if n.startswith("model.layers.0.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("model.layers.0.")]
    torch.save({"model.layers.0._flat_param": torch.cat([p.detach().flatten() for p in layer0]),
                "_flat_param": torch.cat([p.detach().flatten() for p in rest])}, tmp_path / "local.pt")
    report = json_report("diff-keys", tmp_path / "local.pt", "--model-class", "LlamaForCausalLM",
                         "--config", tmp_path / "base")
    holders = {row["name"]: row["detail"].removeprefix("flattened into A's ") for row in report["missing"]}
    assert holders["model.layers.0.mlp.up_proj.weight"] == "model.layers.0._flat_param"
    assert holders["model.layers.1.mlp.up_proj.weight"] == "_flat_param"
    assert holders["lm_head.weight"] == "_flat_param"
    assert {row["reason"] for row in report["missing"] + report["unexpected"]} == {"fsdp-flat-param"}
    details = {row["name"]: row["detail"] for row in report["unexpected"]}
    assert details["model.layers.0._flat_param"] == (
        f"{sum(p.numel() for p in layer0):,} values of model.layers.0. in one 1-D tensor")


# --- A resized vocabulary on a tied model ------------------------------------------------------------------------

def _note_of(report: dict[str, Any]) -> str:
    (note,) = [note for note in report["notes"] if note.startswith("the vocabulary differs")]
    return note


def _resize_then_load(model_class: Any, base: Path, resized: Path, tokens: int, strict: bool) -> Any:
    """The note's second way, as typed: B's model resized, then A's state dict loaded into it."""
    from safetensors.torch import load_file

    model = model_class.from_pretrained(base)
    model.resize_token_embeddings(tokens)
    model.load_state_dict(load_file(resized / "model.safetensors"), strict=strict)
    return model


@pytest.mark.parametrize("kind", ["qwen3", "bert-mlm"])
def test_a_resized_tied_vocabulary_note_loads_as_it_says(tmp_path: Path, kind: str) -> None:
    """The note said "resize B's model first (model.resize_token_embeddings(N) ...) and then load_state_dict A": with
    the output layer tied (Qwen3's lm_head, BERT's cls.predictions.decoder) save_pretrained stores the embedding
    alone and that load_state_dict raised "Missing key(s) in state_dict: lm_head.weight"."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    if kind == "qwen3":
        model_class: Any = Qwen3ForCausalLM
        model = Qwen3ForCausalLM(Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             tie_word_embeddings=True))
    else:
        model_class = BertForMaskedLM
        model = BertForMaskedLM(BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=64))
    model.save_pretrained(tmp_path / "base")
    model.resize_token_embeddings(model.config.vocab_size + 2, pad_to_multiple_of=64)
    tokens = model.config.vocab_size
    model.save_pretrained(tmp_path / "resized")

    for report in (json_report("diff-keys", tmp_path / "resized", tmp_path / "base"),
                   json_report("diff-keys", tmp_path / "resized", "--model-class", model_class.__name__,
                               "--config", tmp_path / "base")):
        note = _note_of(report)
        assert f"model.resize_token_embeddings({tokens})" in note
        assert "then model.load_state_dict(A, strict=False)" in note

    # What the note said before raises; what it says now gives A's model, tie included.
    with pytest.raises(RuntimeError, match="Missing key"):
        _resize_then_load(model_class, tmp_path / "base", tmp_path / "resized", tokens, strict=True)
    loaded = _resize_then_load(model_class, tmp_path / "base", tmp_path / "resized", tokens, strict=False)
    reference = model_class.from_pretrained(tmp_path / "resized")
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in reference.state_dict().items())
    output = loaded.get_output_embeddings().weight
    assert output.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


def test_a_resized_untied_vocabulary_keeps_the_strict_load(tmp_path: Path) -> None:
    """An untied Llama stores its lm_head: a strict load_state_dict works, and the note says only that."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_llama_config(tie_word_embeddings=False))
    model.save_pretrained(tmp_path / "base")
    model.resize_token_embeddings(260)
    model.save_pretrained(tmp_path / "resized")
    note = _note_of(json_report("diff-keys", tmp_path / "resized", tmp_path / "base"))
    assert note.endswith("and then load_state_dict A") and "strict=False" not in note
    _resize_then_load(LlamaForCausalLM, tmp_path / "base", tmp_path / "resized", 260, strict=True)


def test_a_resized_state_dict_keeping_the_tied_copy_is_not_said_to_lack_it(tmp_path: Path) -> None:
    """torch.save(model.state_dict()) of a tied model keeps lm_head.weight, one storage with the embedding: the note
    does not say A lacks it."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                         tie_word_embeddings=True))
    model.save_pretrained(tmp_path / "base")
    model.resize_token_embeddings(320)
    torch.save(model.state_dict(), tmp_path / "resized.bin")
    report = json_report("diff-keys", tmp_path / "resized.bin", tmp_path / "base")
    note = _note_of(report)
    assert "strict=False" not in note and "and then load_state_dict A" in note


# --- A shard of another upload under a shard's name ------------------------------------------------------------

def test_a_shard_of_another_upload_is_named_as_the_one_to_fetch_again(tmp_path: Path) -> None:
    """A sharded upload whose third shard was replaced by a shard of another save (another model, another
    max_shard_size) under the same name, its index intact: every command said only "tensor
    'model.embed_tokens.weight' is in both model-00001-of-00005.safetensors and model-00003-of-00005.safetensors",
    not which file is wrong. from_pretrained loads it without raising: the stranger's embedding, and the tensors the
    index puts in that shard at random."""
    import torch
    from safetensors import safe_open
    from transformers import LlamaForCausalLM


    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config()).save_pretrained(tmp_path / "upload", max_shard_size="100KB")
    torch.manual_seed(1)
    LlamaForCausalLM(_tiny_llama_config()).save_pretrained(tmp_path / "other", max_shard_size="150KB")
    index = json.loads((tmp_path / "upload" / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(set(index.values()))
    odd = shards[2]
    good = (tmp_path / "upload" / odd).read_bytes()
    stranger = tmp_path / "other" / "model-00001-of-00003.safetensors"
    (tmp_path / "upload" / odd).write_bytes(stranger.read_bytes())
    with safe_open(str(stranger), "np") as held:
        holds = list(held.keys())
    own = [name for name, file in index.items() if file == odd]
    elsewhere = sum(index[name] != odd for name in holds)
    lacked = sorted(set(own) - set(holds))
    assert elsewhere and lacked  # the scenario holds: tensors of other shards, and a gap

    for command in (["inspect"], ["diff-keys", str(tmp_path / "other")], ["check-dtype"],
                    ["convert", "-o", str(tmp_path / "out")], ["shard", "--max", "1MB", "-o", str(tmp_path / "sh")]):
        result = run_cli(command[0], tmp_path / "upload", *command[1:])
        assert result.exit_code == 2 and not result.stdout
        line = one_error_line(result)
        assert f"{odd} is no shard of this index (it holds {elsewhere} tensors the index puts in other shards " \
               f"and lacks {len(lacked)} of the {len(own)} the index lists for it" in line, line
        assert line.endswith(f"fetch {odd} again"), line
        assert "the index puts it in " + shards[0] in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "sh").exists()
    # plan-devices needs no weights: it names the config that plans meanwhile, as for a missing shard; pasted, it plans.
    line = one_error_line(run_cli("plan-devices", tmp_path / "upload", "--gpu", "1GB"))
    assert f"fetch {odd} again; plan-devices plans from the config alone meanwhile: give it " in line, line
    config = line.split("give it ", 1)[1].removesuffix(" in place of the folder")
    assert json_report("plan-devices", config, "--gpu", "1GB")["verdict"] == "fits-on-gpus"

    # What from_pretrained does meanwhile: no error, the lacked tensors start at random.
    _, info = LlamaForCausalLM.from_pretrained(tmp_path / "upload", output_loading_info=True)
    assert sorted(info["missing_keys"]) == lacked

    # The shard fetched again: read whole.
    (tmp_path / "upload" / odd).write_bytes(good)
    report = json_report("inspect", tmp_path / "upload")
    assert report["num_tensors"] == len(index) and report["warnings"] == []


# --- A PEFT adapter checked against its class ----------------------------------------------------------------------

def test_a_peft_adapter_against_its_class_names_its_base_and_is_not_told_to_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`diff-keys my-lora --model-class BertForSequenceClassification` said only "pass --config", where the
    adapter names its base; given --config, a note said from_pretrained(A) "raises here (no such file): ... rename it
    so", sending adapter_model.safetensors to be read as a whole model. from_pretrained of the adapter folder loads
    its base and the adapter onto it (peft installed), which the note now leaves alone."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, num_labels=3)
                                  ).save_pretrained("my base")
    peft_model = get_peft_model(BertForSequenceClassification.from_pretrained("my base"),
                                LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    peft_model.save_pretrained("my-lora")
    assert json.loads(Path("my-lora/adapter_config.json").read_text())["base_model_name_or_path"] == "my base"

    result = run_cli("diff-keys", "my-lora", "--model-class", "BertForSequenceClassification")
    line = one_error_line(result)
    assert line.endswith("A is a PEFT adapter, whose model is its base's: --config 'my base' (adapter_config.json's "
                         "base_model_name_or_path, what from_pretrained(A) loads it onto)"), line

    # The --config it names, pasted.
    report = json_report("diff-keys", "my-lora", "--model-class", "BertForSequenceClassification", "--config",
                         "my base")
    assert not any("rename it so" in note or "raises here" in note for note in report["notes"]), report["notes"]
    assert report["from_pretrained_reads_a"] is True
    assert report["worst_severity"] == "info"
    # What transformers does with the folder: the base, then the adapter onto it.
    loaded, info = BertForSequenceClassification.from_pretrained("my-lora", output_loading_info=True)
    assert hasattr(loaded, "peft_config") and not info["missing_keys"] and not info["unexpected_keys"]
