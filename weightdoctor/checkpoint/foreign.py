"""Recognise well-known files that are not PyTorch or safetensors checkpoints, to say what they are.

weightdoctor reads safetensors and torch.save pickles only. When a user points it at a GGUF, Keras/HDF5,
ONNX, NumPy, TensorFlow, Flax or TFLite file (or a Git LFS pointer left by a clone without `git lfs`),
the error names the format instead of a generic "unknown format". Detection is by magic bytes first and
by the usual file names second; nothing here parses more than the first bytes (and a zip's member list).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import zipfile
from pathlib import Path

from weightdoctor.errors import clip_middle
from weightdoctor.paths import fresh_sibling, shell_word
from weightdoctor.wording import counted

_NOT_READ = "weightdoctor reads safetensors and PyTorch (torch.save) checkpoints only"

_GGUF = "a GGUF file (llama.cpp / ggml)"
# Old llama.cpp, whisper.cpp and ggml's examples write their magic as a little-endian uint32 (0x67676a74, "ggjt"),
# so the file starts with the letters reversed ("tjgg"); both orders are named.
_GGML = "a legacy GGML file (unversioned 'ggml' magic: old llama.cpp, whisper.cpp or ggml's examples)"
_GGMF = "a legacy GGML (ggmf) file of old llama.cpp"
_GGJT = "a legacy GGML (ggjt) file of old llama.cpp"
_GGLA = "a legacy GGML LoRA adapter (ggla) of old llama.cpp, converted from a PEFT adapter_model.bin"
_GGML_TO_GGUF = "llama.cpp's convert_llama_ggml_to_gguf.py turns a LLaMA one into GGUF"
# np.savez (and MLX's mx.savez) write a zip of .npy files; flax.serialization's msgpack holds nested arrays.
_NPZ = "a NumPy .npz archive"
_NPY = "a NumPy .npy array"
_MSGPACK = "a Flax msgpack checkpoint"
_ONNX = "an ONNX model"
_ONNX_DATA = "an ONNX model's external data (the raw tensor bytes its .onnx file locates by offset)"
# Burn (Rust) saves a module's record with a FileRecorder, whose file_extension() names the file: NamedMpk ("mpk",
# its DefaultRecorder and CompactRecorder) and NamedMpkGz ("mpk.gz"), MessagePack that holds Burn's own record
# structure; the Bin / Json recorders write ".bin" / ".json", which cannot be told apart by name.
_BURN_MPK = "a Burn (Rust) record saved by NamedMpkFileRecorder (.mpk: named MessagePack, Burn's default recorder)"
_BURN_MPK_GZ = "a Burn (Rust) record saved by NamedMpkGzFileRecorder (.mpk.gz: gzip-compressed named MessagePack)"
_BURN_CONVERTER = ("Burn reads PyTorch and safetensors files but does not write torch.save ones: load the record into "
                   "its module in Burn and save it with burn-store's SafetensorsStore (Burn 0.19 and later) to read "
                   "it here")
_GZIP = "a gzip-compressed file"
_HDF5 = "an HDF5 file (Keras / TensorFlow .h5 weights)"
_KERAS = "a Keras model archive (.keras)"
# Keras 3 keeps no PyTorch names: what reads a file gives its arrays, which safetensors.numpy writes as they are.
_KERAS_ARRAYS = ("safetensors.numpy.save_file({{v.path: v.numpy() for v in model.weights}}, {written}) "
                 "writes its arrays under Keras' variable paths to read here")
_TFLITE = "a TensorFlow Lite model"
# A serialized TensorRT engine (trtexec --saveEngine, Triton's model.plan) opens with the plan's magic tag "ftrt";
# it is built for one GPU and one TensorRT version, its weights folded into kernels.
_TENSORRT = "a TensorRT engine (a serialized plan, built for one GPU and TensorRT version)"
_COREML = "a Core ML model"
_OPENVINO_XML = ("an OpenVINO IR model's graph (.xml; its weights are in the .bin beside it; Optimum Intel's export "
                 "writes both), read by OpenVINO alone")
# Exports keep no state dict to recover: what runs them, then where the PyTorch weights are.
_EXPORT_SOURCE = "the PyTorch or safetensors weights it was made from (in the repo it came from) are what to read here"
_ORT = "an ONNX Runtime model"
_TF_PROTOBUF = "a TensorFlow protobuf (SavedModel or frozen graph)"
_TF_INDEX = "a TensorFlow checkpoint index"
_TF_DATA = "a TensorFlow checkpoint data shard"
# A TensorFlow checkpoint (bert_model.ckpt.index beside its .data-00000-of-00001) is read whole, by its prefix
# ({prefix}: the file as named, without .index / .data-...; `tf.train.load_checkpoint(prefix)` pasted was a NameError).
_TF_CHECKPOINT_READ = ("import tensorflow as tf; tf.train.load_checkpoint({prefix}) reads its variables by name "
                       "(the prefix: the file name before .index / .data-...), and safetensors.numpy.save_file of them "
                       "writes a file to read here")
# fastText's save_model: int32 magic 793712314 and version 12, then its args, dictionary and matrices (facebook's
# fasttext-*-vectors and language-identification repos name it model.bin, which was "not a PyTorch pickle").
_FASTTEXT = "a fastText model (fasttext's save_model: its dictionary and word / subword vectors)"
_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")
# MLC-LLM's convert_weight: raw tensor bytes, params_shard_N.bin, located by the ndarray-cache.json beside them.
_MLC_SHARD = ("a shard of an MLC-LLM model's weights (raw tensor bytes, quantized as its mlc-chat-config.json says, "
              "that the ndarray-cache.json beside it locates by name and offset), loaded by MLC-LLM's runtime alone")
_MLC_SOURCE = ("mlc_llm convert_weight wrote it from a Hugging Face model, whose safetensors (in the repo it was "
               "converted from) are what to read here")
# What reads or converts a recognised format into what weightdoctor reads, said after the refusal.
_CONVERTERS: dict[str, str] = {
    _FASTTEXT: ("import fasttext; fasttext.load_model({path}) loads it (get_input_matrix() and "
                "get_output_matrix() give its arrays, which safetensors.numpy.save_file writes to a file to read "
                "here)"),
    _MLC_SHARD: _MLC_SOURCE,
    _ORT: "import onnxruntime; onnxruntime.InferenceSession({path}) runs it; " + _EXPORT_SOURCE,
    _TF_PROTOBUF: ("tf.saved_model.load of the folder holding it loads a SavedModel, whose weights are the TensorFlow "
                   "checkpoint in its variables/ folder; " + _TF_CHECKPOINT_READ),
    _TF_INDEX: _TF_CHECKPOINT_READ, _TF_DATA: _TF_CHECKPOINT_READ,
    _TFLITE: ("import tensorflow as tf; tf.lite.Interpreter(model_path={path}) runs it (get_tensor_details lists "
              "its tensors, quantized as the converter left them); " + _EXPORT_SOURCE),
    _TENSORRT: ("TensorRT's runtime (trt.Runtime(logger).deserialize_cuda_engine, trtexec --loadEngine) runs it; "
                "its weights cannot be read back as a state dict: " + _EXPORT_SOURCE),
    _COREML: "import coremltools; coremltools.models.MLModel({path}) loads it (macOS runs it); " + _EXPORT_SOURCE,
    _OPENVINO_XML: "import openvino; openvino.Core().read_model({path}) loads it; " + _EXPORT_SOURCE,
    _GGUF: ("transformers reads it into PyTorch, dequantized (import transformers; "
            "transformers.AutoModelForCausalLM.from_pretrained({folder}, gguf_file={name!r}), with the gguf package), "
            "and save_pretrained then writes safetensors"),
    _GGML: _GGML_TO_GGUF, _GGMF: _GGML_TO_GGUF, _GGJT: _GGML_TO_GGUF,
    _GGLA: "the PEFT adapter it was converted from is what weightdoctor reads",
    # The file named by its path as typed ({path}: a Python literal, {shell}: a shell word; {written}: a new
    # .safetensors beside it, where a 'model.safetensors' was written over any file of that name where the user
    # stood): `numpy.load(path)` pasted was a NameError, `keras.saving.load_model('model.keras')` (its name alone)
    # opened no file outside its folder, `gunzip -k my model.pth.gz` (unquoted) named two files.
    _NPZ: ("import numpy; numpy.load({path}) gives its arrays by name; import numpy, safetensors.numpy; "
           "safetensors.numpy.save_file(dict(numpy.load({path})), {written}) writes them to read here"),
    _NPY: ("import numpy; numpy.load({path}) reads it (a dict saved with np.save needs allow_pickle=True, only for "
           "a file you trust, then .item()); save its arrays with safetensors.numpy.save_file to read them here"),
    _BURN_MPK: _BURN_CONVERTER, _BURN_MPK_GZ: _BURN_CONVERTER,
    _KERAS: "import keras; keras.saving.load_model({path}) rebuilds the model in Keras 3, and " + _KERAS_ARRAYS,
    # A checkpoint gzipped for upload or by a training script (model.pth.gz): what it holds is unknown until opened.
    _GZIP: "decompress it (gunzip -k {shell}) and point weightdoctor at the file it holds",
    _MSGPACK: ("flax.serialization.msgpack_restore reads its nested arrays; transformers 4's from_pretrained(folder, "
               "from_flax=True) converts a transformers model's to PyTorch, and save_pretrained writes safetensors"),
    # transformers 5 pops from_tf unread (modeling_utils: "Not used anymore"); 4.x converts with TensorFlow installed.
    _HDF5: ("import h5py; h5py.File({path}) holds its arrays by layer (visititems walks them), and "
            "safetensors.numpy.save_file writes them to read here; a transformers TensorFlow model's tf_model.h5 "
            "converts with transformers 4's from_pretrained(folder, from_tf=True) (TensorFlow installed; "
            "transformers 5 ignores from_tf), and save_pretrained then writes safetensors; Keras 3 weights "
            "(.weights.h5) load with your_model.load_weights({path}), your_model being the Keras model you build "
            "with the same layers (the file holds no architecture), and " + _KERAS_ARRAYS),
    # Exporters write a model over 2 GB as model.onnx beside model.onnx_data (Optimum, onnx's save_model) or
    # model.onnx.data (torch.onnx.export): the bytes alone name no tensor.
    _ONNX_DATA: ("onnx.load of the .onnx file beside it reads them as that model's initializers "
                 "(onnx.numpy_helper.to_array of each tensor in onnx.load(path).graph.initializer)"),
    _ONNX: ("the onnx package reads its weights (import onnx, onnx.numpy_helper; {{t.name: "
            "onnx.numpy_helper.to_array(t) for t in onnx.load({path}).graph.initializer}}), named as the exporter "
            "left them, not always as the PyTorch modules; an export of "
            "a Hub model (Optimum's onnx/model.onnx) usually sits beside the PyTorch weights it came from, which "
            "weightdoctor reads"),
}
# (magic at offset 0, what the file is)
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"GGUF", _GGUF),
    (b"ggjt", _GGJT), (b"tjgg", _GGJT),
    (b"ggml", _GGML), (b"lmgg", _GGML),
    (b"ggmf", _GGMF), (b"fmgg", _GGMF),
    (b"ggla", _GGLA), (b"algg", _GGLA),
    (b"\x89HDF\r\n\x1a\n", _HDF5),
    (b"\x93NUMPY", _NPY),
    (_FASTTEXT_MAGIC, _FASTTEXT),
    (b"version https://git-lfs", "a Git LFS pointer, not the weights (run `git lfs pull` in the clone)"),
)

# faiss' write_index: the index class's four-character code first (IndexIVFFlat "IwFl", IndexFlatL2 "IxF2", ...),
# then the vectors' dimension (int32) and count (int64). RVC keeps one beside each voice model (added_*.index: the
# training set's HuBERT features it retrieves from); under an .index name it was called a TensorFlow checkpoint index.
_FAISS_FOURCCS = frozenset(code.encode() for code in (
    "IxFI", "IxF2", "IxFl", "IxHe", "IxPq", "Ix2L", "IxSQ", "IxLa", "IwFd", "IwFl", "IwSq", "IwSh", "IwQR", "IwPQ",
    "IxPT", "Imiq", "IxRF", "IxM2", "IxMp", "IHNf", "IHNp", "IHNs", "IHN2", "IBxF", "IBwF", "IBFf", "IBHf", "IBM2",
    "IBMp"))


def _faiss_index(prefix: bytes) -> str | None:
    """What to say of a faiss index file, or None: its class code, dimension and vector count are its first bytes."""
    # A binary index ("IB..") writes its code size (int32) between the dimension, in bits, and the count.
    binary = prefix[:2] == b"IB"
    count_at = 12 if binary else 8
    if len(prefix) < count_at + 8 or prefix[:4] not in _FAISS_FOURCCS:
        return None
    dimension = int.from_bytes(prefix[4:8], "little", signed=True)
    count = int.from_bytes(prefix[count_at:count_at + 8], "little", signed=True)
    if not 0 < dimension <= 1 << 20 or count < 0:
        return None  # not the header faiss writes: the four letters alone prove little
    if binary and int.from_bytes(prefix[8:12], "little", signed=True) != (dimension + 7) // 8:
        return None  # a binary index's code is its dimension's bits in bytes
    vectors = f"binary vectors of {dimension} bits" if binary else f"vectors of {dimension} dimensions"
    return (f"a faiss index ({prefix[:4].decode()}: {count:,} {vectors}), read by "
            "faiss.read_index, not a checkpoint: a retrieval index, no model weights (RVC keeps its added_*.index "
            "of the training voice's features beside the .pth it loads; faiss' reader parses it in C++ and runs no "
            "pickle)")


# (file name suffix, what the file is), for formats without a reliable magic number.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".gguf", _GGUF),
    (".h5", _HDF5),
    (".hdf5", _HDF5),
    (".keras", _KERAS),
    (".onnx", _ONNX),
    (".onnx_data", _ONNX_DATA),
    (".onnx.data", _ONNX_DATA),
    (".ort", _ORT),
    (".tflite", _TFLITE),
    (".pte", "an ExecuTorch program (.pte), run by the ExecuTorch runtime"),
    (".msgpack", _MSGPACK),
    (".mpk.gz", _BURN_MPK_GZ),
    (".mpk", _BURN_MPK),
    (".npy", _NPY),
    (".npz", _NPZ),
    (".pb", _TF_PROTOBUF),
    (".index", _TF_INDEX),
    (".mlmodel", _COREML),
    (".engine", _TENSORRT),
    (".plan", _TENSORRT),  # Triton's model repository names a TensorRT engine model.plan
    (".pdparams", "a PaddlePaddle checkpoint"),
    # paddle.jit.save / save_inference_model: the program (a ProgramDesc protobuf, or PIR's JSON in Paddle 3) and
    # its parameters serialized as raw LoDTensors; neither is a pickle.
    (".pdmodel", "a PaddlePaddle inference program (.pdmodel, paddle.jit.save; its weights are in the .pdiparams "
                 "beside it)"),
    (".pdiparams", "a PaddlePaddle inference weights file (.pdiparams, paddle.jit.save), read by paddle.load or "
                   "Paddle Inference alone"),
)

# Names of non-PyTorch weights commonly found in a Hugging Face repo.
FOREIGN_WEIGHT_NAMES: tuple[str, ...] = (
    "tf_model.h5", "flax_model.msgpack", "model.onnx", "saved_model.pb", "model.ckpt.index", "model.tflite",
    "model.weights.h5", "openvino_model.xml", "openvino_model.bin",
    # rust-bert's copy of a Hub model (tch's VarStore::save: a TorchScript archive of the parameters alone).
    "rust_model.ot",
)


def _ctranslate2_spec(path: Path, prefix: bytes) -> str | None:
    """The spec name of a CTranslate2 model.bin ("WhisperSpec"), or None when the file is not one.

    CTranslate2's ModelSpec._serialize writes a uint32 binary version, then the spec's name as a uint16 length
    (counting its NUL), the name and a NUL byte: b"\\x06\\x00\\x00\\x00\\x0c\\x00WhisperSpec\\x00" for faster-whisper.
    """
    if len(prefix) < 8 or not 1 <= int.from_bytes(prefix[:4], "little") <= 64:
        return None
    length = int.from_bytes(prefix[4:6], "little")
    if not 6 <= length <= 128:
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(6 + length)
    except OSError:
        return None
    name = head[6:6 + length - 1]
    if len(head) < 6 + length or head[-1:] != b"\0" or not name.endswith(b"Spec") or not name.isalnum():
        return None
    return name.decode("ascii")


def _varint(data: bytes, at: int) -> tuple[int, int] | None:
    """A protobuf varint at `at`: (value, the offset after it), or None when the bytes end first."""
    value, shift = 0, 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return None


def _mindspore_first_tag(path: Path, prefix: bytes) -> str | None:
    """The first parameter name of a MindSpore checkpoint, or None when the file is not one.

    mindspore.save_checkpoint writes a protobuf `Checkpoint { repeated Value value = 1 }` whose Value is
    `{ string tag = 1; TensorProto tensor = 2 }`: the file opens with 0x0a, the Value's length, 0x0a, the tag's
    length, the tag ("conv1.weight"), then 0x12 and the TensorProto, whose first field is its dims (0x08) or, for a
    scalar, its type name (0x12). No pickle starts with 0x0a.
    """
    if not prefix.startswith(b"\x0a"):
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    value = _varint(head, 1)
    if value is None or head[value[1]:value[1] + 1] != b"\x0a":
        return None
    tag = _varint(head, value[1] + 1)
    if tag is None or not 1 <= tag[0] <= 1024:
        return None
    name_end = tag[1] + tag[0]
    tensor = _varint(head, name_end + 1)
    if head[name_end:name_end + 1] != b"\x12" or tensor is None or head[tensor[1]:tensor[1] + 1] not in (b"\x08",
                                                                                                       b"\x12"):
        return None
    if value[0] < tensor[1] - value[1] + tensor[0]:  # the Value must hold its tag and tensor
        return None
    try:
        name = head[tag[1]:name_end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if name.isprintable() else None


def is_openvino_weights(path: Path) -> bool:
    """Whether `path` is the weights half of an OpenVINO IR model: a `.bin` beside an `.xml` of the same stem whose
    root is `<net` (Optimum Intel's openvino_model.bin / .xml, OpenVINO's own model.bin / model.xml). The .bin is
    raw bytes with no header: named by the XML beside it, or it was read as a broken PyTorch pickle."""
    if path.suffix != ".bin" or b"<net " not in _head(path.with_suffix(".xml"), 1024):
        return False
    # Raw bytes never open as a zip's local header: an .xml beside a real pytorch_model.bin (torch.save's zip) had
    # the file refused as OpenVINO's weights. Nor as torch.save's legacy pickle, which the folder read while its
    # warning said the same file was "not read (OpenVINO)".
    return _head(path, 4) != b"PK\x03\x04" and not torch_legacy_pickle(path)


# Core ML keeps a model as a folder: an .mlpackage (Manifest.json, Data/com.apple.CoreML/model.mlmodel and its
# weights/weight.bin) or a compiled .mlmodelc; Hub repos keep them under coreml/ (Apple's and Optimum's exports).
COREML_FOLDER_SUFFIXES = (".mlpackage", ".mlmodelc")


def coreml_package(path: Path) -> Path | None:
    """The Core ML package folder (`*.mlpackage`, `*.mlmodelc`) that `path` is or lies in, else None."""
    for candidate in (path, *path.parents):
        if candidate.name.lower().endswith(COREML_FOLDER_SUFFIXES):
            return candidate
    return None


# The most subfolders of one folder that `coreml_packages_in` looks into (besides coreml/ itself): a config beside
# 30,000 folders (a data set's classes) was listed 30,000 times, seconds before the refusal. A package at the top
# is known by its name, listed or not.
MAX_FOLDERS_DESCENDED = 1000


def coreml_packages_in(folder: Path, depth: int = 3) -> list[str]:
    """Core ML package folders under `folder` (at most `depth` levels down; sorted, relative, '/'-joined):
    `coreml/text-generation/float32_model.mlpackage` in a Hub repo. Of a folder's subfolders, the first
    MAX_FOLDERS_DESCENDED (sorted) and any named coreml are looked into."""
    found: list[str] = []
    try:
        with os.scandir(folder) as listing:  # the entries' types: no stat of each
            entries = [folder / name for name in sorted(e.name for e in listing
                                                         if not e.name.startswith(".") and e.is_dir())]
    except OSError:
        return found
    for index, entry in enumerate(entries):
        if entry.name.lower().endswith(COREML_FOLDER_SUFFIXES):
            found.append(entry.name)
        elif depth > 1 and (index < MAX_FOLDERS_DESCENDED or entry.name.lower() == "coreml"):
            found += [f"{entry.name}/{name}" for name in coreml_packages_in(entry, depth - 1)]
    return found


def _coreml_weight_blob(path: Path) -> bool:
    """Whether `path` is a Core ML MIL weight blob file (an ML program's weights/weight.bin): its 64-byte storage
    header (blob count, then format version 2) is followed by the first blob's metadata, which opens with the
    sentinel 0xDEADBEEF (little-endian) at offset 64. Nothing else in it names the format."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(68)
    except OSError:
        return False
    return len(head) == 68 and head[4:8] == b"\x02\x00\x00\x00" and head[64:68] == b"\xef\xbe\xad\xde"


_COREML_READ = "which coremltools.models.MLModel loads whole"


def _coreml_kind(path: Path) -> str | None:
    """What a file inside a Core ML package is, or a lone MIL weight blob; None for anything else."""
    package = coreml_package(path.parent)
    if package is not None:
        return (f"a file of a Core ML package ({package.name}: {path.name}; the package folder is the model, "
                f"{_COREML_READ})")
    if _coreml_weight_blob(path):
        return f"a Core ML ML program's weight blob (an .mlpackage's weights/weight.bin; {_COREML_READ})"
    return None


def orbax_item(path: Path) -> Path | None:
    """The Orbax (JAX) checkpoint folder a file lies in (`default/checkpoint`, `manifest.ocdbt`,
    `ocdbt.process_0/d/...`, a step's `_CHECKPOINT_METADATA`), looked for up to three folders up; None otherwise.
    An item holds `_METADATA` beside `manifest.ocdbt` or `_sharding`; a step holds `_CHECKPOINT_METADATA`."""
    for folder in list(path.parents)[:3]:
        try:
            if (folder / "_CHECKPOINT_METADATA").is_file() or (folder / "_METADATA").is_file() and (
                    (folder / "manifest.ocdbt").is_file() or (folder / "_sharding").is_file()):
                return folder
        except OSError:
            return None
    return None


# thinc's Model.to_bytes, what each spaCy component's `model` file holds (spaCy's nlp.to_disk): srsly's msgpack of
# {"nodes", "attrs", "params", "shims"} in that order, a map of four whose first key is "nodes".
_THINC_MODEL_MAGIC = b"\x84\xa5nodes"
# A PyTorch layer's shim bytes come after the nodes, attrs and (small) params of the layers before it.
_SHIM_SCAN_BYTES = 1 << 20
_SPACY_FORMAT = "a thinc model (Model.to_disk: msgpack of its layers' parameters, spaCy's own format, not PyTorch)"


def spacy_pipeline(folder: Path) -> Path | None:
    """The spaCy pipeline folder that `folder` is, or is a component folder of (`ner/`, `transformer/`): one whose
    config.cfg has an [nlp] section (spaCy 3's nlp.to_disk) or whose meta.json names spacy_version; else None."""
    for candidate in (folder, folder.parent):
        if _nlp_config(candidate) or b'"spacy_version"' in _head(candidate / "meta.json", 1 << 16):
            return candidate
    return None


# nanotron's per-parameter files (serialize/utils.py get_path): model_<param>_pp-rank-P-of-N_tp-rank-T-of-M[_exp-...].
_NANOTRON_SHARD = "model_*_pp-rank-*-of-*_tp-rank-*-of-*.safetensors"


def nanotron_checkpoint(folder: Path) -> Path | None:
    """The nanotron checkpoint (one training step's save) that `folder` is, is inside (its model/ tree), or that a run
    folder's latest.txt names; else None.

    nanotron's save_checkpoint writes checkpoint_metadata.json, model_config.json and config.yaml beside model/,
    optimizer/, lr_scheduler/ and random/, and under model/ one safetensors file per parameter and parallel rank
    (model/model/decoder/0/pp_block/attn/qkv_proj/model_weight_pp-rank-0-of-1_tp-rank-0-of-1.safetensors, a single
    tensor named "data"), which no loader reads as one state dict.
    """
    candidates = [folder, *list(folder.parents)[:12]]
    with contextlib.suppress(OSError, ValueError):
        latest = (folder / "latest.txt").read_text(encoding="utf-8", errors="replace")[:64].strip()
        if latest and "/" not in latest and latest not in (".", ".."):
            candidates.insert(0, folder / latest)
    for candidate in candidates:
        try:
            if not (candidate / "checkpoint_metadata.json").is_file() or not (candidate / "model").is_dir():
                continue
            if next(iter((candidate / "model").rglob(_NANOTRON_SHARD)), None) is not None:
                return candidate
        except OSError:
            continue
    return None


def nanotron_message(folder: Path, checkpoint: Path) -> str:
    """What the nanotron checkpoint `folder` is, is inside or names (`nanotron_checkpoint`) holds, and how it becomes
    a folder that weightdoctor and transformers read: nanotron's own conversion script (examples/llama/, run from
    a clone of its repository as a module: it imports `.convert_weights`). The checkpoint is named by its absolute
    path: the command runs inside that clone, where `--checkpoint_path='my run/10'` as typed named nothing, and so is
    the new folder beside it that it writes (`--save_path=OUTDIR --tokenizer_name=TOKENIZER`, placeholders, made a
    folder `OUTDIR` in the clone and asked the Hub for a tokenizer `TOKENIZER`)."""
    if checkpoint == folder:
        what = "it is a nanotron checkpoint"
    elif checkpoint.parent == folder:
        what = f"its latest.txt names {checkpoint.name}/, a nanotron checkpoint"
    else:
        what = f"it is inside a nanotron checkpoint ({checkpoint})"
    return (f"{what} (checkpoint_metadata.json, model_config.json; under model/, one safetensors file per parameter "
            "and parallel rank, model_<name>_pp-rank-P-of-N_tp-rank-T-of-M.safetensors), which weightdoctor does not "
            "read as one model: nanotron's examples/llama/convert_nanotron_to_hf.py writes a transformers folder to "
            "read here (from a clone of nanotron, on a GPU: torchrun --nproc_per_node=1 -m "
            f"examples.llama.convert_nanotron_to_hf --checkpoint_path={shell_word(os.path.abspath(checkpoint))} "
            f"--save_path={shell_word(os.path.abspath(fresh_sibling(checkpoint, '.hf')))}; add --tokenizer_name= the "
            "tokenizer the run trained with, a Hub id or folder, to save it beside the weights: without it the script "
            "fetches its default, meta-llama/Llama-2-7b-chat-hf)")


# fairseq2's StandardCheckpointManager (fairseq2/checkpoint/manager.py) commits each save as
# <output_dir>/checkpoints/step_N/: the model's state dict in model/pp_PP/tp_TT/sdp_SS.pt (torch.save, one file per
# pipeline, tensor and sharded-data-parallel rank), beside trainer/rank_RR.pt, optimizer/pp_PP/tp_TT/sdp_SS.pt and
# data_reader/dp_DD.pt.
_FAIRSEQ2_MODEL_FILES = "model/pp_*/tp_*/sdp_*.pt"
_FAIRSEQ2_STEP = re.compile(r"^step_(\d+)$")
# fairseq2's FileCheckpointManager before that (an older version of the same file: save_checkpoint) committed each
# save as checkpoints/step_N/ holding the model's state dict in one file, model.pt (torch.save({"model": state_dict});
# model.T.pt per tensor-parallel rank), beside rank_R.pt (each data-parallel rank's other state: the optimizer's, the
# trainer's), replicated.pt, metadata.pt and model.yaml (an asset card: `checkpoint: model.pt`); checkpoints/ keeps a
# model.yaml and last_step, a link to the latest step_N. Such a step folder was "several weight files and no index
# (metadata.pt, model.pt, rank_0.pt); name one", its rank_0.pt "pick one with --key" (its optimizer), the run folder
# "no weight file".
_FAIRSEQ2_OLD_MODEL = re.compile(r"^model(\.\d+)?\.pt$")
_FAIRSEQ2_OLD_STATE = re.compile(r"^(rank_\d+|replicated|metadata)(\.\d+)?\.pt$")
_FAIRSEQ2_OLD_STATE_WORDS = {"replicated": "the training state replicated over its ranks",
                             "metadata": "the run's metadata (its configuration)"}


def _fairseq2_single_file_models(step: Path) -> list[Path]:
    """The model files of a step folder in fairseq2's older layout (model.pt, or model.T.pt per tensor-parallel
    rank, sorted) where the folder's name and its other files say it is one; else []."""
    if _FAIRSEQ2_STEP.match(step.name) is None and step.name != "last_step":
        return []
    try:
        entries = [entry for entry in step.iterdir() if entry.is_file()]
    except OSError:
        return []
    models = sorted((entry for entry in entries if _FAIRSEQ2_OLD_MODEL.match(entry.name)),
                    key=lambda entry: (len(entry.name), entry.name))
    if models and any(entry.name == "model.yaml" or _FAIRSEQ2_OLD_STATE.match(entry.name) for entry in entries):
        return models
    return []


def fairseq2_state_beside(path: Path) -> str | None:
    """What a file of fairseq2's older step folder that holds no weights (rank_R.pt, replicated.pt, metadata.pt) is,
    and where the model's state dict is beside it; None for any other file."""
    match = _FAIRSEQ2_OLD_STATE.match(path.name)
    models = _fairseq2_single_file_models(path.parent) if match is not None else []
    if not models:
        return None
    same_rank = path.parent / f"model{match[2] or ''}.pt"
    model = same_rank if same_rank in models else models[0]
    what = _FAIRSEQ2_OLD_STATE_WORDS.get(match[1], "one data-parallel rank's training state (the optimizer's, the "
                                                   "trainer's)")
    return (f"it is {what} in a fairseq2 checkpoint ({path.parent.name}/, in fairseq2's older layout), not the model: "
            f"fairseq2 saved the model's state dict beside it as {model.name} (under its 'model' key): point "
            f"at it, {shell_word(str(model), argument=True)}")


def fairseq2_checkpoint(folder: Path) -> tuple[Path, list[Path]] | None:
    """The fairseq2 step folder (`step_N/`) that `folder` is, is inside (its model/, model/pp_00/, ...), or that is
    the latest of the steps of a checkpoints/ folder (or of the output folder above it), with its model files
    (sorted); else None."""
    candidates = [folder, *list(folder.parents)[:3]]
    for run in (folder, folder / "checkpoints"):
        with contextlib.suppress(OSError):
            steps = [(int(match[1]), entry) for entry in run.iterdir()
                     if (match := _FAIRSEQ2_STEP.match(entry.name)) is not None and entry.is_dir()]
            candidates[1:1] = [entry for _, entry in sorted(steps, key=lambda step: step[0], reverse=True)]
    for candidate in candidates:
        try:
            files = sorted(path for path in candidate.glob(_FAIRSEQ2_MODEL_FILES) if path.is_file())
        except OSError:
            continue
        files = files or _fairseq2_single_file_models(candidate)
        if files:
            return candidate, files
    return None


def fairseq2_message(folder: Path, checkpoint: Path, files: list[Path]) -> str:
    """What the fairseq2 step `folder` is, is inside or holds as its latest (`fairseq2_checkpoint`) holds, and which of
    its files is the model's: its trainer/, optimizer/ and data_reader/ files were offered as the subfolders that
    hold weights ("point at one, e.g. step_1000/data_reader"), the model's state dict three folders down named by
    nothing."""
    if checkpoint == folder:
        what = f"it is a fairseq2 checkpoint ({checkpoint.name}/)"
    elif checkpoint.parent in (folder, folder / "checkpoints"):
        what = f"its latest step, {checkpoint.relative_to(folder)}/, is a fairseq2 checkpoint"
    else:
        what = f"it is inside a fairseq2 checkpoint ({checkpoint})"
    first = shell_word(str(files[0]), argument=True)
    if files[0].parent == checkpoint:  # the older layout: model.pt in the step folder itself
        what += " in fairseq2's older layout (FileCheckpointManager's)"
        state = sorted(path.name for path in checkpoint.iterdir() if _FAIRSEQ2_OLD_STATE.match(path.name))
        shown = (", ".join(state[:4]) + ", ..." if len(state) > 4 else
                 " and ".join(state) if len(state) < 3 else ", ".join(state[:-1]) + " and " + state[-1])
        held = (f"its {shown} {'holds' if len(state) == 1 else 'hold'} training state or the run's metadata, not the "
                "model; " if state else "")
        if len(files) == 1:
            return (f"{what}: {held}the model's state dict is {files[0].name} (torch.save, under its 'model' key): "
                    f"point at it, {first}")
        return (f"{what}: {held}the model's state dict is split over {counted(len(files), 'file')} "
                f"({', '.join(path.name for path in files[:3])}{', ...' if len(files) > 3 else ''}), one per "
                f"tensor-parallel rank, each a part of the model: point at one to read its part, e.g. {first}")
    held = ("its trainer/, optimizer/ and data_reader/ hold training state, not the model; " if
            (checkpoint / "trainer").is_dir() else "")
    if len(files) == 1:
        return (f"{what}: {held}the model's state dict is {files[0].relative_to(checkpoint)} (torch.save): point at "
                f"it, {first}")
    return (f"{what}: {held}the model's state dict is split over {counted(len(files), 'file')} under model/, one per "
            "pipeline, tensor and sharded-data-parallel rank (pp_PP/tp_TT/sdp_SS.pt), each a part of the model: point "
            f"at one to read its part, e.g. {first}")


def _nlp_config(folder: Path) -> bool:
    """Whether `folder` holds spaCy 3's config.cfg (an [nlp] section)."""
    return re.search(rb"^\[nlp\]\s*$", _head(folder / "config.cfg", 1 << 16), re.MULTILINE) is not None


def thinc_torch_shim(path: Path) -> str | None:
    """What PyTorch weights a thinc model file holds within its first MB: "hf" for spacy-transformers' HFShim (a
    Hugging Face model: its shim's config is a transformers config, with model_type), "torch" for thinc's
    PyTorchShim around another torch module, None for none. Each shim is msgpack {"config": ..., "state": <the
    torch.save bytes of its state dict>, ...}, so a zip's local header follows the "state" key's bin length."""
    data = _head(path, _SHIM_SCAN_BYTES)
    if not data.startswith(_THINC_MODEL_MAGIC):
        return None
    match = re.search(rb"\xa5state(?:\xc4.|\xc5..|\xc6....)PK\x03\x04", data, re.DOTALL)
    if match is None:
        return None
    config = data.rfind(b"\xa6config", 0, match.start())
    return "hf" if config != -1 and b"\xaamodel_type" in data[config:match.start()] else "torch"


def _hf_shim_export(pipeline: Path, component: str) -> str:
    """The Python that writes a spacy-transformers component's Hugging Face model as a folder beside the pipeline:
    `nlp.get_pipe(...)...save_pretrained(OUT)` pasted was a NameError (`nlp`, `OUT`)."""
    return (f"import spacy; spacy.load({str(pipeline)!r}).get_pipe({component!r}).model.transformer"
            f".save_pretrained({str(fresh_sibling(pipeline, '.' + component))!r}) (spacy-transformers installed) "
            "writes that transformer as a Hugging Face folder to read here")


def _thinc_kind(path: Path) -> str:
    """What a thinc model file is: a spaCy component's model, with the PyTorch weights it may hold."""
    pipeline = spacy_pipeline(path.parent)
    component = path.parent.name
    what = (f"the {component} component's model of a spaCy pipeline ({pipeline.name}/), {_SPACY_FORMAT}"
            if pipeline is not None else f"{_SPACY_FORMAT}, as spaCy saves a pipeline component's model")
    load = (f"import spacy; spacy.load({str(pipeline)!r}) loads the pipeline" if pipeline is not None else
            "spacy.load of the pipeline folder (the one holding config.cfg) loads it")
    shim = thinc_torch_shim(path)
    if shim == "hf":
        return (f"{what}; it holds a Hugging Face transformers model (spacy-transformers: a torch.save state dict "
                f"inside the msgpack): {load}, then {_hf_shim_export(pipeline, component)}")
    if shim == "torch":
        return f"{what}; it holds a PyTorch module's state dict (thinc's PyTorchShim) inside the msgpack: {load}"
    return f"{what}: {load}"


def spacy_pipeline_message(folder: Path, pipeline: Path) -> str:
    """"it is a spaCy pipeline ...": what the pipeline folder (or a component folder of it) holds and what loads it,
    naming the components whose model file holds a Hugging Face model (spacy-transformers)."""
    try:
        components = sorted(p.name for p in pipeline.iterdir() if p.is_dir() and (p / "model").is_file())
    except OSError:
        components = []
    if folder == pipeline and not _nlp_config(folder):
        # An installed pipeline package (pip install en_core_web_sm): meta.json and __init__.py at its top, the folder
        # nlp.to_disk wrote one level down (en_core_web_sm-3.7.1/), the one spacy.load(path) reads.
        try:
            # A package holds a few folders: of 50,000, each config.cfg opened took 4 s. The first ones are looked into.
            folders = sorted(p.name for p in folder.iterdir() if p.is_dir())[:_SPACY_COMPONENTS_READ]
            inner = [name for name in folders if _nlp_config(folder / name)]
        except OSError:
            inner = []
        if inner:
            return (f"it is an installed spaCy pipeline package (meta.json; its pipeline in {inner[0]}/), which "
                    f"import spacy; spacy.load({folder.name!r}) loads once installed; {inner[0]}/ "
                    + spacy_pipeline_message(folder / inner[0], folder / inner[0]).removeprefix("it "))
    if folder == pipeline:
        shown = ", ".join(f"{name}/" for name in components[:8]) + (", ..." if len(components) > 8 else "")
        files = ", ".join(name for name in ("config.cfg", "meta.json") if (folder / name).is_file())
        message = (f"it is a spaCy pipeline ({files}{'; components ' + shown if shown else ''}), whose "
                   "weights are thinc models in spaCy's own msgpack format (each component's model file), not "
                   f"PyTorch: import spacy; spacy.load({str(folder)!r}) loads it")
    elif folder.name in components:
        components = [folder.name]
        message = (f"it is the {folder.name} component of a spaCy pipeline ({pipeline}/), whose model file is "
                   f"{_SPACY_FORMAT}: import spacy; spacy.load({str(pipeline)!r}) loads the pipeline")
    else:
        # vocab/ (strings, vectors) or any other folder without a model file: it was called a component whose
        # model file is a thinc model, a file it does not hold.
        shown = ", ".join(f"{name}/model" for name in components[:4]) + (", ..." if len(components) > 4 else "")
        message = (f"it is the {folder.name}/ folder of a spaCy pipeline ({pipeline}/), which holds no "
                   "component's model; the pipeline's weights are thinc models in spaCy's own msgpack format"
                   f"{' (' + shown + ')' if shown else ''}, not PyTorch: import spacy; spacy.load({str(pipeline)!r}) "
                   "loads it")
        components = []
    # A pipeline has a handful of components: a folder of 20,000 took 6 s (a message grown by += per component, of
    # megabytes), one of 100,000 minutes. The first components' model files are looked into, and three named.
    hf = [name for name in components[:_SPACY_COMPONENTS_READ]
          if thinc_torch_shim(pipeline / name / "model") == "hf"]
    for name in hf[:3]:
        where = f"its {name}/model" if folder == pipeline else "its model file"
        message += (f"; {where} holds a Hugging Face transformers model (spacy-transformers): "
                    f"{_hf_shim_export(pipeline, name)}")
    if len(hf) > 3:
        looked = (f" (of the first {_SPACY_COMPONENTS_READ} looked into)" if len(components) > _SPACY_COMPONENTS_READ
                  else "")
        message += f"; so do the model files of {counted(len(hf) - 3, 'other component')}{looked}"
    return message


# The components of a spaCy pipeline whose model files are looked into for a Hugging Face model.
_SPACY_COMPONENTS_READ = 64


def _zip_kind(path: Path) -> str | None:
    try:
        from weightdoctor.security.archive import zipfile_names

        names = zipfile_names(path)  # parsed once for the whole command: the scan reads it again
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
        return None
    if any(n.endswith("data.pkl") for n in names):
        return None  # a torch.save archive
    if names and all(n.endswith(".npy") for n in names):
        return _NPZ
    if any(n.endswith(".weights.h5") for n in names) or "metadata.json" in names and "config.json" in names:
        return _KERAS
    if "_stable_baselines3_version" in names or "policy.pth" in names and "data" in names:
        # Stable-Baselines3's model.save (the sb3 repos of the Hub: ppo-LunarLander-v2.zip): a zip of its own, whose
        # policy.pth is the policy networks' state dict.
        return ("a Stable-Baselines3 model (model.save's zip: policy.pth is the policy's state dict, "
                "policy.optimizer.pth its optimizer's, data the algorithm's settings as JSON), which PPO.load (the "
                "algorithm's class's load) reads whole: unzip it and point weightdoctor at policy.pth")
    if "schema.json" in names and not any(n.endswith((".pth", ".pt", ".bin", ".safetensors")) for n in names):
        # skops.io.dump: a scikit-learn estimator as schema.json (the objects' tree) and its arrays as .npy files.
        return ("a skops file (skops.io.dump of a scikit-learn estimator: schema.json and its arrays), not a neural "
                "network's weights: skops.io.load reads it, trusting only the types skops.io.get_untrusted_types "
                "lists once you have checked them")
    if "MAR-INF/MANIFEST.json" in names:
        # TorchServe's torch-model-archiver zips the weights file (a torch.save or TorchScript file) with its handler
        # and MAR-INF/MANIFEST.json, which names the weights as model.serializedFile.
        weights = _mar_weights(path)
        inside = f"holding {weights}" if weights else "holding the model's weights file"
        return (f"a TorchServe model archive (.mar, torch-model-archiver) {inside} beside its handler: unzip it and "
                "point weightdoctor at that file")
    return None


def _llamafile(path: Path) -> str:
    """What to say of an Actually Portable Executable (`MZqFpD`): a llamafile when a zip appended to it holds GGUF
    weights, named; any other such program is named as one."""
    try:
        from weightdoctor.security.archive import zipfile_names

        gguf = [name for name in zipfile_names(path) if name.endswith(".gguf")]
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
        gguf = []
    if not gguf:
        return "an Actually Portable Executable (a program, such as a llamafile), not weights"
    shown = clip_middle(gguf[0], 80) + (f" and {len(gguf) - 1:,} more" if len(gguf) > 1 else "")
    return (f"a llamafile (llama.cpp built as one executable, its GGUF weights {shown} stored in the zip archive "
            "appended to it): run it, or extract the .gguf with unzip, which transformers' from_pretrained(folder, "
            "gguf_file=...) reads into PyTorch")


# llama2.c's export.py (karpathy/llama2.c): raw float32 weights after a header of 7 int32 (dim, hidden_dim,
# n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len): version 0 (legacy_export, the default, and the
# tinyllamas stories*.bin) with nothing before it, its vocab_size negative where the classifier is not shared with
# the embedding, RoPE's cos / sin tables after the weights; versions 1 and 2 after the uint32 "ak42" and the version,
# in a header padded to 256 bytes (2: Q8_0, int8 weights and their fp32 scales). They were "not a safetensors file
# nor a PyTorch pickle".
_LLAMA2C_MAGIC = struct.pack("<I", 0x616B3432)


def _llama2c_floats(dim: int, hidden: int, layers: int, heads: int, kv_heads: int, vocab: int, seq: int) -> int:
    """The float32 values of a version 0 file with this header (legacy_export's order and tables)."""
    head_size = dim // heads
    kv_dim = dim * kv_heads // heads
    per_layer = 2 * dim + 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * hidden
    return abs(vocab) * dim * (1 if vocab > 0 else 2) + layers * per_layer + dim + seq * head_size


def _llama2c_model(path: Path, prefix: bytes) -> str | None:
    """What a llama2.c model file is ("a llama2.c model (export.py version 0: dim 288, ...)"), or None."""
    head = prefix if len(prefix) >= 40 else _head(path, 40)
    if len(head) < 28:
        return None
    version = None
    if head.startswith(_LLAMA2C_MAGIC) and len(head) >= 36:
        version = struct.unpack_from("<i", head, 4)[0]
        params = struct.unpack_from("<7i", head, 8)
    else:
        params = struct.unpack_from("<7i", head, 0)
    dim, hidden, layers, heads, kv_heads, vocab, seq = params
    if not (0 < heads <= dim and 0 < kv_heads <= heads and dim % heads == 0 and heads % kv_heads == 0
            and hidden > 0 and layers > 0 and seq > 0 and vocab != 0):
        return None
    if version is None:
        try:
            size = path.stat().st_size
        except OSError:
            return None
        # No magic: only the exact size legacy_export writes tells the file from any 28 bytes of numbers.
        if size != 28 + 4 * _llama2c_floats(dim, hidden, layers, heads, kv_heads, vocab, seq):
            return None
        version = 0
    elif version not in (1, 2):
        return None
    stored = {0: "float32", 1: "float32", 2: "int8 (Q8_0) with float32 scales"}[version]
    return (f"a llama2.c model (its export.py, version {version}: dim {dim}, {counted(layers, 'layer')}, "
            f"{counted(heads, 'head')}, vocab {abs(vocab):,}; raw {stored} weights in export.py's order, no names), "
            "run by llama2.c's run.c alone; the PyTorch checkpoint it was exported from (llama2.c's train.py "
            "writes out/ckpt.pt, its state dict under 'model') or the Hugging Face model given to "
            "export.py --hf is what to read here")


def _mlc_shard(path: Path) -> bool:
    """Whether `path` is a weight shard of an MLC-LLM model: params_shard_N.bin beside an ndarray-cache.json."""
    name = path.name
    return (name.startswith("params_shard_") and name.endswith(".bin") and name[13:-4].isdigit()
            and (path.parent / "ndarray-cache.json").is_file())


def mlc_json_message(path: Path, data: object) -> str | None:
    """What to say of MLC-LLM's own JSON files given as the source, or None for any other JSON file.

    mlc-chat-config.json has a top-level model_type (and the converted model's settings under model_config): it was
    read as a transformers config, planned by plan-devices as that architecture's default size (a 7B Llama for a
    0.5B model), and inspect pointed at the folder, whose params_shard_*.bin it cannot read; ndarray-cache.json was
    "neither an index nor a model config; point at the weights beside it (params_shard_0.bin)", which fail too.
    """
    if not isinstance(data, dict):
        return None
    if path.name == "mlc-chat-config.json" and ("model_config" in data or "conv_template" in data):
        quantization = data.get("quantization")
        quantized = (f", quantized as {quantization}" if isinstance(quantization, str) and len(quantization) <= 40
                     else "")
        what = ("MLC-LLM's mlc-chat-config.json (its runtime's settings and, under model_config, those of the model "
                f"it was converted from{quantized}), not a transformers config")
    elif path.name == "ndarray-cache.json" and "records" in data:
        what = "MLC-LLM's ndarray-cache.json (where each tensor of its params_shard_*.bin lies), not weights"
    else:
        return None
    return (f"this is {what}; the params_shard_*.bin beside it are MLC-LLM's own weights, which mlc_llm "
            "convert_weight wrote from a Hugging Face model, whose safetensors (in the repo it was converted from) are "
            "what to read here")


def _tagged_torch_zip(path: Path, prefix: bytes) -> str | None:
    """What to say of a torch.save archive whose first two bytes, the zip signature's "PK", were overwritten with two
    digits, or None. GPT-SoVITS saves its v3 / v4 / v2Pro SoVITS weights so (process_ckpt's my_save2: the digits tag
    the model version) and its load_sovits_new puts "PK" back before torch.load; without a word it was "not a
    PyTorch pickle", which read as a broken download."""
    if len(prefix) < 4 or not prefix[:2].isdigit() or prefix[2:4] != b"\x03\x04":
        return None
    head = _head(path, 512)
    if len(head) < 30:
        return None
    name_length = int.from_bytes(head[26:28], "little")
    # The first record of a torch.save archive is its pickle, `<archive>/data.pkl`.
    if not head[30:30 + name_length].endswith(b"data.pkl"):
        return None
    tag = prefix[:2].decode()
    return (f"a torch.save archive whose first two bytes are {tag!r} instead of the zip signature 'PK': GPT-SoVITS "
            "writes its v3 / v4 / v2Pro SoVITS weights so (the two digits tag the model version) and its "
            "load_sovits_new puts 'PK' back before torch.load; a copy with its first two bytes set to 'PK' is a "
            "torch.save file that weightdoctor scans and reads")


def _mar_weights(path: Path) -> str | None:
    """The weights file a TorchServe archive's manifest names (model.serializedFile), or None."""
    import json
    import zlib

    try:
        # At most 1 MB decompressed: archive.read inflated the whole member first, and a manifest of 3 GB of spaces
        # (3 MB deflated) took 6 GB of memory before the cut.
        with zipfile.ZipFile(path) as archive, archive.open("MAR-INF/MANIFEST.json") as member:
            manifest = json.loads(member.read(1 << 20))
    # RuntimeError: an encrypted member (zipfile wants a password); zlib.error: a damaged deflate stream. Either
    # ended inspect with "unexpected error" where the archive is still a TorchServe one.
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, NotImplementedError, EOFError, RuntimeError,
            zlib.error):
        return None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    name = model.get("serializedFile") if isinstance(model, dict) else None
    return name if isinstance(name, str) and name else None


def _short_text(path: Path, limit: int = 4096) -> str | None:
    """The text of a small file that is printable text and no pickle (protocol 0 is ASCII too), its whitespace
    collapsed and cut at 120 characters; None otherwise. A download that failed leaves the server's reply under the
    weights' name (`Entry not found`, `{"error":"Repository not found"}`), which read as a damaged checkpoint."""
    import pickletools

    try:
        if path.stat().st_size > limit:
            return None
        with open(path, "rb") as handle:
            data = handle.read(limit)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip() or not all(char.isprintable() or char in "\t\r\n" for char in text):
        return None
    try:
        for _ in pickletools.genops(data):
            pass
        return None  # a whole pickle: read as one
    except Exception:  # noqa: BLE001 - any opcode error means "not a pickle"
        pass
    flat = " ".join(text.split())
    return flat if len(flat) <= 120 else flat[:117] + "..."


def text_reply_hint(path: Path) -> str:
    """"; it is a short text file that reads '...' (...)" for a small text file read as weights, else "".

    In a SpeechBrain checkpoint folder (CKPT.yaml beside it) the text is the Checkpointer's own: the Brain's
    `brain.ckpt` (YAML: step, avg_train_loss) or an EpochCounter's `counter.ckpt` (the epoch, a number), saved
    beside the modules' torch.save files under the same suffix; no download went wrong.
    """
    reply = _short_text(path)
    if reply is None:
        return ""
    if path.suffix == ".ckpt" and (path.parent / "CKPT.yaml").is_file():
        modules = _speechbrain_module_files(path.parent)
        example = next((name for name in modules if "model" in name), modules[0] if modules else None)
        return (f"; it is text that reads {reply!r}: in a SpeechBrain checkpoint folder (CKPT.yaml) the Brain's "
                "step (brain.ckpt) and the epoch counter (counter.ckpt) are saved as text beside the modules' "
                "weights, each module's in a .ckpt file of its own"
                + (f": name one of those (e.g. {path.parent.name}/{example})" if example else
                   ", and this folder holds none"))
    return (f"; it is a short text file that reads {reply!r} (a server's error reply saved in place of the file? "
            "download it again)")


def _speechbrain_module_files(folder: Path, limit: int = 256) -> list[str]:
    """The .ckpt files of a SpeechBrain checkpoint folder that torch.save wrote (a zip, or a pickle's PROTO), sorted;
    the first `limit` entries of the folder only (a CKPT+ folder holds one file per recoverable)."""
    from itertools import islice

    from weightdoctor.checkpoint.pytorch_format import detect_pickle_format

    found = []
    try:
        for entry in islice(folder.iterdir(), limit):
            if entry.suffix == ".ckpt" and entry.is_file() and detect_pickle_format(_head(entry, 8)) is not None:
                found.append(entry.name)
    except OSError:
        return []
    return sorted(found)


# torch.save's legacy format opens with this number, pickled (serialization.MAGIC_NUMBER).
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def torch_legacy_pickle(path: Path) -> bool:
    """Whether the file's first pickle is torch.save's legacy magic number, pickled with protocol 2 or later: a file
    torch.load reads, whatever magic of another format its first bytes spell (b"GGUF\x03..." is a BINFLOAT)."""
    import pickletools

    try:
        head = _head(path, 4096)  # a FIFO beside the file read (an OpenVINO .bin) is not waited on
        protocol, magic = 0, False
        for opcode, argument, _ in pickletools.genops(head):  # stops after the first pickle's STOP
            if opcode.name == "PROTO" and isinstance(argument, int):
                protocol = max(protocol, argument)
            magic = magic or argument == _TORCH_LEGACY_MAGIC
        return protocol >= 2 and magic
    except Exception:  # noqa: BLE001 - any opcode error means "not a pickle"
        return False


def identify(path: Path, prefix: bytes) -> str | None:
    """What a non-checkpoint file is ("a GGUF file (llama.cpp / ggml)"), or None when it is not recognised.

    `prefix` holds the file's first bytes (at least 8, 32 is better for Git LFS pointers).

    Example:
        >>> identify(Path("model.gguf"), b"GGUF\\x03\\x00\\x00\\x00")
        'a GGUF file (llama.cpp / ggml)'
    """
    for magic, kind in _MAGICS:
        if prefix.startswith(magic) and not torch_legacy_pickle(path):
            return kind
    # A zip is no file of a Core ML package (Manifest.json, a protobuf, raw weight blobs): a torch.save archive kept
    # in a folder named like one (`run.mlpackage/best.pt`) was refused by the folder's name.
    coreml = _coreml_kind(path) if not prefix.startswith(b"PK\x03\x04") else None
    if coreml is not None:
        return coreml
    orbax = orbax_item(path)
    if orbax is not None and not prefix.startswith(b"PK\x03\x04"):
        return (f"a file of an Orbax (JAX) checkpoint, whose folder {orbax.name}/ is read whole (tensorstore arrays "
                f"under _METADATA), not file by file: orbax.checkpoint restores it "
                f"(ocp.StandardCheckpointer().restore({str(orbax)!r})) and safetensors can save the arrays, or the "
                "model's own JAX-to-PyTorch conversion script converts it")
    if path.name.lower().endswith(".xml") and b"<net " in _head(path, 1024):
        return _OPENVINO_XML
    if is_openvino_weights(path):
        return (f"an OpenVINO IR model's weights ({path.with_suffix('.xml').name} beside it holds the graph; Optimum "
                "Intel's export writes them), read by OpenVINO alone (openvino.Core().read_model of the .xml); its "
                "PyTorch weights are in the repo it was exported from")
    tag = _mindspore_first_tag(path, prefix)
    if tag is not None:
        shown = tag if len(tag) <= 80 else tag[:77] + "..."
        return (f"a MindSpore checkpoint (mindspore.save_checkpoint: a protobuf of named tensors, the first "
                f"{shown!r}), read by mindspore.load_checkpoint")
    if prefix.startswith(_THINC_MODEL_MAGIC):
        return _thinc_kind(path)
    spec = _ctranslate2_spec(path, prefix)
    if spec is not None:
        return (f"a CTranslate2 model ({spec}; faster-whisper and ct2-*-converter write it), read by ctranslate2 "
                "alone; its PyTorch weights are in the repo it was converted from")
    if prefix[4:8] == b"TFL3":
        return _TFLITE
    if prefix.startswith(b"ftrt"):
        return _TENSORRT
    if prefix[4:6] == b"ET" and prefix[6:8].isdigit():
        # ExecuTorch's .pte: a FlatBuffer whose file identifier is "ET" and the schema version ("ET12").
        return ("an ExecuTorch program (.pte, torch.export lowered by executorch), run by the ExecuTorch runtime; "
                "its weights are constants inside the program, not a state dict")
    if prefix.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if prefix.startswith(b"MZqFpD"):
        return _llamafile(path)
    if _mlc_shard(path):
        return _MLC_SHARD
    llama2c = _llama2c_model(path, prefix)
    if llama2c is not None:
        return llama2c
    tagged = _tagged_torch_zip(path, prefix)
    if tagged is not None:
        return tagged
    faiss = _faiss_index(prefix)
    if faiss is not None:
        return faiss
    head = prefix.lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        # The usual cause: `wget https://huggingface.co/ORG/NAME/blob/main/model.safetensors`, the file's page.
        return ("an HTML page, not weights (a failed download? a Hub URL with /blob/ fetches the file's web page, one "
                "with /resolve/ the file itself; or use hf download)")
    name = path.name.lower()
    if ".data-" in name and "-of-" in name:
        return _TF_DATA
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix):
            return kind
    if prefix.startswith(b"\x1f\x8b") and not _gzipped_tar(path):
        # After the names: a Burn .mpk.gz is gzip too, and says more; a .tar.gz (a NeMo .nemo) is named by the
        # archive's members, as the reader's refusal lists them.
        return _GZIP
    return None


def _head(path: Path, size: int) -> bytes:
    """The first `size` bytes of a regular file; b"" for anything else. A file beside the one read (an OpenVINO .bin's
    .xml) may be a FIFO, whose open() waited forever for a writer: opened without blocking, and its type checked on
    the opened file itself, not on the name before opening it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return b""
    try:
        return os.read(fd, size) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)


def _gzipped_tar(path: Path) -> bool:
    """Whether a gzip file holds a tar archive: "ustar" at offset 257 of its first decompressed block. At most 4 KB
    of the file is decompressed, into at most 1 KB."""
    import zlib

    try:
        with open(path, "rb") as handle:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(handle.read(4096), 1024)
    except (OSError, zlib.error):
        return False
    return data[257:262] == b"ustar"


_SPLIT_GGUF = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.gguf", re.IGNORECASE)


def gguf_reading(name: str, folder: str = ".") -> str:
    """What reads a GGUF file named `name` into PyTorch: transformers' gguf_file=, or for one part of a split GGUF
    (llama.cpp's gguf-split, `-00001-of-00003.gguf`) the merge that comes first, since transformers reads one file
    (GGUFReader of gguf_file alone) and the first part holds only its share of the tensors. `folder`: the folder
    that holds it as the user named it, which from_pretrained is given (`from_pretrained(folder, ...)` pasted was a
    NameError), and the merge runs in.

    Example:
        >>> gguf_reading("m-00001-of-00002.gguf")[:36]
        'it is part 1 of 2 of a split GGUF (l'
    """
    split = _SPLIT_GGUF.fullmatch(name)
    if split is None:
        return _CONVERTERS[_GGUF].format(name=name, folder=repr(folder))
    merged = f"{split[1]}.gguf"
    first_part = f"{split[1]}-00001-of-{split[3]}.gguf"
    from weightdoctor.checkpoint.hub import snapshot_commit

    if folder != "." and snapshot_commit(Path(folder)) is not None:
        # A repo's parts in the Hub cache (a repo id, hf://): the first part by its cached path, quoted so the
        # error's naming by repo id leaves it whole (`org/m/m-00001-of-00002.gguf` named no file where the user
        # stands), and the merged file written where the user stands, not into the snapshot.
        first = shell_word(os.path.join(folder, first_part), argument=True)
        first = first if first.startswith(("'", "$'")) else f"'{first}'"
        whole, read_from, where = shell_word(merged, argument=True), ".", " where you stand (not into the Hub cache)"
    else:
        first, whole = (shell_word(os.path.join(folder, part), argument=True) if folder != "." else
                        shell_word(part, argument=True) for part in (first_part, merged))
        read_from, where = folder, ""
    return (f"it is part {int(split[2])} of {int(split[3])} of a split GGUF (llama.cpp's gguf-split): transformers "
            "reads one GGUF file (gguf_file=), not the parts of a split one; llama.cpp's llama-gguf-split --merge "
            f"{first} {whole} joins them into one file{where}, which transformers reads into "
            f"PyTorch, dequantized (import transformers; transformers.AutoModelForCausalLM.from_pretrained("
            f"{read_from!r}, gguf_file={merged!r})), and save_pretrained then writes safetensors")


def unsupported_message(kind: str, name: str = "NAME", path: str | None = None) -> str:
    """The one-line explanation for a recognised foreign file (`name`, its file name, fills in the converter's
    command where one is said; `path`, the file as the user named it, the code that reads it, `name` without it).

    Example:
        >>> unsupported_message(_NPZ, "w.npz", "ckpt/w.npz").rsplit("; ", 1)[1][:59]
        "safetensors.numpy.save_file(dict(numpy.load('ckpt/w.npz')),"
    """
    if kind == _GGUF:
        return f"this is {kind}; {_NOT_READ}; {gguf_reading(name, os.path.dirname(path or '') or '.')}"
    converter = _CONVERTERS.get(kind)
    named = name if path is None else path
    filled = _filled(converter, kind, name, named) if converter else ""
    return f"this is {kind}; {_NOT_READ}" + (f"; {filled}" if converter else "")


def _filled(converter: str, kind: str, name: str, named: str) -> str:
    """`converter` with the file named in it: its name, its path as typed as a Python literal and a shell word, and
    a TensorFlow checkpoint's prefix (a SavedModel's: variables/variables beside its saved_model.pb)."""
    prefix = (os.path.join(os.path.dirname(named), "variables", "variables") if kind == _TF_PROTOBUF
              else re.sub(r"\.(index|data-\d+-of-\d+)$", "", named))
    return converter.format(name=name, path=repr(named), shell=shell_word(named, argument=True), prefix=repr(prefix),
                            written=repr(str(safetensors_beside(named))))


def safetensors_beside(named: str) -> Path:
    """Where a printed conversion writes the safetensors file made from the file `named`: beside it, under its name
    (`ckpt/w.npz` -> `ckpt/w.safetensors`, `model.weights.h5` -> `model.weights.safetensors`), numbered where that is
    taken, never over a file; where the user stands for a file in a Hub cache snapshot.

    Example:
        >>> str(safetensors_beside("/nonexistent/w.npz"))
        '/nonexistent/w.safetensors'
    """
    from weightdoctor.checkpoint.hub import written_beside

    path = Path(named)
    stem = path.name.removesuffix(".gz").rpartition(".")[0] or path.name or "weights"
    candidate, number = written_beside(path, f"{stem}.safetensors"), 2
    while os.path.lexists(candidate):
        candidate, number = candidate.with_name(f"{stem}-{number}.safetensors"), number + 1
    return candidate


def what_it_is(path: Path) -> str | None:
    """"NAME is KIND: what reads it" for a recognised foreign file (the first of a folder's, in the folder's
    refusal), or None when it is not recognised or cannot be read."""
    # Without blocking: the file named may be a FIFO (an openvino/ folder's .bin), whose open() waited forever.
    prefix = _head(path, 32)
    if not prefix:
        return None
    kind = identify(path, prefix)
    if kind is None:
        return None
    if kind == _GGUF:
        return f"{path.name} is {kind}: {gguf_reading(path.name, str(path.parent))}"
    converter = _CONVERTERS.get(kind)
    filled = _filled(converter, kind, path.name, str(path)) if converter else ""
    return f"{path.name} is {kind}" + (f": {filled}" if converter else "")


# Subfolders Hub repos keep exported weights in: Optimum's and transformers.js' `onnx/model.onnx`.
_FOREIGN_SUBFOLDERS = ("onnx",)


_FOREIGN_SUFFIXES = (".gguf", ".onnx", ".h5", ".keras", ".msgpack", ".tflite", ".npz", ".pdparams", ".pdiparams",
                     ".mpk", ".mpk.gz", ".onnx_data", ".onnx.data", ".engine", ".pte", ".mlmodel", ".ort")

# What a sibling of another framework is, by the end of its name, said where a model folder's reading leaves it out.
_SIBLING_FORMATS: tuple[tuple[str, str], ...] = (
    ("rust_model.ot", "rust-bert"), (".h5", "TensorFlow / Keras"), (".keras", "Keras"), (".msgpack", "Flax"),
    (".tflite", "TensorFlow Lite"), (".onnx", "ONNX"), (".onnx_data", "ONNX external data"),
    (".onnx.data", "ONNX external data"), (".ort", "ONNX Runtime"), (".gguf", "GGUF"), (".npz", "NumPy / MLX"),
    (".engine", "TensorRT"), (".pte", "ExecuTorch"), (".mlmodel", "Core ML"), (".pdparams", "PaddlePaddle"),
    (".pdiparams", "PaddlePaddle"), (".mpk", "Burn"), (".mpk.gz", "Burn"),
    # A .xml or .bin is a foreign sibling only as an OpenVINO IR's (`foreign_files_in` lists no other).
    (".xml", "OpenVINO"), (".bin", "OpenVINO"),
)


def sibling_format(name: str) -> str:
    """The framework a foreign sibling file belongs to ("Flax" for flax_model.msgpack), "" when not known."""
    lowered = name.lower()
    if ".data-" in lowered and "-of-" in lowered:
        return "TensorFlow"
    return next((kind for end, kind in _SIBLING_FORMATS if lowered.endswith(end)), "")


# Foreign weights weightdoctor still reads when the file is named: paddle.save's pickle of numpy arrays.
READ_WHEN_NAMED = (".pdparams",)


def is_foreign_weight_name(name: str) -> bool:
    """Whether a file name is that of another framework's weights (tf_model.h5, weights.npz, model.onnx_data,
    rust_model.ot, a TensorFlow checkpoint's data shard), by its name alone."""
    name = name.lower()
    # Keras 3's .keras archive too: keras-io's Hub repos hold model.keras (or model.weights.h5) alone.
    return name in FOREIGN_WEIGHT_NAMES or name.endswith(_FOREIGN_SUFFIXES) or (".data-" in name and "-of-" in name)


# The most central directory bytes an .npz of arrays that are no weights (a few mel filters or statistics) is
# listed with: 64 KB is over 1,000 members.
_ARRAYS_DIRECTORY_BYTES = 1 << 16


def arrays_not_weights(path: Path) -> bool:
    """Whether an `.npz` holds arrays that are no model's weights: none of its arrays is named by a module path
    (`mel_80`, ESPnet's `count` / `sum` / `sum_square` of feats_stats.npz), where MLX's and numpy exports of a state
    dict name each `encoder.conv1.weight`. Such a file (mel filters, normalisation statistics) is one the model's
    code loads: convert left it out as 'weights in another format', and a folder's listing named it among them.
    False for any other file, or an archive that cannot be listed (taken as weights)."""
    if not path.name.lower().endswith(".npz"):
        return False
    try:
        from weightdoctor.security.archive import central_directory_size, zipfile_names

        # A sibling .npz of 300,000 members took seconds to list on every read of the folder beside it; statistics
        # and filters hold a few arrays, so an archive whose directory is larger is taken as weights, unlisted.
        if central_directory_size(path) > _ARRAYS_DIRECTORY_BYTES:
            return False
        names = zipfile_names(path)
    except Exception:  # noqa: BLE001 - zipfile raises many types (BadZipFile, ValueError, EOFError, ...)
        return False
    arrays = [name.removesuffix(".npy") for name in names]
    return bool(arrays) and not any("." in name for name in arrays)


def foreign_files_in(folder: Path) -> list[str]:
    """Names of recognised non-PyTorch weight files directly in `folder`, then in its `onnx/` and `openvino/`
    (sorted)."""
    found = []
    # The directory's own file types (a stat only for a link) and names, not a stat and a Path of each: a folder of
    # 100,000 other files took 8 s in stats and in sorting Paths, which compare slower than their names.
    with os.scandir(folder) as entries:
        files = sorted(entry.name for entry in entries if entry.is_file())
    for name in files:
        if (is_foreign_weight_name(name) and not arrays_not_weights(folder / name)) \
                or name.endswith(".bin") and is_openvino_weights(folder / name):
            found.append(name)
    for sub in _FOREIGN_SUBFOLDERS:
        try:
            found += [f"{sub}/{p.name}" for p in sorted((folder / sub).glob("*.onnx")) if p.is_file()]
        except OSError:
            continue
    with contextlib.suppress(OSError):
        # Optimum Intel's openvino/openvino_model.bin (the .xml beside it names it): an exports-only repo may hold
        # nothing else, and from_pretrained(folder) raises there.
        found += [f"openvino/{p.name}" for p in sorted((folder / "openvino").glob("*.bin"))
                  if p.is_file() and is_openvino_weights(p)]
    return found
