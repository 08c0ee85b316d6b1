"""A seventh round of checkpoints as other tools write them: llama.cpp's legacy GGML files and GGUF, MindSpore's
protobuf .ckpt, PaddlePaddle's files, NumPy and Flax files, PyTorch's oldest tar format, AdapterHub
(adapter-transformers) adapters, SpeechBrain Hub folders. Each one weightdoctor cannot read is refused by name, with
the tool that reads or converts it."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import run_cli, run_json


def _refusal(*args: str) -> str:
    """The one-line error of a refused source, whitespace folded (Rich wraps long lines)."""
    result = run_cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return " ".join(result.stderr.split())


def _ggml_file(path: Path, magic: int) -> None:
    """A legacy GGML model as old llama.cpp (convert-pth-to-ggml.py, quantize) wrote it: the magic as a little-endian
    uint32 (struct.pack("i", 0x67676a74), so the file starts "tjgg"), the version, then the hyperparameters
    (n_vocab, n_embd, n_mult, n_head, n_layer, n_rot, ftype) and the vocabulary and tensors."""
    hparams = struct.pack("<7i", 32000, 4096, 256, 32, 32, 128, 2)
    path.write_bytes(struct.pack("<I", magic) + struct.pack("<I", 3) + hparams + bytes(64))


@pytest.mark.parametrize(("magic", "name", "said"), [
    (0x67676A74, "ggml-model-q4_0.bin", "a legacy GGML (ggjt) file of old llama.cpp"),
    (0x67676D66, "ggml-model-f16.bin", "a legacy GGML (ggmf) file of old llama.cpp"),
    (0x67676D6C, "ggml-base.en.bin", "a legacy GGML file (unversioned 'ggml' magic: old llama.cpp, whisper.cpp"),
    (0x67676C61, "ggml-adapter-model.bin", "a legacy GGML LoRA adapter (ggla) of old llama.cpp")])
def test_a_legacy_ggml_file_is_named_with_its_converter(tmp_path: Path, magic: int, name: str, said: str) -> None:
    """llama.cpp wrote its legacy magics as little-endian uint32s: the bytes on disk are the letters reversed
    ("tjgg"), which the reader did not know (it matched "ggjt" only), so a real GGML file was "not a safetensors
    file nor a PyTorch pickle (zip or legacy)", as if it were broken."""
    path = tmp_path / name
    _ggml_file(path, magic)
    assert path.read_bytes()[:4] == struct.pack("<I", magic)  # "tjgg" for ggjt: what the reader must match
    for command in (("inspect", str(path)), ("convert", str(path), "-o", str(tmp_path / "out.safetensors"))):
        message = _refusal(*command)
        assert f"this is {said}" in message and "nor a PyTorch pickle" not in message, message
        assert ("convert_llama_ggml_to_gguf.py" in message) is (magic != 0x67676C61), message
    assert not (tmp_path / "out.safetensors").exists()
    # The way in: a file read for the model in a folder is refused by name too.
    folder = tmp_path / "repo"
    folder.mkdir()
    _ggml_file(folder / name, magic)
    assert f"this is {said}" in _refusal("plan-devices", str(folder), "--gpu", "1GB")


def test_a_gguf_file_names_the_loader_that_converts_it(tmp_path: Path) -> None:
    """A GGUF file was named, but nothing said how to get from it to what weightdoctor reads: transformers loads a
    GGUF file given by name, dequantized, and save_pretrained writes safetensors."""
    path = tmp_path / "tinyllama-1.1b-chat.Q4_K_M.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    # inspect reads it (tests/test_gguf.py); convert, which does not take one, says what reads it.
    message = _refusal("convert", str(path), "-o", str(tmp_path / "out.safetensors"))
    assert f"{path}: a GGUF file (llama.cpp): convert writes what from_pretrained loads" in message, message
    assert f"from_pretrained({str(tmp_path)!r}, gguf_file='tinyllama-1.1b-chat.Q4_K_M.gguf')" in message, message
    assert "save_pretrained then writes safetensors" in message
    # A GGUF repo (one file per quantization) says the same of its folder.
    folder = tmp_path / "TinyLlama-1.1B-Chat-GGUF"
    folder.mkdir()
    for quant in ("Q4_K_M", "Q8_0"):
        (folder / f"tinyllama-1.1b-chat.{quant}.gguf").write_bytes(path.read_bytes())
    message = _refusal("inspect", str(folder))
    assert ("GGUF (llama.cpp), read when named: weightdoctor inspect "
            f"'{folder}/tinyllama-1.1b-chat.Q4_K_M.gguf' shows its tensors and metadata; "
            "transformers reads tinyllama-1.1b-chat.Q4_K_M.gguf into "
            "PyTorch, dequantized (import transformers; transformers.AutoModelForCausalLM.from_pretrained("
            f"{str(folder)!r}, gguf_file='tinyllama-1.1b-chat.Q4_K_M.gguf'))"
            ) in message


def _varint(value: int) -> bytes:
    out = b""
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _mindspore_ckpt(path: Path, params: dict[str, np.ndarray]) -> None:
    """A checkpoint as mindspore.save_checkpoint writes it: the protobuf `Checkpoint { repeated Value value = 1 }`,
    each Value `{ string tag = 1; TensorProto tensor = 2 }`, each TensorProto `{ repeated int64 dims = 1; string
    tensor_type = 2; bytes tensor_content = 3 }` (proto2: dims unpacked), as mindspore/ccsrc/utils/checkpoint.proto
    declares."""
    data = b""
    for name, value in params.items():
        dims = b"".join(_varint(1 << 3) + _varint(d) for d in value.shape)
        tensor = dims + _field(2, b"Float32") + _field(3, value.astype("<f4").tobytes())
        data += _field(1, _field(1, name.encode()) + _field(2, tensor))
    path.write_bytes(data)


def test_a_mindspore_checkpoint_is_named_not_called_an_unknown_file(tmp_path: Path) -> None:
    """A MindSpore .ckpt (the protobuf mindspore.save_checkpoint writes; MindSpore's model zoo and MindNLP ship
    them) was "not a safetensors file nor a PyTorch pickle (zip or legacy)", the words for a damaged file."""
    path = tmp_path / "resnet50_ascend_v190_imagenet2012_official_cv_top1acc77.ckpt"
    _mindspore_ckpt(path, {"conv1.weight": np.ones((8, 3, 7, 7)), "bn1.moving_mean": np.zeros(8),
                           "global_step": np.zeros(())})
    for command in (("inspect", str(path)), ("check-dtype", str(path), "--target", "fp16"),
                    ("diff-keys", str(path), str(path)),
                    ("shard", str(path), "-o", str(tmp_path / "out"), "--max", "1MB")):
        message = _refusal(*command)
        assert ("this is a MindSpore checkpoint (mindspore.save_checkpoint: a protobuf of named tensors, the first "
                "'conv1.weight'), read by mindspore.load_checkpoint") in message, message
        assert "nor a PyTorch pickle" not in message
    assert not (tmp_path / "out").exists()
    # Other bytes that open with a newline are not taken for one.
    (tmp_path / "notes.ckpt").write_bytes(b"\n\nnot a checkpoint\n")
    message = _refusal("inspect", str(tmp_path / "notes.ckpt"))
    assert "MindSpore" not in message and "not a safetensors file nor a PyTorch pickle" in message, message


def test_paddle_inference_files_are_named(tmp_path: Path) -> None:
    """paddle.jit.save writes the program (.pdmodel, a ProgramDesc protobuf) and its weights (.pdiparams, raw
    LoDTensors): both were "not a safetensors file nor a PyTorch pickle"."""
    (tmp_path / "inference.pdmodel").write_bytes(_field(1, _field(1, b"\x08\x00\x10\xff\xff\xff\xff\x0f")))
    # save_combine: per tensor a uint32 version, the LoD levels (uint64 0), a uint32 version, the TensorDesc's
    # length and protobuf, then the data.
    desc = b"\x08\x05\x10\x04"  # data_type FP32, dims [4]
    (tmp_path / "inference.pdiparams").write_bytes(
        struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", len(desc)) + desc + np.ones(4, "<f4").tobytes())
    message = _refusal("inspect", str(tmp_path / "inference.pdmodel"))
    assert "this is a PaddlePaddle inference program (.pdmodel, paddle.jit.save; its weights are in the .pdiparams" \
        in message, message
    message = _refusal("convert", str(tmp_path / "inference.pdiparams"), "-o", str(tmp_path / "out.safetensors"))
    assert "this is a PaddlePaddle inference weights file (.pdiparams, paddle.jit.save)" in message, message


def _torch_tar(path: Path, tensors: dict[str, np.ndarray], extra_global: object = None) -> None:
    """A checkpoint in PyTorch's first format, as serialization.legacy_load reads it: a tar of `storages` (a count,
    then per storage a pickled (key, location, storage class) and its int64 size and raw data, then the views),
    `tensors` (a count, then per tensor a pickled (key, storage key, tensor class), ndim, 4 padding bytes, sizes,
    strides, offset) and `pickle` (the object, tensors as persistent ids)."""
    storages = pickle.dumps(len(tensors), protocol=2)
    records = pickle.dumps(len(tensors), protocol=2)
    for i, value in enumerate(tensors.values()):
        storages += pickle.dumps((i, "cpu", torch.FloatStorage), protocol=2)
        storages += struct.pack("<q", value.size) + value.astype("<f4").tobytes()
        strides = [s // 4 for s in value.astype("<f4").strides]
        records += pickle.dumps((100 + i, i, torch.FloatTensor), protocol=2) + struct.pack("<i", value.ndim)
        records += bytes(4) + struct.pack(f"<{value.ndim}q", *value.shape) + struct.pack(f"<{value.ndim}q", *strides)
        records += struct.pack("<q", 0)
    storages += pickle.dumps([], protocol=2)

    class Ref:
        def __init__(self, key: int) -> None:
            self.key = key

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return str(obj.key) if isinstance(obj, Ref) else None

    saved = io.BytesIO()
    state: dict[str, object] = {name: Ref(100 + i) for i, name in enumerate(tensors)}
    if extra_global is not None:
        state["hook"] = extra_global
    Pickler(saved, protocol=2).dump(state)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in (("storages", storages), ("tensors", records), ("pickle", saved.getvalue())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(archive.getvalue())


def test_a_checkpoint_in_pytorchs_tar_format_says_how_torch_reads_it(tmp_path: Path) -> None:
    """PyTorch 0.1's torch.save wrote a tar of storages, tensors and pickle. torch.load still reads it (never with
    weights_only); weightdoctor said "not a safetensors file nor a PyTorch pickle (zip or legacy)"."""
    path = tmp_path / "model_best.pth"
    _torch_tar(path, {"fc.weight": np.ones((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)})
    loaded = torch.load(path, weights_only=False)  # the reference: torch reads it
    assert torch.equal(loaded["fc.weight"], torch.ones(3, 4)) and loaded["fc.bias"].shape == (3,)
    for command in (("inspect", str(path)), ("convert", str(path), "-o", str(tmp_path / "out.safetensors"))):
        message = _refusal(*command)
        assert ("a PyTorch checkpoint in its oldest format, a tar of storages, tensors and pickle (torch.save of "
                "PyTorch 0.1), which weightdoctor does not read; for a file you trust, import torch; torch.save("
                f"torch.load({str(path)!r}, weights_only=False), {str(tmp_path / 'model_best-resaved.pth')!r}) "
                "writes it again") in " ".join(message.split()), message
        assert "nor a PyTorch pickle" not in message
    assert not (tmp_path / "out.safetensors").exists()
    # Its pickles are scanned first: one that imports a dangerous global is refused as such, never suggested to torch.
    import os

    _torch_tar(tmp_path / "evil.pth", {"w": np.ones(2, np.float32)}, extra_global=os.system)
    message = _refusal("inspect", str(tmp_path / "evil.pth"))
    assert "system" in message and "weights_only=False" not in message, message


def _adapterhub_folder(folder: Path) -> None:
    """An adapter as AdapterHub's save_adapter writes it (adapter-transformers 3.x, adapters 1.x): adapter_config.json
    (the adapter's architecture under "config", beside model_class, model_name, name, version), pytorch_adapter.bin,
    and with a head head_config.json and pytorch_model_head.bin."""
    folder.mkdir()
    prefix = "bert.encoder.layer.0.output.adapters.sst-2"
    torch.save({f"{prefix}.adapter_down.0.weight": torch.randn(2, 8), f"{prefix}.adapter_down.0.bias": torch.zeros(2),
                f"{prefix}.adapter_up.weight": torch.randn(8, 2), f"{prefix}.adapter_up.bias": torch.zeros(8)},
               folder / "pytorch_adapter.bin")
    (folder / "adapter_config.json").write_text(json.dumps({
        "config": {"architecture": None, "reduction_factor": 4, "non_linearity": "relu", "mh_adapter": False,
                   "output_adapter": True}, "hidden_size": 8, "model_class": "BertModelWithHeads",
        "model_name": "bert-base-uncased", "model_type": "bert", "name": "sst-2", "version": "3.2.1"}))
    (folder / "head_config.json").write_text(json.dumps({
        "config": {"head_type": "classification", "num_labels": 2, "layers": 2, "activation_function": "tanh"},
        "hidden_size": 8, "model_class": "BertModelWithHeads", "model_name": "bert-base-uncased",
        "model_type": "bert", "name": "sst-2", "version": "3.2.1"}))
    torch.save({"heads.sst-2.1.weight": torch.randn(8, 8), "heads.sst-2.4.weight": torch.randn(2, 8)},
               folder / "pytorch_model_head.bin")


def test_an_adapterhub_adapter_is_named_not_called_a_broken_peft_adapter(tmp_path: Path) -> None:
    """An AdapterHub adapter's adapter_config.json has no peft_type: inspect warned "PEFT cannot load this adapter"
    as if it were a damaged PEFT one, and its folder was "several weight files and no index; name one"."""
    folder = tmp_path / "bert-base-uncased-pf-sst2"
    _adapterhub_folder(folder)
    message = _refusal("inspect", str(folder))
    assert ("folder holds an AdapterHub adapter ('sst-2', for bert-base-uncased), saved by adapter-transformers or "
            "adapters: pytorch_adapter.bin holds the adapter's weights, pytorch_model_head.bin its prediction head "
            "(head_config.json)") in message, message
    assert "model.load_adapter(folder)" in message and "bert-base-uncased-pf-sst2/pytorch_adapter.bin" in message

    code, data = run_json("inspect", str(folder / "pytorch_adapter.bin"))
    assert code == 0 and data["num_params"] == 2 * 8 + 2 + 8 * 2 + 8, data
    assert data["warnings"] == ["adapter_config.json beside the weights is an AdapterHub adapter ('sst-2', for "
                                "bert-base-uncased), saved by adapter-transformers or adapters: the adapters library "
                                "loads it (model.load_adapter(folder)), PEFT cannot"], data["warnings"]
    # A config that is neither keeps its plain warning.
    for other in ({"r": 4}, {"config": {"hidden": 8}, "model_type": "bert"}):
        (folder / "adapter_config.json").write_text(json.dumps(other))
        code, data = run_json("inspect", str(folder / "pytorch_adapter.bin"))
        assert data["warnings"] == ["adapter_config.json beside the weights has no peft_type: PEFT cannot load this "
                                    "adapter"], data["warnings"]
    assert "several weight files and no index" in _refusal("inspect", str(folder))


def test_a_paddle_checkpoint_says_its_names_and_linear_weights_are_paddles(tmp_path: Path) -> None:
    """paddle.save(layer.state_dict()) pickles numpy arrays under the structured names, beside a
    StructuredToParameterName@@ table (protocol 4). It was read as "a plain Python pickle", and convert wrote its
    Linear weights, stored [in, out], to a safetensors file as if a PyTorch Linear ([out, in]) could load them; a
    PaddleNLP folder holding it was "folder holds no weight file" without a word of it."""
    folder = tmp_path / "ernie-3.0-nano-zh"
    folder.mkdir()
    state = {"ernie.embeddings.word_embeddings.weight": np.ones((10, 8), np.float32),
             "ernie.encoder.layers.0.linear1.weight": np.ones((8, 16), np.float32),  # [in, out]
             "ernie.encoder.layers.0.linear1.bias": np.zeros(16, np.float32)}
    table = {"ernie.embeddings.word_embeddings.weight": "embedding_0.w_0",
             "ernie.encoder.layers.0.linear1.weight": "linear_0.w_0",
             "ernie.encoder.layers.0.linear1.bias": "linear_0.b_0"}
    (folder / "model_state.pdparams").write_bytes(pickle.dumps({**state, "StructuredToParameterName@@": table},
                                                               protocol=4))
    code, data = run_json("inspect", str(folder / "model_state.pdparams"))
    assert code == 0 and data["num_params"] == 80 + 128 + 16, data
    assert data["skipped_entries"] == ["StructuredToParameterName@@ (dict, 3 entries)"]
    assert any("a PaddlePaddle checkpoint (paddle.save: a pickle of numpy arrays)" in w
               and "Paddle stores a Linear layer's weight as [in, out], the transpose of PyTorch's [out, in]" in w
               for w in data["warnings"]), data["warnings"]
    result = run_cli("convert", str(folder / "model_state.pdparams"), "-o", str(tmp_path / "out.safetensors"))
    assert result.exit_code == 0 and "the transpose of PyTorch's" in " ".join(result.stderr.split()), result.stderr

    message = _refusal("inspect", str(folder))
    assert ("it holds model_state.pdparams, a PaddlePaddle checkpoint (paddle.save, not PyTorch), read when named "
            "(ernie-3.0-nano-zh/model_state.pdparams)") in message, message
    assert "which weightdoctor does not read" not in message


def test_numpy_and_flax_files_say_how_to_get_safetensors_from_them(tmp_path: Path) -> None:
    """np.savez / MLX's mx.savez archives, np.save arrays and flax_model.msgpack were named, but nothing said how to
    reach a file weightdoctor reads. The npz route given is followed here to the end."""
    from safetensors.numpy import save_file

    state = {"model.layers.0.self_attn.q_proj.weight": np.ones((4, 4), np.float32), "lm_head.weight": np.ones((8, 4))}
    np.savez(tmp_path / "weights.npz", **state)
    message = _refusal("inspect", str(tmp_path / "weights.npz"))
    assert ("this is a NumPy .npz archive; weightdoctor reads safetensors and PyTorch (torch.save) checkpoints only; "
            f"import numpy; numpy.load({str(tmp_path / 'weights.npz')!r}) gives its arrays by name; import numpy, "
            "safetensors.numpy; safetensors.numpy.save_file("
            f"dict(numpy.load({str(tmp_path / 'weights.npz')!r})), {str(tmp_path / 'weights.safetensors')!r}) "
            "writes them to read here") in message, message
    save_file(dict(np.load(tmp_path / "weights.npz")), str(tmp_path / "weights.safetensors"))
    code, data = run_json("inspect", str(tmp_path / "weights.safetensors"))
    assert code == 0 and data["num_params"] == 16 + 32, data

    np.save(tmp_path / "state.npy", np.array(state, dtype=object), allow_pickle=True)
    message = _refusal("inspect", str(tmp_path / "state.npy"))
    assert "this is a NumPy .npy array" in message and "allow_pickle=True, only for a file you trust" in message
    (tmp_path / "flax_model.msgpack").write_bytes(b"\x81\xa6params\x80")
    message = _refusal("inspect", str(tmp_path / "flax_model.msgpack"))
    assert "this is a Flax msgpack checkpoint" in message and "flax.serialization.msgpack_restore" in message


def test_an_adapterhub_adapter_against_its_base_model_is_an_adapter_that_fits(tmp_path: Path) -> None:
    """diff-keys ADAPTER BASE for an AdapterHub adapter called every base weight "unknown: these weights will not
    load" (error, exit 1) and told to load the adapter "through PEFT", which cannot; the adapters library loads it."""
    from transformers import BertConfig, BertModel

    def bert(hidden: int, where: Path) -> None:
        torch.manual_seed(0)
        BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                             vocab_size=30, max_position_embeddings=16)).save_pretrained(where)

    _adapterhub_folder(tmp_path / "adapter")
    bert(8, tmp_path / "bert")
    code, data = run_json("diff-keys", str(tmp_path / "adapter" / "pytorch_adapter.bin"), str(tmp_path / "bert"))
    assert code == 0 and data["worst_severity"] == "info", data
    reasons = {i["name"]: (i["reason"], i["severity"], i["detail"]) for i in data["missing"] + data["unexpected"]}
    assert reasons["embeddings.word_embeddings.weight"] == ("adapter-base", "info", ""), reasons
    assert reasons["bert.encoder.layer.0.output.adapters.sst-2.adapter_up.weight"] == (
        "adapter", "info", "bottleneck adapter 'sst-2' on encoder.layer.0.output"), reasons
    assert any(n.startswith("A is an AdapterHub adapter (sst-2; adapter-transformers or adapters) on 1 module, 1 "
                            "of them in B with shapes that fit") and "model.load_adapter(folder)" in n
               for n in data["notes"]), data["notes"]
    # A base of another width does not take it.
    bert(16, tmp_path / "bert-wider")
    code, data = run_json("diff-keys", str(tmp_path / "adapter" / "pytorch_adapter.bin"), str(tmp_path / "bert-wider"))
    assert code == 1, data
    assert any(i["severity"] == "error" and i["detail"] == "2×8 does not fit encoder.layer.0.output in B"
               for i in data["unexpected"]), data["unexpected"]


def test_a_folder_of_ggml_quantizations_is_named_not_called_variants(tmp_path: Path) -> None:
    """TheBloke's GGML repos hold one .bin per quantization (llama-2-7b-chat.ggmlv3.q4_0.bin, ...q5_K_M.bin): the
    folder was "only variants of llama-2-7b-chat ... from_pretrained reads one only when asked, variant='q4_0'",
    which no loader does with GGML files."""
    folder = tmp_path / "Llama-2-7B-Chat-GGML"
    folder.mkdir()
    for quant in ("q4_0", "q5_K_M"):
        _ggml_file(folder / f"llama-2-7b-chat.ggmlv3.{quant}.bin", 0x67676A74)
    (folder / "README.md").write_text("# Llama 2 7B Chat - GGML\n")
    for command in (("inspect", str(folder)), ("plan-devices", str(folder), "--gpu", "1GB")):
        message = _refusal(*command)
        assert ("folder's weight files (llama-2-7b-chat.ggmlv3.q4_0.bin, llama-2-7b-chat.ggmlv3.q5_K_M.bin) are not "
                "PyTorch checkpoints: each is a legacy GGML (ggjt) file of old llama.cpp") in message, message
        assert "convert_llama_ggml_to_gguf.py" in message and "variant" not in message
    # Beside a PyTorch file they are not in the way of the usual "name one".
    torch.save({"w": torch.ones(2)}, folder / "consolidated.bin")
    assert "several weight files and no index" in _refusal("inspect", str(folder))


def test_planning_an_adapterhub_adapter_says_the_base_is_not_planned(tmp_path: Path) -> None:
    """plan-devices on an AdapterHub adapter folder planned its few kB as the model, "fits on the GPUs", without the
    word it says for a PEFT adapter: the base model it is loaded into is what needs the memory."""
    folder = tmp_path / "bert-base-uncased-pf-sst2"
    _adapterhub_folder(folder)
    (folder / "pytorch_model_head.bin").unlink()
    (folder / "head_config.json").unlink()
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0, data
    assert ("this is an AdapterHub adapter ('sst-2', for bert-base-uncased), saved by adapter-transformers or "
            "adapters: only its own weights are planned, not the base model the adapters library loads it into "
            "(model.load_adapter); plan the base (weightdoctor plan-devices bert-base-uncased --gpu 1GB) and add the "
            "adapter's size") in data["warnings"], data["warnings"]


def test_a_speechbrain_hub_model_names_its_module_files(tmp_path: Path) -> None:
    """A SpeechBrain model as the Hub holds it (speechbrain/spkrec-ecapa-voxceleb: hyperparams.yaml, whose
    Pretrainer loads embedding_model.ckpt, classifier.ckpt and mean_var_norm_emb.ckpt, each torch.save'd on its own)
    was "several weight files and no index; name one", as if they were stray files."""
    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    torch.save({"blocks.0.conv.conv.weight": torch.randn(8, 4, 5), "fc.conv.weight": torch.randn(16, 8, 1)},
               folder / "embedding_model.ckpt")
    torch.save({"out.w.weight": torch.randn(10, 16)}, folder / "classifier.ckpt")
    torch.save({"count": 5, "glob_mean": torch.zeros(16), "glob_std": torch.ones(16)},
               folder / "mean_var_norm_emb.ckpt")
    (folder / "hyperparams.yaml").write_text("pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
                                             "  loadables:\n    embedding_model: !ref <embedding_model>\n")
    (folder / "label_encoder.txt").write_text("'id10001' => 0\n")
    message = _refusal("inspect", str(folder))
    assert ("a SpeechBrain pretrained model (hyperparams.yaml, which from_hparams reads): its Pretrainer loads each "
            "module from a .ckpt file of its own (classifier.ckpt, embedding_model.ckpt, mean_var_norm_emb.ckpt)") \
        in message, message
    assert "(e.g. spkrec-ecapa-voxceleb/embedding_model.ckpt)" in message and "several weight files" not in message
    code, data = run_json("inspect", str(folder / "embedding_model.ckpt"))
    assert code == 0 and data["num_params"] == 8 * 4 * 5 + 16 * 8, data
