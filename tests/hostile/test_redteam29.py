"""Red team 29: config.json (and the adapter's, generation and quantization files beside it) written by a hostile or
simply broken repo, read by plan-devices, diff-keys --model-class and inspect.

What held (measured, not all pinned here): num_hidden_layers of 10^9, 10^30, -1, 0, 1.5, "12", NaN, Infinity, true,
null or a list; hidden_size of 10^12, -64, 0, NaN, "64" or 63 (not a multiple of the heads); vocab_size -1 or 10^12;
num_attention_heads 0 or -4; num_key_value_heads 0; head_dim 0, 7 or 10^9; layer_types of the wrong length or
entries; `architectures` naming a missing class, Trainer, torch.nn.Linear, os.system, PreTrainedModel, an abstract
base, an Auto class, BertModel, or 100,000 entries; `auto_map` naming code (a string, a list, another repo's
`../../`) with or without trust_remote_code, never imported; model_type unknown, empty, null, of ANSI escapes or of
a megabyte; rope_scaling nonsense; quantization_config of the wrong type or of unknown methods; JSON nested 100,000
deep, duplicate keys (the last wins, as json.loads and transformers read it), a BOM, UTF-16, non-UTF-8 bytes,
trailing data, an integer of 5,000 digits, 100 MB; config.json a FIFO, a link to /dev/zero or /dev/null, a dangling
link or a loop of links, a folder; adapter_config.json, generation_config.json, tokenizer_config.json and
quantize_config.json FIFOs or links to /dev/zero (not opened). Each was refused in one line naming the file, planned
from the tensors with a warning, or reported, in under a second, never running the repo's code.

What did not: a config.json whose dtype is no dtype a model is built in ("float128", "int8", "torch.float16", 5)
was planned with the false warning that it "names no dtype", and a dict of dtypes at fp32 (from_pretrained builds
its "" entry); architectures as a string was read letter by letter ("no model class 'L'"); model_type 5 was blamed
on the transformers version; 1,000,000 keys (19 MB) took diff-keys --model-class 35 s and 1.1 GB; a 94 MB config.json
took inspect 41 s (parsed five times, its depth walked by listing every value); vocab_size 0 printed torch's
UserWarning with its source line; a megabyte model_type was printed twice in a diff-keys note; --kv-cache on
max_position_embeddings 0 said the config had none; an adapter's base_model_name_or_path that is the author's path
or a web address was offered as `weightdoctor plan-devices BASE`; GPTQ bits "4", group_size 0 or a string
llm_int8_skip_modules (each refused by transformers) were planned as int4 with no word, quant_method 5 as packed; a
BOM was refused in json's words for a programmer; transformers_weights naming a FIFO was "missing"; and inspect
--stats ran the model's init on the CPU (head_dim 10^9: 2 GB allocated).

Not fixed: a config.json of up to 100 MB (the limit of any JSON read) is still parsed, once: inspect took 14 s over
94 MB of numbers on this loaded two-core machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import one_error_line, run_cli, run_json, run_subprocess

_TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32,
               "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 100, "max_position_embeddings": 64, "tie_word_embeddings": False}


def _tiny_llama(folder: Path, weights: bool = True, **config: Any) -> Path:
    """A seeded two-layer LlamaForCausalLM folder: its weights (save_file) and a config.json with `config` over the
    genuine one's fields."""
    import torch
    import transformers
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
            k: v for k, v in _TINY_LLAMA.items() if k != "model_type"}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({**_TINY_LLAMA, "torch_dtype": "float32", **config}))
    return folder


@pytest.mark.parametrize("value", ["float128", "int8", "torch.float16", 5])
def test_a_dtype_no_model_is_built_in_is_said_not_called_unsaid(tmp_path: Path, value: Any) -> None:
    """plan-devices of a config.json alone said it "names no dtype" where it names one from_pretrained fails on."""
    import torch
    import transformers

    folder = _tiny_llama(tmp_path / "m", torch_dtype=value)
    # The claims, checked against the installed transformers: the default load fails, a given dtype loads.
    with pytest.raises((AttributeError, ValueError)):
        transformers.AutoModelForCausalLM.from_pretrained(folder)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert next(loaded.parameters()).dtype == torch.float32

    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp32"
    assert not [line for line in data["warnings"] if "names no dtype" in line]
    [said] = [line for line in data["warnings"] if "torch_dtype" in line]
    assert said.startswith(f'config.json sets "torch_dtype": {json.dumps(value)}, which is no dtype transformers ')
    assert 'from_pretrained(dtype="auto") fails on it unless it is given a real dtype' in said
    # With the weights beside it, the fix names their dtype.
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp32"
    [said] = [line for line in data["warnings"] if "torch_dtype" in line]
    assert "(dtype=torch.float32 replaces the field)" in said and 'set "torch_dtype" to "float32"' in said


@pytest.mark.parametrize(("value", "shown"), [("LlamaForCausalLM", '"LlamaForCausalLM"'), ({"a": 1}, '{"a": 1}'),
                                              (5, "5"), ([["x"]], '[["x"]]')])
def test_architectures_that_is_no_list_of_names_is_said_so(tmp_path: Path, value: Any, shown: str) -> None:
    """A string of architectures was read letter by letter ("transformers has no model class 'L'"), a dict by its
    keys ("no model class 'a'"), a number as "cannot build this config (TypeError: 'int' object is not iterable)"."""
    folder = _tiny_llama(tmp_path / "m", weights=False, architectures=value)
    result = run_cli("plan-devices", folder / "config.json", "--gpu", "1GB")
    fix = ('write it as a list, ["LlamaForCausalLM"]' if value == "LlamaForCausalLM"
           else "write it as a list of class names")
    from tests.test_compat_load import architectures_advice_end

    assert one_error_line(result) == (
        f"error: {folder / 'config.json'}: config.json's architectures is {shown}, not a list of model class "
        f"names; nothing was built from it: {fix} {architectures_advice_end(value)}")


@pytest.mark.parametrize(("value", "shown"), [(5, "5"), (["llama"], '["llama"]')])
def test_a_model_type_that_is_no_string_is_not_blamed_on_the_transformers_version(
        tmp_path: Path, value: Any, shown: str) -> None:
    """model_type 5 was "not known ...; a model newer than transformers 5.25.0? upgrade transformers": no version
    knows a number."""
    folder = _tiny_llama(tmp_path / "m", model_type=value)
    for args in (("plan-devices", folder / "config.json", "--gpu", "1GB"),
                 ("diff-keys", folder, "--model-class", "AutoModelForCausalLM")):
        line = one_error_line(run_cli(*args))
        assert line.endswith(f"config.json's model_type is {shown}, not the name of a model type; cannot build the "
                             "model from it"), line
        assert "upgrade" not in line


def test_a_config_of_many_keys_is_refused_before_transformers_sets_each(tmp_path: Path) -> None:
    """A 3 MB config.json of 190,000 keys took plan-devices 7 s (1,000,000 keys, 19 MB: 33 s, and diff-keys
    --model-class 35 s and 1.1 GB): transformers sets and validates each key as an attribute, several times."""
    from weightdoctor.meta_model import MAX_CONFIG_KEYS

    extra = {f"k{i}": i for i in range(MAX_CONFIG_KEYS + 1)}
    folder = _tiny_llama(tmp_path / "m", **extra)
    line = one_error_line(run_cli("diff-keys", folder, "--model-class", "LlamaForCausalLM"))
    assert line == (f"error: {folder}: config.json holds {len(_TINY_LLAMA) + 1 + len(extra):,} keys (real configs "
                    f"some hundreds); weightdoctor builds models from configs of up to {MAX_CONFIG_KEYS:,}")
    sub = _tiny_llama(tmp_path / "s", weights=False, text_config=extra)
    line = one_error_line(run_cli("plan-devices", sub / "config.json", "--gpu", "1GB"))
    assert line.endswith(f"config.json's 'text_config' holds {len(extra):,} keys (real configs some hundreds); "
                         f"weightdoctor builds models from configs of up to {MAX_CONFIG_KEYS:,}")
    # Label maps of that size are real (an ImageNet-21k head's 21,843 classes): built as before.
    labels = {str(i): f"class {i}" for i in range(MAX_CONFIG_KEYS + 1)}
    fine = _tiny_llama(tmp_path / "l", weights=False, id2label=labels,
                       label2id={name: int(i) for i, name in labels.items()},
                       architectures=["LlamaForSequenceClassification"])
    code, data = run_json("plan-devices", fine / "config.json", "--gpu", "1GB")
    assert code == 0 and data["model_class"] == "LlamaForSequenceClassification"


def test_a_config_of_millions_of_values_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """A list of 5,000,000 strings in config.json was handed to transformers and built (11 s)."""
    from weightdoctor.meta_model import MAX_CONFIG_VALUES

    folder = _tiny_llama(tmp_path / "m", weights=False, x=["a"] * (MAX_CONFIG_VALUES + 1))
    line = one_error_line(run_cli("plan-devices", folder / "config.json", "--gpu", "1GB"))
    assert line.endswith(f"config.json holds more than {MAX_CONFIG_VALUES:,} keys and list entries (the largest "
                         "real configs some 44,000); weightdoctor does not build a model from it")


def test_a_model_folders_config_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a model folder parsed its config.json four times (transformers_weights twice, the config, ...): a
    94 MB config.json (a list of 47,000,000 zeros) took inspect 41 s, 14 s once parsed once."""
    from weightdoctor.checkpoint import reader

    folder = _tiny_llama(tmp_path / "m", x=list(range(1000)))
    text = (folder / "config.json").read_text()
    parsed: list[int] = []
    real = reader.parse_json

    def counted(data: str | bytes, max_depth: int | None = None, **kwargs: Any) -> Any:
        parsed.append(data == text)
        return real(data, max_depth, **kwargs)

    monkeypatch.setattr(reader, "parse_json", counted)
    result = run_cli("inspect", folder)
    assert result.exit_code == 0 and "llama" in result.stdout
    assert sum(parsed) == 1
    # Changed on disk, it is read again: the text is compared, not the file's times.
    (folder / "config.json").write_text(text.replace('"model_type": "llama"', '"model_type": "mistral"'))
    assert run_json("inspect", folder)[1]["config"]["model_type"] == "mistral"


def test_the_nesting_check_holds_no_list_of_every_value() -> None:
    """parse_json's depth check listed every value of each level: 2.6 s and 64 MB over a list of 8,000,000."""
    import tracemalloc

    from weightdoctor.jsontext import parse_json

    text = json.dumps({"model_type": "llama", "x": [0] * 1_000_000, "y": [[1, [2]]]})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        value = parse_json(text, max_depth=64)  # the parse itself holds the list: 8 MB of pointers
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert value["y"] == [[1, [2]]]
    assert peak < 8_000_000 + 2_000_000, peak
    with pytest.raises(ValueError, match="nested more than 2 levels deep"):
        parse_json(text, max_depth=2)


def test_torchs_own_warnings_while_building_do_not_reach_the_terminal(tmp_path: Path) -> None:
    """vocab_size 0 printed torch's `.../torch/utils/_device.py:122: UserWarning: Initializing zero-element tensors is
    a no-op` and its source line on stderr, from plan-devices and diff-keys --model-class alike."""
    folder = _tiny_llama(tmp_path / "m", vocab_size=0)
    for args in (("plan-devices", str(folder / "config.json"), "--gpu", "1GB", "--json"),
                 ("diff-keys", str(folder), "--model-class", "LlamaForCausalLM", "--json")):
        result = run_subprocess(*args)
        assert result.returncode in (0, 1) and json.loads(result.stdout), result.stderr
        assert result.stderr == "", result.stderr


def test_a_note_quoting_a_megabyte_model_type_is_cut_as_errors_are(tmp_path: Path) -> None:
    """diff-keys --model-class LlamaModel on a config whose model_type is a megabyte printed a note quoting it twice:
    2 MB on the terminal."""
    from weightdoctor.errors import MAX_MESSAGE_CHARS

    folder = _tiny_llama(tmp_path / "m", model_type="x" * 1_000_000)
    result = run_cli("diff-keys", folder, "--model-class", "LlamaModel")
    assert result.exit_code == 0, result.stderr
    [note] = [line for line in result.stdout.split("note: ")[1:] if "is no " in line]
    assert "characters left out" in note and len(note) < MAX_MESSAGE_CHARS + 200
    assert len(result.stdout) < 20_000


@pytest.mark.parametrize("length", [0, -1])
def test_kv_cache_of_a_config_whose_length_is_no_length_says_which_field(tmp_path: Path, length: int) -> None:
    """max_position_embeddings 0 was "the config has no max_position_embeddings or n_positions", and -1 "--batch and
    --seq-len must be at least 1", though no --seq-len was given."""
    folder = _tiny_llama(tmp_path / "m", weights=False, max_position_embeddings=length)
    line = one_error_line(run_cli("plan-devices", folder / "config.json", "--gpu", "1GB", "--kv-cache"))
    assert line == (f"error: {folder / 'config.json'}: --kv-cache needs --seq-len: config.json's "
                    f"max_position_embeddings is {length}, no length to size the cache by")
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB", "--kv-cache", "--seq-len", "16")
    assert code == 0 and data["kv_cache"]["seq_len"] == 16


@pytest.mark.parametrize(("base", "said"), [
    ("/nonexistent/home/them/llama-7b", 'names it as "/nonexistent/home/them/llama-7b", a path on the machine the '
                                         "adapter was saved on, which does not exist here"),
    ("https://example.com/llama; rm -rf ~", 'names it by an address, "https://example.com/llama; rm -rf ~", not a Hub '
                                            "repo id or a path"),
    ("meta-llama/Llama-2-7b-hf", None),
])
def test_an_adapters_base_weightdoctor_cannot_read_is_not_offered_as_a_command(
        tmp_path: Path, base: str, said: str | None) -> None:
    """adapter_config.json's base_model_name_or_path is the author's: a path on their machine or a web address was
    offered as `weightdoctor plan-devices /home/them/llama ...`, which is then refused."""
    folder = _tiny_llama(tmp_path / "m")
    (folder / "config.json").unlink()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": base, "r": 8, "target_modules": ["q_proj"]}))
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0
    [warning] = [line for line in data["warnings"] if line.startswith("this is a PEFT adapter")]
    if said is None:
        assert f"plan the base (weightdoctor plan-devices {base} --gpu 1GB)" in warning
    else:
        assert "weightdoctor plan-devices" not in warning
        assert f"plan the base (its adapter_config.json {said}; give the base model's repo id or folder)" in warning


@pytest.mark.parametrize(("quantization", "refusal"), [
    ({"quant_method": "gptq", "bits": "4", "group_size": 128},
     "ValueError: Only support quantization to [2,3,4,8] bits but found 4"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 0},
     "ValueError: group_size must be greater than 0 or equal to -1"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "llm_int8_skip_modules": "lm_head"},
     "TypeError: llm_int8_skip_modules must be a list of strings"),
])
def test_a_quantization_config_transformers_refuses_is_not_planned_as_if_it_loaded(
        tmp_path: Path, quantization: dict[str, Any], refusal: str) -> None:
    """bits "4", group_size 0 or a string of modules to skip was planned as int4 with no word: from_pretrained fails
    on each while it builds the quantization config, before any weight is read."""
    import transformers

    folder = _tiny_llama(tmp_path / "m", quantization_config=quantization)
    with pytest.raises((ValueError, TypeError), match=re.escape(refusal.split(": ", 1)[1])):
        transformers.AutoModelForCausalLM.from_pretrained(folder)
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0
    assert f"transformers {transformers.__version__} refuses config.json's quantization_config ({refusal}" \
           in " ".join(data["warnings"])
    assert "): from_pretrained fails on it as it is, so this plan is of a model that does not load until the " \
           "config is fixed" in " ".join(data["warnings"])
    # A genuine one is not refused.
    fine = _tiny_llama(tmp_path / "f", weights=False, quantization_config={
        "quant_method": "gptq", "bits": 4, "group_size": 128})
    assert not [w for w in run_json("plan-devices", fine / "config.json", "--gpu", "1GB")[1]["warnings"]
                if "refuses" in w]


def test_a_quant_method_that_is_a_number_is_an_unknown_one(tmp_path: Path) -> None:
    """quant_method 5 was "the config quantizes the weights (5): planned at the floating dtype, which over-sizes the
    Linear weights its quantizer keeps packed": transformers has no quantizer for it and skips it, as for 'evil'."""
    import torch
    import transformers

    folder = _tiny_llama(tmp_path / "m", quantization_config={"quant_method": 5})
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)  # skipped: loaded as the float weights
    assert getattr(model, "hf_quantizer", None) is None
    assert next(model.parameters()).dtype == torch.float32
    line = one_error_line(run_cli("plan-devices", folder / "config.json", "--gpu", "1GB"))
    assert "quant_method 5 is not one transformers has a quantizer for: from_pretrained skips the " \
           "quantization_config (\"Unknown quantization type\")" in line


def test_a_config_with_a_byte_order_mark_is_refused_in_the_users_words(tmp_path: Path) -> None:
    """A BOM before config.json's text was refused as "not valid JSON (Unexpected UTF-8 BOM (decode using
    utf-8-sig): line 1 column 1 (char 0))", advice for a programmer."""
    import transformers

    folder = _tiny_llama(tmp_path / "m")
    path = folder / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with pytest.raises(OSError, match="is not a valid JSON file"):  # transformers reads it with json.loads too
        transformers.AutoConfig.from_pretrained(folder)
    for args in (("inspect", folder), ("plan-devices", path, "--gpu", "1GB")):
        assert one_error_line(run_cli(*args)) == (
            f"error: {path}: not valid JSON (it starts with a byte-order mark (BOM), which JSON readers refuse "
            "(Python's json and so transformers' from_pretrained); save it as UTF-8 without a BOM)")


def test_transformers_weights_naming_a_fifo_is_not_called_missing(tmp_path: Path) -> None:
    """config.json's transformers_weights naming a FIFO beside it was "which the folder lacks"; it is there, and is
    no file to read (nor opened: a FIFO waits for a writer)."""
    import os

    folder = _tiny_llama(tmp_path / "m", transformers_weights="w.safetensors")
    os.mkfifo(folder / "w.safetensors")
    for args in (("inspect", folder), ("diff-keys", folder, "--model-class", "LlamaForCausalLM")):
        assert one_error_line(run_cli(*args)) == (
            f"error: {folder}: config.json's transformers_weights names w.safetensors, which is not a regular file "
            "(a FIFO)")


@pytest.mark.parametrize(("value", "planned"), [({"": "float16"}, "fp16"), ({"text_config": "float16"}, "fp32")])
def test_a_dtype_per_sub_config_is_planned_as_from_pretrained_loads_it(
        tmp_path: Path, value: dict[str, str], planned: str) -> None:
    """A dict dtype was "names no dtype" and planned at fp32: from_pretrained(dtype="auto") builds the model in its ""
    entry, else in torch's default."""
    import torch
    import transformers

    folder = _tiny_llama(tmp_path / "m", torch_dtype=value)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert next(loaded.parameters()).dtype == {"fp16": torch.float16, "fp32": torch.float32}[planned]
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0 and data["dtype"] == planned
    assert not [line for line in data["warnings"] if "dtype" in line]


def test_the_init_check_of_inspect_stats_allocates_nothing_for_a_huge_head_dim(tmp_path: Path) -> None:
    """inspect --stats runs the model's own init on the meta model; the rotary init made its frequencies on the CPU
    (no device named): head_dim 10^9 allocated 2 GB there, 10^10 20 GB. At 10^12 (4 TB) the allocation fails at
    once, and the check fell back to guesses ("could not build the model ... can't allocate memory")."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.expected_init import expected_inits

    folder = _tiny_llama(tmp_path / "m", head_dim=10**12)
    with open_checkpoint(folder) as checkpoint:
        inits = expected_inits(checkpoint.tensors, checkpoint.config)
    assert inits.warning is None and inits.method == "transformers"
    assert inits.model_class == "LlamaForCausalLM"
