"""review62: review59's KV-cache share of each GPU, checked against where transformers keeps each layer's keys and
values (`DynamicLayer.lazy_initialization`: on the device of the layer's key states, the GPU that layer runs on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from tests.helpers import run_json

TEXT = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 688, "vocab_size": 1000, "max_position_embeddings": 2048}
VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 40, "image_size": 32, "patch_size": 8}


def _llava(folder: Path, vision_layers: int = 1) -> Path:
    vision = {**VISION, "num_hidden_layers": vision_layers}
    config = transformers.LlavaConfig(vision_config=vision, text_config=TEXT, image_token_index=99)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("vision_layers", [1, 8])
def test_a_vision_language_models_cache_is_held_to_the_gpu_its_text_layers_run_on(tmp_path: Path,
                                                                                   vision_layers: int) -> None:
    """LLaVA's no-split blocks are its vision tower's (CLIPVisionEmbeddings, CLIPEncoderLayer) and its 8 text
    layers: 10 blocks for 8 cached layers turned the per-GPU check off, and the 8 text layers mapped to a GPU with
    7.34 MB left for their 16.78 MB cache were said to fit in the 46.14 MB two GPUs had left. A vision tower as
    deep as the decoder (8 CLIPEncoderLayers) is told apart by transformers' get_decoder()."""
    folder = _llava(tmp_path / "llava", vision_layers)
    rest = ("model.vision_tower", "model.multi_modal_projector", "model.language_model.embed_tokens",
            "model.language_model.norm", "model.language_model.rotary_emb", "lm_head")
    mapping: dict[str, int] = {**dict.fromkeys(rest, 1), "model.language_model.layers": 0}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    code, planned = run_json("plan-devices", str(folder), "--gpu", "20MB", "--gpu", "40MB", "--dtype", "fp16",
                             "--kv-cache", "--map", str(tmp_path / "map.json"))
    kv = planned["kv_cache"]
    assert code == 0 and kv["total_bytes"] == 16777216 and kv["total_bytes"] <= kv["gpu_free_bytes"], kv
    assert kv["fits_on_gpus"] is False, kv
    assert ("KV cache: cuda:0 runs 8 of the 8 layers, so it holds 16.78 MB of the 16.78 MB cache, with 7.34 MB "
            "left: it does not fit there") in " ".join(planned["warnings"]), planned["warnings"]
    # Half the text layers on each GPU: 8.39 MB on cuda:0, which has 13.67 MB left: it fits, and nothing is said.
    mapping = {**dict.fromkeys(rest, 1), **{f"model.language_model.layers.{i}": i // 4 for i in range(8)}}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    code, even = run_json("plan-devices", str(folder), "--gpu", "20MB", "--gpu", "40MB", "--dtype", "fp16",
                          "--kv-cache", "--map", str(tmp_path / "map.json"))
    assert code == 0 and even["kv_cache"]["fits_on_gpus"] is True, even["kv_cache"]
    assert not any(w.startswith("KV cache") for w in even["warnings"]), even["warnings"]


def test_a_model_on_one_gpu_holds_its_whole_cache_there_whatever_another_gpu_has_left(tmp_path: Path) -> None:
    """An encoder-decoder's share per GPU is not counted (its blocks are its encoder's too), so a T5 mapped whole to
    a 12 MB GPU with 990.46 KB left was said to fit its 16.78 MB cache "in the 40.99 MB the GPUs have left in all", a
    40 MB GPU beside it holding nothing: every layer runs on the one GPU, and its keys and values are made there."""
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 256, "d_kv": 64, "d_ff": 512,
        "num_layers": 4, "num_decoder_layers": 4, "num_heads": 4, "vocab_size": 1000, "n_positions": 2048}))
    for gpu, fits in ((1, False), (0, True)):
        (tmp_path / "map.json").write_text(json.dumps({"": gpu}))
        code, planned = run_json("plan-devices", str(folder), "--gpu", "40MB", "--gpu", "12MB", "--dtype", "fp16",
                                 "--kv-cache", "--seq-len", "2048", "--map", str(tmp_path / "map.json"))
        kv = planned["kv_cache"]
        # plan6: the decoder layers also hold the cross-attention keys and values of 2,048 encoder positions (as
        # many as --seq-len), as much again as their self-attention: at 4,096 tokens this T5's 16.78 MB was the
        # self-attention alone, and with its cross-attention (33.55 MB) it fits on neither GPU
        assert code == 0 and kv["total_bytes"] == 8388608 and kv["gpu_free_bytes"] == 40990464, kv
        assert (kv["cross_attention_bytes"], kv["encoder_seq_len"]) == (8388608, 2048), kv
        assert kv["fits_on_gpus"] is fits, (gpu, kv)
        warning = " ".join(w for w in planned["warnings"] if w.startswith("KV cache"))
        if fits:
            assert warning == "", warning
        else:
            assert ("KV cache: cuda:1 runs 4 of the 4 layers, so it holds 16.78 MB of the 16.78 MB cache, with "
                    "990.46 KB left: it does not fit there") in warning, warning
