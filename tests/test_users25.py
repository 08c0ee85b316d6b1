"""convert / shard learn a model's ties and fp32 lists from its modeling code's text, without importing transformers
and building the model, where the text answers; checked against the built model, class by class.

Covers: BART's ties, which BartModel (a sub-model) declares and BartForConditionalGeneration does not, were left to
a meta build (safetensors -> .bin 0.5 s -> 4.9 s); a config.json without `tie_word_embeddings` (older saves) was
too, where its config class's default answers; composite models' fp32 lists; and the fp16 warning of a composite,
which named the last segments of the tensors kept (`LayerNorm, dense, key, layernorm and 3 more`), not the modules
its class declares (`qformer, query_tokens, wo`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT
from tests.test_user_mistakes24 import _composite

_BART = dict(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64)


@pytest.fixture(scope="module")
def bart_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded BART saved by transformers 5 (model.safetensors: `model.shared.weight` alone of its ties)."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("u25") / "bart"
    BartForConditionalGeneration(BartConfig(**_BART)).save_pretrained(folder)
    return folder


def _convert_importing(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`python -X importtime -m weightdoctor convert ARGS`, with the modules it imported."""
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weightdoctor", "convert", *map(str, args)],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    imported = [line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines()
                if line.startswith("import time:")]
    return process, imported


def _strict_load(folder_or_config: Path, state: dict[str, Any]) -> None:
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder_or_config)
    model = transformers.BartForConditionalGeneration(config)
    assert model.load_state_dict(state, strict=True).missing_keys == []


@pytest.mark.parametrize("config_says", ["true", "nothing"])
def test_the_ties_bart_s_sub_model_declares_are_read_from_text(bart_folder: Path, tmp_path: Path,
                                                               config_says: str) -> None:
    """Was: BartModel declares `encoder.embed_tokens.weight` and `decoder.embed_tokens.weight` from `shared.weight`,
    which the text reader did not follow into BartForConditionalGeneration's `self.model`, and a config.json without
    `tie_word_embeddings` (older saves) was not read either: both imported transformers and built the model. Now
    the .bin gets the three tied names as one storage, and nothing of transformers is imported."""
    import shutil

    import torch

    source = tmp_path / "bart"
    shutil.copytree(bart_folder, source)
    config = json.loads((source / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    if config_says == "nothing":
        del config["tie_word_embeddings"]
        (source / "config.json").write_text(json.dumps(config))
    out = tmp_path / "bart.bin"
    process, imported = _convert_importing(source / "model.safetensors", "-o", out)
    assert process.returncode == 0, process.stderr
    assert not [name for name in imported if name.startswith("transformers")]
    state = torch.load(out, weights_only=True)
    shared = state["model.shared.weight"].untyped_storage().data_ptr()
    tied = ["lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"]
    assert all(state[name].untyped_storage().data_ptr() == shared for name in tied)
    _strict_load(source, state)


def test_a_config_whose_class_defaults_to_untied_ties_nothing_by_text() -> None:
    """A Llama config.json without the key: LlamaConfig's default is False, so LlamaForCausalLM's declared
    `lm_head.weight` tie is not made (the built model's all_tied_weights_keys is empty); with it true, it is."""
    import torch
    import transformers

    from weightdoctor.modeling_source import tied_weights_from_text

    values = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2)
    for given in ({}, {"tie_word_embeddings": True}):
        config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **values, **given}
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**values, **given))
        assert tied_weights_from_text(config) == dict(model.all_tied_weights_keys)
    assert tied_weights_from_text({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}) == {}


def test_a_composite_s_fp16_warning_names_the_modules_its_class_declares(tmp_path: Path) -> None:
    """Was: "its class's _keep_in_fp32_modules: LayerNorm, dense, key, layernorm and 3 more" (the last segments of
    the tensors kept) and a --keep-fp32 listing all 31 names. Now the declared modules (BLIP-2's qformer and
    query_tokens, T5's wo), and an expression of them that keeps exactly those tensors."""
    import torch
    import transformers
    from safetensors import safe_open

    torch.manual_seed(0)
    source = tmp_path / "blip2-t5"
    transformers.Blip2ForConditionalGeneration(_composite("blip2-t5")).save_pretrained(source)
    process, imported = _convert_importing(source, "-o", tmp_path / "fp16", "--dtype", "fp16", "--allow-overflow",
                                           "--json")
    assert process.returncode == 0, process.stderr
    assert not [name for name in imported if name.startswith("transformers")]
    warning = next(w for w in json.loads(process.stdout)["warnings"] if "keeps in float32" in w)
    assert "(its class's _keep_in_fp32_modules: qformer, query_tokens, wo)" in warning
    offered = shlex.split(warning.split("--keep-fp32 ", 1)[1])[0]
    assert offered == r"(?:^|\.)(?:qformer|query_tokens|wo)(?:\.|$)"
    with safe_open(str(source / "model.safetensors"), "pt") as handle:
        names = list(handle.keys())
    kept = {name for name in names if name.startswith(("qformer.", "query_tokens")) or ".wo." in name}
    assert {name for name in names if re.search(offered, name)} == kept
    again = subprocess.run(
        [sys.executable, "-m", "weightdoctor", "convert", str(source), "-o", str(tmp_path / "fp16-kept"), "--dtype",
         "fp16", "--allow-overflow", "--keep-fp32", offered, "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert again.returncode == 0, again.stderr
    assert not [w for w in json.loads(again.stdout)["warnings"] if "keeps in float32" in w]


def _auto_mapped_classes() -> list[tuple[str, str]]:
    """Every (model_type, class name) of transformers' auto model mappings."""
    from transformers.models.auto import modeling_auto

    pairs: set[tuple[str, str]] = set()
    for mapping in dir(modeling_auto):
        if mapping.startswith("MODEL") and mapping.endswith("MAPPING_NAMES"):
            for model_type, names in getattr(modeling_auto, mapping).items():
                pairs.update((model_type, name) for name in (names if isinstance(names, (list, tuple)) else [names])
                             if isinstance(name, str))
    return sorted(pairs)


# Models whose ties a sub-model declares (BartModel's under `model.`) and GPT-2's: always among the classes swept.
_ALWAYS_SWEPT = {"bart", "mbart", "plbart", "bigbird_pegasus", "pegasus", "marian", "blenderbot", "gpt2", "t5"}


def _swept_classes() -> list[tuple[str, str]]:
    """The classes the ties sweep builds: every class with WEIGHTDOCTOR_FULL_SWEEPS=1; else `_ALWAYS_SWEPT`'s and
    every 4th other one in a fixed order, since building all of them took 626 s on a loaded 2-core machine."""
    pairs = _auto_mapped_classes()
    if os.environ.get("WEIGHTDOCTOR_FULL_SWEEPS"):
        return pairs
    return [pair for k, pair in enumerate(pairs) if k % 4 == 0 or pair[0] in _ALWAYS_SWEPT]


def _default_config(model_type: str) -> dict[str, Any] | None:
    """The config.json transformers' config class of `model_type` writes by default; None where it needs values."""
    from transformers.models.auto import configuration_auto

    try:
        return json.loads(json.dumps(configuration_auto.CONFIG_MAPPING[model_type]().to_dict(), default=str))
    except Exception:  # noqa: BLE001 - a config class that needs arguments
        return None


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_the_ties_read_from_text_are_the_built_model_s_for_every_class() -> None:
    """For each class of transformers' auto mappings, from its type's default config: where the text answers and
    the answer rests on the config's flag (the class or a sub-model declares ties), it equals the built model's
    `all_tied_weights_keys`; read without `tie_word_embeddings` (older config.json files), the same answer. A class
    that declares nothing anywhere was checked by users24 (ties_nothing)."""
    import transformers

    from weightdoctor.meta_model import build_meta_model
    from weightdoctor.modeling_source import tied_weights_from_text, ties_nothing

    transformers.logging.set_verbosity_error()
    compared, tied, untied_by_default, different = 0, 0, 0, []
    for model_type, name in _swept_classes():
        default = _default_config(model_type)
        if default is None:
            continue
        config = {**default, "architectures": [name]}
        read = tied_weights_from_text(config)
        if "tie_word_embeddings" in config:
            # The default config holds its class's default: read without the key (an older config.json), the same
            without = tied_weights_from_text({k: v for k, v in config.items() if k != "tie_word_embeddings"})
            assert without == read, (model_type, name, without, read)
            untied_by_default += without == {} and not ties_nothing(config)
        if read is None or ties_nothing(config):
            continue
        try:
            model = build_meta_model(config)
        except Exception:  # noqa: BLE001 - a default config some classes cannot build
            continue
        if type(model).__name__ != name:
            continue
        compared += 1
        tied += bool(read)
        if read != dict(model.all_tied_weights_keys):
            different.append((model_type, name, read, dict(model.all_tied_weights_keys)))
    assert different == []
    # BART's family (BartModel's ties under `model.`), GPT-2's, and configs whose class defaults to untied
    # Swept in full: 145 compared; a quarter of the classes with BART's family: 75 compared, 51 tying something
    least = (100, 50) if os.environ.get("WEIGHTDOCTOR_FULL_SWEEPS") else (60, 40)
    assert compared > least[0] and tied > least[1] and untied_by_default > 10, (compared, tied, untied_by_default)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_the_fp32_lists_of_composites_read_from_sub_configs_are_the_built_model_s() -> None:
    """Composite classes whose sub-config's model type has classes of different lists (BLIP-2's QFormer config:
    Blip2Model keeps `qformer`, the Blip2QFormerModel `AutoModel` builds does not) or whose classes take a base
    from outside their modeling file (EnCodec's PreTrainedAudioTokenizerBase, a generation_*.py mixin) were left
    to the build (69 buildable classes). Where the text now answers, it equals the built model's lists."""
    import torch
    import transformers
    from transformers.models.auto import configuration_auto

    from weightdoctor import modeling_source
    from weightdoctor.modeling_source import config_model_types, fp32_modules_plan

    transformers.logging.set_verbosity_error()
    compared, different = 0, []
    for model_type, name in _auto_mapped_classes():
        default = _default_config(model_type)
        types = config_model_types(default or {})
        if default is None or len(types) < 2 or getattr(transformers, name, None) is None:
            continue
        if all(modeling_source._uniform_plan(sub) is not None or not sub for sub in types[1:]):
            continue  # every sub-config's classes share their lists: users24's reading, checked then
        config = {**default, "architectures": [name]}
        read = fp32_modules_plan(config)
        if read is None:
            continue
        config_class = configuration_auto.CONFIG_MAPPING[model_type]
        try:
            with torch.device("meta"):
                model = getattr(transformers, name)._from_config(config_class.from_dict(config))
        except Exception:  # noqa: BLE001 - a default config some classes cannot build
            continue
        compared += 1
        built = (tuple(sorted(model._keep_in_fp32_modules or ())), tuple(sorted(model._keep_in_fp32_modules_strict
                                                                                or ())))
        if read != built:
            different.append((model_type, name, read, built))
    assert different == []
    assert compared > 20, compared
