"""A tenth round of checkpoints as research and training tools write them: flair's model files, k-diffusion's
training checkpoints, Segment Anything's own .pth against transformers' SamModel, nanoGPT's ckpt.pt."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from tests.helpers import run_cli, run_json

if TYPE_CHECKING:
    from transformers import SamConfig


def _flair_model(path: Path, monkeypatch: pytest.MonkeyPatch, whole_embeddings: bool = False) -> None:
    """A flair SequenceTagger as flair's Model.save writes it (final-model.pt, best-model.pt, a flair Hub repo's
    pytorch_model.bin): torch.save of `_get_state_dict()`, the state dict under "state_dict" beside the embeddings
    (flair >= 0.12: their settings as a dict; before: the embeddings module pickled whole) and the label Dictionary,
    a flair.data object, with plain settings (hidden_size, tag_type, use_crf, ...)."""
    flair, data = types.ModuleType("flair"), types.ModuleType("flair.data")
    dictionary_class = type("Dictionary", (), {"__module__": "flair.data"})
    data.Dictionary = dictionary_class  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flair", flair)
    monkeypatch.setitem(sys.modules, "flair.data", data)
    labels = dictionary_class()
    labels.item2idx = {b"O": 0, b"S-PER": 1}
    labels.idx2item = [b"O", b"S-PER"]
    labels.add_unk = False
    torch.manual_seed(0)
    state_dict = {"embeddings.model.embeddings.word_embeddings.weight": torch.randn(50, 8),
                  "linear.weight": torch.randn(2, 8), "linear.bias": torch.zeros(2)}
    # TransformerWordEmbeddings' to_params: its settings, and the tokenizer's files zipped into an io.BytesIO.
    embeddings: object = {"__cls__": "TransformerWordEmbeddings", "model": "xlm-roberta-large", "layers": "-1",
                          "tokenizer_data": io.BytesIO(b"PK\x05\x06" + bytes(18))}
    if whole_embeddings:
        embeddings_module = types.ModuleType("flair.embeddings")
        embeddings_class = type("WordEmbeddings", (torch.nn.Module,), {"__module__": "flair.embeddings"})
        embeddings_module.WordEmbeddings = embeddings_class  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "flair.embeddings", embeddings_module)
        embeddings = embeddings_class()
        embeddings.embedding = torch.nn.Embedding(50, 8)  # type: ignore[union-attr]
    torch.save({"state_dict": state_dict, "__cls__": "SequenceTagger", "embeddings": embeddings,
                "hidden_size": 256, "tag_dictionary": labels, "tag_format": "BIOES", "tag_type": "ner",
                "use_crf": False, "use_rnn": False, "reproject_embeddings": False, "weight_dict": None},
               path, pickle_protocol=4)


@pytest.mark.parametrize("whole_embeddings", [False, True])
def test_a_flair_model_is_refused_by_name_with_the_way_to_its_state_dict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_embeddings: bool) -> None:
    """flair's Model.save pickles its label Dictionary (and, before flair 0.12, the embeddings module) by class beside
    the state dict, and transformer embeddings' tokenizer as a zip in an io.BytesIO. The refusal named
    flair.data.Dictionary "unknown" and no way to the weights, then told to load it "only if you know why" BytesIO is
    there (or, with the embeddings pickled whole, gave a generic torch.save(model) hint naming neither flair nor its
    'state_dict')."""
    path = tmp_path / "final-model.pt"
    _flair_model(path, monkeypatch, whole_embeddings)
    for command, extra in (("inspect", []), ("convert", ["-o", str(tmp_path / "out.safetensors")]),
                           ("check-dtype", [])):
        result = run_cli(command, str(path), *extra)
        assert result.exit_code == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        line = " ".join(result.stderr.split())
        # The tokenizer's io.BytesIO is an in-memory buffer, read as inert data (test_transformer_engine.py).
        verdict = ("suspicious: _io.BytesIO (inert" if not whole_embeddings
                   else "suspicious: flair.embeddings.WordEmbeddings")
        assert line.startswith(f"error: {path}: {verdict}") and "flair.data.Dictionary" in line, line
        assert "nothing was unpickled" in line and "corrupt" not in line, line
        assert "this is a flair model, what flair's Model.save writes" in line, line
        assert "weights_only=False)['state_dict']" in line and "torch.load(path" not in line, line
        assert "whole pickled model" not in line, line
        assert "dangerous" not in line, line
    assert not (tmp_path / "out.safetensors").exists()


def _k_diffusion_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A k-diffusion training checkpoint as its train.py saves it: the inner model's raw weights under `model`, its
    EMA under `model_ema`, then `opt`, `sched`, `ema_sched`, `epoch`, `step`, `gns_stats`, `ema_stats`, `demo_gen`,
    `elapsed`, and the config it was trained with."""
    torch.manual_seed(0)
    raw = {"mapping.in_proj.weight": torch.randn(16, 8), "mapping.in_proj.bias": torch.zeros(16),
           "patch_in.proj.weight": torch.randn(16, 12), "out_norm.linear.weight": torch.zeros(32, 16)}
    ema = {name: value + 0.25 for name, value in raw.items()}
    torch.save({"config": {"model": {"type": "image_transformer_v2", "patch_size": [2, 2]}}, "model": raw,
                "model_ema": ema, "opt": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1, 2, 3]}]},
                "sched": {"last_epoch": 5000}, "ema_sched": {"power": 0.75, "max_value": 0.9999},
                "epoch": 2, "step": 5000, "gns_stats": None, "ema_stats": {}, "demo_gen": None, "elapsed": 812.5},
               path)
    return raw, ema


def test_a_k_diffusion_checkpoint_reads_the_ema_weights_its_sampling_loads(tmp_path: Path) -> None:
    """k-diffusion's sampling, demos and evaluation load `model_ema`; `model` (the raw training weights) only resumes
    training. `model` was read (the first usual key), so convert wrote the weights k-diffusion does not sample with,
    as BasicSR's `params` once were. A {model, model_ema} without k-diffusion's ema_sched (DeiT, ConvNeXt, whose
    tools load `model` by default) still reads `model`."""
    from safetensors.torch import load_file

    path = tmp_path / "00005000.pth"
    raw, ema = _k_diffusion_checkpoint(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model_ema" and data["num_params"] == 16 * 8 + 16 + 16 * 12 + 32 * 16
    assert any("a k-diffusion training checkpoint: model_ema is read" in w and "--key model" in w
               for w in data["warnings"]), data["warnings"]
    assert any(entry.startswith("model (a state dict of 4 tensors") for entry in data["other_entries"]), data
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(ema) and all(torch.equal(written[name], ema[name]) for name in ema)
    code, data = run_json("inspect", str(path), "--key", "model")
    assert code == 0 and data["nested_key"] == "model" and not any("k-diffusion" in w for w in data["warnings"])
    deit = tmp_path / "checkpoint.pth"
    torch.save({"model": raw, "model_ema": ema, "optimizer": {"state": {}, "param_groups": []},
                "lr_scheduler": {"last_epoch": 3}, "epoch": 3, "scaler": {"scale": 65536.0}}, deit)
    code, data = run_json("inspect", str(deit))
    assert code == 0 and data["nested_key"] == "model" and not any("k-diffusion" in w for w in data["warnings"])


def _segment_anything_state(blocks: int = 1) -> dict[str, torch.Tensor]:
    """A Segment Anything state dict as segment-anything's sam_vit_*.pth stores it (torch.save(sam.state_dict()),
    pixel_mean / pixel_std left out as non-persistent), at toy sizes."""
    torch.manual_seed(0)
    state = {"image_encoder.pos_embed": torch.zeros(1, 4, 4, 16),
             "image_encoder.patch_embed.proj.weight": torch.randn(16, 3, 16, 16),
             "image_encoder.patch_embed.proj.bias": torch.zeros(16)}
    for i in range(blocks):
        block = f"image_encoder.blocks.{i}."
        state.update({f"{block}norm1.weight": torch.ones(16), f"{block}norm1.bias": torch.zeros(16),
                      f"{block}attn.qkv.weight": torch.randn(48, 16), f"{block}attn.qkv.bias": torch.zeros(48),
                      f"{block}attn.proj.weight": torch.randn(16, 16), f"{block}attn.proj.bias": torch.zeros(16),
                      f"{block}attn.rel_pos_h": torch.zeros(7, 8), f"{block}attn.rel_pos_w": torch.zeros(7, 8),
                      f"{block}norm2.weight": torch.ones(16), f"{block}norm2.bias": torch.zeros(16),
                      f"{block}mlp.lin1.weight": torch.randn(32, 16), f"{block}mlp.lin1.bias": torch.zeros(32),
                      f"{block}mlp.lin2.weight": torch.randn(16, 32), f"{block}mlp.lin2.bias": torch.zeros(16)})
    state.update({"image_encoder.neck.0.weight": torch.randn(8, 16, 1, 1), "image_encoder.neck.1.weight": torch.ones(8),
                  "image_encoder.neck.1.bias": torch.zeros(8), "image_encoder.neck.2.weight": torch.randn(8, 8, 3, 3),
                  "image_encoder.neck.3.weight": torch.ones(8), "image_encoder.neck.3.bias": torch.zeros(8),
                  "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.randn(2, 4),
                  "prompt_encoder.not_a_point_embed.weight": torch.randn(1, 8),
                  "prompt_encoder.no_mask_embed.weight": torch.randn(1, 8),
                  "prompt_encoder.mask_downscaling.0.weight": torch.randn(1, 1, 2, 2),
                  "mask_decoder.iou_token.weight": torch.randn(1, 8),
                  "mask_decoder.mask_tokens.weight": torch.randn(4, 8),
                  "mask_decoder.output_upscaling.0.weight": torch.randn(8, 2, 2, 2),
                  "mask_decoder.iou_prediction_head.layers.0.weight": torch.randn(16, 8)})
    state.update({f"prompt_encoder.point_embeddings.{i}.weight": torch.randn(1, 8) for i in range(4)})
    return state


def test_segment_anything_against_transformers_sam_names_the_converter(tmp_path: Path) -> None:
    """diff-keys sam_vit_b_01ec64.pth against transformers' SamModel offered two renames (image_encoder. →
    vision_encoder., blocks. → layers.) that match a few keys, and called prompt_encoder.pe_layer an adapter's key:
    transformers' convert_sam_to_hf.py renames every key by substring and stores pe_layer's matrix twice."""

    path = tmp_path / "sam_vit_b_01ec64.pth"
    state = _segment_anything_state()
    torch.save(state, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] is None and data["num_params"] == sum(v.numel() for v in state.values())
    tiny_sam_config(tmp_path / "sam-hf")
    code, data = run_json("diff-keys", str(path), "--model-class", "SamModel", "--config", str(tmp_path / "sam-hf"))
    assert code == 1, data
    said = [note for note in data["notes"] if "Segment Anything's own layout" in note]
    assert len(said) == 1, data["notes"]
    assert "convert_sam_to_hf.py" in said[0] and "--model_name sam_vit_b_01ec64" in said[0], said
    assert "SamModel" in said[0], said
    assert "replace_keys" in said[0], said
    # Two original checkpoints against each other: no such note.
    code, data = run_json("diff-keys", str(path), str(path))
    assert code == 0 and not any("Segment Anything" in note for note in data["notes"]), data["notes"]


def test_a_nanogpt_ckpt_counts_its_tied_head_once_and_names_the_compile_prefix(tmp_path: Path) -> None:
    """nanoGPT's train.py saves {"model": raw_model.state_dict(), "optimizer", "model_args", "iter_num",
    "best_val_loss" (a 0-d tensor once evaluated), "config"}; compiled, every key starts `_orig_mod.` (sample.py
    strips it), and lm_head.weight is transformer.wte.weight. GPT.get_num_params counts the tie once."""
    n_embd, vocab, block = 16, 64, 8
    torch.manual_seed(0)
    wte = torch.randn(vocab, n_embd)
    state = {"transformer.wte.weight": wte, "transformer.wpe.weight": torch.randn(block, n_embd),
             "transformer.h.0.ln_1.weight": torch.ones(n_embd),
             "transformer.h.0.attn.c_attn.weight": torch.randn(3 * n_embd, n_embd),
             "transformer.h.0.attn.c_proj.weight": torch.randn(n_embd, n_embd),
             "transformer.h.0.mlp.c_fc.weight": torch.randn(4 * n_embd, n_embd),
             "transformer.ln_f.weight": torch.ones(n_embd), "lm_head.weight": wte}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"_orig_mod.{name}": value for name, value in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": list(range(7))}]},
                "model_args": {"n_layer": 1, "n_head": 2, "n_embd": n_embd, "block_size": block, "bias": False,
                               "vocab_size": vocab, "dropout": 0.0},
                "iter_num": 2000, "best_val_loss": torch.tensor(2.85), "config": {"compile": True}}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model", data
    assert data["num_params"] == sum(v.numel() for k, v in state.items() if k != "lm_head.weight"), data
    assert "best_val_loss (tensor [] float32)" in data["other_entries"], data["other_entries"]
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": n_embd, "n_layer": 1, "n_head": 2,
         "vocab_size": vocab, "n_positions": block}))
    code, data = run_json("diff-keys", str(path), "--model-class", "GPT2LMHeadModel", "--config",
                          str(tmp_path / "gpt2"))
    assert code == 1 and any(r["flag"] == "--rename '^_orig_mod\\.='" for r in data["suggested_renames"]), data


def test_a_models_own_prompt_encoder_is_not_called_an_adapter(tmp_path: Path) -> None:
    """transformers' SamModel has a prompt_encoder of its own (point_embed, mask_embed, shared_embedding). A SAM
    checkpoint saved without it (a fine-tune that kept the vision encoder and mask decoder) against the full model
    called its 16 missing weights "adapter / PEFT weights", a warning: exit 0, where loading leaves them at random.
    PEFT's prompt learning keeps its encoder under prompt_encoder.<adapter name>.embedding / mlp_head: still one."""
    from safetensors.torch import load_file, save_file
    from transformers import SamModel

    config = _tiny_sam()
    torch.manual_seed(0)
    SamModel(config).save_pretrained(str(tmp_path / "sam"))
    state = load_file(tmp_path / "sam" / "model.safetensors")
    kept = {name: value for name, value in state.items() if not name.startswith("prompt_encoder.")}
    save_file(kept, str(tmp_path / "no_prompt_encoder.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "no_prompt_encoder.safetensors"), str(tmp_path / "sam"))
    missing = [item for item in data["missing"] if item["name"].startswith("prompt_encoder.")]
    assert len(missing) == len(state) - len(kept) and missing, data["missing"]
    assert code == 1 and data["worst_severity"] == "error", data
    assert all(item["reason"] != "adapter" and item["severity"] == "error" for item in missing), missing
    prompt_tuned = {**state, "prompt_encoder.default.embedding.weight": torch.zeros(4, 8),
                    "prompt_encoder.default.mlp_head.0.weight": torch.zeros(8, 8)}
    save_file(prompt_tuned, str(tmp_path / "p_tuning.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "p_tuning.safetensors"), str(tmp_path / "sam"))
    reasons = {item["name"]: item["reason"] for item in data["unexpected"]}
    assert reasons == {"prompt_encoder.default.embedding.weight": "adapter",
                       "prompt_encoder.default.mlp_head.0.weight": "adapter"}, data["unexpected"]


def test_a_models_own_adapter_module_is_not_called_an_adapter(tmp_path: Path) -> None:
    """Wav2Vec2 with add_adapter=True (what XLS-R / MMS fine-tunes and speech encoder-decoders use) has its own
    `adapter.layers.N.conv`: a checkpoint saved without them, against the model, called them "adapter / PEFT
    weights", a warning (exit 0), where loading leaves them at random. AdapterHub's `adapters.<name>.` stays one."""
    from safetensors.torch import load_file, save_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                            num_conv_pos_embedding_groups=2, add_adapter=True, num_adapter_layers=2,
                            output_hidden_size=16, vocab_size=10)
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(str(tmp_path / "w2v"))
    state = load_file(tmp_path / "w2v" / "model.safetensors")
    save_file({name: value for name, value in state.items() if not name.startswith("adapter.")},
              str(tmp_path / "without_adapter.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "without_adapter.safetensors"), str(tmp_path / "w2v"))
    assert code == 1 and data["worst_severity"] == "error", data
    missing = [item for item in data["missing"] if item["name"].startswith("adapter.layers.")]
    assert len(missing) == 4 and all(item["reason"] != "adapter" for item in missing), data["missing"]
    hub = {**state, "encoder.layers.0.output.adapters.sst-2.adapter_up.weight": torch.zeros(16, 4),
           "encoder.layers.0.output.adapters.sst-2.bias": torch.zeros(16)}
    save_file(hub, str(tmp_path / "adapterhub.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "adapterhub.safetensors"), str(tmp_path / "w2v"))
    assert {item["reason"] for item in data["unexpected"]} == {"adapter"} and len(data["unexpected"]) == 2, data


def test_a_detectron_caffe2_pickle_leaves_out_its_momentum_blobs(tmp_path: Path) -> None:
    """Detectron's (Caffe2) model_final.pkl, which detectron2 still loads (its Caffe2 branch of
    DetectionCheckpointer), is a plain pickle of {"blobs": {name: numpy array}, "cfg": ...} where every trained blob
    has its SGD momentum beside it as `<name>_momentum`; detectron2 drops those when it loads the file. They were
    read as weights: the parameters doubled, and convert wrote the momentum into the safetensors file."""
    import pickle

    import numpy as np
    from safetensors.torch import load_file

    rng = np.random.default_rng(0)
    blobs = {"conv1_w": rng.standard_normal((8, 3, 7, 7)).astype(np.float32),
             "res_conv1_bn_s": np.ones(8, np.float32), "res_conv1_bn_b": np.zeros(8, np.float32),
             "res2_0_branch2a_w": rng.standard_normal((8, 8, 1, 1)).astype(np.float32),
             "cls_score_w": rng.standard_normal((81, 8)).astype(np.float32), "cls_score_b": np.zeros(81, np.float32)}
    momentum = {f"{name}_momentum": np.zeros_like(value) for name, value in blobs.items()}
    path = tmp_path / "model_final.pkl"
    with path.open("wb") as handle:
        pickle.dump({"blobs": {**blobs, **momentum}, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}, handle, protocol=2)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "blobs", data
    assert data["num_tensors"] == len(blobs) and data["num_params"] == sum(v.size for v in blobs.values()), data
    assert any("a Detectron (Caffe2) pickle: 6 blobs ending in _momentum" in w and "detectron2" in w
               for w in data["warnings"]), data["warnings"]
    out = tmp_path / "model_final.safetensors"
    assert run_cli("convert", str(path), "-o", str(out)).exit_code == 0
    assert set(load_file(out)) == set(blobs)
    # detectron2's own model zoo .pkl ({"model", "__author__", "matching_heuristics"}) is read as it was.
    zoo = tmp_path / "model_final_f10217.pkl"
    with zoo.open("wb") as handle:
        pickle.dump({"model": {"backbone.bottom_up.stem.conv1.weight": blobs["conv1_w"]},
                     "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle, protocol=4)
    code, data = run_json("inspect", str(zoo))
    assert code == 0 and data["nested_key"] == "model" and data["num_tensors"] == 1, data
    assert not any("Caffe2" in w for w in data["warnings"]), data["warnings"]
    # A `*_momentum` array with no weight of that name beside it is some other pickle's own tensor: read.
    other = tmp_path / "ema.pkl"
    with other.open("wb") as handle:
        pickle.dump({"w": blobs["conv1_w"], "running_momentum": np.ones(8, np.float32)}, handle, protocol=4)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["num_tensors"] == 2 and not any("Caffe2" in w for w in data["warnings"]), data


def _tiny_sam() -> SamConfig:
    """A tiny SamConfig: one vision layer, 64-pixel images."""
    from transformers import SamConfig

    return SamConfig(vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "output_channels": 8, "image_size": 64, "patch_size": 16, "mlp_dim": 32,
                                    "global_attn_indexes": [0]},
                     prompt_encoder_config={"hidden_size": 8, "image_size": 64, "patch_size": 16},
                     mask_decoder_config={"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "mlp_dim": 16, "iou_head_hidden_dim": 16})


def tiny_sam_config(folder: Path) -> Path:
    """A tiny SamModel config saved in `folder` (the target of Segment Anything's own layout)."""
    config = _tiny_sam()
    config.architectures = ["SamModel"]
    config.save_pretrained(str(folder))
    return folder
