"""Hub repos keep a model's weights in several formats side by side (gpt2: model.safetensors, pytorch_model.bin,
tf_model.h5, flax_model.msgpack, rust_model.ot, 64-8bits.tflite, onnx/, plus openvino/ and coreml/ exports in
many repos). A folder reads what from_pretrained reads and names what it leaves out; a sibling named on its own is
said as the format it is, with what reads it. Every file here is built with its format's real magic bytes or
container layout."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def _flat(text: str) -> str:
    return " ".join(text.split())


def _error(*args: str) -> str:
    result = run_cli(*map(str, args))
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return _flat(result.stderr)


def _onnx_bytes() -> bytes:
    # ModelProto: ir_version (field 1, varint 8), producer_name (field 2) "pytorch", producer_version (field 3).
    return b"\x08\x08\x12\x07pytorch\x1a\x052.1.0"


def _coreml_blob() -> bytes:
    # MILBlob storage: a 64-byte storage_header (count=1, version=2, reserved) then, 64-byte aligned, the first
    # blob_metadata, which opens with the sentinel 0xDEADBEEF (little-endian), its dtype, size and offset.
    header = struct.pack("<II", 1, 2) + b"\0" * 56
    metadata = struct.pack("<IIQQQ", 0xDEADBEEF, 1, 16, 128, 0) + b"\0" * 32
    return header + metadata + b"\0" * 16


def _coreml_package(folder: Path) -> Path:
    package = folder / "float32_model.mlpackage"
    data = package / "Data" / "com.apple.CoreML"
    (data / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text(json.dumps({"fileFormatVersion": "1.0.0", "itemInfoEntries": {},
                                                       "rootModelIdentifier": "A"}))
    (data / "model.mlmodel").write_bytes(b"\x08\x08\x12\x00")  # Model protobuf: specificationVersion 8
    (data / "weights" / "weight.bin").write_bytes(_coreml_blob())
    return package


def _openvino(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "openvino_model.xml").write_text('<?xml version="1.0"?>\n<net name="Model0" version="11">\n'
                                               "<layers/>\n</net>\n")
    (folder / "openvino_model.bin").write_bytes(bytes(range(256)) * 2)  # raw constants, no header


def _gpt2_repo(root: Path) -> dict[str, torch.Tensor]:
    """A gpt2-like snapshot with its sibling formats, each with its real leading bytes."""
    torch.manual_seed(0)
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                  "n_embd": 8, "n_layer": 1, "n_head": 2, "vocab_size": 16}))
    weights = {"transformer.wte.weight": torch.randn(16, 8), "transformer.h.0.attn.c_attn.weight": torch.randn(8, 24),
               "transformer.ln_f.weight": torch.ones(8)}
    save_file(weights, root / "model.safetensors", metadata={"format": "pt"})
    torch.save(weights, root / "pytorch_model.bin")
    (root / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 120)
    (root / "flax_model.msgpack").write_bytes(b"\x81\xabtransformer\x80")  # msgpack fixmap {"transformer": {}}
    (root / "64-8bits.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\0" * 56)  # FlatBuffer, identifier TFL3

    class Saved(torch.nn.Module):  # tch's VarStore::save writes a TorchScript archive of parameters
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    torch.jit.save(torch.jit.script(Saved()), str(root / "rust_model.ot"))
    (root / "onnx").mkdir()
    (root / "onnx" / "decoder_model.onnx").write_bytes(_onnx_bytes())
    (root / "onnx" / "decoder_model.onnx_data").write_bytes(b"\0" * 64)
    _openvino(root / "openvino")
    _coreml_package(root / "coreml" / "text-generation")
    return weights


def test_a_folder_reads_the_safetensors_and_names_each_other_format_it_leaves_out(tmp_path: Path) -> None:
    root = tmp_path / "gpt2"
    weights = _gpt2_repo(root)
    result = run_cli("inspect", root, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [f["path"] for f in report["files"]] == ["model.safetensors", "config.json"]
    assert report["num_tensors"] == len(weights)
    left_out = [w for w in report["warnings"] if w.startswith("not read, and not loaded by from_pretrained")]
    assert len(left_out) == 1, report["warnings"]
    for said in ("tf_model.h5 (TensorFlow / Keras)", "flax_model.msgpack (Flax)", "rust_model.ot (rust-bert)",
                 "64-8bits.tflite (TensorFlow Lite)", "onnx/ (ONNX, ONNX external data)", "openvino/ (OpenVINO)",
                 "coreml/ (Core ML)"):
        assert said in left_out[0]
    # pytorch_model.bin keeps its own warning, and is not said twice.
    assert "pytorch_model.bin" not in left_out[0]
    assert any(w.startswith("pytorch_model.bin is ignored") for w in report["warnings"])


def _llama(root: Path) -> None:
    torch.manual_seed(1)
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                  "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 16}))
    first = {"model.embed_tokens.weight": torch.randn(16, 8)}
    second = {"model.norm.weight": torch.ones(8), "lm_head.weight": torch.randn(16, 8)}
    save_file(first, root / "model-00001-of-00002.safetensors")
    save_file(second, root / "model-00002-of-00002.safetensors")
    weight_map = {**dict.fromkeys(first, "model-00001-of-00002.safetensors"),
                  **dict.fromkeys(second, "model-00002-of-00002.safetensors")}
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_meta_and_mistral_release_files_beside_the_hf_shards_are_named_not_read(tmp_path: Path) -> None:
    native = {"tok_embeddings.weight": torch.randn(16, 8), "norm.weight": torch.ones(8)}
    llama3 = tmp_path / "llama3"
    _llama(llama3)
    (llama3 / "original").mkdir()
    torch.save(native, llama3 / "original" / "consolidated.00.pth")
    (llama3 / "original" / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 1}))
    mistral = tmp_path / "mistral"
    _llama(mistral)
    save_file(native, mistral / "consolidated.safetensors")
    (mistral / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 1}))

    for folder, said in ((llama3, "original/ (Meta's original format, with params.json"),
                         (mistral, "consolidated.safetensors (Mistral's own format, with params.json")):
        result = run_cli("inspect", folder, "--json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["sharded"] and report["num_tensors"] == 3  # the index's shards, not consolidated.*
        assert not any(t["name"].startswith("tok_embeddings") for t in report["tensors"])
        assert any(said in w for w in report["warnings"]), report["warnings"]


def test_the_ignored_index_shards_are_not_listed_again(tmp_path: Path) -> None:
    root = tmp_path / "both"
    _llama(root)
    torch.save({"model.embed_tokens.weight": torch.randn(16, 8)}, root / "pytorch_model-00001-of-00001.bin")
    (root / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {"model.embed_tokens.weight": "pytorch_model-00001-of-00001.bin"}}))
    (root / "model.onnx").write_bytes(_onnx_bytes())
    result = run_cli("inspect", root, "--json")
    warnings = json.loads(result.stdout)["warnings"]
    assert any(w.startswith("pytorch_model.bin.index.json is ignored") for w in warnings)
    left_out = [w for w in warnings if w.startswith("not read, and not loaded")]
    assert len(left_out) == 1 and "model.onnx (ONNX)" in left_out[0]
    assert "pytorch_model-00001-of-00001.bin" not in left_out[0]


def test_weight_files_under_other_names_are_named_once_together(tmp_path: Path) -> None:
    """open_clip's repos keep open_clip_model.safetensors and open_clip_pytorch_model.bin beside the transformers
    files; from_pretrained reads model.safetensors and nothing was said of the others."""
    root = tmp_path / "clip"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    hf = {"text_model.embeddings.token_embedding.weight": torch.randn(4, 4)}
    native = {"token_embedding.weight": torch.randn(4, 4)}
    save_file(hf, root / "model.safetensors")
    torch.save(hf, root / "pytorch_model.bin")
    save_file(native, root / "open_clip_model.safetensors")
    torch.save(native, root / "open_clip_pytorch_model.bin")
    with (root / "label_encoder.pkl").open("wb") as handle:  # a plain pickle of labels: no weights to name
        pickle.dump({"classes": ["cat", "dog"]}, handle)
    warnings = json.loads(run_cli("inspect", root, "--json").stdout)["warnings"]
    assert [w for w in warnings if w.startswith("not read")] == [
        "not read, and not loaded by from_pretrained(folder) either: open_clip_model.safetensors, "
        "open_clip_pytorch_model.bin (weight files under names from_pretrained(folder) does not look for); name one "
        "to read or identify it"]


def test_rust_bert_rust_model_ot_is_said_as_tensors_without_code(tmp_path: Path) -> None:
    """tch's VarStore::save writes a libtorch OutputArchive: one `__torch__.Module`, each tensor registered on it
    under its dotted name, no methods. It was called "compiled TorchScript code that torch.jit.load runs"."""
    module = torch._C.ScriptModule("__torch__.Module", torch._C.CompilationUnit(), True)
    module._register_attribute("transformer.h.0.attn.c_attn.weight", torch._C.TensorType.get(), torch.ones(2, 2))
    module.save(str(tmp_path / "rust_model.ot"))
    said = _error("inspect", tmp_path / "rust_model.ot")
    assert "TorchScript archive of named tensors and no code (libtorch's torch::serialize::OutputArchive" in said
    assert "rust-bert's rust_model.ot" in said
    assert f"torch.jit.load({str(tmp_path / 'rust_model.ot')!r}).state_dict()" in said
    assert "compiled TorchScript code" not in said


@pytest.mark.parametrize("command", [("inspect",), ("check-dtype",), ("plan-devices", "--gpu", "1GB"),
                                     ("convert", "-o", "OUT")])
def test_an_openvino_graph_named_is_said_as_one_in_every_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    _openvino(tmp_path / "openvino")
    args = [str(tmp_path / "out") if part == "OUT" else part for part in command]
    said = _error(*args, tmp_path / "openvino" / "openvino_model.xml")
    assert "an OpenVINO IR model's graph" in said
    assert f"openvino.Core().read_model({str(tmp_path / 'openvino' / 'openvino_model.xml')!r})" in said
    assert "server's error reply" not in said
    assert not (tmp_path / "out").exists()


def test_core_ml_packages_and_their_files_are_said_as_core_ml(tmp_path: Path) -> None:
    package = _coreml_package(tmp_path / "coreml" / "text-generation")
    for source in (tmp_path / "coreml", package):
        said = _error("inspect", source)
        assert "Core ML package" in said and "coremltools.models.MLModel(" in said
    for inner in (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin",
                  package / "Data" / "com.apple.CoreML" / "model.mlmodel"):
        said = _error("inspect", inner)
        assert f"this is a file of a Core ML package (float32_model.mlpackage: {inner.name}" in said
        assert "not a safetensors file nor a PyTorch pickle" not in said
    # A package at a model folder's top, beside the weights read, is named as Core ML too.
    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.ones(2)}, model / "model.safetensors")
    _coreml_package(model)
    warnings = json.loads(run_cli("inspect", model, "--json").stdout)["warnings"]
    assert any("float32_model.mlpackage/ (Core ML)" in w for w in warnings), warnings
    # The weight blob alone (copied out of its package): told by its MILBlob header.
    lone = tmp_path / "weight.bin"
    lone.write_bytes(_coreml_blob())
    assert "a Core ML ML program's weight blob" in _error("check-dtype", lone)


def test_tensorrt_and_tflite_files_name_what_runs_them(tmp_path: Path) -> None:
    engine = b"ftrt" + struct.pack("<I", 0) + bytes([232]) + b"\0" * 55  # the plan's magic tag, then its header
    (tmp_path / "model.plan").write_bytes(engine)  # Triton's name for a TensorRT engine
    (tmp_path / "yolo.trt").write_bytes(engine)  # any name: told by the magic
    for name in ("model.plan", "yolo.trt"):
        said = _error("inspect", tmp_path / name)
        assert "this is a TensorRT engine" in said and "deserialize_cuda_engine" in said
    (tmp_path / "64-8bits.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\0" * 56)
    said = _error("inspect", tmp_path / "64-8bits.tflite")
    assert "TensorFlow Lite model" in said
    assert f"tf.lite.Interpreter(model_path={str(tmp_path / '64-8bits.tflite')!r})" in said


def test_tensorflow_and_onnx_runtime_files_name_what_reads_them(tmp_path: Path) -> None:
    """Original BERT releases (bert_model.ckpt.index + .data-00000-of-00001), a SavedModel's saved_model.pb and an
    ONNX Runtime .ort were named with no way onward."""
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"\x00\x00\x00\x00" * 4)  # a TF table (SSTable) of keys
    (tmp_path / "bert_model.ckpt.data-00000-of-00001").write_bytes(b"\x00" * 32)  # raw tensor bytes
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00")  # SavedModel: saved_model_schema_version 1
    (tmp_path / "model.ort").write_bytes(b"\x10\x00\x00\x00ORTM" + b"\0" * 24)  # FlatBuffer, identifier ORTM
    # The prefix named (advice2: `load_checkpoint(prefix)` was a NameError pasted; test_advice_runs2 checks it).
    for name, prefix in (("bert_model.ckpt.index", "bert_model.ckpt"),
                         ("bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt"),
                         ("saved_model.pb", "variables/variables")):
        assert (f"tf.train.load_checkpoint({str(tmp_path / prefix)!r}) reads its variables by name"
                in _error("inspect", tmp_path / name))
    said = _error("inspect", tmp_path / "model.ort")
    assert f"onnxruntime.InferenceSession({str(tmp_path / 'model.ort')!r}) runs it" in said


def test_a_file_of_an_orbax_checkpoint_is_said_as_one(tmp_path: Path) -> None:
    item = tmp_path / "1000" / "default"
    (item / "ocdbt.process_0" / "d").mkdir(parents=True)
    (tmp_path / "1000" / "_CHECKPOINT_METADATA").write_text(json.dumps({"init_timestamp_nsecs": 1}))
    (item / "_METADATA").write_text(json.dumps({"tree_metadata": {}}))
    (item / "_sharding").write_text("{}")
    (item / "manifest.ocdbt").write_bytes(b"\x0a\x0b\x0c\x0d" + b"\0" * 28)
    (item / "ocdbt.process_0" / "d" / "a1b2c3").write_bytes(b"\x00\x01\x02\x03" * 8)
    for inner in (item / "manifest.ocdbt", item / "ocdbt.process_0" / "d" / "a1b2c3"):
        said = _error("inspect", inner)
        assert "a file of an Orbax (JAX) checkpoint, whose folder default/ is read whole" in said
        assert "ocp.StandardCheckpointer().restore(" in said
    for inner_folder in (item / "ocdbt.process_0", item / "ocdbt.process_0" / "d"):
        said = _error("inspect", inner_folder)
        assert "it is inside an Orbax (JAX) checkpoint (default/, read whole)" in said
        assert f"ocp.StandardCheckpointer().restore({str(item)!r})" in said


def test_an_export_folder_names_what_reads_its_files(tmp_path: Path) -> None:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "decoder_model.onnx").write_bytes(_onnx_bytes())
    _openvino(tmp_path / "openvino")
    assert "decoder_model.onnx is an ONNX model: the onnx package reads its weights" in _error(
        "inspect", tmp_path / "onnx")
    assert "openvino_model.bin is an OpenVINO IR model's weights" in _error("inspect", tmp_path / "openvino")


def test_an_exports_only_repo_says_from_pretrained_finds_no_weights(tmp_path: Path) -> None:
    """A repo of OpenVINO and Core ML exports beside the config (no PyTorch weights): plan-devices planned from the
    config in silence, where an onnx/ export alone got "from_pretrained(folder) ... raises"."""
    root = tmp_path / "exports"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                  "n_embd": 8, "n_layer": 1, "n_head": 2, "vocab_size": 16}))
    _openvino(root / "openvino")
    _coreml_package(root / "coreml" / "text-generation")
    result = run_cli("plan-devices", root, "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    assert ("the folder's weights are openvino/openvino_model.bin, coreml/text-generation/float32_model.mlpackage/ "
            "(not PyTorch): from_pretrained(folder) finds no model.safetensors or pytorch_model.bin there and raises"
            ) in " ".join(json.loads(result.stdout)["warnings"])
    said = _error("inspect", root)
    assert "it holds openvino/openvino_model.bin, which weightdoctor does not read" in said
    assert "it holds Core ML packages (coreml/text-generation/float32_model.mlpackage)" in said


def test_convert_leaves_other_formats_out_and_calls_no_export_a_pickle(tmp_path: Path) -> None:
    root = tmp_path / "gpt2"
    _gpt2_repo(root)
    (root / "model.onnx").write_bytes(_onnx_bytes())
    (root / "model.onnx_data").write_bytes(b"\0" * 64)
    with (root / "weights.npz").open("wb") as handle:  # MLX's mx.savez: a zip of .npy arrays
        np.savez(handle, **{"transformer.ln_f.weight": np.ones(8, dtype=np.float32)})
    out = tmp_path / "out"
    result = run_cli("convert", root, "-o", out)
    assert result.exit_code == 0, result.stderr
    stderr = _flat(result.stderr)
    for name in ("rust_model.ot", "model.onnx_data", "model.onnx", "weights.npz"):
        assert not (out / name).exists()
        assert f"{name} (weights in another file or format, not converted)" in stderr
    # openvino/ and coreml/ are copied whole, as subfolders are: their .bin files are no PyTorch pickles.
    assert (out / "openvino" / "openvino_model.bin").is_file()
    assert "still PyTorch pickles" not in stderr
