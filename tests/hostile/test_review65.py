"""Review 65: security5's amplification rules and redteam29's config.json limits, read against genuine files.

What held (measured, not all pinned here): scan_file calls "safe", and inspect reads, files the real libraries
wrote: a Trainer's optimizer.pt (AdamW, 80 param groups), scheduler.pt (LambdaLR and transformers' linear
warmup), rng_state.pth (python, numpy and torch RNG states), training_args.bin (torch.save, pickle protocol 2,
the legacy format), a torch.save of 50,000 small tensors (14 MB), tied weights and views of one storage, a list of
10,000 views of one storage, Parameters with requires_grad False and with `_backward_hooks`, a numpy object array
of strings, a list of 100,000 ints, a 100,000-key dict, a Lightning-like checkpoint (hyper_parameters,
optimizer_states), quantized tensors (per tensor, per channel), sparse COO and CSR tensors, fairseq-like
Namespace args; plain pickles of protocols 0-5 and torch.save with pickle_protocol 2 of Counter, set, frozenset,
torch.Size, bytearray (empty too), empty bytes, numpy scalars, structured and empty arrays gave the verdicts they
gave before security5. bytearray(10**9) stays "suspicious". Configs: ViT of 21,843 classes (id2label and
label2id, save_pretrained), Whisper, Llava and Qwen2-Audio (text / vision / audio sub-configs), Qwen3 with
layer_types of 2 (built) and 10,000 (transformers' own refusal, planned from the tensors) were planned as
before; the one-entry config.json cache stayed equal to the file's JSON after inspect --stats, plan-devices and
diff-keys of each, in one process.

What did not: the limit of 10,000 keys in one object was checked at the top level and one level below only, but
transformers builds sub-configs at any depth (Qwen2.5-Omni's thinker_config.text_config): 190,000 keys there took
the config alone 15 s to build, where the same keys one level up were refused. (Objects are now named by their
keys as a tuple, so a top-level key that merely ends in ".id2label" stays no label map: pinned, it held before.)

Left as it is: an object at the top level that is no sub-config (a `vocab` of 50,000 entries) is refused all the
same, though it stays one attribute (190,000 entries built in 0.2 s): `rope_scaling` is one such object too, and
transformers logs every unknown key of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import one_error_line, run_cli
from weightdoctor.meta_model import MAX_CONFIG_KEYS


def test_a_sub_config_two_levels_down_is_held_to_the_key_limit(tmp_path: Path) -> None:
    """Qwen2.5-Omni's thinker_config.text_config of 10,001 keys was built (transformers sets each as an attribute);
    one level up the same keys were refused."""
    import transformers

    # The premise: transformers builds that object as a config, its keys attributes.
    built = transformers.Qwen2_5OmniConfig(thinker_config={"text_config": {"k0": 0}})
    assert built.thinker_config.text_config.k0 == 0

    folder = tmp_path / "omni"
    folder.mkdir()
    keys = {f"k{i}": i for i in range(MAX_CONFIG_KEYS + 1)}
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniForConditionalGeneration"],
        "thinker_config": {"text_config": keys}}))
    line = one_error_line(run_cli("plan-devices", folder / "config.json", "--gpu", "1GB"))
    assert line == (f"error: {folder / 'config.json'}: config.json's 'thinker_config.text_config' holds 10,001 keys "
                    "(real configs some hundreds); weightdoctor builds models from configs of up to 10,000")


def test_label_maps_of_a_sub_config_stay_exempt(tmp_path: Path) -> None:
    """A Llava text_config with no model_type (transformers builds a Llama one) holding id2label and label2id of
    21,843 classes each is planned from its config, as the same maps at the top level are."""
    import transformers

    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 200, "max_position_embeddings": 64,
            "id2label": {str(i): f"c{i}" for i in range(21_843)},
            "label2id": {f"c{i}": i for i in range(21_843)}}
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=32, patch_size=16).to_dict()
    folder = tmp_path / "llava"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "image_token_index": 5,
        "text_config": text, "vision_config": vision, "dtype": "float32"}))
    result = run_cli("plan-devices", folder / "config.json", "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["built_from"], report["model_class"]) == ("config", "LlavaForConditionalGeneration")
    assert report["warnings"] == []


def test_a_key_that_merely_ends_like_a_label_map_is_no_label_map(tmp_path: Path) -> None:
    """A top-level sub-config named "x.id2label" (a dot in a key) is held to the limit as any other sub-config.
    (regress4: a top-level object that is no sub-config is one attribute's value, no longer held to it: a timm
    label_descriptions of 21,843 keys is real; this one has a model_type, so transformers builds it key by key.)"""
    folder = tmp_path / "dotted"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama",
        "x.id2label": {"model_type": "bert", **{f"k{i}": i for i in range(MAX_CONFIG_KEYS + 1)}}}))
    line = one_error_line(run_cli("plan-devices", folder / "config.json", "--gpu", "1GB"))
    assert "config.json's 'x.id2label' holds 10,002 keys" in line
