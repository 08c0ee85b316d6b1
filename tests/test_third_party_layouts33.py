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

from collections import OrderedDict
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


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


_VOCOS_CONFIG = """feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args:
    sample_rate: 24000
    n_fft: 16
    hop_length: 4
    n_mels: 10
backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 10
    dim: 16
    intermediate_dim: 48
    num_layers: 2
head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: 16
    n_fft: 16
    hop_length: 4
"""

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
