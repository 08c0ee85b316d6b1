"""fixlist23: layout leftovers checked against transformers' own from_pretrained (output_loading_info=True)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fp8_block_state_dict, run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# On a GPU from_pretrained keeps FP8 / MXFP4 weights quantized; the dequantized load is the one without a GPU.
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="from_pretrained dequantizes only without a GPU")


def _tiny_llama_config() -> Any:
    return transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=4, vocab_size=256,
                                    tie_word_embeddings=False)


def _fp8_state_dict(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """FineGrainedFP8's layout: each Linear weight under `prefix` in float8_e4m3fn with its [128, 128] block scales
    as `weight_scale_inv`; the rest in bfloat16."""
    return fp8_block_state_dict(state_dict, lambda name: name.startswith(prefix) and name.endswith("proj.weight"))


def _save(folder: Path, state_dict: dict[str, Any], config: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _from_pretrained_info(cls: Any, folder: Path) -> dict[str, list[str]]:
    _, info = cls.from_pretrained(folder, output_loading_info=True)
    return {key: sorted(map(str, value)) for key, value in info.items() if key != "error_msgs"}


def _diff_keys(folder: Path, model_class: str) -> dict[str, Any]:
    result = run_cli("diff-keys", str(folder), "--model-class", model_class, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _fp8_llama(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = _tiny_llama_config()
    model = transformers.LlamaForCausalLM(config)
    saved = config.to_dict() | {"torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}}
    return _save(tmp_path / "fp8", _fp8_state_dict(model.state_dict(), "model.layers."), saved)


@needs_no_gpu
def test_fp8_scales_are_merged_into_their_weights_as_from_pretrained_dequantizes_them_without_a_gpu(
        tmp_path: Path) -> None:
    """A FineGrainedFP8 checkpoint (`weight_scale_inv` beside each float8 weight): from_pretrained on a machine
    without a GPU dequantizes it and reports nothing unexpected; diff-keys listed the 7 scales as unexpected
    ("read by the fp8 quantizer") and said the meta model was built unquantized."""
    folder = _fp8_llama(tmp_path)
    oracle = _from_pretrained_info(transformers.AutoModelForCausalLM, folder)
    assert oracle == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    report = _diff_keys(folder, "AutoModelForCausalLM")
    assert report["unexpected"] == [] and report["missing"] == [] and report["mismatched"] == []
    assert report["matched"] == report["total_b"] == 12
    notes = " ".join(report["notes"])
    assert "fp8 quantization, which from_pretrained dequantizes on this machine" in notes, notes
    assert "scales merged into it" in notes and "built unquantized" not in notes


@needs_no_gpu
def test_mxfp4_blocks_and_scales_load_as_the_experts_from_pretrained_dequantizes(tmp_path: Path) -> None:
    """gpt-oss's MXFP4 experts (`gate_up_proj_blocks` / `_scales`, `down_proj_blocks` / `_scales`): without triton
    or a GPU from_pretrained dequantizes them into `experts.gate_up_proj` / `down_proj` and reports nothing missing
    or unexpected; diff-keys said 4 unexpected side tensors and 2 missing experts."""
    torch.manual_seed(0)
    config = transformers.GptOssConfig(
        hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, vocab_size=128, num_local_experts=2, num_experts_per_tok=1, layer_types=["full_attention"],
        tie_word_embeddings=False)
    model = transformers.GptOssForCausalLM(config)
    state_dict: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            experts, rows, cols = tensor.shape  # [experts, in, out]: stored as [experts, out, in / 32, 16] nibbles
            state_dict[name + "_blocks"] = torch.randint(0, 255, (experts, cols, rows // 32, 16), dtype=torch.uint8)
            state_dict[name + "_scales"] = torch.full((experts, cols, rows // 32), 127, dtype=torch.uint8)
        else:
            state_dict[name] = tensor.to(torch.bfloat16).contiguous()
    saved = config.to_dict() | {"torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                            "model.embed_tokens", "lm_head"]}}
    folder = _save(tmp_path / "gpt-oss", state_dict, saved)
    oracle = _from_pretrained_info(transformers.AutoModelForCausalLM, folder)
    if oracle != {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}:
        pytest.skip(f"this transformers keeps MXFP4 quantized here: {oracle}")
    report = _diff_keys(folder, "AutoModelForCausalLM")
    assert report["unexpected"] == [] and report["missing"] == [] and report["mismatched"] == []
    assert "mxfp4 quantization, which from_pretrained dequantizes on this machine" in " ".join(report["notes"])


def _llava(tmp_path: Path, name: str, *, text_quantization: dict[str, Any] | None = None) -> Path:
    """A tiny LLaVA saved in the layout checkpoints written before transformers 4.52 use (`language_model.model.`,
    `language_model.lm_head.`, `vision_tower.`, `multi_modal_projector.`), which its conversion mapping renames."""
    torch.manual_seed(0)
    text = _tiny_llama_config()
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=16, projection_dim=32)
    config = transformers.LlavaConfig(text_config=text, vision_config=vision, image_token_index=255,
                                      vision_feature_layer=-1)
    model = transformers.LlavaForConditionalGeneration(config)
    old = {}
    for key, tensor in model.state_dict().items():
        for new, legacy in (("model.language_model.", "language_model.model."),
                            ("model.vision_tower.", "vision_tower."),
                            ("model.multi_modal_projector.", "multi_modal_projector."),
                            ("lm_head.", "language_model.lm_head.")):
            if key.startswith(new):
                key = legacy + key.removeprefix(new)
                break
        old[key] = tensor.contiguous()
    saved = config.to_dict()
    if text_quantization is not None:
        old = _fp8_state_dict(old, "language_model.model.layers.")
        saved["text_config"]["quantization_config"] = text_quantization
    return _save(tmp_path / name, old, saved)


def test_old_llava_prefixes_load_cleanly_as_transformers_conversion_mapping_renames_them(tmp_path: Path) -> None:
    """Checked, no fix needed: the pre-4.52 LLaVA layout loads with nothing missing or unexpected, in both."""
    folder = _llava(tmp_path, "llava")
    oracle = _from_pretrained_info(transformers.LlavaForConditionalGeneration, folder)
    assert oracle == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    report = _diff_keys(folder, "LlavaForConditionalGeneration")
    assert report["missing"] == [] and report["unexpected"] == [] and report["matched"] == report["total_b"]


@needs_no_gpu
def test_a_quantization_config_in_the_text_config_is_read_as_from_pretrained_reads_it(tmp_path: Path) -> None:
    """LLaVA with FP8 in `text_config.quantization_config` (none at the top): from_pretrained's get_hf_quantizer
    reads the text config's, dequantizes and reports nothing unexpected; diff-keys did not read it and listed
    the 7 scales as unexpected with no note on quantization."""
    folder = _llava(tmp_path, "llava-fp8", text_quantization={
        "quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]})
    oracle = _from_pretrained_info(transformers.LlavaForConditionalGeneration, folder)
    assert oracle == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    report = _diff_keys(folder, "LlavaForConditionalGeneration")
    assert report["unexpected"] == [] and report["missing"] == [] and report["matched"] == report["total_b"]
    assert "fp8 quantization, which from_pretrained dequantizes" in " ".join(report["notes"])


def test_a_dense_model_under_a_gguf_quantization_config_is_not_called_quantized(tmp_path: Path) -> None:
    """config.json with `quantization_config: {quant_method: gguf}` (saved from a model loaded from a .gguf) beside
    bfloat16 safetensors: from_pretrained loads the tensors as they are into plain Linear layers. inspect said
    "quantized: gguf ... 0 packed tensor(s)" and diff-keys that quantized weights were told apart by name."""
    torch.manual_seed(0)
    config = _tiny_llama_config()
    model = transformers.LlamaForCausalLM(config)
    state_dict = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    folder = _save(tmp_path / "dense", state_dict, config.to_dict() | {
        "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "gguf"}})
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    q_proj = loaded.model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear
    assert torch.equal(q_proj.weight, state_dict["model.layers.0.self_attn.q_proj.weight"])

    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    inspected = json.loads(result.stdout)
    assert inspected["quantized"] is None
    assert any("these weights are not quantized, and from_pretrained loads them as they are stored" in w
               for w in inspected["warnings"]), inspected["warnings"]
    human = run_cli("inspect", str(folder))
    assert "quantized" not in human.stdout.split("config.json")[0]

    report = _diff_keys(folder, "AutoModelForCausalLM")
    notes = " ".join(report["notes"])
    assert "quantization_config is GGUF's" in notes and "told apart by name" not in notes, notes


def test_a_donut_decoder_is_summarised_by_the_layers_it_builds_not_its_encoder_layers(tmp_path: Path) -> None:
    """Donut (VisionEncoderDecoder: DonutSwin encoder, MBart decoder whose config also says encoder_layers, 12
    against decoder_layers 4 in donut-base): inspect's summary said num_layers = encoder_layers (MBartConfig's
    num_hidden_layers), while the decoder-only MBartForCausalLM transformers builds has decoder_layers layers."""
    torch.manual_seed(0)
    encoder = transformers.DonutSwinConfig(image_size=[64, 64], patch_size=4, embed_dim=16, depths=[2, 2, 3, 1],
                                           num_heads=[1, 2, 4, 8], window_size=4)
    decoder = transformers.MBartConfig(d_model=32, decoder_layers=3, encoder_layers=5, decoder_attention_heads=2,
                                       encoder_attention_heads=4, decoder_ffn_dim=64, encoder_ffn_dim=64,
                                       vocab_size=100, max_position_embeddings=64, is_decoder=True,
                                       add_cross_attention=True)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    model = transformers.VisionEncoderDecoderModel(config)
    model.save_pretrained(tmp_path / "donut")
    built = model.decoder.model.decoder.layers
    assert len(built) == 3 and built[0].self_attn.num_heads == 2
    result = run_cli("inspect", str(tmp_path / "donut"), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)["config_summary"]
    assert (summary["num_layers"], summary["num_heads"], summary["hidden_size"]) == (3, 2, 32), summary
    kv = run_cli("plan-devices", str(tmp_path / "donut"), "--gpu", "1GB", "--kv-cache", "--json")
    assert kv.exit_code == 0, kv.stderr
    assert json.loads(kv.stdout)["kv_cache"]["num_layers"] == 3  # already right: decoder_layers first


def test_a_flat_kokoro_output_says_the_names_keep_dataparallels_module_prefix(tmp_path: Path) -> None:
    """kokoro-v1_0.pth's modules were saved from DataParallel (`{"bert": {"module.embeddings...": ...}}`); written
    flat they are `bert.module.*`, which KModel strips only as it loads each module apart. convert's and shard's
    warning said the loaders cannot read the file, not that the names keep `module.`; a --rename dropping it
    leaves only the first part."""
    torch.manual_seed(0)
    parts = ("bert", "bert_encoder", "predictor", "decoder", "text_encoder")
    wrapped = tmp_path / "kokoro-v1_0.pth"
    torch.save({part: {"module.proj.weight": torch.randn(4, 4), "module.proj.bias": torch.randn(4)}
                for part in parts}, wrapped)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("convert", str(wrapped), "-o", str(out / "kokoro.safetensors"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.stderr
    assert "cannot load what is written; the names also keep DataParallel's `module.` (bert.module.*, " in line, line
    assert "--rename '^([^.]+)\\.module\\.=\\1.'" in line, line
    shard = run_cli("shard", str(wrapped), "-o", str(out / "shards"), "--max", "1KB")
    assert shard.exit_code == 0 and "keep DataParallel's `module.`" in " ".join(shard.stderr.split()), shard.stderr

    # The rename the warning gives drops the prefix, and the warning then leaves it out.
    renamed = run_cli("convert", str(wrapped), "-o", str(out / "renamed.safetensors"),
                      "--rename", "^([^.]+)\\.module\\.=\\1.")
    assert renamed.exit_code == 0 and "cannot load what is written" in renamed.stderr, renamed.stderr
    assert "DataParallel" not in renamed.stderr
    inspected = run_cli("inspect", str(out / "renamed.safetensors"), "--json")
    assert {t["name"] for t in json.loads(inspected.stdout)["tensors"]} == {
        f"{part}.proj.{kind}" for part in parts for kind in ("weight", "bias")}


def _detectron2_pkl(path: Path) -> dict[str, Any]:
    """Detectron2's model zoo file: pickle.dump of {"model": {name: numpy array}, "__author__": ..., ...}."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    weights = {"backbone.bottom_up.stem.conv1.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
               "roi_heads.box_predictor.cls_score.weight": rng.standard_normal((5, 16)).astype(np.float32),
               "roi_heads.box_predictor.cls_score.bias": np.zeros(5, np.float32)}
    with open(path, "wb") as handle:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle,
                    protocol=4)
    return weights


def test_a_detectron2_pkl_is_called_a_pickle_by_every_command(tmp_path: Path) -> None:
    """model_final_*.pkl is pickle.dump's file, which torch.load cannot read: inspect and check-dtype called its
    format "pytorch-legacy" (torch.save's non-zip format: a magic number, pickles and storage records), while the
    reader's own warning said "not a torch.save file". Every command reads it."""
    path = tmp_path / "model_final_f10217.pkl"
    weights = _detectron2_pkl(path)
    with pytest.raises(Exception):  # noqa: B017 - torch.load's own error, whatever its type
        torch.load(path, weights_only=True)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "pickle" and [f["format"] for f in data["files"]] == ["pickle"], data["files"]
    assert data["security"]["container"] == "pickle" and data["num_tensors"] == 3
    verified = run_cli("inspect", str(path), "--verify", "--json")
    assert verified.exit_code == 0, verified.stderr
    assert "a plain pickle (pickle.dump) carries no checksum" in json.loads(verified.stdout)["verify"]["notes"]
    checked = run_cli("check-dtype", str(path), "--json")
    assert checked.exit_code == 0 and json.loads(checked.stdout)["format"] == "pickle", checked.stderr
    out = tmp_path / "d2.safetensors"
    converted = run_cli("convert", str(path), "-o", str(out))
    assert converted.exit_code == 0, converted.stderr
    from safetensors.numpy import load_file

    assert {k: v.tolist() for k, v in load_file(str(out)).items()} == {k: v.tolist() for k, v in weights.items()}
    sharded = run_cli("shard", str(path), "-o", str(tmp_path / "shards"), "--max", "1KB")
    assert sharded.exit_code == 0 and (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    diffed = run_cli("diff-keys", str(path), str(out), "--values", "--json")
    assert diffed.exit_code == 0 and json.loads(diffed.stdout)["matched"] == 3, diffed.stderr
    planned = run_cli("plan-devices", str(path), "--gpu", "1GB", "--json")
    assert planned.exit_code == 0, planned.stderr


def test_a_speechbrain_text_ckpt_is_not_called_a_servers_error_reply(tmp_path: Path) -> None:
    """SpeechBrain's Checkpointer writes brain.ckpt (YAML: step, avg_train_loss) and counter.ckpt (the epoch) as
    text beside the modules' torch.save files in a CKPT+ folder (CKPT.yaml). Named alone, they were "a server's
    error reply saved in place of the file? download it again"."""
    folder = tmp_path / "CKPT+2024-01-01+00-00-00+00"
    folder.mkdir()
    (folder / "CKPT.yaml").write_text("end-of-epoch: true\nunixtime: 1700000000.0\n")
    (folder / "brain.ckpt").write_text("step: 1200\navg_train_loss: 0.42\noptimizer_step: 1200\n")
    (folder / "counter.ckpt").write_text("5")
    torch.save({"0.w": torch.ones(2)}, folder / "embedding_model.ckpt")
    for name, reads in (("brain.ckpt", "'step: 1200 avg_train_loss: 0.42 optimizer_step: 1200'"),
                        ("counter.ckpt", "'5'")):
        result = run_cli("inspect", str(folder / name))
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        line = " ".join(result.stderr.split())
        assert f"it is text that reads {reads}: in a SpeechBrain checkpoint folder (CKPT.yaml)" in line, line
        assert f"name one of those (e.g. {folder.name}/embedding_model.ckpt)" in line, line
        assert "server's error reply" not in line and "download it again" not in line
    # Elsewhere a short text file under a weights name is still the failed download it usually is.
    (tmp_path / "model.ckpt").write_text("Entry not found")
    result = run_cli("inspect", str(tmp_path / "model.ckpt"))
    assert result.exit_code == 2 and "a server's error reply" in " ".join(result.stderr.split())
