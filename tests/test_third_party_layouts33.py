"""A thirty-third round: what rounds 31 and 32 left, then third-party files no earlier round covered.

SuperGradients' average_model.pth: super-gradients is not installed; the file is written as its Trainer writes it with
`average_best_models` (src/super_gradients/training/sg_trainer/sg_trainer.py, _save_checkpoint, read with the search
tool: `state["net"] = self.model_weight_averaging.get_average_model(...)`, then
`add_checkpoint(tag=self.average_model_checkpoint_filename, state_dict=state)`, the state still holding the epoch's
`ema_net` in the releases that did not pop it), and read as its models.get(checkpoint_path=...) reads it (`ema_net`
whenever the file holds it).

Vocos (gemelo-ai/vocos): not installed; vocos/pretrained.py's Vocos.from_hparams (read with the search tool) does
`config = yaml.safe_load(f)` and instantiates `config["feature_extractor"]`, `config["backbone"]` and
`config["head"]`, each `{class_path, init_args}`; its Lightning training config (configs/vocos.yaml) holds the same
classes under `model.init_args`, which from_hparams cannot read.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json, run_subprocess
from tests.test_third_party_layouts32 import _VOCOS_CONFIG
from tests.test_third_party_layouts34 import _randomized_lora


def _yolo_nas_state(seed: int) -> OrderedDict[str, torch.Tensor]:
    """A few of YOLO-NAS' names (its stem, a head's classifier), a BatchNorm's counter among them."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict({
        "backbone.stem.conv.rbr_dense.conv.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "backbone.stem.conv.rbr_dense.bn.weight": torch.rand(8, generator=generator) + 0.5,
        "backbone.stem.conv.rbr_dense.bn.num_batches_tracked": torch.tensor(120),
        "heads.head1.cls_pred.weight": torch.randn(4, 8, 1, 1, generator=generator),
        "heads.head1.cls_pred.bias": torch.randn(4, generator=generator)})


def _super_gradients_average(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The epoch's state with `net` replaced by the average of the best epochs' (EMA) weights, ema_net left in."""
    average, ema = _yolo_nas_state(0), _yolo_nas_state(1)
    torch.save({
        "net": average, "acc": 0.4215, "epoch": 29,
        "metrics": {"tracked_metric_name": "mAP@0.50", "valid": {"mAP@0.50": 0.4215}},
        "packages": {"torch": "2.1.0", "super-gradients": "3.1.3"},
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.0002, "params": [0]}]},
        "ema_net": ema, "processing_params": None}, path)
    return average, ema


def test_a_super_gradients_average_model_offers_the_average_under_net(tmp_path: Path) -> None:
    """average_model.pth read ema_net (as models.get does) with the note of the other SuperGradients files: "--key net
    reads the raw training weights beside them", where net is the very average the file is saved for."""
    from safetensors.torch import load_file

    path = tmp_path / "average_model.pth"
    average, ema = _super_gradients_average(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "ema_net" and data["num_tensors"] == len(ema), data
    said = [w for w in data["warnings"] if "SuperGradients" in w]
    assert len(said) == 1 and "a SuperGradients average_model.pth" in said[0], said
    assert "the average of the best epochs' weights" in said[0] and said[0].endswith("--key net reads the average")
    assert "raw training weights" not in said[0], said
    # The --key offered reads the average, and convert writes it.
    out = tmp_path / "average.safetensors"
    result = run_cli("convert", str(path), "--key", "net", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(average) and all(torch.equal(written[name], average[name]) for name in average)
    # Any other SuperGradients file keeps its note (net the raw training weights).
    best = tmp_path / "ckpt_best.pth"
    best.write_bytes(path.read_bytes())
    code, data = run_json("inspect", str(best))
    assert code == 0 and any("--key net reads the raw training weights" in w for w in data["warnings"]), data


# Vocos' Lightning training config (configs/vocos.yaml's shape): the same classes, under model.init_args.
_VOCOS_TRAINING_CONFIG = """model:
  class_path: vocos.experiment.VocosExp
  init_args:
    sample_rate: 24000
    feature_extractor:
      class_path: vocos.feature_extractors.MelSpectrogramFeatures
      init_args: {sample_rate: 24000, n_fft: 16, hop_length: 4, n_mels: 10}
    backbone:
      class_path: vocos.models.VocosBackbone
      init_args: {input_channels: 10, dim: 16, intermediate_dim: 48, num_layers: 2}
    head:
      class_path: vocos.heads.ISTFTHead
      init_args: {dim: 16, n_fft: 16, hop_length: 4}
"""


def _vocos_folder(folder: Path, config: str) -> Path:
    """pytorch_model.bin with VocosBackbone's ConvNeXt blocks and ISTFTHead's names, config.yaml beside it."""
    generator = torch.Generator().manual_seed(5)
    state = {"backbone.embed.weight": torch.randn(16, 10, 7, generator=generator)}
    for i in range(2):
        block = f"backbone.convnext.{i}."
        state.update({block + "pwconv1.weight": torch.randn(48, 16, generator=generator),
                      block + "pwconv2.weight": torch.randn(16, 48, generator=generator)})
    state.update({"head.out.weight": torch.randn(18, 16, generator=generator),
                  "head.istft.window": torch.hann_window(16)})
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.yaml").write_text(config)
    return folder


def _vocos_warnings(folder: Path, out: Path) -> list[str]:
    code, converted = run_json("convert", str(folder), "-o", str(out))
    assert code == 0, converted
    code, inspected = run_json("inspect", str(folder))
    assert code == 0, inspected
    return [w for w in converted["warnings"] + inspected["warnings"] if "Vocos" in w]


def test_vocos_is_told_by_the_config_from_hparams_reads_not_by_a_substring(tmp_path: Path) -> None:
    """A config.yaml that merely held `class_path: vocos.` (Vocos' own Lightning training config, a comment) was
    called "Vocos' own config, which Vocos.from_pretrained reads", though from_hparams raises KeyError on it."""
    real = _vocos_warnings(_vocos_folder(tmp_path / "vocos", _VOCOS_CONFIG), tmp_path / "vocos-out")
    assert any(w.startswith("a Vocos vocoder") for w in real) and any(
        w.startswith("config.yaml beside the weights is Vocos' own config") for w in real), real
    training = _vocos_folder(tmp_path / "training", _VOCOS_TRAINING_CONFIG)
    assert _vocos_warnings(training, tmp_path / "training-out") == []
    comment = _vocos_folder(tmp_path / "comment", "# class_path: vocos.models.VocosBackbone\nmodel:\n  dim: 16\n")
    assert _vocos_warnings(comment, tmp_path / "comment-out") == []
    # Not YAML at all (a tab where YAML forbids one), the words present: not Vocos', and no traceback.
    broken = _vocos_folder(tmp_path / "broken", "backbone:\n\tclass_path: vocos.models.VocosBackbone\n")
    assert _vocos_warnings(broken, tmp_path / "broken-out") == []


def _tiny_qwen3_moe(folder: Path, moe_intermediate_size: int) -> torch.nn.Module:
    """A Qwen3-MoE base as transformers 5 saves it: its experts fused in memory (`mlp.experts.gate_up_proj`), saved
    per expert (`mlp.experts.N.gate_proj.weight`), the legacy layout save_pretrained writes back."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                            moe_intermediate_size=moe_intermediate_size, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=8, num_experts=4, num_experts_per_tok=2,
                            max_position_embeddings=64)
    model = Qwen3MoeForCausalLM(config)
    model.save_pretrained(folder)
    return model


def test_a_lora_on_fused_experts_fits_a_base_saved_per_expert(tmp_path: Path) -> None:
    """peft's target_parameters (LoRA on `mlp.experts.gate_up_proj` / `down_proj`) against its own base folder: the
    base stores its experts per expert, which transformers fuses when it loads them, and every experts factor was
    "targets model.layers.0.mlp.experts, which B does not have: the adapter's weights for it are dropped", an error,
    the rank "2/4/16" (16: 4 experts × r). PeftModel.from_pretrained on the loaded base takes them all. inspect named
    target_modules alone."""
    from peft import LoraConfig, PeftModel
    from safetensors.torch import load_file

    base = tmp_path / "base"
    model = _tiny_qwen3_moe(base, moe_intermediate_size=8)
    stored = load_file(base / "model.safetensors")
    assert "model.layers.0.mlp.experts.3.gate_proj.weight" in stored and not any(
        name.endswith("gate_up_proj") for name in stored)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
                        rank_pattern={"layers.1.self_attn.q_proj": 2})
    adapter = tmp_path / "adapter"
    saved = _randomized_lora(model, config, adapter, seed=3)
    experts = [name for name in saved if ".mlp.experts." in name]
    assert len(experts) == 8, sorted(saved)

    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]
    assert not any(group["severity"] == "error" for group in data["groups"]), data["groups"]
    note = next(note for note in data["notes"] if note.startswith("A is a PEFT adapter"))
    assert "LoRA (rank 2/4) on 6 modules, 6 of them in B with shapes that fit" in note, note
    result = run_subprocess("diff-keys", str(adapter), str(base), env={"COLUMNS": "400"})
    assert "which B does not have" not in result.stdout
    # (peft keeps target_parameters in a set: which of the two wraps the other differs from run to run)
    assert re.search(r"LoRA on model\.layers\.\d\.mlp\.experts\.(gate_up|down)_proj \(a parameter peft's "
                     r"target_parameters adapts; B stores them per expert, model\.layers\.\d\.mlp\.experts\.N\.\*\."
                     r"weight, fused by transformers when it loads the model\)", result.stdout), result.stdout
    # The loading line printed, pasted and run: every experts factor lands on the loaded (fused) base.
    snippet = note[note.index("import peft, transformers; "):note.index(", or merge it")]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 - the line the note prints, run as a user pastes it
    loaded = dict(namespace["model"].named_parameters())  # type: ignore[attr-defined]
    for name in experts:
        assert torch.equal(loaded[name.replace(".weight", ".default.weight")], saved[name]), name
    assert isinstance(namespace["model"], PeftModel)

    # The same adapter against a base whose experts are of another width: those that do not fit are errors.
    other = tmp_path / "base-wider"
    _tiny_qwen3_moe(other, moe_intermediate_size=12)
    code, data = run_json("diff-keys", str(adapter), str(other))
    assert code == 1 and data["worst_severity"] == "error"
    # The down projection's lora_A (r·E × 8 against 12) and the gate-and-up one's lora_B (16 rows against 24), which
    # peft refuses: each pair (the outer wrapper and the one under base_layer) fits neither parameter both factors at
    # once (test_regress13: lora_B alone matched another axis, and only down_proj's lora_A was said).
    wrong = sorted(group["pattern"] for group in data["groups"] if group["severity"] == "error")
    assert wrong == [f"base_model.model.model.layers.*.mlp.experts.{inner}lora_{part}.weight"
                     for inner in ("base_layer.", "") for part in "AB"], wrong

    # inspect names the parameters the LoRA adapts beside its target_modules, and the rank rank_pattern gives layer
    # 1's q_proj (it said r=4 alone). (peft saves target_modules and target_parameters from sets: in either order.)
    code, data = run_json("inspect", str(adapter))
    assert code == 0 and sorted(data["adapter"]["target_parameters"]) == [
        "mlp.experts.down_proj", "mlp.experts.gate_up_proj"]
    assert data["adapter"]["rank_pattern"] == {"layers.1.self_attn.q_proj": 2}
    text = run_subprocess("inspect", str(adapter), env={"COLUMNS": "400"}).stdout
    assert re.search(r"LoRA r=4 \(r=2 where rank_pattern names 1 pattern\) alpha=8 on (q_proj, v_proj|v_proj, q_proj) "
                     r"and the parameters "
                     r"(mlp\.experts\.gate_up_proj, mlp\.experts\.down_proj|mlp\.experts\.down_proj, "
                     r"mlp\.experts\.gate_up_proj) —", text), text


def test_a_lora_on_fused_experts_fits_a_mixtral_base_saved_per_expert(tmp_path: Path) -> None:
    """Mixtral's base is saved as `block_sparse_moe.experts.N.w1` / `w2` / `w3`; transformers 5 loads it as
    `mlp.experts.gate_up_proj` / `down_proj` (conversion_mapping.py renames block_sparse_moe to mlp), which the
    adapter's target_parameters adapt: its factors were errors, "which B does not have"."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=8, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=64)
    model = MixtralForCausalLM(config)
    base = tmp_path / "mixtral"
    model.save_pretrained(base)
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in load_file(base / "model.safetensors")
    adapter = tmp_path / "mixtral-lora"
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], target_parameters=[
        "mlp.experts.gate_up_proj", "mlp.experts.down_proj"])).save_pretrained(adapter)
    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]
    note = next(note for note in data["notes"] if note.startswith("A is a PEFT adapter"))
    assert "LoRA (rank 4) on 4 modules, 4 of them in B with shapes that fit" in note, note
    text = run_subprocess("diff-keys", str(adapter), str(base), env={"COLUMNS": "400"}).stdout
    assert "B stores them per expert, model.layers.0.block_sparse_moe.experts.N.*.weight" in text, text
    # The loading line printed, run as pasted.
    namespace: dict[str, object] = {}
    exec(note[note.index("import peft, transformers; "):note.index(", or merge it")], namespace)  # noqa: S102
    saved = load_file(adapter / "adapter_model.safetensors")
    loaded = dict(namespace["model"].named_parameters())  # type: ignore[attr-defined]
    assert all(torch.equal(loaded[name.replace(".weight", ".default.weight")], saved[name]) for name in saved)
