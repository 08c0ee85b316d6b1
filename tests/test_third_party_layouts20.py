"""A twentieth round: the classic PyTorch ecosystems as their own save code writes them: PyTorch Lightning .ckpt
files whose hyper-parameters hold datetimes, Decimals, Fractions and UUIDs, ..."""

from __future__ import annotations

import datetime
import decimal
import fractions
import json
import uuid
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import one_error_line, run_cli, run_json
from weightdoctor.security.policy import DANGEROUS, INERT, UNKNOWN, classify


def _resnet_state(prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """A tiny torchvision-ResNet-like state dict (conv, batch norm with its counter, fc head), seeded."""
    generator = torch.Generator().manual_seed(20)
    state = {
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=generator), "bn1.weight": torch.ones(8),
        "bn1.bias": torch.zeros(8), "bn1.running_mean": torch.zeros(8), "bn1.running_var": torch.ones(8),
        "bn1.num_batches_tracked": torch.tensor(0), "fc.weight": torch.randn(10, 8, generator=generator),
        "fc.bias": torch.zeros(10),
    }
    return OrderedDict((prefix + key, value) for key, value in state.items())


def _lightning_ckpt(path: Path) -> OrderedDict[str, torch.Tensor]:
    """A Lightning 2.x `trainer.save_checkpoint` output whose `save_hyperparameters()` kept plain Python values of
    the standard library: a start time (timezone-aware), a time budget, a date, a Decimal learning rate, a Fraction,
    a run UUID (Lightning pickles hparams as they are)."""
    state = _resnet_state("model.")
    hyper_parameters = {
        "lr": decimal.Decimal("0.001"), "mix": fractions.Fraction(1, 3),
        "started": datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc),
        "budget": datetime.timedelta(hours=3), "day": datetime.date(2024, 5, 1), "at": datetime.time(6, 30),
        "run_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.2.0", "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.5)}},
        "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": hyper_parameters,
    }, path)
    return state


STDLIB_VALUES = ("datetime.date", "datetime.datetime", "datetime.time", "datetime.timedelta", "datetime.timezone",
                 "decimal.Decimal", "fractions.Fraction", "uuid.UUID")


def test_lightning_hparams_of_stdlib_values_are_read_as_inert_data(tmp_path: Path) -> None:
    """A Lightning .ckpt whose hyper_parameters hold a datetime, timedelta, Decimal, Fraction or UUID was refused as
    "dangerous" (each unknown, uuid.UUID dangerous): a genuine checkpoint, nothing read. They are plain values rebuilt
    from numbers, bytes or a string: read as inert stand-ins, the verdict safe, the weights read and converted."""
    ckpt = tmp_path / "epoch=3-step=120.ckpt"
    state = _lightning_ckpt(ckpt)
    code, report = run_json("inspect", ckpt)
    assert code == 0, report
    security = report["security"]
    assert security["verdict"] == "safe" and security["problems"] == []
    named = {f"{g['module']}.{g['name']}": g["safety"] for g in security["globals"]}
    assert {name: named[name] for name in STDLIB_VALUES} == dict.fromkeys(STDLIB_VALUES, "inert")
    assert report["num_tensors"] == 8 and report["nested_key"] == "state_dict"
    assert "hyper_parameters (dict, 7 entries)" in report["other_entries"]

    result = run_cli("inspect", ckpt)
    assert result.exit_code == 0 and "datetime.datetime" in result.stdout and "read as inert" in result.stdout

    out = tmp_path / "model.safetensors"
    assert run_cli("convert", ckpt, "-o", out).exit_code == 0
    written = load_file(out)
    assert set(written) == set(state) and all(torch.equal(written[k], state[k]) for k in state)


def test_only_the_value_classes_of_those_modules_are_inert() -> None:
    """The rest of `uuid` (getnode ran ifconfig / ipconfig in a subprocess) stays dangerous, zoneinfo's ZoneInfo (it
    reads zone files) and decimal's Context stay unknown."""
    assert classify("uuid", "UUID") == INERT and classify("datetime", "timedelta") == INERT
    assert classify("uuid", "getnode") == DANGEROUS and classify("uuid", "_get_command_stdout") == DANGEROUS
    assert classify("uuid", "UUID.__init__") == DANGEROUS
    assert classify("zoneinfo", "ZoneInfo") == UNKNOWN and classify("zoneinfo._zoneinfo", "ZoneInfo") == UNKNOWN
    assert classify("decimal", "Context") == UNKNOWN


def _timm_folder(folder: Path, num_classes: int) -> None:
    """A timm model as timm's push_to_hf_hub / save_for_hf writes it: model.safetensors and a config.json of
    `architecture`, `num_classes` and the `pretrained_cfg` whose `classifier` names the head (ConvNeXt's head.fc)."""
    from safetensors.torch import save_file

    folder.mkdir()
    generator = torch.Generator().manual_seed(num_classes)
    state = {"stem.0.weight": torch.randn(8, 3, 4, 4, generator=generator), "stem.0.bias": torch.zeros(8),
             "head.norm.weight": torch.ones(8), "head.norm.bias": torch.zeros(8),
             "head.fc.weight": torch.randn(num_classes, 8, generator=generator),
             "head.fc.bias": torch.zeros(num_classes)}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = {"architecture": "convnext_atto", "num_classes": num_classes, "num_features": 8, "global_pool": "avg",
              "pretrained_cfg": {"tag": "d2_in1k", "input_size": [3, 224, 224], "interpolation": "bicubic",
                                 "crop_pct": 0.95, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                 "num_classes": 1000, "first_conv": "stem.0", "classifier": "head.fc"}}
    (folder / "config.json").write_text(json.dumps(config))


def test_timm_num_classes_change_says_how_timm_loads_it(tmp_path: Path) -> None:
    """diff-keys of an ImageNet timm model against the same model fine-tuned to 10 classes said only what
    from_pretrained and load_state_dict do with the resized head.fc; a timm user creates the model with
    num_classes=10 and timm's loader drops the classifier whose class count differs: the note gives that call."""
    _timm_folder(tmp_path / "in1k", 1000)
    _timm_folder(tmp_path / "ft10", 10)
    code, report = run_json("diff-keys", tmp_path / "in1k", tmp_path / "ft10")
    assert code == 0
    assert [(m["name"], m["reason"]) for m in report["mismatched"]] == [("head.fc.bias", "head-size"),
                                                                         ("head.fc.weight", "head-size")]
    weights = str(tmp_path / "in1k" / "model.safetensors")
    note = next(n for n in report["notes"] if "timm.create_model" in n)
    assert (f"timm.create_model('convnext_atto', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict("
            f"file={weights!r}, num_classes=1000))") in note
    assert "drops head.fc.bias, head.fc.weight" in note and "num_classes=10 (its config.json)" in note

    # A B that is not a timm model (no pretrained_cfg) gets no such note.
    (tmp_path / "ft10" / "config.json").write_text(json.dumps({"num_classes": 10}))
    code, report = run_json("diff-keys", tmp_path / "in1k", tmp_path / "ft10")
    assert code == 0 and not any("timm.create_model" in n for n in report["notes"])


def test_torchvision_model_ema_counter_is_explained(tmp_path: Path) -> None:
    """torchvision's references/classification/train.py with --model-ema saves `model_ema`, the state dict of an
    ExponentialMovingAverage (a torch.optim.swa_utils.AveragedModel): `module.`-prefixed weights and `n_averaged`.
    Loading it into the plain model, n_averaged was "unknown: no known cause: these weights will not load", an
    error, also once the suggested rename matched every weight. It is AveragedModel's step counter, no weight."""
    import argparse

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4, 10))
    ema = torch.optim.swa_utils.AveragedModel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 30).state_dict(), "epoch": 5,
                "args": argparse.Namespace(model="resnet18", model_ema=True), "model_ema": ema.state_dict()},
               checkpoint)
    plain = tmp_path / "model.pth"
    torch.save(model.state_dict(), plain)

    code, report = run_json("diff-keys", checkpoint, plain, "--key", "model_ema")
    assert code == 1  # the module. prefix: errors until renamed
    unexpected = {issue["name"]: issue for issue in report["unexpected"]}
    assert unexpected["n_averaged"]["reason"] == "buffer" and unexpected["n_averaged"]["severity"] == "info"
    assert "AveragedModel's count of averaged steps" in unexpected["n_averaged"]["detail"]
    assert {issue["reason"] for name, issue in unexpected.items() if name != "n_averaged"} == {"wrapper-prefix"}

    code, report = run_json("diff-keys", checkpoint, plain, "--key", "model_ema", "--rename", r"^module\.=")
    assert code == 0 and report["missing"] == [] and report["mismatched"] == []
    assert [(i["name"], i["reason"], i["severity"]) for i in report["unexpected"]] == [("n_averaged", "buffer", "info")]


def test_speechbrain_checkpoint_folder_names_a_module_with_weights(tmp_path: Path) -> None:
    """A SpeechBrain Checkpointer folder of TIMIT's CRDNN recipe (model, lr_annealing, normalizer, counter): the
    refusal's example was the first pickled file by name, lr_annealing.ckpt (NewBobScheduler's floats), on which
    inspect finds no state dict. It names model.ckpt, which holds the weights."""
    folder = tmp_path / "CKPT+2024-01-01+00-00-00+00"
    folder.mkdir()
    torch.save(torch.nn.Linear(4, 3).state_dict(), folder / "model.ckpt")
    torch.save({"hyperparam_value": 1.0, "metric_values": [0.5], "current_patient": 0}, folder / "lr_annealing.ckpt")
    torch.save({"count": 3, "glob_mean": torch.zeros(4), "glob_std": torch.ones(4)}, folder / "normalizer.ckpt")
    (folder / "counter.ckpt").write_text("5")
    (folder / "brain.ckpt").write_text("avg_train_loss: 0.5\noptimizer_step: 10\nstep: 10\n")
    (folder / "CKPT.yaml").write_text("end-of-epoch: true\nPER: 15.0\nunixtime: 1700000000.0\n")
    line = one_error_line(run_cli("inspect", folder))
    assert "a SpeechBrain checkpoint folder" in line and f"(e.g. {folder.name}/model.ckpt)" in line
    result = run_cli("inspect", folder / "model.ckpt")
    assert result.exit_code == 0 and "parameters    15" in result.stdout


def test_torchvision_resnet_fc_with_another_class_count_is_a_head_size_change(tmp_path: Path) -> None:
    """torchvision's resnet50-0676ba61.pth against the same ResNet fine-tuned with num_classes=3: the top-level `fc`
    is the classifier, and its rows were "shape: the architecture differs", an error. A changed class count is the
    head-size reason (a warning); a feature extractor without fc drops it as a task head. A `fc` inside a block is
    still judged by its shape."""
    pretrained = tmp_path / "resnet50-0676ba61.pth"
    state = _resnet_state()
    torch.save(state, pretrained)
    tuned = dict(state, **{"fc.weight": torch.zeros(3, 8), "fc.bias": torch.zeros(3)})
    torch.save(tuned, tmp_path / "finetuned.pth")
    code, report = run_json("diff-keys", pretrained, tmp_path / "finetuned.pth")
    assert code == 0
    assert {(m["name"], m["reason"], m["severity"]) for m in report["mismatched"]} == {
        ("fc.weight", "head-size", "warn"), ("fc.bias", "head-size", "warn")}
    shown = run_cli("diff-keys", pretrained, tmp_path / "finetuned.pth").stdout
    assert "num_classes in timm and" in shown and "torchvision" in shown

    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, tmp_path / "features.pth")
    code, report = run_json("diff-keys", pretrained, tmp_path / "features.pth")
    assert {(i["name"], i["reason"], i["severity"]) for i in report["unexpected"]} == {
        ("fc.weight", "task-head", "info"), ("fc.bias", "task-head", "info")}

    inner = {"layer1.0.se.fc.weight": torch.zeros(4, 8)}
    torch.save(inner, tmp_path / "a.pth")
    torch.save({"layer1.0.se.fc.weight": torch.zeros(2, 8)}, tmp_path / "b.pth")
    code, report = run_json("diff-keys", tmp_path / "a.pth", tmp_path / "b.pth")
    assert [(m["name"], m["reason"]) for m in report["mismatched"]] == [("layer1.0.se.fc.weight", "shape")]
