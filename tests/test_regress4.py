"""regress4: what 2026-12-06's merges (c64b870..4e76980) changed that nobody meant to, each checked on a tiny
seeded checkpoint built here."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import json_report, run_cli
from tests.hostile.test_redteam29 import _tiny_llama


def _timm_labels(count: int) -> tuple[list[str], dict[str, str]]:
    """A timm classifier's label_names (WordNet synsets) and label_descriptions (synset -> words), as timm's
    push_to_hf_hub writes them at config.json's top level."""
    names = [f"n{i:08d}" for i in range(count)]
    return names, {name: f"class {i}" for i, name in enumerate(names)}


def test_a_config_with_an_imagenet_21k_label_descriptions_map_is_still_built(tmp_path: Path) -> None:
    """c06583f bounded the keys of every object at config.json's top level to 10,000 (label maps aside), so a
    config holding timm's label_descriptions of an ImageNet-21k head (21,843 synsets, one attribute's value, not a
    sub-config transformers builds key by key) was no longer built: plan-devices fell back to 'planned from the
    tensors' and inspect --stats to names, saying "'label_descriptions' holds 21,843 keys (real configs some
    hundreds)"."""
    names, descriptions = _timm_labels(21_843)
    folder = _tiny_llama(tmp_path / "m", label_names=names, label_descriptions=descriptions)
    report = json_report("plan-devices", str(folder), "--gpu", "1GB")
    assert report["built_from"] == "config" and report["model_class"] == "LlamaForCausalLM"
    said = " ".join(report["warnings"])
    assert "label_descriptions" not in said and "real configs some hundreds" not in said, said
    result = run_cli("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert result.exit_code == 0, result.stderr
    assert "label_descriptions" not in result.stderr


def test_a_sub_config_or_quantization_config_of_too_many_keys_is_still_refused(tmp_path: Path) -> None:
    """The bound still holds where transformers builds an object key by key: a `*_config` sub-config, one with a
    model_type under any key, and the quantization_config."""
    from weightdoctor.meta_model import MAX_CONFIG_KEYS

    extra = {f"k{i}": i for i in range(MAX_CONFIG_KEYS + 1)}
    for key, value in (("text_config", extra), ("encoder", {"model_type": "bert", **extra}),
                       ("quantization_config", extra)):
        folder = _tiny_llama(tmp_path / key, weights=False, **{key: value})
        result = run_cli("plan-devices", str(folder / "config.json"), "--gpu", "1GB")
        assert result.exit_code == 2, (key, result.stdout)
        assert f"config.json's '{key}' holds {len(value):,} keys" in result.stderr, (key, result.stderr)


def test_rope_parameters_of_too_many_keys_are_still_refused(tmp_path: Path) -> None:
    """transformers checks the RoPE parameters key by key (logging each unknown one): still held to the bound."""
    from weightdoctor.meta_model import MAX_CONFIG_KEYS

    rope = {"rope_type": "linear", "factor": 2.0, **{f"k{i}": i for i in range(MAX_CONFIG_KEYS + 1)}}
    folder = _tiny_llama(tmp_path / "r", weights=False, rope_scaling=rope)
    result = run_cli("plan-devices", str(folder / "config.json"), "--gpu", "1GB")
    assert result.exit_code == 2 and f"config.json's 'rope_scaling' holds {len(rope):,} keys" in result.stderr, \
        result.stderr
