"""A fourteenth round of checkpoints as other libraries write them: pyannote.audio's Lightning checkpoints, SetFit's
joblib heads beside a sentence-transformers body, AllenNLP's weights.th and model.tar.gz, MosaicML Composer's
state.model / state.optimizers."""

from __future__ import annotations

import dataclasses
import enum
import importlib.machinery
import json
import pickle
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import run_cli, run_json


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str) -> types.ModuleType:
    """An importable stand-in for `name` and its parents (never a real library), removed after the test."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        dotted = ".".join(parts[:i])
        if dotted not in sys.modules:
            module = types.ModuleType(dotted)
            module.__spec__ = importlib.machinery.ModuleSpec(dotted, None)  # torch's import hooks look at it
            monkeypatch.setitem(sys.modules, dotted, module)
    return sys.modules[name]


def _pyannote_checkpoint(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What pyannote.audio's Model writes (pyannote/segmentation-3.0's pytorch_model.bin): a Lightning checkpoint
    whose on_save_checkpoint adds {"versions": {"torch": torch.__version__, ...}, "architecture", "specifications"},
    the task's Specifications dataclass of two Enums."""
    task = _fake_module(monkeypatch, "pyannote.audio.core.task")

    class Problem(enum.Enum):
        BINARY_CLASSIFICATION = 0
        MONO_LABEL_CLASSIFICATION = 1

    class Resolution(enum.Enum):
        FRAME = 1
        CHUNK = 2

    @dataclasses.dataclass
    class Specifications:
        problem: Problem
        resolution: Resolution
        duration: float
        classes: list[str] | None = None
        powerset_max_classes: int | None = None
        permutation_invariant: bool = False

    for cls in (Problem, Resolution, Specifications):
        cls.__module__, cls.__qualname__ = task.__name__, cls.__name__
        setattr(task, cls.__name__, cls)
    torch.manual_seed(0)
    state_dict = {"sincnet.conv1d.1.weight": torch.randn(6, 8, 5), "lstm.weight_ih_l0": torch.randn(16, 6),
                  "lstm.weight_hh_l0": torch.randn(16, 4), "linear.0.weight": torch.randn(4, 8),
                  "classifier.weight": torch.randn(7, 4), "classifier.bias": torch.randn(7)}
    torch.save({"epoch": 10, "global_step": 1000, "pytorch-lightning_version": "2.1.0", "state_dict": state_dict,
                "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"sample_rate": 16000, "num_channels": 1, "lstm": {"hidden_size": 4}},
                "pyannote.audio": {
                    "versions": {"torch": torch.__version__, "pyannote.audio": "3.1.0"},
                    "architecture": {"module": "pyannote.audio.models.segmentation.PyanNet", "class": "PyanNet"},
                    "specifications": Specifications(Problem.MONO_LABEL_CLASSIFICATION, Resolution.FRAME, 10.0,
                                                     ["speaker#1", "speaker#2", "speaker#3"], 2, True)}}, path)


def test_a_pyannote_checkpoint_reads_its_specifications_and_torch_version_as_inert_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyannote.audio's segmentation and embedding checkpoints were refused whole ("suspicious: pyannote.audio.core
    .task.Specifications (unknown ...); nothing was unpickled"): a dataclass of Enums and torch.__version__ (a str
    subclass) beside plain tensors, data that no code builds."""
    folder = tmp_path / "segmentation"
    folder.mkdir()
    _pyannote_checkpoint(folder / "pytorch_model.bin", monkeypatch)
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["nested_key"] == "state_dict" and data["num_tensors"] == 6
    assert "pyannote.audio (dict, 3 entries)" in data["other_entries"], data["other_entries"]
    flagged = {f"{g['module']}.{g['name']}": g["safety"] for g in data["security"]["globals"] if g["safety"] != "safe"}
    assert flagged == {"torch.torch_version.TorchVersion": "inert", "pyannote.audio.core.task.Specifications": "inert",
                       "pyannote.audio.core.task.Problem": "inert", "pyannote.audio.core.task.Resolution": "inert"}

    out = tmp_path / "segmentation.safetensors"
    result = run_cli("convert", str(folder / "pytorch_model.bin"), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    code, converted = run_json("inspect", str(out))
    assert code == 0 and converted["num_tensors"] == 6


class _JoblibLikePickler(pickle._Pickler):  # type: ignore[name-defined]
    """joblib.dump's NumpyPickler: each array pickled as a NumpyArrayWrapper, its padded raw bytes then written into
    the file in the middle of the pickle stream (after the frame is committed), and pickling goes on."""

    wrapper: type

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            pickle._Pickler.save(self, self.wrapper(type(obj), obj.shape, "C", obj.dtype))  # type: ignore[attr-defined]
            if self.proto >= 4:
                self.framer.commit_frame(force=True)
            handle = self._file_handle
            padding = (16 - (handle.tell() + 1) % 16) % 16
            handle.write(bytes([padding]) + b"\xff" * padding + obj.tobytes("C"))
            return
        pickle._Pickler.save(self, obj, save_persistent_id)  # type: ignore[attr-defined]


def _joblib_sklearn_head(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SetFit's model_head.pkl: joblib.dump of a scikit-learn LogisticRegression (stand-in classes)."""
    sklearn = _fake_module(monkeypatch, "sklearn.linear_model._logistic")
    joblib = _fake_module(monkeypatch, "joblib.numpy_pickle")
    estimator = type("LogisticRegression", (), {"__module__": sklearn.__name__})
    wrapper = type("NumpyArrayWrapper", (), {"__module__": joblib.__name__, "__init__": lambda self, *a: setattr(
        self, "__dict__", dict(zip(("subclass", "shape", "order", "dtype"), a, strict=True)))})
    sklearn.LogisticRegression, joblib.NumpyArrayWrapper = estimator, wrapper
    head = estimator()
    head.__dict__.update({"C": 1.0, "classes_": np.array([0, 1]), "intercept_": np.zeros(1),
                          "coef_": np.random.default_rng(0).normal(size=(1, 16)), "_sklearn_version": "1.3.2"})
    with open(path, "wb") as handle:
        pickler = _JoblibLikePickler(handle, protocol=4)
        pickler.wrapper, pickler._file_handle = wrapper, handle
        pickler.dump(head)


def test_a_joblib_file_is_named_as_joblibs_not_only_called_unparseable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """joblib.dump writes array bytes into the pickle stream: the refusal said the pickle "cannot be parsed" and no
    more, as of a damaged file. It stays refused (objects pickled by class, built by running code), said so."""
    path = tmp_path / "model_head.pkl"
    _joblib_sklearn_head(path, monkeypatch)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    message = result.stderr
    assert message.startswith(f"error: {path}: dangerous: ") and "nothing was unpickled" in message, message
    assert "this is a joblib.dump file" in message, message
    assert "its objects (sklearn.linear_model._logistic.LogisticRegression) are pickled by class" in message, message
    assert "joblib.load builds them by running their code" in message, message
    assert "beware" not in message, message  # the array wrapper is what the hint explains, not a stranger beside it


def _setfit_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"],
                                                    "hidden_size": 16, "num_hidden_layers": 1}))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(10, 16)}, folder / "model.safetensors")
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16}))
    (folder / "config_setfit.json").write_text(json.dumps({"normalize_embeddings": False, "labels": ["neg", "pos"]}))
    _joblib_sklearn_head(folder / "model_head.pkl", monkeypatch)


def test_a_setfit_folder_names_its_classification_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SetFit's save_pretrained: the sentence-transformers body read, its model_head.pkl (the classifier, a joblib
    pickle) left out with nothing said, as any .pkl beside weights is (often a tokenizer's)."""
    folder = tmp_path / "setfit"
    _setfit_folder(folder, monkeypatch)
    code, data = run_json("inspect", str(folder))
    assert code == 0 and [f["path"] for f in data["files"] if f["role"] == "weights"] == ["model.safetensors"]
    said = [w for w in data["warnings"] if "model_head.pkl" in w]
    assert len(said) == 1 and "model_head.pkl (SetFit's classification head: a joblib pickle" in said[0], said
    assert "SetFitModel.from_pretrained loads with joblib.load" in said[0], said

    plain = tmp_path / "plain"  # a .pkl of that name beside a model that is no sentence-transformers one: unsaid
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "model_head.pkl"):
        (plain / name).write_bytes((folder / name).read_bytes())
    code, data = run_json("inspect", str(plain))
    assert code == 0 and not any("model_head.pkl" in w for w in data["warnings"]), data["warnings"]


def test_allennlp_weights_th_and_model_archive_are_named(tmp_path: Path) -> None:
    """AllenNLP's serialization folder (config.json, weights.th, vocabulary/) was said to hold "no weight file", and
    its model.tar.gz was "not a safetensors file nor a PyTorch pickle" and no more."""
    folder = tmp_path / "serialization"
    folder.mkdir()
    torch.save({"_text_field_embedder.token_embedder_tokens.weight": torch.zeros(5, 4),
                "_classifier.weight": torch.zeros(3, 4)}, folder / "weights.th")
    (folder / "config.json").write_text(json.dumps({"dataset_reader": {"type": "text_classification_json"},
                                                    "model": {"type": "basic_classifier"}}))
    (folder / "vocabulary").mkdir()
    (folder / "vocabulary" / "tokens.txt").write_text("a\nb\n")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and "no weight file" in result.stderr, result.stderr
    assert "it holds weights.th (torch.save files named .th" in result.stderr, result.stderr
    assert "name one to read it (serialization/weights.th)" in result.stderr, result.stderr
    code, data = run_json("inspect", str(folder / "weights.th"))
    assert code == 0 and data["num_tensors"] == 2

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("config.json", "weights.th", "vocabulary/tokens.txt"):
            tar.add(folder / name, arcname=name)
    result = run_cli("inspect", str(archive))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "it is an AllenNLP model archive" in result.stderr and "load_archive" in result.stderr, result.stderr
    assert "a tar holding weights.th: extract it (tar -xf) and point at that file" in result.stderr, result.stderr


def _composer_checkpoint(path: Path) -> None:
    """What Composer's Trainer saves (ep1-ba3-rank0.pt): {"state": {"model", "optimizers", "schedulers",
    "timestamp", "rank_zero_seed", ...}, "rng": [per-rank RNG states]}; a HuggingFaceModel keeps the transformers
    model as its `model` attribute, so every weight's name starts with model."""
    torch.manual_seed(0)
    model = {"model.bert.embeddings.word_embeddings.weight": torch.randn(10, 4),
             "model.classifier.weight": torch.randn(2, 4), "model.classifier.bias": torch.zeros(2)}
    torch.save({"state": {"model": model,
                          "optimizers": {"DecoupledAdamW": {
                              "state": {0: {"exp_avg": torch.zeros(10, 4), "exp_avg_sq": torch.zeros(10, 4),
                                            "step": torch.tensor(3.0)}},
                              "param_groups": [{"lr": 1e-4, "params": [0, 1, 2]}]}},
                          "schedulers": [{"base_lrs": [1e-4], "last_epoch": 3}], "algorithms": [], "callbacks": {},
                          "timestamp": {"epoch": 1, "batch": 3}, "rank_zero_seed": 17, "run_name": "run",
                          "integrations": {"huggingface": {"model": {"config": {"model_type": "bert"}}}},
                          "metadata": {"composer_env_info": {"composer_version": "0.17.0"}}},
                "rng": [{"python": (3, (1, 2), None), "torch": torch.get_rng_state()}]}, path)


def test_a_composer_checkpoints_optimizer_moments_are_not_called_split_weights(tmp_path: Path) -> None:
    """state.model is read; the warning called the Adam moments in state.optimizers "tensor(s) beside the state
    dict ... the weights are split over nested dicts; --key reads one of them"."""
    path = tmp_path / "ep1-ba3-rank0.pt"
    _composer_checkpoint(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state.model" and data["num_tensors"] == 3
    assert "state.optimizers (dict, 1 entry)" in data["other_entries"], data["other_entries"]
    assert not any("split over nested dicts" in w for w in data["warnings"]), data["warnings"]

    # A state dict beside another one deeper down is still said to be split (Megatron-LM's parts).
    torch.save({"model": {"language_model": {"embedding": {"word_embeddings.weight": torch.zeros(4, 2)},
                                             "head": {"weight": torch.zeros(2, 2)}}}}, tmp_path / "split.pt")
    code, data = run_json("inspect", str(tmp_path / "split.pt"), "--key", "model.language_model.embedding")
    assert code == 0 and any("split over nested dicts" in w for w in data["warnings"]), data["warnings"]


def _rwkv4_pth(path: Path, hidden: int = 8, vocab: int = 20, layers: int = 2) -> None:
    """BlinkDL's RWKV-4 .pth (RWKV-LM's train.py, ChatRWKV's models), bf16 as released."""
    torch.manual_seed(0)
    weights = {"emb.weight": torch.randn(vocab, hidden), "blocks.0.ln0.weight": torch.ones(hidden),
               "blocks.0.ln0.bias": torch.zeros(hidden)}
    for i in range(layers):
        block = f"blocks.{i}."
        for norm in ("ln1", "ln2"):
            weights[f"{block}{norm}.weight"], weights[f"{block}{norm}.bias"] = torch.ones(hidden), torch.zeros(hidden)
        weights.update({f"{block}att.time_decay": torch.randn(hidden), f"{block}att.time_first": torch.randn(hidden)})
        for mix in ("att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k", "ffn.time_mix_r"):
            weights[block + mix] = torch.rand(1, 1, hidden)
        for linear in ("att.key", "att.value", "att.receptance", "att.output", "ffn.receptance"):
            weights[f"{block}{linear}.weight"] = torch.randn(hidden, hidden)
        weights[f"{block}ffn.key.weight"] = torch.randn(4 * hidden, hidden)
        weights[f"{block}ffn.value.weight"] = torch.randn(hidden, 4 * hidden)
    weights.update({"ln_out.weight": torch.ones(hidden), "ln_out.bias": torch.zeros(hidden),
                    "head.weight": torch.randn(vocab, hidden)})
    torch.save({name: value.bfloat16() for name, value in weights.items()}, path)


def test_an_rwkv4_pth_against_transformers_rwkv_names_the_converter(tmp_path: Path) -> None:
    """BlinkDL's .pth against transformers' RwkvForCausalLM: the rename search offered a handful of renames as the
    fix (time_mix_k to time_mix_key not among them), with no word of convert_rwkv_checkpoint_to_hf.py."""
    _rwkv4_pth(tmp_path / "RWKV-4-Pile-tiny.pth")
    config = tiny_rwkv_config(tmp_path / "rwkv")
    code, data = run_json("diff-keys", str(tmp_path / "RWKV-4-Pile-tiny.pth"), "--model-class", "RwkvForCausalLM",
                          "--config", str(config))
    assert code == 1 and data["total_a"] == 42, data
    notes = [note for note in data["notes"] if "RWKV" in note]
    assert len(notes) == 1 and notes[0].startswith("A is in BlinkDL's own RWKV-4 layout"), data["notes"]
    assert "convert_rwkv_checkpoint_to_hf.py" in notes[0] and "(A's: RWKV-4-Pile-tiny.pth)" in notes[0], notes


def _tiny_llava_config(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "image_token_index": 99,
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 8, "intermediate_size": 16,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                          "projection_dim": 8},
        "text_config": {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 100}}))


def test_llava_projector_and_checkpoint_against_transformers_llava_say_why_the_vision_tower_is_missing(
        tmp_path: Path) -> None:
    """LLaVA's mm_projector.bin (the pretraining stage's projector alone) and its full checkpoints hold no vision
    tower: against LlavaForConditionalGeneration its keys were "unknown: these weights will not load", and nothing
    named LLaVA or transformers' convert_llava_weights_to_hf.py."""
    _tiny_llava_config(tmp_path / "llava-hf")
    torch.manual_seed(0)
    projector = {"model.mm_projector.0.weight": torch.randn(16, 8), "model.mm_projector.0.bias": torch.zeros(16),
                 "model.mm_projector.2.weight": torch.randn(16, 16), "model.mm_projector.2.bias": torch.zeros(16)}
    torch.save(projector, tmp_path / "mm_projector.bin")
    language = {"model.embed_tokens.weight": torch.randn(100, 16), "model.norm.weight": torch.ones(16),
                "lm_head.weight": torch.randn(100, 16)}
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        language[f"model.layers.0.self_attn.{name}.weight"] = torch.randn(16, 16)
    torch.save({**language, **projector}, tmp_path / "pytorch_model.bin")
    for source in ("mm_projector.bin", "pytorch_model.bin"):
        code, data = run_json("diff-keys", str(tmp_path / source), "--model-class", "LlavaForConditionalGeneration",
                              "--config", str(tmp_path / "llava-hf"))
        assert code == 1, data
        notes = [note for note in data["notes"] if "LLaVA" in note]
        assert len(notes) == 1 and notes[0].startswith("A is in the original LLaVA layout"), data["notes"]
        assert "the model's vision tower keys that A lacks come from that CLIP model" in notes[0], notes
        assert "models/llava/convert_llava_weights_to_hf.py" in notes[0], notes
        renames = {r["pattern"]: r["replacement"] for r in data["suggested_renames"]}
        assert "multi_modal_projector.linear_1." in renames.values(), renames


def tiny_rwkv_config(folder: Path) -> Path:
    """A tiny RwkvForCausalLM config.json in `folder` (the target of BlinkDL's RWKV-4 .pth layout)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "rwkv", "architectures": ["RwkvForCausalLM"], "vocab_size": 20, "hidden_size": 8,
        "num_hidden_layers": 2, "attention_hidden_size": 8, "intermediate_size": 32, "context_length": 16}))
    return folder
