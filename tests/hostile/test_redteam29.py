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
was planned with the false warning that it "names no dtype";
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import one_error_line, run_cli, run_json

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
    assert one_error_line(result) == (
        f"error: {folder / 'config.json'}: config.json's architectures is {shown}, not a list of model class "
        "names; nothing was built from it: pass --model-class")


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
