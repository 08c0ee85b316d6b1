"""review69: ux17's and redteam31's words checked on genuine files (tiny, seeded transformers and peft models),
each suggested command or snippet run as pasted. Then (a second review under the same name) the merges of
diff-keys' speed tweaks, thirdparty38 (FSDP-sharded model parts, plan-devices on one part) and plan89 (tied twins on
two GPUs, calls counted per route): the commands their messages give run on what they name, and the verdicts say why
they are what they are.

metaseq is not installed here: its consolidate_fsdp_shards picks its files by `glob(f"{pth_prefix}*shard*.pt")` and
gives part p the files whose names hold `part-{p}` (metaseq/distributed/stitch_fsdp_ckpt.py); the glob is replayed on
the command the message prints."""

from __future__ import annotations

import json
import re
import shlex
import warnings
from glob import glob
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.test_thirdparty38 import _save_metaseq_raw


def _tiny_llama_config() -> object:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def test_a_lora_of_the_causal_lm_on_its_backbone_is_not_said_to_raise(tmp_path: Path) -> None:
    """A LoRA saved from a LlamaForCausalLM (`model.layers.0.self_attn.q_proj`) against that model's backbone saved
    alone (LlamaModel: `layers.0.self_attn.q_proj`): diff-keys said 'it was made for another model, and
    PeftModel.from_pretrained(B, adapter) raises'; peft finds q_proj / v_proj in B, wraps them, warns 'Found missing
    adapter keys' and loads none of the adapter's factors. A Llama LoRA on a GPT-2 (no q_proj at all) still raises,
    and is still said to."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaForCausalLM, LlamaModel

    torch.manual_seed(0)
    full = LlamaForCausalLM(_tiny_llama_config())
    full.model.save_pretrained(tmp_path / "backbone")
    lora = get_peft_model(full, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    result = run_cli("diff-keys", tmp_path / "adapter", tmp_path / "backbone", "--json")
    assert result.exit_code == 1, result.stderr
    note = json.loads(result.stdout)["notes"][0]
    assert "raises" not in note, note
    assert "none of its modules is in B under the name it was saved with (e.g. model.layers.0.self_attn.q_proj), " \
        "yet B has modules of the names peft targets (layers.0.self_attn.q_proj): PeftModel.from_pretrained onto B " \
        "does not raise, it wraps those, loads none of A's factors (peft warns 'Found missing adapter " \
        "keys')" in note, note
    # What the note says peft does.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(LlamaModel.from_pretrained(tmp_path / "backbone"), tmp_path / "adapter")
    assert any("Found missing adapter keys" in str(w.message) for w in caught), [str(w.message) for w in caught]
    saved = lora.state_dict()["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    kept = loaded.state_dict()["base_model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert not torch.equal(saved, kept)


def _classifier_config(folder: Path, labels: int) -> Path:
    """A BERT sequence classifier's config.json of `labels` classes, its label maps as save_pretrained writes them."""
    from transformers import BertConfig

    id2label = {i: f"label {i}, kind [a] \"b\" é" for i in range(labels)}
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=64, id2label=id2label, label2id={v: k for k, v in id2label.items()},
               architectures=["BertForSequenceClassification"]).save_pretrained(folder)
    return folder / "config.json"


def test_a_classifier_of_100000_classes_is_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config.json of 100,000 labels (id2label and label2id, 200,000 entries; their labels hold commas, brackets,
    quotes and an escaped é) was refused by plan-devices as 'more than 200,000 keys and list entries (the largest
    real configs some 44,000)'; transformers builds it (a 100,000-output classifier) in under 2 s. Label maps are
    bounded by their own count of labels."""
    import weightdoctor.meta_model as meta_model

    config = _classifier_config(tmp_path / "model", 100_000)
    result = run_cli("plan-devices", config, "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "fits-on-gpus", report
    hidden = 32
    assert report["num_params"] > 100_000 * (hidden + 1), report["num_params"]
    monkeypatch.setattr(meta_model, "MAX_LABELS", 99_999)
    result = run_cli("plan-devices", config, "--gpu", "1GB")
    assert result.exit_code == 2
    assert "holds 100,000 labels; weightdoctor builds models of up to 99,999" in result.stderr, result.stderr


def test_many_unsafe_experts_get_their_short_keep_fp32_command(tmp_path: Path) -> None:
    """An MoE whose 3,000 experts' down_proj overflow fp16 (30 layers of 100 experts; their names 144,000 characters
    in all, each under 50): check-dtype said 'no --keep-fp32 expression is suggested: one matching the unsafe
    tensors' names would be longer than 100,000 characters', summing the whole names before collapsing their layer
    and expert indices; the expression is 60 characters, and its convert, pasted, keeps exactly those in fp32."""
    import shlex

    from safetensors.torch import load_file, save_file

    tensors = {}
    for layer in range(30):
        for expert in range(100):
            prefix = f"model.layers.{layer}.mlp.experts.{expert}"
            tensors[f"{prefix}.down_proj.weight"] = torch.tensor([1e6, 1.0])
            tensors[f"{prefix}.up_proj.weight"] = torch.tensor([0.5, 1.0])
    path = tmp_path / "moe.safetensors"
    save_file(tensors, str(path))
    result = run_cli("check-dtype", path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["targets"]["fp16"]["keep_fp32"] == r"^(?:model\.layers\.\d+\.mlp\.experts\.\d+\.down_proj\.weight)$"
    assert "longer than 100,000" not in report["recommendation"]["text"], report["recommendation"]["text"]
    command = report["recommendation"]["commands"]["fp16"]
    converted = run_cli(*shlex.split(command)[1:])
    assert converted.exit_code == 0, converted.stderr
    written = load_file(str(tmp_path / "moe-fp16.safetensors"))
    assert len(written) == 6000
    assert {t.dtype for name, t in written.items() if name.endswith("down_proj.weight")} == {torch.float32}
    assert {t.dtype for name, t in written.items() if name.endswith("up_proj.weight")} == {torch.float16}


def test_a_metadata_of_escaped_backslashes_is_counted_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count of a header's strings took every quote after a backslash for an escaped one: 1,400,000 metadata
    entries `"k\\\\": "\\\\"` (an escaped backslash ending each key and value) counted as 1,400,000 strings, not
    2,800,000, and were parsed (inspect 2.5 s, 313 MiB) before the 200,000-entry bound refused them. They are now
    refused before the parse; a genuine Windows path ending in a backslash is still read."""
    import struct

    import weightdoctor.checkpoint.safetensors_format as safetensors_format

    def write(path: Path, body: bytes) -> Path:
        text = b'{"__metadata__":{' + body + b'},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 8)
        return path

    hostile = write(tmp_path / "m.safetensors", b",".join(b'"%x\\\\":"\\\\"' % i for i in range(1_399_990)))
    parse = safetensors_format.parse_json

    def no_parse(text: str) -> object:
        raise AssertionError("the header was parsed")

    monkeypatch.setattr(safetensors_format, "parse_json", no_parse)
    result = run_cli("inspect", hostile)
    assert result.exit_code == 2, result.stdout
    assert "header holds 2,799,986 JSON strings, more than 200,000 tensors and a __metadata__ of 200,000 entries" \
        in result.stderr, result.stderr
    monkeypatch.setattr(safetensors_format, "parse_json", parse)
    genuine = write(tmp_path / "g.safetensors", b'"output_dir":"C:\\\\runs\\\\","ss_tag_frequency":"' + b"x" * 3_000_000
                    + b'"')
    report = json.loads(run_cli("inspect", genuine, "--json").stdout)
    assert report["metadata"]["output_dir"] == "C:\\runs\\", report["metadata"]


def test_a_resized_vocabulary_in_a_lone_file_is_not_told_to_use_from_pretrained(tmp_path: Path) -> None:
    """A resized GPT-2's model.safetensors copied out alone (as a training run keeps its weights) against its base:
    the note said 'load A with its own config.json (from_pretrained of A)', which A has none of (from_pretrained of
    the file raises); the resize advice alone is given, and it loads every weight of A."""
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)).save_pretrained(
        tmp_path / "base")
    model = GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    model.resize_token_embeddings(110)
    model.save_pretrained(tmp_path / "resized")
    lone = tmp_path / "run" / "step-500.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((tmp_path / "resized" / "model.safetensors").read_bytes())
    report = json.loads(run_cli("diff-keys", lone, tmp_path / "base", "--json").stdout)
    note = next(note for note in report["notes"] if note.startswith("the vocabulary differs"))
    assert note == ("the vocabulary differs (110 tokens in A, 100 in B): to keep A's trained rows, resize B's model "
                    "first (model.resize_token_embeddings(110), which resizes a tied or separate output layer too) and "
                    "then model.load_state_dict(A, strict=False): a model that ties an output layer to its embedding "
                    "holds that layer under a name of its own, which A does not store and a strict load reports "
                    "missing (the tie fills it) (A has no config.json "
                    "beside it, so from_pretrained cannot load it)"), note
    with pytest.raises(OSError):
        GPT2LMHeadModel.from_pretrained(lone)
    target = GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    target.resize_token_embeddings(110)
    state = load_file(str(lone))
    result = target.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
    assert torch.equal(target.transformer.wte.weight, state["transformer.wte.weight"])
    # Beside its config.json, from_pretrained of A is still offered.
    report = json.loads(run_cli("diff-keys", tmp_path / "resized" / "model.safetensors", tmp_path / "base",
                                "--json").stdout)
    assert any("load A with its own config.json (from_pretrained of A)" in note for note in report["notes"])


def test_peft_targets_are_matched_as_peft_matches_them() -> None:
    """peft takes a module whose name is a target or ends with '.' + target: a multi-part target matches its
    last parts, a full path of another layout does not; a list of 100,000 targets is looked up, not scanned."""
    from weightdoctor.diff_keys import KeySpec, _peft_targets_in

    b = {name: KeySpec(name, (8, 8), "float32") for name in
         [f"model.layers.{i}.self_attn.{p}.weight" for i in range(2000) for p in ("q_proj", "k_proj")]}
    assert _peft_targets_in({"target_modules": ["self_attn.k_proj"]}, {}, b) == "model.layers.0.self_attn.k_proj"
    assert _peft_targets_in({"target_modules": ["layers.0.self_attn.q_proj"]}, {}, b) == \
        "model.layers.0.self_attn.q_proj"
    assert _peft_targets_in({"target_modules": ["x.model.layers.0.self_attn.q_proj"]}, {}, b) == ""
    assert _peft_targets_in({"target_modules": ".*q_proj"}, {}, b) == ""  # a regular expression: not run
    assert _peft_targets_in(None, {"base.layers.3.self_attn.q_proj": False}, b) == "model.layers.0.self_attn.q_proj"
    assert _peft_targets_in({"target_modules": [f"t{i}" for i in range(100_000)]}, {}, b) == ""


def test_a_ddp_gpt2_with_its_tied_output_layer_is_told_the_convert_that_writes_it_renamed(tmp_path: Path) -> None:
    """A GPT-2 saved from DDP (`module.` on every key; torch.save keeps lm_head.weight beside the embedding it is
    tied to): diff-keys offered no 'or write a renamed copy of A once' line, because the tied output layer's group
    (tied-weight, info) sat beside the wrapper-prefix ones; the convert line, pasted, writes a folder
    from_pretrained loads with no missing or unexpected key and B's values."""
    import shlex

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    model.save_pretrained(tmp_path / "base")
    folder = tmp_path / "ddp"
    folder.mkdir()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    model.config.save_pretrained(folder)
    result = run_cli("diff-keys", folder, tmp_path / "base")
    assert result.exit_code == 1, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("or write a renamed copy of A once: ")]
    assert lines == [f"or write a renamed copy of A once: weightdoctor convert {folder} -o {folder}-renamed "
                     "--rename '^module\\.='"], result.stdout
    converted = run_cli(*shlex.split(lines[0].split(": ", 1)[1])[1:])
    assert converted.exit_code == 0, converted.stderr
    loaded, info = GPT2LMHeadModel.from_pretrained(f"{folder}-renamed", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert torch.equal(loaded.lm_head.weight, model.transformer.wte.weight)
    assert torch.equal(loaded.transformer.h[1].mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _consolidate_prefix(said: str) -> str:
    """The pth_prefix of the consolidate_fsdp_shards command a message prints."""
    match = re.search(r"python -m metaseq\.scripts\.consolidate_fsdp_shards ('[^']*')", said)
    assert match is not None, said
    return shlex.split(match[1])[0]


# --- consolidate_fsdp_shards' glob and part matching --------------------------------------------------------------


def test_consolidate_command_reads_only_this_saves_shards_beside_another_save(tmp_path: Path) -> None:
    """checkpoint_1_10000's shards beside checkpoint_1_1000's: the command given for one shard of the latter globbed
    `checkpoint_1_1000*shard*.pt`, all eight files of both saves, and consolidated them together."""
    folder = tmp_path / "run"
    _save_metaseq_raw(folder, stem="checkpoint_1_1000")
    _save_metaseq_raw(folder, stem="checkpoint_1_10000")
    code, report = run_json("inspect", str(folder / "checkpoint_1_1000-model_part-0-shard0.pt"))
    assert code == 0, report
    warning = next(w for w in report["warnings"] if "FSDP shard" in w)
    prefix = _consolidate_prefix(_one_line(warning))
    read = sorted(Path(p).name for p in glob(f"{prefix}*shard*.pt"))  # what the script reads
    assert read == [f"checkpoint_1_1000-model_part-{r}-shard{s}.pt" for r in range(2) for s in range(2)], read
    # Alone in its folder, the prefix stays the save's name.
    code, report = run_json("inspect", str(folder / "checkpoint_1_10000-model_part-1-shard1.pt"))
    warning = _one_line(next(w for w in report["warnings"] if "FSDP shard" in w))
    assert _consolidate_prefix(warning) == str(folder / "checkpoint_1_10000"), warning


def _save_flat_shards(folder: Path, parts: int, world: int = 1) -> None:
    """metaseq's raw save as the file names and entries say it: each shard's one flat parameter, shard_metadata."""
    folder.mkdir(parents=True)
    for part in range(parts):
        for shard in range(world):
            torch.save({"model": {"flat_param_0": torch.zeros(8), "decoder.version": torch.ones(1)},
                        "shard_metadata": {"param_metadata": [], "buffer_names": ["decoder.version"]}},
                       folder / f"checkpoint_last-model_part-{part}-shard{shard}.pt")


def test_eleven_parts_are_not_given_to_consolidate_fsdp_shards(tmp_path: Path) -> None:
    """consolidate_model_parallel gives part p the shards whose names hold `part-{p}`: with 11 parts, part 1 was
    given part 10's shard too. Each part is unflattened by reshard_fsdp instead, by a glob of its own shards."""
    folder = tmp_path / "opt-mp11"
    _save_flat_shards(folder, parts=11)
    names = [path.name for path in sorted(folder.iterdir())]
    assert [n for n in names if "part-1" in n] == ["checkpoint_last-model_part-1-shard0.pt",
                                                   "checkpoint_last-model_part-10-shard0.pt"]  # metaseq's test
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2, result.stdout
    said = _one_line(result.stderr)
    assert "folder holds 11 FSDP shards" in said and "consolidate_fsdp_shards" not in said, said
    pattern = str(folder / "checkpoint_last-model_part-0-shard*.pt")
    assert f"python -m metaseq.scripts.reshard_fsdp --input {pattern!r} --output " in said, said
    assert [Path(p).name for p in glob(pattern)] == ["checkpoint_last-model_part-0-shard0.pt"]
    assert "the same for each part to model_part-10" in said, said
    # Ten parts are still consolidated whole.
    ten = tmp_path / "opt-mp10"
    _save_flat_shards(ten, parts=10)
    said = _one_line(run_cli("inspect", str(ten)).stderr)
    assert f"consolidate_fsdp_shards {str(ten / 'checkpoint_last')!r}" in said, said


# --- plan-devices: a quantizer that refuses the CPU, and no GPU given ------------------------------------------------


def test_a_cpu_only_plan_its_quantizer_refuses_says_no_gpu_was_given(tmp_path: Path) -> None:
    """plan89 made every map from_pretrained cannot run `does-not-fit`, a CPU-only one included (HIGGS refuses a map
    holding cpu): it then read "the GPUs given cannot hold the model" and "no lower dtype or extra GPU of that size
    fits", of a plan given no GPU."""
    from tests.test_plan_quantized4 import _HIGGS, CONFIG, _config_only

    folder = _config_only(tmp_path / "higgs", CONFIG | {"quantization_config": _HIGGS | {"bits": 4}})
    code, data = run_json("plan-devices", str(folder), "--cpu", "8GB")
    assert code == 1 and data["verdict"] == "does-not-fit", data["verdict"]
    assert [f["code"] for f in data["findings"]] == ["quantizer-refuses-offload"], data["findings"]
    said = _one_line(run_cli("plan-devices", str(folder), "--cpu", "8GB").stdout)
    assert "verdict: does not fit (no GPU was given, and its quantizer refuses a map of the CPU (or disk) here: " \
           "see the error above)" in said, said
    assert "the GPUs given" not in said and "extra GPU of that size" not in said, said
    # With a GPU given that cannot hold it, the reason stays the GPUs'.
    said = _one_line(run_cli("plan-devices", str(folder), "--gpu", "20KB", "--cpu", "8GB").stdout)
    assert "the GPUs given cannot hold the model, and its quantizer refuses to offload the rest here" in said, said


# --- diff-keys: an FSDP-flattened model-parallel part as A -----------------------------------------------------------


def test_diff_keys_on_a_flat_part_gives_no_fsdp_metadata_python(tmp_path: Path) -> None:
    """thirdparty38 told inspect's warning of metaseq's shards apart from fairseq's checkpoint_last-shardN.pt, but
    diff-keys' note still gave `shard_metadata=[each file's 'fsdp_metadata']` (a KeyError on files holding
    'shard_metadata') over every rank's file, both parts' shards consolidated as one."""
    folder = tmp_path / "opt-raw"
    whole = _save_metaseq_raw(folder)
    torch.save({"model": whole}, tmp_path / "whole.pt")
    shard = folder / "checkpoint_last-model_part-0-shard0.pt"
    assert "fsdp_metadata" not in torch.load(shard, weights_only=False)
    code, report = run_json("diff-keys", str(shard), str(tmp_path / "whole.pt"))
    assert code == 1, report
    note = next(note for note in report["notes"] if "fairscale FSDP flat parameter" in note)
    assert "fsdp_metadata" not in note and "checkpoint_last-shardN.pt" not in note, note
    assert note.startswith("A holds 3 fairscale FSDP flat parameters (decoder.layers.0.flat_param_0, "
                           "decoder.layers.1.flat_param_0 and 1 more): checkpoint_last-model_part-0-shard0.pt is one "
                           "model-parallel part's weights (or one FSDP shard of them)"), note
    result = run_cli("diff-keys", str(shard), str(tmp_path / "whole.pt"))
    assert "as A's warning says how" in _one_line(result.stdout), result.stdout
    said = _one_line(result.stderr)
    assert "warning: A: checkpoint_last-model_part-0-shard0.pt is, by its name, FSDP shard 0" in said, said
    assert "metaseq.scripts.consolidate_fsdp_shards" in said, said  # the warning the note points to
    # fairseq's own FSDP shard (no model part) keeps its note.
    from tests.test_third_party_layouts36 import _fairseq_fsdp_shard, _save_fairseq

    plain = _fairseq_fsdp_shard(tmp_path / "checkpoint_last-shard0.pt")
    _, report = run_json("diff-keys", str(plain), str(_save_fairseq(tmp_path / "checkpoint_best.pt", (0.0, 0.0))))
    assert any("shard_metadata=[each file's 'fsdp_metadata']" in note for note in report["notes"]), report["notes"]
