"""A fifteenth round of checkpoints as other libraries write them: spaCy pipelines (thinc's msgpack, a
spacy-transformers model inside), MosaicML Composer's checkpoints, pyannote.audio's, Intel Neural Compressor's
weight-only int4 .bin."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli, run_json


def _msgpack(obj: Any) -> bytes:
    """srsly's msgpack (what spaCy and thinc write) for the few types a pipeline's files hold here."""
    if obj is None:
        return b"\xc0"
    if isinstance(obj, bool):
        return b"\xc3" if obj else b"\xc2"
    if isinstance(obj, int):
        return bytes([obj]) if 0 <= obj < 128 else b"\xd3" + struct.pack(">q", obj)
    if isinstance(obj, str):
        data = obj.encode()
        return (bytes([0xA0 | len(data)]) if len(data) < 32 else b"\xdb" + struct.pack(">I", len(data))) + data
    if isinstance(obj, bytes):
        return b"\xc6" + struct.pack(">I", len(obj)) + obj
    if isinstance(obj, list):
        return bytes([0x90 | len(obj)]) + b"".join(_msgpack(item) for item in obj)
    assert isinstance(obj, dict) and len(obj) < 16
    return bytes([0x80 | len(obj)]) + b"".join(_msgpack(key) + _msgpack(value) for key, value in obj.items())


def _thinc_model(shims: list[bytes]) -> bytes:
    """thinc's Model.to_bytes: {"nodes", "attrs", "params", "shims"}, each a list over the model's layers."""
    return _msgpack({"nodes": [{"index": 0, "name": "tok2vec", "dims": {"nO": 4}, "refs": {}}], "attrs": [{}],
                     "params": [{"W": None}], "shims": [shims]})


def _hf_shim() -> bytes:
    """spacy-transformers' HFShim.to_bytes: the transformers config, the torch.save bytes of the model's state dict,
    the tokenizer's files and the init configs."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20)
    state = io.BytesIO()
    torch.save(BertModel(config).state_dict(), state)
    return _msgpack({"config": {"model_type": "bert", "hidden_size": 16}, "state": state.getvalue(),
                     "tokenizer": {"vocab.txt": b"[PAD]\n[UNK]\n"}, "_init_tokenizer_config": {},
                     "_init_transformer_config": {}})


def _spacy_pipeline(folder: Path, transformer: bool) -> None:
    """nlp.to_disk(folder) (what a spacy/* Hub repo and an installed en_core_web_* package hold): config.cfg, meta.json,
    the tokenizer and vocab/, then one folder per component with its cfg and its thinc model."""
    components = ["transformer" if transformer else "tok2vec", "ner"]
    folder.mkdir()
    (folder / "config.cfg").write_text(f'[paths]\ntrain = null\n\n[nlp]\nlang = "en"\n'
                                       f"pipeline = {json.dumps(components)}\n")
    (folder / "meta.json").write_text(json.dumps({"lang": "en", "name": "core_web_trf", "version": "3.7.3",
                                                  "spacy_version": ">=3.7.2,<3.8.0", "pipeline": components}))
    (folder / "tokenizer").write_bytes(_msgpack({"rules": {}, "prefix_search": "^"}))
    (folder / "vocab").mkdir()
    (folder / "vocab" / "strings.json").write_text('["Apple"]')
    for name in components:
        (folder / name).mkdir()
        (folder / name / "cfg").write_text("{}")
        (folder / name / "model").write_bytes(_thinc_model([_hf_shim()] if name == "transformer" else []))
    (folder / "ner" / "moves").write_bytes(_msgpack({"moves": "{}"}))


def test_a_spacy_pipeline_and_its_component_models_are_named_with_what_loads_them(tmp_path: Path) -> None:
    """A spaCy pipeline folder was said to hold "no weight file" and no more, and spacy-transformers' transformer/model
    (the transformer's torch weights inside thinc's msgpack) was "not a safetensors file nor a PyTorch pickle"."""
    trf, sm = tmp_path / "en_core_web_trf", tmp_path / "en_core_web_sm"
    _spacy_pipeline(trf, transformer=True)
    _spacy_pipeline(sm, transformer=False)
    export = (f"import spacy; spacy.load({str(trf)!r}).get_pipe('transformer').model.transformer.save_pretrained("
              f"{str(trf) + '.transformer'!r})")

    result = run_cli("inspect", str(trf))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "it is a spaCy pipeline (config.cfg, meta.json; components ner/, transformer/)" in result.stderr
    assert f"spacy.load({str(trf)!r}) loads it" in result.stderr and export in result.stderr, result.stderr

    result = run_cli("inspect", str(sm))
    assert result.exit_code == 2 and "components ner/, tok2vec/" in result.stderr, result.stderr
    assert "save_pretrained" not in result.stderr, result.stderr  # no transformer in it

    result = run_cli("inspect", str(trf / "transformer" / "model"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "the transformer component's model of a spaCy pipeline (en_core_web_trf/)" in result.stderr
    assert "it holds a Hugging Face transformers model (spacy-transformers" in result.stderr and export in result.stderr
    assert "nor a PyTorch pickle" not in result.stderr, result.stderr

    result = run_cli("diff-keys", str(sm / "ner" / "model"), str(trf / "transformer" / "model"))
    assert result.exit_code == 2 and "the ner component's model of a spaCy pipeline" in result.stderr, result.stderr
    assert "Hugging Face" not in result.stderr, result.stderr

    result = run_cli("inspect", str(trf / "transformer"))
    assert result.exit_code == 2 and "it is the transformer component of a spaCy pipeline" in result.stderr
    assert export in result.stderr, result.stderr


def _composer_hf_checkpoint(path: Path, peft: bool = False) -> dict[str, torch.Tensor]:
    """Composer's Trainer save of a HuggingFaceModel (ep1-ba3-rank0.pt): the transformers model is its `model`
    attribute, so state.model names every weight model.*, and HuggingFaceModel.get_metadata keeps the transformers
    config (and tokenizer, PEFT config) under state.integrations.huggingface; the run's timestamp, seed and rng."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20)
    weights = BertForSequenceClassification(config).state_dict()
    hf_class = "transformers.models.bert.modeling_bert.BertForSequenceClassification"
    hf_model: dict[str, Any] = {"config": {"file_extension": ".json", "content": config.to_dict(), "class": hf_class}}
    if peft:
        hf_model["peft_config"] = {"file_extension": ".json", "content": {"peft_type": "LORA", "r": 4}}
    torch.save({"state": {"model": {f"model.{name}": value for name, value in weights.items()},
                          "optimizers": {"DecoupledAdamW": {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]}},
                          "schedulers": [], "algorithms": [], "callbacks": {},
                          "timestamp": {"epoch": 1, "batch": 3}, "rank_zero_seed": 17, "run_name": "run",
                          "integrations": {"huggingface": {"model": hf_model, "tokenizer": {}}},
                          "metadata": {"composer_env_info": {"composer_version": "0.17.0"}}},
                "rng": [{"python": (3, (1, 2), None), "torch": torch.get_rng_state()}]}, path)
    return weights


def test_a_composer_checkpoint_names_composer_and_its_hugging_face_export(tmp_path: Path) -> None:
    """A Composer checkpoint of a transformers model read as state.model with no word of Composer: its model.* names
    matched no transformers model, and nothing said Composer's own export writes the from_pretrained folder."""
    from safetensors.torch import load_file

    path = tmp_path / "ep1-ba3-rank0.pt"
    weights = _composer_hf_checkpoint(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state.model" and data["num_tensors"] == len(weights)
    note = next((w for w in data["warnings"] if "MosaicML Composer checkpoint" in w), None)
    assert note is not None, data["warnings"]
    out = str(tmp_path / "ep1-ba3-rank0-hf")  # advice2: the file and a folder, not (PATH, OUT), a NameError pasted
    assert (f"composer.models.write_huggingface_pretrained_from_composer_checkpoint({str(path)!r}, {out!r})"
            f" writes its config.json") in note and f"from_pretrained({out!r})" in note, note
    assert "pytorch_model.bin (model. stripped)" in note, note
    assert f"convert {path} --strip-prefix model. -o {tmp_path / 'ep1-ba3-rank0.safetensors'}" in note, note

    # What the note says convert does: the names the transformers model loads.
    out = tmp_path / "model.safetensors"
    result = run_cli("convert", str(path), "--strip-prefix", "model.", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert set(load_file(out)) == set(weights)

    _composer_hf_checkpoint(tmp_path / "peft.pt", peft=True)
    code, data = run_json("inspect", str(tmp_path / "peft.pt"))
    assert code == 0 and any("adapter_model.bin (model. stripped)" in w for w in data["warnings"]), data["warnings"]

    # A Composer checkpoint of its own ComposerModel (no transformers integration) is loaded back by its Trainer.
    torch.save({"state": {"model": {"module.fc.weight": torch.zeros(2, 2)}, "timestamp": {}, "rank_zero_seed": 1},
                "rng": []}, tmp_path / "plain.pt")
    code, data = run_json("inspect", str(tmp_path / "plain.pt"))
    loaded = f"Trainer, given its ComposerModel and load_path={str(tmp_path / 'plain.pt')!r}, loads it"
    assert code == 0 and any(loaded in w for w in data["warnings"]), data["warnings"]
    assert not any("write_huggingface" in w for w in data["warnings"]), data["warnings"]


def test_a_pyannote_checkpoint_names_pyannote_audio_and_what_loads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyannote.audio's segmentation and embedding checkpoints read (round 14) as a Lightning state_dict with no word
    of pyannote.audio, whose Model.from_pretrained is what loads them (their architecture is in the checkpoint)."""
    from tests.test_third_party_layouts14 import _pyannote_checkpoint

    folder = tmp_path / "segmentation-3.0"
    folder.mkdir()
    _pyannote_checkpoint(folder / "pytorch_model.bin", monkeypatch)
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["nested_key"] == "state_dict", data
    note = next((w for w in data["warnings"] if "pyannote.audio checkpoint" in w), None)
    assert note is not None, data["warnings"]
    # module: the class's __module__ (its file PyanNet.py), then the class: as pyannote.audio records them.
    assert ("Lightning checkpoint of pyannote.audio.models.segmentation.PyanNet.PyanNet, saved by pyannote.audio "
            "3.1.0") in note, note
    assert (f"import pyannote.audio; pyannote.audio.Model.from_pretrained({str(folder / 'pytorch_model.bin')!r}) "
            "loads it" in note), note

    # A Lightning checkpoint of anything else says no such thing.
    torch.save({"state_dict": {"w": torch.zeros(2)}, "pytorch-lightning_version": "2.1.0"}, tmp_path / "last.ckpt")
    code, data = run_json("inspect", str(tmp_path / "last.ckpt"))
    assert code == 0 and not any("pyannote" in w for w in data["warnings"]), data["warnings"]


def _inc_weight_only(folder: Path, version3: bool, down_bits: int = 4) -> None:
    """Intel Neural Compressor's weight-only RTN save of a tiny decoder: each Linear replaced by its WeightOnlyLinear
    (optimum format: qweight int32 [in * bits / 32, out], scales [in / group, out], qzeros), lm_head left in fp32.
    2.x: q_model.save(folder) writes best_model.pt and qconfig.json {op: {"dtype", "bits", ...}}; 3.x's
    neural_compressor.torch save writes quantized_model.pt and qconfig.json {"('op', 'Linear')": {"rtn": {...}}}."""
    torch.manual_seed(0)
    folder.mkdir()
    state: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(50, 64)}
    qconfig: dict[str, Any] = {}
    for op, bits in (("model.layers.0.self_attn.q_proj", 4), ("model.layers.0.mlp.down_proj", down_bits)):
        state[f"{op}.qweight"] = torch.randint(0, 2**30, (64 * bits // 32, 64), dtype=torch.int32)
        state[f"{op}.scales"] = torch.rand(2, 64, dtype=torch.float16)
        state[f"{op}.qzeros"] = torch.randint(0, 2**30, (2, 64 * bits // 32), dtype=torch.int32)
        settings = {"dtype": "int", "bits": bits, "group_size": 32}
        if version3:
            qconfig[str((op, "Linear"))] = {"rtn": {**settings, "use_sym": False}}
        else:
            qconfig[op] = {**settings, "scheme": "asym", "algorithm": "RTN",
                           "module_type": "torch.nn.modules.linear.Linear"}
    state["lm_head.weight"] = torch.randn(50, 64)
    if not version3:
        qconfig["lm_head"] = {"dtype": "fp32"}
    torch.save(state, folder / ("quantized_model.pt" if version3 else "best_model.pt"))
    (folder / "qconfig.json").write_text(json.dumps(qconfig, indent=4))


def test_an_inc_weight_only_save_reads_its_bits_from_its_qconfig(tmp_path: Path) -> None:
    """INC's weight-only saves were "gptq-like (no quantization_config)" with unknown bits, so no parameter count,
    where INC's own qconfig.json beside the weights gives each layer's bits."""
    _inc_weight_only(tmp_path / "v2", version3=False)
    code, data = run_json("inspect", str(tmp_path / "v2" / "best_model.pt"))
    assert code == 0, data
    assert data["quantized"]["method"] == "Intel Neural Compressor weight-only (qconfig.json)", data["quantized"]
    # 50 x 64 embeddings and lm_head, two 64 x 64 Linears at 4 bits (8 values an int32).
    assert data["quantized"]["bits"] == 4 and data["quantized"]["parameters"] == 2 * 3200 + 2 * 4096
    assert any("neural_compressor.utils.pytorch.load (INC 2.x), given the save's folder, weight_only=True" in w
               for w in data["warnings"]), data["warnings"]

    _inc_weight_only(tmp_path / "v3", version3=True, down_bits=8)  # a mixed recipe: the MLP at 8 bits
    code, data = run_json("inspect", str(tmp_path / "v3"))
    assert code == 0 and data["quantized"]["method"].startswith("Intel Neural Compressor"), data
    assert data["quantized"]["bits"] is None and data["quantized"]["parameters"] == 2 * 3200 + 2 * 4096
    assert any("neural_compressor.torch.quantization.load (INC 3.x), given the save's folder and, as "
               "original_model=, the floating-point model" in w
               for w in data["warnings"]), data["warnings"]

    # Another library's qconfig.json (no dtype per entry) is not taken for INC's.
    (tmp_path / "v2" / "qconfig.json").write_text(json.dumps({"bits": 4, "group_size": 128}))
    code, data = run_json("inspect", str(tmp_path / "v2" / "best_model.pt"))
    assert code == 0 and data["quantized"]["method"] == "gptq-like (no quantization_config)", data["quantized"]


def _te_extra_state() -> io.BytesIO:
    """TransformerEngine (before 1.6)'s get_extra_state: its FP8 state (None without FP8) torch.save'd in a BytesIO."""
    state = io.BytesIO()
    torch.save(None, state)
    return state


def _nemo_archive(path: Path, work: Path) -> dict[str, torch.Tensor]:
    """A NeMo 1.x .nemo of a Megatron GPT built with TransformerEngine (save_to): a tar of model_config.yaml and
    model_weights.ckpt, the torch.save state dict with each TE module's _extra_state beside its weights."""
    torch.manual_seed(0)
    tensors = {"model.embedding.word_embeddings.weight": torch.randn(50, 8)}
    state: dict[str, Any] = dict(tensors)
    for i in range(2):
        prefix = f"model.decoder.layers.{i}."
        layer = {prefix + "self_attention.linear_qkv.weight": torch.randn(24, 8),
                 prefix + "self_attention.linear_qkv.layer_norm_weight": torch.ones(8),
                 prefix + "mlp.linear_fc1.weight": torch.randn(32, 8)}
        tensors.update(layer)
        state.update(layer)
        for module in ("self_attention.linear_qkv", "self_attention.core_attention", "mlp.linear_fc1"):
            state[f"{prefix}{module}._extra_state"] = _te_extra_state()
    work.mkdir()
    torch.save(state, work / "model_weights.ckpt")
    (work / "model_config.yaml").write_text("mcore_gpt: true\nnum_layers: 2\nhidden_size: 8\n")
    with tarfile.open(path, "w:") as tar:
        for name in ("model_config.yaml", "model_weights.ckpt"):
            tar.add(work / name, arcname=f"./{name}")
    return tensors


def test_a_nemo_archive_with_transformer_engine_state_says_what_to_extract_and_that_reads(tmp_path: Path) -> None:
    """The .nemo names model_weights.ckpt as what to extract, and the extracted file reads, its TE _extra_state
    BytesIO entries said as non-tensor entries (reading them works since the TransformerEngine change)."""
    tensors = _nemo_archive(tmp_path / "megatron_gpt.nemo", tmp_path / "work")
    result = run_cli("inspect", str(tmp_path / "megatron_gpt.nemo"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "it is a NeMo archive (.nemo), a tar holding model_weights.ckpt: extract it (tar -xf)" in result.stderr

    extracted = tmp_path / "extracted"
    extracted.mkdir()
    with tarfile.open(tmp_path / "megatron_gpt.nemo") as tar:
        tar.extractall(extracted, filter="data")
    code, data = run_json("inspect", str(extracted / "model_weights.ckpt"))
    assert code == 0 and data["security"]["verdict"] == "safe", data
    assert {t["name"] for t in data["tensors"]} == set(tensors)
    assert "model.decoder.layers.1.mlp.linear_fc1._extra_state (_io.BytesIO, read as inert data)" in \
        data["skipped_entries"], data["skipped_entries"]


def _megatron_torch_dist(folder: Path) -> dict[str, torch.Tensor]:
    """Megatron-Core's torch_dist save (NeMo 1.x's model_weights/ under dist_ckpt_format torch_dist, Megatron-LM's
    iter_0001000/): torch.distributed.checkpoint shards and .metadata, metadata.json naming the backend, and
    common.pt with the state that is not sharded."""
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    tensors = {"decoder.layers.self_attention.linear_qkv.weight": torch.randn(2, 24, 8),
               "embedding.word_embeddings.weight": torch.randn(50, 8)}
    with warnings.catch_warnings():  # "torch.distributed is disabled ...: assuming ... a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({name: value.clone() for name, value in tensors.items()}, checkpoint_id=str(folder))
    (folder / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist", "sharded_backend_version": 1,
                                                      "common_backend": "torch", "common_backend_version": 1}))
    torch.save({"optimizer": {"param_groups": []}, "iteration": 1000}, folder / "common.pt")
    return tensors


def test_megatron_torch_dist_common_pt_and_a_nemo_holding_it_point_at_the_dcp_shards(tmp_path: Path) -> None:
    """A .nemo whose model_weights/ is a torch_dist checkpoint said "a tar holding model_weights/common.pt: extract it
    and point at that file", the one file of it that holds no weights; common.pt named alone said "no state dict
    found; pick one with --key", where no key holds them."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    work = tmp_path / "work"
    weights = work / "model_weights"
    weights.mkdir(parents=True)
    tensors = _megatron_torch_dist(weights)
    (work / "model_config.yaml").write_text("mcore_gpt: true\ndist_ckpt_format: torch_dist\n")
    archive = tmp_path / "megatron_gpt.nemo"
    with tarfile.open(archive, "w:") as tar:
        tar.add(work / "model_config.yaml", arcname="./model_config.yaml")
        tar.add(weights, arcname="./model_weights")

    result = run_cli("inspect", str(archive))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "a tar whose model_weights/ is a Megatron-Core torch_dist checkpoint" in result.stderr, result.stderr
    assert (f"dcp_to_torch_save('model_weights', {str(tmp_path / 'megatron_gpt.state_dict.pt')!r})"
            in result.stderr), result.stderr
    assert "point at that file" not in result.stderr, result.stderr

    result = run_cli("inspect", str(weights / "common.pt"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "this is the common.pt of a Megatron-Core torch_dist checkpoint" in result.stderr, result.stderr
    assert f"dcp_to_torch_save({str(weights)!r}, {str(work / 'model_weights.state_dict.pt')!r})" in result.stderr

    # What both say to run writes a file that reads, holding the weights.
    dcp_to_torch_save(str(weights), str(tmp_path / "model.pt"))
    code, data = run_json("inspect", str(tmp_path / "model.pt"))
    assert code == 0 and {t["name"] for t in data["tensors"]} == set(tensors), data


def test_an_installed_spacy_package_points_at_its_pipeline_folder(tmp_path: Path) -> None:
    """pip install en_core_web_sm puts meta.json and __init__.py at the package's top and the pipeline one level down
    (en_core_web_sm-3.7.1/): the top was called "a spaCy pipeline (config.cfg, meta.json)" that spacy.load(path)
    loads, where it has no config.cfg and spacy.load of that path fails."""
    package = tmp_path / "en_core_web_sm"
    package.mkdir()
    _spacy_pipeline(package / "en_core_web_sm-3.7.3", transformer=False)
    (package / "meta.json").write_text((package / "en_core_web_sm-3.7.3" / "meta.json").read_text())
    (package / "__init__.py").write_text("from spacy.util import load_model_from_init_py\n")
    result = run_cli("inspect", str(package))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    line = " ".join(result.stderr.split())
    assert "an installed spaCy pipeline package (meta.json; its pipeline in en_core_web_sm-3.7.3/)" in line, line
    assert "spacy.load('en_core_web_sm') loads once installed" in line, line
    assert f"spacy.load({str(package / 'en_core_web_sm-3.7.3')!r}) loads it" in line, line
    assert f"spacy.load({str(package)!r})" not in line, line


def test_a_shard_of_a_megatron_torch_dist_checkpoint_names_megatron_core(tmp_path: Path) -> None:
    """A .distcp shard or the .metadata of Megatron-Core's torch_dist save, named alone, was put down to "FSDP,
    torchtitan and Lightning", with common.pt and metadata.json beside it saying Megatron-Core."""
    folder = tmp_path / "iter_0001000"
    folder.mkdir()
    _megatron_torch_dist(folder)
    for name in (".metadata", next(p.name for p in folder.glob("*.distcp"))):
        result = run_cli("inspect", str(folder / name))
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "as Megatron-Core's torch_dist format saves one" in result.stderr, result.stderr
        assert "FSDP" not in result.stderr, result.stderr

    # A DCP folder of anyone else's (no common.pt, no metadata.json) is still said as before.
    (folder / "common.pt").unlink()
    (folder / "metadata.json").unlink()
    result = run_cli("inspect", str(folder / ".metadata"))
    assert result.exit_code == 2 and "as FSDP, torchtitan and Lightning save one" in result.stderr, result.stderr
