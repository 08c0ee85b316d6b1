"""ux17: every command's words on genuine checkpoints (tiny, seeded transformers and peft models), read as the user
who meets them when a checkpoint goes wrong: a shard missing, a LoRA on the wrong base, a resized vocabulary, a
classifier head never trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def _one_error_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, stderr  # type: ignore[attr-defined]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_one_missing_shard_of_three_is_said_in_the_singular(tmp_path: Path) -> None:
    """A 3-shard save_pretrained folder with its second shard gone said '(1 of its 3 shards are missing; ... fetch
    or copy them beside the index)'; two gone keep the plural."""
    folder = tmp_path / "model"
    folder.mkdir()
    weight_map = {}
    for index in range(1, 4):
        shard = f"model-0000{index}-of-00003.safetensors"
        save_file({f"layers.{index}.weight": torch.ones(2, 2)}, str(folder / shard))
        weight_map[f"layers.{index}.weight"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "model-00002-of-00003.safetensors").unlink()
    line = _one_error_line(run_cli("inspect", folder))
    assert "shard 'model-00002-of-00003.safetensors' named by the index does not exist (1 of its 3 shards is " \
           "missing; a download or copy that stopped between shards? fetch or copy it beside the index)" in line, line
    (folder / "model-00003-of-00003.safetensors").unlink()
    line = _one_error_line(run_cli("inspect", folder))
    assert "(2 of its 3 shards are missing: " in line and "fetch or copy them beside the index" in line, line


def _tiny_llama_config() -> object:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _tiny_gpt2(tmp_path: Path, name: str, vocab: int = 100) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    model.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_a_lora_saved_against_the_wrong_base_says_so_and_keeps_the_base_weights_out_of_the_errors(
        tmp_path: Path) -> None:
    """A peft LoRA of a Llama (q_proj, v_proj) against a GPT-2: B's 28 weights were 'unknown: no known cause: these
    weights will not load', errors, beside the note that the adapter stores no base weights (PeftModel takes them
    from the base), and the note's '0 of them in B' said nothing of PeftModel's NoMatchingPeftModuleError."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    adapter = tmp_path / "adapter"
    get_peft_model(LlamaForCausalLM(_tiny_llama_config()),
                   LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    base = _tiny_gpt2(tmp_path, "gpt2")
    result = run_cli("diff-keys", adapter, base, "--json")
    assert result.exit_code == 1, result.stderr  # the adapter's pairs are still errors: it does not fit B
    report = json.loads(result.stdout)
    missing = {group["reason"]: group["severity"] for group in report["groups"] if group["kind"] == "missing"}
    assert missing == {"adapter-base": "info"}, report["groups"]
    unexpected = {(group["reason"], group["severity"]) for group in report["groups"] if group["kind"] == "unexpected"}
    assert unexpected == {("adapter", "error")}, report["groups"]
    note = report["notes"][0]
    assert "0 of them in B with shapes that fit" in note and "none of its modules is in B (e.g. " \
        "model.layers.0.self_attn.q_proj): it was made for another model, and PeftModel.from_pretrained onto B " \
        "raises" in note, note
    # What the note says peft does.
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    with pytest.raises(ValueError, match="not found in the base model"):
        PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), adapter)
    text = run_cli("diff-keys", adapter, base)
    assert "no known cause" not in text.stdout, text.stdout


def test_a_resized_vocabulary_is_told_how_to_keep_its_trained_rows(tmp_path: Path) -> None:
    """A GPT-2 fine-tune whose vocabulary was resized (resize_token_embeddings(110)) against its base: the only
    advice was ignore_mismatched_sizes=True, which starts the new embedding at random; the note now says what keeps
    A's rows, and that advice, followed, loads every key of A."""
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    base = _tiny_gpt2(tmp_path, "base")
    model = GPT2LMHeadModel.from_pretrained(base)
    model.resize_token_embeddings(110)
    model.save_pretrained(tmp_path / "resized")
    report = json.loads(run_cli("diff-keys", tmp_path / "resized", base, "--json").stdout)
    assert [(g["reason"], g["severity"]) for g in report["groups"]] == [("vocab-size", "warn")], report["groups"]
    note = next(note for note in report["notes"] if note.startswith("the vocabulary differs"))
    assert note == ("the vocabulary differs (110 tokens in A, 100 in B): to keep A's trained rows, load A with its "
                    "own config.json (from_pretrained of A), or resize B's model first "
                    "(model.resize_token_embeddings(110), which resizes a tied or separate output layer too) and then "
                    "model.load_state_dict(A, strict=False): a model that ties an output layer to its embedding holds "
                    "that layer under a name of its own, which A does not store and a strict load reports missing "
                    "(the tie fills it)"), note
    # The advice, followed: B's model resized as it says takes every one of A's weights.
    target = GPT2LMHeadModel.from_pretrained(base)
    target.resize_token_embeddings(110)
    state = load_file(str(tmp_path / "resized" / "model.safetensors"))
    result = target.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
    assert torch.equal(target.transformer.wte.weight, state["transformer.wte.weight"])
    assert torch.equal(target.lm_head.weight, state["transformer.wte.weight"])  # tied, as A's was


def test_the_bias_of_an_untrained_classifier_is_said_with_its_weight_not_as_fine(tmp_path: Path) -> None:
    """A BERT fine-tune whose classifier never trained (weight and bias as BertForSequenceClassification initializes
    them, everything else moved): classifier.bias was 'info norm-at-init ... fine if this parameter gets no
    gradient', beside 'warn untrained-tensor' for classifier.weight; a Linear's bias gets a gradient whenever its
    weight does. The weight's finding now names the bias; a LayerNorm left at init is still norm-at-init."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, num_labels=3))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("classifier.") and name != "bert.pooler.dense.bias":
                parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(tmp_path / "fine-tune")
    result = run_cli("inspect", tmp_path / "fine-tune", "--stats", "--json", "--fail-on", "warn")
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    findings = [(f["severity"], f["code"], f["tensor"]) for f in report["findings"]]
    assert findings == [("warn", "untrained-tensor", "classifier.weight"),
                        ("info", "norm-at-init", "bert.pooler.dense.bias")], findings
    assert report["findings"][0]["message"].endswith(
        "have trained; so does its bias classifier.bias (exactly zeros, as at initialization)"), report["findings"][0]
    bias = next(t for t in report["tensors"] if t["name"] == "classifier.bias")
    assert bias["init"]["at_init"] is True


LLAMA_13B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120,
             "intermediate_size": 13824, "num_attention_heads": 40, "num_key_value_heads": 40,
             "num_hidden_layers": 40, "vocab_size": 32000, "torch_dtype": "float16", "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5}


def test_two_gpus_that_need_cpu_offload_are_told_the_cpu_that_takes_the_rest(tmp_path: Path) -> None:
    """A Llama-2-13B config on two 12 GiB GPUs, no --cpu: 'does not fit', and the smallest changes offered were a
    lower dtype, a third GPU and --disk (the slowest), not the CPU RAM that from_pretrained(device_map="auto")
    offloads to by default; the --cpu offered, pasted, plans as CPU offload."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_13B))
    gpus = ("--gpu", "12GiB", "--gpu", "12GiB")
    result = run_cli("plan-devices", tmp_path, *gpus, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "does-not-fit"
    changes = {s["change"]: s for s in report["suggestions"]}
    assert list(changes) == ["dtype", "gpus", "gpu-size", "cpu", "disk"], report["suggestions"]
    cpu = changes["cpu"]
    assert cpu["verdict"] == "needs-cpu-offload" and cpu["gpus"] == [12 * 2**30] * 2, cpu
    rest = report["offload"]["disk_bytes"]  # what has nowhere to go: 1.49 GiB (lm_head and the last layers)
    assert 1 * 2**30 < rest <= 2 * 2**30, rest
    flag = cpu["description"].split(":")[0]
    assert flag == "--cpu 2GiB", cpu  # in whole GiB, as --gpu was typed
    assert "the same GPUs with the rest (1.49 GiB) in CPU RAM, streamed to the GPU on every forward pass (faster " \
        "than disk)" in cpu["description"], cpu
    followed = run_cli("plan-devices", tmp_path, *gpus, *flag.split(), "--json", "--fail-on", "no-fit")
    assert followed.exit_code == 0, followed.stderr
    assert json.loads(followed.stdout)["verdict"] == "needs-cpu-offload"
    text = run_cli("plan-devices", tmp_path, *gpus).stdout
    assert "  smallest change: --cpu 2GiB: the same GPUs with the rest (1.49 GiB) in CPU RAM" in text, text
    # Typed in decimal units, offered in them.
    decimal = json.loads(run_cli("plan-devices", tmp_path, "--gpu", "12GB", "--gpu", "12GB", "--json").stdout)
    assert [s["description"].split(":")[0] for s in decimal["suggestions"] if s["change"] == "cpu"] == ["--cpu 4GB"]


@pytest.mark.parametrize("width", [80, 120])
def test_the_state_line_is_not_broken_mid_phrase(width: int) -> None:
    """'state: initialization (0.0% of matrix parameters moved)   expected inits: BertForSequenceClassification's'
    broke before 'own init rules' at 100 columns (README's example), mid-sentence at 80 and 120 too: the state and
    where the expected inits come from are two lines."""
    from tests.helpers import REPO_ROOT, run_subprocess

    out = run_subprocess("inspect", REPO_ROOT / "fixtures" / "example", "--stats", "--filter", "classifier",
                         env={"COLUMNS": str(width), "TERM": "dumb", "NO_COLOR": "1"}).stdout
    lines = [line.rstrip() for line in out.splitlines()]
    assert "state: initialization (0.0% of matrix parameters moved)" in lines, out
    assert any(line.startswith("expected inits: BertForSequenceClassification's own init rules") for line in lines), \
        out


def test_an_adapters_base_weights_are_not_said_to_start_from_their_init(tmp_path: Path) -> None:
    """A peft LoRA against the Llama it was made for: every missing key is the base's (adapter-base, info: 'PeftModel
    .from_pretrained(base, adapter) takes it from the base'), under a table titled '(start from their init)'."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(_tiny_llama_config())
    base.save_pretrained(tmp_path / "base")
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "adapter")
    result = run_cli("diff-keys", tmp_path / "adapter", tmp_path / "base")
    assert result.exit_code == 0, result.stderr
    assert "Missing: in B, not in A (the base supplies them)" in result.stdout, result.stdout
    assert "start from their init" not in result.stdout, result.stdout


def test_a_ddp_and_compiled_checkpoint_is_told_the_convert_that_writes_it_renamed(tmp_path: Path) -> None:
    """A BERT saved from DDP(torch.compile(model)) (`module._orig_mod.` on every key): the suggested fix gave the
    --rename flag, a re-check and a Python snippet, not how to write the checkpoint renamed once; the convert line,
    pasted, writes a folder from_pretrained loads with no missing or unexpected key."""
    import shlex

    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config)
    folder = tmp_path / "ddp run"
    folder.mkdir()
    torch.save({f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    config.save_pretrained(folder)
    result = run_cli("diff-keys", folder, "--model-class", "BertForSequenceClassification")
    assert result.exit_code == 1, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("or write a renamed copy of A once: ")]
    command = line.split(": ", 1)[1]
    assert command == (f"weightdoctor convert '{folder}' -o '{folder}-renamed' --rename '^module\\._orig_mod\\.='"), \
        command
    converted = run_cli(*shlex.split(command)[1:])
    assert converted.exit_code == 0, converted.stderr
    loaded, info = BertForSequenceClassification.from_pretrained(f"{folder}-renamed", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    # Renames that are more than a wrapper's prefix (a PEFT-wrapped model's base_layer) get no such line: a renamed
    # copy would leave its LoRA pairs behind, where merge_and_unload folds them in.
    state = {f"base_model.model.{k}".replace(".query.weight", ".query.base_layer.weight"): v
             for k, v in model.state_dict().items()}
    for layer in range(2):
        prefix = f"base_model.model.bert.encoder.layer.{layer}.attention.self.query"
        state[f"{prefix}.lora_A.default.weight"] = torch.randn(4, 32)
        state[f"{prefix}.lora_B.default.weight"] = torch.randn(32, 4)
    torch.save(state, folder / "pytorch_model.bin")
    result = run_cli("diff-keys", folder, "--model-class", "BertForSequenceClassification")
    assert "--rename" in result.stdout and "or write a renamed copy" not in result.stdout, result.stdout


def test_plan_devices_on_a_folder_missing_a_shard_names_the_config_it_can_plan_from(tmp_path: Path) -> None:
    """A Llama save_pretrained'd in 3 shards, the second not downloaded yet: plan-devices, which needs no weights,
    refused with 'fetch or copy it beside the index' only; the config.json it names, given in place of the folder,
    plans."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path / "llama"
    LlamaForCausalLM(_tiny_llama_config()).save_pretrained(folder, max_shard_size="40KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 3, shards
    shards[1].unlink()
    line = _one_error_line(run_cli("plan-devices", folder, "--gpu", "1GB"))
    config = folder / "config.json"
    assert line.endswith(f"fetch or copy it beside the index); plan-devices plans from the config alone meanwhile: "
                         f"give it {config} in place of the folder"), line
    planned = run_cli("plan-devices", config, "--gpu", "1GB", "--json")
    assert planned.exit_code == 0 and json.loads(planned.stdout)["verdict"] == "fits-on-gpus", planned.stderr
    # The other commands need the weights: no such hint.
    assert "plans from the config" not in _one_error_line(run_cli("check-dtype", folder))


def test_a_new_heads_bias_is_not_said_to_start_at_random(tmp_path: Path) -> None:
    """'Some weights of BertForSequenceClassification were not initialized ... classifier.bias': diff-keys said both
    'new, initialized at random', where from_pretrained leaves the bias at zeros (_init_weights)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / "base")
    report = json.loads(run_cli("diff-keys", tmp_path / "base", "--model-class", "BertForSequenceClassification",
                                "--json").stdout)
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in report["missing"]}
    assert details == {"classifier.weight": ("task-head", "new, initialized at random"),
                       "classifier.bias": ("task-head", "new, initialized by the model")}, details
    model = BertForSequenceClassification.from_pretrained(tmp_path / "base")  # the oracle: the bias is zeros
    assert not model.classifier.bias.any() and model.classifier.weight.std() > 0
