"""A ninth round of checkpoints as other tools write them: audiocraft's solver checkpoints (checkpoint.th) and
their exports, OpenMMLab 1.x checkpoints trained with mmcv's EMAHook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _audiocraft_checkpoint(path: Path, fsdp: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """audiocraft's checkpoint.th as its StandardSolver saves it: `model` (the last epoch's weights) beside
    `best_state` ({"model": the best validation epoch's}), `fsdp_best_state` (filled only under FSDP, where
    export_lm reads it first), the optimizer, the epoch, the history and `xp.cfg` (an omegaconf DictConfig)."""
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    last = {"encoder.model.0.conv.conv.weight": torch.randn(4, 1, 7),
            "quantizer.vq.layers.0._codebook.embed": torch.randn(16, 4)}
    best = {name: value + 1.0 for name, value in last.items()}
    torch.save({"model": last, "best_state": {"model": {} if fsdp else best},
                "fsdp_best_state": {"model": best} if fsdp else {},
                "optimizer": {"state": {}, "param_groups": [{"lr": 3e-4, "params": [0, 1]}]}, "epoch": 3,
                "history": [{"train": {"loss": 1.0}, "valid": {"loss": 1.2}}],
                "xp.cfg": OmegaConf.create({"solver": "compression", "sample_rate": 16000})}, path)
    return last, best


@pytest.mark.parametrize("fsdp", [False, True])
def test_an_audiocraft_solver_checkpoint_reads_the_best_state_its_export_writes(tmp_path: Path, fsdp: bool) -> None:
    """audiocraft.utils.export (export_encodec, export_lm) writes `best_state["model"]` (or, under FSDP,
    `fsdp_best_state["model"]`) to the release file. `model`, the last epoch's weights, was read, so convert wrote
    weights that no audiocraft release holds, without a word."""
    from safetensors.torch import load_file

    path = tmp_path / "checkpoint.th"
    last, best = _audiocraft_checkpoint(path, fsdp)
    where = "fsdp_best_state.model" if fsdp else "best_state.model"
    code, data = run_json("inspect", str(path))
    assert code == 0
    assert data["nested_key"] == where
    assert any("model (a state dict of 2 tensors" in entry for entry in data["other_entries"])
    assert any(f"audiocraft solver checkpoint: {where} is read" in w and "--key model" in w
               for w in data["warnings"]), data["warnings"]
    result = run_cli("convert", str(path), "-o", str(tmp_path / "best.safetensors"))
    assert result.exit_code == 0, result.stderr
    written = load_file(tmp_path / "best.safetensors")
    assert all(torch.equal(written[name], value) for name, value in best.items())
    # The last epoch's weights are still one --key away.
    code, data = run_json("inspect", str(path), "--key", "model")
    assert code == 0 and data["nested_key"] == "model"
    assert not any("audiocraft" in w for w in data["warnings"])
    assert sorted(last) == sorted(t["name"] for t in data["tensors"])


def test_an_audiocraft_export_and_a_plain_model_beside_a_best_state_are_read_as_they_were(tmp_path: Path) -> None:
    """The release file export_encodec writes ({"best_state": weights, "xp.cfg": YAML text, "version",
    "exported"}) reads its one state dict; a file with `best_state` but no `xp.cfg` is not taken for audiocraft's."""
    torch.save({"best_state": {"decoder.weight": torch.ones(2, 3)}, "xp.cfg": "solver: compression\n",
                "version": "1.3.0", "exported": True}, tmp_path / "compression_state_dict.bin")
    code, data = run_json("inspect", str(tmp_path / "compression_state_dict.bin"))
    assert code == 0 and data["nested_key"] == "best_state" and data["num_params"] == 6
    torch.save({"model": {"w": torch.ones(2)}, "best_state": {"model": {"w": torch.zeros(2)}}}, tmp_path / "other.pt")
    code, data = run_json("inspect", str(tmp_path / "other.pt"))
    assert code == 0 and data["nested_key"] == "model"


def _mmdet_checkpoint(path: Path, ema: bool) -> None:
    """An mmdet 2.x checkpoint as mmcv's save_checkpoint writes it ({"meta", "state_dict", "optimizer"}); with
    mmcv's EMAHook (YOLOX, RTMDet configs) the model holds a buffer `ema_` + name.replace(".", "_") per parameter
    (named_parameters only: BatchNorm's running stats get none)."""
    torch.manual_seed(0)
    params = {"backbone.stem.conv.weight": torch.randn(8, 3, 3, 3), "backbone.stem.bn.weight": torch.ones(8),
              "bbox_head.multi_level_conv_cls.0.weight": torch.randn(10, 8, 1, 1),
              "bbox_head.multi_level_conv_cls.0.bias": torch.zeros(10)}
    buffers = {"backbone.stem.bn.running_mean": torch.zeros(8), "backbone.stem.bn.running_var": torch.ones(8),
               "backbone.stem.bn.num_batches_tracked": torch.tensor(100)}
    copies = {"ema_" + name.replace(".", "_"): value.clone() for name, value in params.items()} if ema else {}
    torch.save({"meta": {"mmcv_version": "1.7.1", "epoch": 300, "iter": 1000, "CLASSES": ("a", "b")},
                "state_dict": {**params, **buffers, **copies},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1, 2, 3]}]}}, path)


def test_an_mmcv_ema_hook_checkpoint_says_its_parameters_are_stored_twice(tmp_path: Path) -> None:
    """The ema_* buffers doubled the parameter count without a word: a model built for testing has none of them."""
    path = tmp_path / "yolox_s_8x8_300e_coco.pth"
    _mmdet_checkpoint(path, ema=True)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state_dict"
    named = 8 * 27 + 8 + 10 * 8 + 10
    assert data["num_params"] == 2 * named + 8 + 8 + 1
    warning = next(w for w in data["warnings"] if "stored twice" in w)
    assert f"a copy of 4 tensors ({named} parameters" in warning
    assert "EMAHook" in warning and "unexpected keys" in warning
    plain = tmp_path / "without_ema.pth"
    _mmdet_checkpoint(plain, ema=False)
    code, data = run_json("inspect", str(plain))
    assert code == 0 and not any("stored twice" in w for w in data["warnings"])


def test_a_fastai_export_pkl_is_refused_as_a_learner_with_the_way_to_its_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fastai's learn.export() torch.saves the whole Learner (protocol 2) as export.pkl. It was refused as an unknown
    whole pickled model, naming neither fastai's Learner nor load_learner; learn.save()'s {"model", "opt"} .pth
    reads as a state dict."""
    import sys
    import types

    package, module = types.ModuleType("fastai"), types.ModuleType("fastai.learner")
    learner_class = type("Learner", (), {"__module__": "fastai.learner"})
    module.Learner = learner_class  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastai", package)
    monkeypatch.setitem(sys.modules, "fastai.learner", module)
    learner = learner_class()
    learner.model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    torch.save(learner, tmp_path / "export.pkl", pickle_protocol=2)
    for command in ("inspect", "convert"):
        args = ["-o", str(tmp_path / "out.safetensors")] if command == "convert" else []
        result = run_cli(command, str(tmp_path / "export.pkl"), *args)
        assert result.exit_code == 2 and "Traceback" not in result.stderr
        line = " ".join(result.stderr.split())
        assert line.startswith(f"error: {tmp_path / 'export.pkl'}: suspicious: fastai.learner.Learner") \
            and "nothing was unpickled" in line
        assert "fastai Learner exported with learn.export()" in line
        assert f"load_learner({str(tmp_path / 'export.pkl')!r}).model.state_dict()" in line
    assert not (tmp_path / "out.safetensors").exists()
    torch.save({"model": learner.model.state_dict(), "opt": {"state": {}, "param_groups": [{"lr": 1e-3}]}},
               tmp_path / "model.pth")
    code, data = run_json("inspect", str(tmp_path / "model.pth"))
    assert code == 0 and data["nested_key"] == "model" and data["num_params"] == 10


@pytest.mark.parametrize("kernel", [(3,), (3, 5)])
def test_a_keras_or_flax_kernel_against_pytorchs_is_the_same_kernel_with_channels_last(
        tmp_path: Path, kernel: tuple[int, ...]) -> None:
    """A Keras (TensorFlow) or Flax Conv kernel is (*kernel, in, out), HWIO; PyTorch's is (out, in, *kernel). A
    hand conversion that kept the names but not the order was said "same name, different shape: the architecture
    differs"; the permutation the detail gives is checked to turn one into the other."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    conv = torch.randn(32, 16, *kernel)  # PyTorch's (out, in, *kernel)
    n = conv.dim()
    hwio = conv.permute(*range(2, n), 1, 0).contiguous()  # what Keras' Conv2D.kernel holds
    save_file({"features.0.weight": hwio, "features.0.bias": torch.zeros(32)}, str(tmp_path / "keras.safetensors"))
    save_file({"features.0.weight": conv, "features.0.bias": torch.zeros(32)}, str(tmp_path / "torch.safetensors"))
    order = ", ".join(map(str, (n - 1, n - 2, *range(n - 2))))
    assert torch.equal(hwio.permute(*map(int, order.split(", "))), conv)
    for a, b, last, first in (("keras", "torch", "A", "B"), ("torch", "keras", "B", "A")):
        code, data = run_json("diff-keys", str(tmp_path / f"{a}.safetensors"), str(tmp_path / f"{b}.safetensors"))
        assert code == 1, data
        [row] = data["mismatched"]
        assert (row["name"], row["reason"], row["severity"]) == ("features.0.weight", "channels-last", "error")
        assert f"the same kernel, (*kernel, in, out) in {last} (as TensorFlow / Keras and Flax store convolutions), " \
               f"(out, in, *kernel) in {first} (PyTorch's order); w.permute({order}) turns {last}'s into {first}'s" \
               in row["detail"], row


def _t2i_adapters(tmp_path: Path) -> tuple[Path, Path]:
    """TencentARC's original T2I-Adapter (ldm/modules/encoders/adapter.py's Adapter: conv_in, then body.K for
    K = stage * num_res_blocks + block, each ResnetBlock's block1 (3×3) and block2 (1×1), a stage's first block an
    in_conv where the channels change) and the same weights as diffusers' T2IAdapter (full_adapter) saves them:
    adapter.conv_in, adapter.body.S.resnets.B.block1, adapter.body.S.in_conv."""
    import json

    from safetensors.torch import save_file

    torch.manual_seed(0)
    channels, blocks = [8, 16, 32, 32], 2
    original = {"conv_in.weight": torch.randn(8, 12, 3, 3), "conv_in.bias": torch.zeros(8)}
    diffusers = {"adapter.conv_in.weight": original["conv_in.weight"], "adapter.conv_in.bias": torch.zeros(8)}
    for stage, width in enumerate(channels):
        if stage and channels[stage - 1] != width:
            weight = torch.randn(width, channels[stage - 1], 1, 1)
            original[f"body.{stage * blocks}.in_conv.weight"] = weight
            diffusers[f"adapter.body.{stage}.in_conv.weight"] = weight
        for block in range(blocks):
            for conv, size in (("block1", 3), ("block2", 1)):
                weight = torch.randn(width, width, size, size)
                original[f"body.{stage * blocks + block}.{conv}.weight"] = weight
                diffusers[f"adapter.body.{stage}.resnets.{block}.{conv}.weight"] = weight
    torch.save(original, tmp_path / "t2iadapter_canny_sd15v2.pth")
    folder = tmp_path / "t2i-adapter-canny-sd15"
    folder.mkdir()
    save_file(diffusers, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "T2IAdapter", "_diffusers_version": "0.21.0", "adapter_type": "full_adapter",
        "channels": channels, "downscale_factor": 2, "in_channels": 3, "num_res_blocks": blocks}))
    return tmp_path / "t2iadapter_canny_sd15v2.pth", folder


def test_an_original_t2i_adapter_against_diffusers_is_a_foreign_layout_not_a_rename(tmp_path: Path) -> None:
    """diff-keys suggested `--rename '^=adapter.'` (which maps body.2.in_conv onto stage 2's in_conv, not stage 1's)
    and called diffusers' adapter.* weights PEFT adapter weights; the blocks are renumbered per stage."""
    original, diffusers = _t2i_adapters(tmp_path)
    for a, b, side in ((original, diffusers, "A"), (diffusers, original, "B")):
        code, data = run_json("diff-keys", str(a), str(b))
        assert code == 1, data
        assert data["suggested_renames"] == [], data["suggested_renames"]
        rows = data["missing"] + data["unexpected"]
        assert rows and {row["reason"] for row in rows} == {"foreign-layout"}, rows
        assert any(f"original T2I-Adapter layout (in {side})" in row["detail"] for row in rows)
        [note] = [n for n in data["notes"] if "T2I-Adapter" in n]
        assert note.startswith(f"{side} is a T2I-Adapter in TencentARC's original layout")
        assert ("convert_original_t2i_adapter.py" in note) == (side == "A"), note


@pytest.mark.parametrize("layout", ["pyg-2.4", "pyg-2.0"])
def test_a_pytorch_geometric_data_file_is_named_as_graphs_not_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """PyG's InMemoryDataset saves processed/data.pt as (data.to_dict(), slices, Data) since 2.4, (Data, slices)
    before: refused as "suspicious" with an unknown global and no word that it holds a data set's graphs."""
    import sys
    import types

    for name in ("torch_geometric", "torch_geometric.data"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = types.ModuleType("torch_geometric.data.data")
    data_class = type("Data", (), {"__module__": "torch_geometric.data.data"})
    module.Data = data_class  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_geometric.data.data", module)
    x, edges = torch.randn(5, 3), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    slices = {"x": torch.tensor([0, 5]), "edge_index": torch.tensor([0, 4])}
    if layout == "pyg-2.4":
        saved: object = ({"x": x, "edge_index": edges}, slices, data_class)
    else:
        data = data_class()
        data.x, data.edge_index = x, edges
        saved = (data, slices)
    (tmp_path / "processed").mkdir()
    path = tmp_path / "processed" / "data.pt"
    torch.save(saved, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert line.startswith(f"error: {path}: suspicious: torch_geometric.data.data.Data"), line
    assert "(this is a PyTorch Geometric data file, what InMemoryDataset saves as processed/data.pt: the data " \
           "set's graphs" in line and "not a model's weights" in line, line


@pytest.mark.parametrize("legacy", [False, True])
def test_verify_checks_the_sha256_prefix_a_torch_hub_name_carries(tmp_path: Path, legacy: bool) -> None:
    """torchvision's weights download as `<name>-<first 8 hex digits of the sha256>.pth` (resnet50-0676ba61.pth),
    which torch.hub's check_hash compares. --verify recomputed only the zip CRCs: a copy re-saved (or cut short and
    re-zipped) under the published name passed, though it is not the file its name promises."""
    import hashlib

    torch.manual_seed(0)
    state = {"conv1.weight": torch.randn(8, 3, 7, 7), "fc.weight": torch.randn(10, 8), "fc.bias": torch.zeros(10)}
    made = tmp_path / "made.pth"
    # A prefix of decimal digits only reads as a date or a step, not a hash (`_read_as_hash`), by design; the legacy
    # format's bytes differ from run to run (storage keys), so one run in ~40 drew such a prefix: saved again then.
    for _ in range(100):
        torch.save(state, made, _use_new_zipfile_serialization=not legacy)
        prefix = hashlib.sha256(made.read_bytes()).hexdigest()[:8]
        if not prefix.isdigit():
            break
        state["fc.weight"][0, 0] += 1
    published = tmp_path / f"resnet18-{prefix}.pth"
    made.rename(published)
    code, data = run_json("inspect", str(published), "--verify")
    assert code == 0 and data["verify"]["hash_mismatches"] == []
    assert f"resnet18-{prefix}.pth: its sha256 starts with {prefix}, the prefix its name carries" \
           in " ".join(data["verify"]["notes"]), data["verify"]
    # The same weights saved again: every CRC is right, the file is not the published one. Outside torch.hub's
    # download folder the name may be the user's own: a note, exit 0; inside it, a mismatch and exit 1.
    state["fc.bias"] += 1
    torch.save(state, published, _use_new_zipfile_serialization=not legacy)
    actual = hashlib.sha256(published.read_bytes()).hexdigest()[:8]
    code, data = run_json("inspect", str(published), "--verify")
    assert code == 0 and data["verify"]["hash_mismatches"] == []
    assert f"the name ends as a torch.hub download's does (-{prefix}), but the file's sha256 starts with {actual}" \
           in " ".join(data["verify"]["notes"]), data["verify"]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    published = published.rename(tmp_path / "hub" / "checkpoints" / published.name)
    code, data = run_json("inspect", str(published), "--verify")
    assert code == 1 and data["verify"]["mismatches"] == []
    [line] = data["verify"]["hash_mismatches"]
    assert line.startswith(f"resnet18-{prefix}.pth: the name carries sha256 prefix {prefix}, the file's sha256 "
                           f"starts with {actual}: not the file published under that name"), line
    result = run_cli("inspect", str(published), "--verify")
    assert result.exit_code == 1 and "1 sha256 mismatch" in " ".join(result.stdout.split())
    # Shards and other dashed names are not read as hashes.
    torch.save(state, tmp_path / "pytorch_model-00001-of-00002.pth")
    code, data = run_json("inspect", str(tmp_path / "pytorch_model-00001-of-00002.pth"), "--verify")
    assert code == 0 and data["verify"]["hash_mismatches"] == [] and not any(
        "sha256" in note for note in data["verify"]["notes"])


def test_a_fair_esm_checkpoint_against_transformers_esm_names_the_converter(tmp_path: Path) -> None:
    """fair-esm's .pt ({"model": encoder.sentence_encoder.layers.N.self_attn.q_proj ..., "cfg"}) against
    transformers' EsmForMaskedLM: diff-keys offered three prefix renames that match 6 keys, with no word that
    transformers' convert_esm.py is the conversion."""
    from transformers import EsmConfig, EsmForMaskedLM

    torch.manual_seed(0)
    config = EsmConfig(vocab_size=33, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                       position_embedding_type="rotary", pad_token_id=1, mask_token_id=32, token_dropout=True,
                       emb_layer_norm_before=False)
    EsmForMaskedLM(config).save_pretrained(tmp_path / "esm_hf")
    prefix = "encoder.sentence_encoder."
    model = {prefix + "embed_tokens.weight": torch.randn(33, 8)}
    for name, shape in (("self_attn.q_proj", (8, 8)), ("self_attn.k_proj", (8, 8)), ("self_attn.v_proj", (8, 8)),
                        ("self_attn.out_proj", (8, 8)), ("fc1", (16, 8)), ("fc2", (8, 16))):
        model[f"{prefix}layers.0.{name}.weight"] = torch.randn(*shape)
        model[f"{prefix}layers.0.{name}.bias"] = torch.zeros(shape[0])
    for norm in ("layers.0.self_attn_layer_norm", "layers.0.final_layer_norm", "emb_layer_norm_after"):
        model[f"{prefix}{norm}.weight"], model[f"{prefix}{norm}.bias"] = torch.ones(8), torch.zeros(8)
    model.update({"encoder.lm_head.dense.weight": torch.randn(8, 8), "encoder.lm_head.bias": torch.zeros(33),
                  "encoder.lm_head.weight": model[prefix + "embed_tokens.weight"]})
    torch.save({"model": model, "cfg": {"model": {"_name": "ESM2", "encoder_layers": 1, "encoder_embed_dim": 8}}},
               tmp_path / "esm2_t1_tiny.pt")
    code, data = run_json("diff-keys", str(tmp_path / "esm2_t1_tiny.pt"), str(tmp_path / "esm_hf"))
    assert code == 1
    [note] = [n for n in data["notes"] if "fair-esm" in n]
    assert note.startswith("A is in fair-esm's own layout (encoder.sentence_encoder.layers.N.self_attn.q_proj")
    assert "convert_esm.py" in note and "given --model, converts fair-esm's pretrained models by name" in note
    # transformers' ESM against itself, and fair-esm against itself: no such note.
    for a, b in (("esm_hf", "esm_hf"), ("esm2_t1_tiny.pt", "esm2_t1_tiny.pt")):
        code, data = run_json("diff-keys", str(tmp_path / a), str(tmp_path / b))
        assert code == 0 and not any("fair-esm" in n for n in data["notes"])
