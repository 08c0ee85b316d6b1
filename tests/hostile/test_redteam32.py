"""Red team 32: a structure-aware mutation campaign (scripts/mutation_fuzz.py, widened; see its docstring).

New seeds, each written by the library that writes them for real: a tiny Llama and BERT (save_pretrained), a PEFT LoRA
adapter, BERT's weights as .bin shards with pytorch_model.bin.index.json (huggingface_hub), a Lightning-style .ckpt, a
diffusers-style folder. Structure-aware mutations: JSON values of config.json, adapter_config.json, index files and
safetensors headers retyped, out of range or not finite (1e309, NaN, Infinity), nested 100,000 deep, a megabyte long,
given twice or removed; a pickle persistent id's storage key, storage type, element count or location changed, a
GLOBAL renamed to another allowlisted one, neighbouring values swapped. Added commands: diff-keys A --model-class
(the seed's architecture), plan-devices --kv-cache --seq-len 1000, convert --to bin, convert --dtype fp16, shard of a
folder. Three rounds of two processes (about 50 minutes of wall time on this shared two-core machine): 13,763
mutants (llama 789, bert 788, peft 787, binindex 787, ckpt 787, diffusers 787; with --structured: safetensors 1,278,
index 1,278, zip 1,277, legacy 1,277, pkl 1,277, hub 1,275, dcp 688, npz 688), 8,216 of them structure-aware, each
through all 11 commands (diff-keys --model-class on the 3,639 with an architecture): 141,269 runs.

What held: no traceback, no exit code but 0/1/2, no run over 10 s (the slowest, inspect --stats, 6.9 s), no growth of
200 MB, no changed input, no write beside the output, no half-written output, no .bin or .safetensors written that
does not load, no pickle called safe that reaches a global outside the allowlist (persistent ids of any storage type,
key, count or location, GLOBALs swapped for other allowlisted ones, in .bin shards, the .ckpt, legacy saves).

What did not, each fixed here:
- plan-devices --kv-cache on a folder whose config.json writes num_key_value_heads "1px" (or "1", [1]; head_dim "8",
  [8, 8]): the config class refuses it, the plan comes from the tensors, and the estimate multiplied the string
  ("unexpected TypeError: can only concatenate str"); -1 or 0.5 made a cache of -8,192 or 4,096.0 bytes, 2.0 layers
  was "config has no num_hidden_layers". Now one line naming the field.
- A safetensors header listing a tensor twice, the dropped entry `{}` (or a string, a list, a number): the reader's
  proof that no key repeats counted the names dtype / shape / data_offsets and cleared it; inspect read (exit 0) what
  the library and every other command refuse. Now refused as listed twice.
- A __metadata__ key given twice, once as no string (`"format": null, "format": "pt"`): the same disagreement (the
  library reads both values). Now refused.
- diff-keys A --model-class on a config.json whose dtype builds no model (5, "float128", "int8", [1], "auto"):
  refused, each in an error of its own ("'int' object has no attribute 'is_floating_point'"), though the dtype
  changes no key. Now compared, with a note.
- inspect --stats on an initializer_range of Infinity: "unexpected ValueError: math domain error" (400 digits:
  OverflowError). Now it names no init.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import one_error_line, run_cli, run_json
from tests.test_diff_keys_reader import _has_duplicates, _write, json_entries, json_keys

_TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16,
               "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
               "head_dim": 8, "vocab_size": 64, "max_position_embeddings": 64, "tie_word_embeddings": False}


def _tiny_llama(folder: Path, drop: tuple[str, ...] = (), **config: Any) -> Path:
    """A seeded two-layer LlamaForCausalLM folder: its weights (save_file) and a config.json with `config` over the
    genuine one's fields, `drop` left out."""
    import torch
    import transformers
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        k: v for k, v in _TINY_LLAMA.items() if k != "model_type"}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    written = {k: v for k, v in {**_TINY_LLAMA, "dtype": "float32", **config}.items() if k not in drop}
    (folder / "config.json").write_text(json.dumps(written))
    return folder


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("num_key_value_heads", "1", '"1"'), ("num_key_value_heads", -1, "-1"), ("num_key_value_heads", 0.5, "0.5"),
    ("num_key_value_heads", [1], "[1]"), ("head_dim", "8", '"8"'), ("head_dim", -8, "-8"),
    ("num_hidden_layers", 2.0, "2.0")])
def test_a_kv_cache_size_written_as_no_positive_count_is_refused_naming_it(
        tmp_path: Path, field: str, value: Any, shown: str) -> None:
    """The fuzzer's `num_key_value_heads: "1px"` (the class refuses it, the plan comes from the tensors): --kv-cache
    multiplied the string ("unexpected TypeError: can only concatenate str"); -1 or 0.5 made a cache of -8,192 or
    4,096.0 bytes; 2.0 layers was "config has no num_hidden_layers". Each is now one line naming the field, and the
    plan without --kv-cache still reads."""
    folder = _tiny_llama(tmp_path / "m", **{field: value})
    result = run_cli("plan-devices", folder, "--gpu", "1MB", "--kv-cache", "--seq-len", "100")
    assert one_error_line(result) == (f"error: config.json's {field} is {shown}, not a positive whole number; "
                                      "cannot size a KV cache")
    code, data = run_json("plan-devices", folder, "--gpu", "1MB")
    assert code == 0 and data["kv_cache"] is None and data["num_params"] > 0


def test_a_kv_cache_head_width_that_rounds_to_nothing_is_refused(tmp_path: Path) -> None:
    """No head_dim and a hidden size smaller than the heads: hidden // heads is 0, and the cache was said to be 0
    bytes."""
    folder = _tiny_llama(tmp_path / "m", drop=("head_dim",), hidden_size=1)
    result = run_cli("plan-devices", folder, "--gpu", "1MB", "--kv-cache", "--seq-len", "100")
    assert one_error_line(result) == ("error: config.json writes no head_dim, and its hidden size 1 over 2 attention "
                                      "heads leaves none; cannot size a KV cache")


def test_a_genuine_kv_cache_estimate_is_unchanged(tmp_path: Path) -> None:
    """The control: 2 layers x 1 KV head x 8 values x 2 (keys and values) x 4 bytes x 100 tokens."""
    code, data = run_json("plan-devices", _tiny_llama(tmp_path / "m"), "--gpu", "1MB", "--kv-cache",
                          "--seq-len", "100")
    assert code == 0 and data["kv_cache"]["total_bytes"] == 2 * 1 * 8 * 2 * 4 * 100
    assert (data["kv_cache"]["num_kv_heads"], data["kv_cache"]["head_dim"]) == (1, 8)


def _safetensors_with_header(path: Path, header_text: str, data: bytes) -> Path:
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize("first", ["{}", '"x"', "[]", "5", "null", '{"note": "a:b"}'])
def test_a_tensor_listed_twice_whose_dropped_entry_names_no_field_is_refused(tmp_path: Path, first: str) -> None:
    """The fuzzer's duplicated key: `"w": {}` before the real "w" entry. json.loads keeps the last, the safetensors
    library refuses the first ("missing field `dtype`"); the reader's proof that no key repeats counted the names
    "dtype", "shape" and "data_offsets", one each as there is one entry, and cleared it: inspect read the file
    (exit 0) that convert, check-dtype and every loader refuse."""
    import numpy as np
    from safetensors import safe_open

    path = _safetensors_with_header(
        tmp_path / "m.safetensors",
        f'{{"w":{first},"__metadata__":{{"format":"pt"}},"w":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}',
        np.arange(2, dtype=np.float32).tobytes())
    with pytest.raises(Exception, match="deserializing header"), safe_open(str(path), "pt"):
        pass
    line = one_error_line(run_cli("inspect", path))
    assert line == f"error: {path}: header lists tensor 'w' twice"


def test_a_colon_escaped_in_a_name_does_not_hide_a_repeated_tensor(tmp_path: Path) -> None:
    """An escaped colon (\\u003a) is one the parsed name holds and the text does not: it would make up for the
    colon of a dropped key, so a text with one is sent to the slow check."""
    import numpy as np

    path = _safetensors_with_header(
        tmp_path / "m.safetensors", '{"a\\u003ab":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":"x",'
        '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', np.arange(2, dtype=np.float32).tobytes())
    assert one_error_line(run_cli("inspect", path)) == f"error: {path}: header lists tensor 'w' twice"


def test_a_header_with_colons_in_its_names_and_metadata_is_still_read(tmp_path: Path) -> None:
    """The control: colons inside names and metadata values (no key repeated) are counted as the strings' own."""
    import numpy as np

    header = {"__metadata__": {"format": "pt", "note": '{"a": 1, "b": "c:d"}'},
              "enc:0.w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "enc:1.w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    path = _safetensors_with_header(tmp_path / "m.safetensors", json.dumps(header),
                                    np.arange(4, dtype=np.float32).tobytes())
    code, data = run_json("inspect", path)
    assert code == 0 and [t["name"] for t in data["tensors"]] == ["enc:0.w", "enc:1.w"]


@settings(max_examples=600, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), top=st.lists(st.tuples(json_keys, json_entries), max_size=5))
def test_string_colons_prove_no_duplicates_only_when_there_are_none(data: st.DataObject, top: list[Any]) -> None:
    """The second proof may only clear a text that holds no repeated key at any depth (the same drawn headers as
    the colon proof's test: colons in keys and strings now and then, keys repeated, objects nested)."""
    from weightdoctor.checkpoint.safetensors_format import _string_colons_prove_no_duplicates

    raw = ("{" + ",".join(json.dumps(key) + ":" + _write(value, data.draw) for key, value in top) + "}").encode()
    if _string_colons_prove_no_duplicates(raw.decode(), json.loads(raw)):
        assert not _has_duplicates(raw), raw


@pytest.mark.parametrize("value", [5, "float128", "int8", [1], "auto"])
def test_diff_keys_model_class_compares_the_keys_of_a_config_whose_dtype_builds_no_model(
        tmp_path: Path, value: Any) -> None:
    """The fuzzer's `"dtype": 1.5` in a BERT folder: diff-keys A --model-class refused it, each value in words of its
    own ("transformers cannot build BertForSequenceClassification from this config: 'int' object has no attribute
    'is_floating_point'", "module 'torch' has no attribute 'float128'"), though the dtype changes no key and
    from_pretrained given a real dtype loads it. The keys are now compared, with a note saying what the field does."""
    import transformers

    from tests.helpers import save_tiny_bert

    folder = tmp_path / "bert"
    state = save_tiny_bert(folder)
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = value
    (folder / "config.json").write_text(json.dumps(config))
    # The claims, checked against the installed transformers: the load fails, and loads once the field is removed.
    with pytest.raises((AttributeError, ValueError, TypeError, IndexError)):  # each value its own error
        transformers.BertForSequenceClassification.from_pretrained(folder)
    fixed = tmp_path / "fixed"
    shutil.copytree(folder, fixed)
    (fixed / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "dtype"}))
    transformers.BertForSequenceClassification.from_pretrained(fixed)

    code, data = run_json("diff-keys", folder, "--model-class", "BertForSequenceClassification")
    assert code == 0 and data["matched"] == data["total_a"] == len(state) and not data["missing"]
    assert [note for note in data["notes"] if "dtype" in note] == [
        f'A\'s config.json sets "dtype": {json.dumps(value)}, which is no dtype transformers builds a model in '
        "(from_pretrained fails on it): these keys are those of the model built without it (the dtype changes no "
        'key); set "dtype" to the weights\' dtype in config.json (or remove it) to load it']


@pytest.mark.parametrize("value", [float("inf"), 10**400])
def test_inspect_stats_of_a_config_whose_initializer_range_is_no_finite_number(tmp_path: Path, value: Any) -> None:
    """The fuzzer's `"initializer_range": Infinity`: inspect --stats matched each weight's spread against a normal of
    that std and stopped with "unexpected ValueError: math domain error" (an integer of 400 digits: "unexpected
    OverflowError"). Such a range names no init; the tensors' statistics are reported as without it."""
    folder = _tiny_llama(tmp_path / "m", initializer_range=value)
    result = run_cli("inspect", folder, "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # the weights are a fresh init, as the statistics find; the config class refuses the range, as the warning says
    assert data["weights"]["state"] == "initialization"
    assert [f["code"] for f in data["findings"]] == ["checkpoint-at-init"]
    assert "initializer_range" in " ".join(data["weights"]["warnings"])


def test_the_fuzzers_size_oracle_flags_what_no_checkpoint_has_and_not_an_echoed_config(fuzz: Any) -> None:
    """The oracle that would have caught the KV cache of -8,192 bytes: a negative, fractional or infinite size or
    count is flagged; inspect's copy of config.json, which says what the file wrote, is not."""
    report = {"kv_cache": {"total_bytes": -8192, "head_dim": 0.5, "num_layers": 2}, "config": {"num_layers": 1.5},
              "tensors": [{"num_params": 4}, {"num_params": float("inf")}], "note": "x"}
    assert fuzz.impossible_sizes(report) == ["kv_cache.total_bytes = -8192", "kv_cache.head_dim = 0.5",
                                             "tensors.N.num_params = inf"]


def test_the_fuzzers_pickle_mutation_reaches_a_persistent_ids_fields(fuzz: Any, tmp_path: Path) -> None:
    """Seeded structural mutations of a torch.save zip change the storage key, the storage type, the element count
    and the location of a tensor's persistent id, each in the data.pkl that torch reads."""
    import io
    import random
    import zipfile

    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buffer)
    seen = set()
    for n in range(200):
        changed = fuzz._mutate_pickle_bytes(buffer.getvalue(), random.Random(n))
        assert changed is not None
        seen.add(changed[1])
        with zipfile.ZipFile(io.BytesIO(changed[0])) as archive:
            assert any(name.endswith("data.pkl") for name in archive.namelist())
    assert {"pickle persid key", "pickle persid dtype", "pickle persid count", "pickle persid location"} <= seen
    assert any(what.startswith("pickle global torch.") for what in seen)
    assert any(what.startswith("pickle swap ") for what in seen)


@pytest.mark.parametrize(("dropped", "shown"), [("null", "null"), ("5", "5"), ('["pt"]', '["pt"]'),
                                                ('{"a": "b"}', '{"a": "b"}')])
def test_a_metadata_key_given_twice_once_as_no_string_is_refused(tmp_path: Path, dropped: str, shown: str) -> None:
    """The fuzzer's `"__metadata__": {"format": null, "format": "pt"}`: json.loads keeps the last, a string, and
    inspect read the file (exit 0); the library reads both values as strings and refuses the null, as every other
    command then said ("safetensors rejects the file")."""
    import numpy as np
    from safetensors import safe_open

    path = _safetensors_with_header(
        tmp_path / "m.safetensors",
        f'{{"__metadata__":{{"format":{dropped},"format":"pt"}},"w":{{"dtype":"F32","shape":[2],'
        '"data_offsets":[0,8]}}', np.arange(2, dtype=np.float32).tobytes())
    with pytest.raises(Exception, match="expected a string"), safe_open(str(path), "pt"):
        pass
    assert one_error_line(run_cli("inspect", path)) == (
        f"error: {path}: __metadata__ must map strings to strings (it gives 'format' twice, once as {shown})")


def test_a_metadata_key_given_twice_as_strings_is_read_as_the_library_reads_it(tmp_path: Path) -> None:
    """The control: two strings, the last kept by json.loads and by the library alike."""
    import numpy as np
    from safetensors import safe_open

    path = _safetensors_with_header(
        tmp_path / "m.safetensors",
        '{"__metadata__":{"format":"np","format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        np.arange(2, dtype=np.float32).tobytes())
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    code, data = run_json("inspect", path)
    assert code == 0 and data["metadata"] == {"format": "pt"}
