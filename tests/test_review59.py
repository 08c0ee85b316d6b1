"""review59: memory4's per-chunk verification and piecewise strided writes, and review56's KV-cache share of each GPU
held to where transformers keeps each layer's keys and values (`DynamicLayer.lazy_initialization`: on the device of
the layer's key states, the GPU it runs on, or accelerate's main_device for an offloaded one, "cpu" where the map
names no GPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli, run_json
from weightdoctor.writers import byte_copy

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
         "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 8, "vocab_size": 1000,
         "torch_dtype": "float16", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}
WHOLE_MODEL = ("model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head")


def _config(folder: Path, **changes: object) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA, **changes}))
    return folder


def _map(path: Path, device: int | str) -> Path:
    path.write_text(json.dumps(dict.fromkeys(WHOLE_MODEL, device)))
    return path


def test_a_sliding_window_cache_is_held_to_the_gpu_its_layers_run_on(tmp_path: Path) -> None:
    """A Mistral whose 8 layers all slide (1,024 tokens: 8.39 MB of cache) mapped whole to a GPU with 6.32 MB left
    was said to fit "in the 46.32 MB the GPUs have left in all": the per-GPU check ran only for a cache with no
    note, and a sliding window is one."""
    folder = _config(tmp_path / "mistral", architectures=["MistralForCausalLM"], model_type="mistral",
                     sliding_window=1024)
    args = ("plan-devices", str(folder), "--gpu", "20MB", "--gpu", "40MB", "--dtype", "fp16", "--kv-cache",
            "--map", str(_map(tmp_path / "map.json", 0)))
    code, planned = run_json(*args)
    kv = planned["kv_cache"]
    assert code == 0 and kv["note"].startswith("sliding-window layers keep at most 1024 tokens while generating"), kv
    assert kv["total_bytes"] == 8388608 and kv["gpu_free_bytes"] == 46318592 and kv["fits_on_gpus"] is False, kv
    assert ("KV cache: cuda:0 runs 8 of the 8 layers, so it holds 8.39 MB of the 8.39 MB cache, with 6.32 MB left: "
            "it does not fit there") in " ".join(planned["warnings"]), planned["warnings"]
    assert "_layer_bytes" not in kv and "layer_bytes" not in kv
    # Its 4 layers on each of two 40 MB GPUs hold 4.19 MB each: it fits, and nothing is said.
    code, even = run_json("plan-devices", str(folder), "--gpu", "40MB", "--gpu", "40MB", "--dtype", "fp16",
                          "--kv-cache")
    assert even["kv_cache"]["fits_on_gpus"] is True and not any(w.startswith("KV cache") for w in even["warnings"])


def test_a_gemma2_cache_counts_each_layers_own_window(tmp_path: Path) -> None:
    """Gemma-2's every other layer slides (128 tokens: 131 KB against a full layer's 2.10 MB at 2,048): a GPU's share
    is its own layers' sizes. Its 4 full layers on a 13 MB GPU (6.67 MB left) need 8.39 MB there, though a mean
    layer's 4 shares would be 4.46 MB; its 4 sliding layers on a 10 MB GPU (3.67 MB left) need 524 KB, though a mean
    layer's would not fit."""
    folder = _config(tmp_path / "gemma2", architectures=["Gemma2ForCausalLM"], model_type="gemma2", head_dim=64,
                     sliding_window=128, layer_types=["sliding_attention", "full_attention"] * 4)
    for full_on_0, gpu0, fits in ((1, "13MB", False), (0, "10MB", True)):
        mapping: dict[str, int] = {"model.embed_tokens": 1, "model.norm": 1, "model.rotary_emb": 1, "lm_head": 1}
        mapping.update({f"model.layers.{i}": 0 if i % 2 == full_on_0 else 1 for i in range(8)})
        (tmp_path / "map.json").write_text(json.dumps(mapping))
        code, planned = run_json("plan-devices", str(folder), "--gpu", gpu0, "--gpu", "40MB", "--dtype", "fp16",
                                 "--kv-cache", "--map", str(tmp_path / "map.json"))
        kv = planned["kv_cache"]
        assert code == 0 and kv["total_bytes"] == 4 * 2097152 + 4 * 131072, kv
        assert kv["total_bytes"] <= kv["gpu_free_bytes"] and kv["fits_on_gpus"] is fits, (gpu0, kv)
        warning = " ".join(w for w in planned["warnings"] if w.startswith("KV cache"))
        if fits:
            assert warning == "", warning
        else:
            assert ("KV cache: cuda:0 runs 4 of the 8 layers, so it holds 8.39 MB of the 8.91 MB cache, with 6.67 MB "
                    "left: it does not fit there") in warning, warning


def test_a_map_that_runs_no_module_on_a_gpu_keeps_its_cache_in_cpu_ram(tmp_path: Path) -> None:
    """Every module on "cpu" by hand, two 40 MB GPUs given: accelerate's main_device is "cpu", the model runs there
    and each layer's keys and values are made there. The plan said the cache "fits in the 80.00 MB the GPUs have
    left in all", fits_on_gpus true."""
    folder = _config(tmp_path / "llama")
    args = ("plan-devices", str(folder), "--gpu", "40MB", "--gpu", "40MB", "--cpu", "1GB", "--dtype", "fp16",
            "--kv-cache", "--map", str(_map(tmp_path / "map.json", "cpu")))
    code, planned = run_json(*args)
    assert code == 0 and planned["kv_cache"]["fits_on_gpus"] is False, planned["kv_cache"]
    text = " ".join(run_cli(*args).stdout.split())
    assert ("the map runs no module on a GPU: the model runs on the CPU, and its cache is kept in CPU RAM with it, "
            "not on the GPUs given") in text, text
    assert "fits in the 80.00 MB" not in text


# memory4: the byte copy's verification, a chunk of each file mapped at a time ------------------------------------

MIB = 1 << 20


def _flip_after_copy(monkeypatch: pytest.MonkeyPatch, length: int, at: int) -> None:
    """Have `byte_copy.copy_range` flip one bit of the output at byte `at` of the first range of `length` bytes it
    copies (`at` < 0 from its end), before the comparing thread reads it back."""
    real = byte_copy.copy_range

    def copy(src: int, dst: int, src_offset: int, dst_offset: int, count: int) -> None:
        real(src, dst, src_offset, dst_offset, count)
        if count == length:
            where = dst_offset + (at if at >= 0 else count + at)
            byte = os.pread(src, 1, src_offset + where - dst_offset)
            os.pwrite(dst, bytes([byte[0] ^ 0x01]), where)

    monkeypatch.setattr(byte_copy, "copy_range", copy)


@pytest.fixture(scope="module")
def spanning(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tensor of 20 MiB + 3 bytes (three chunks, the last partial), one of exactly 8 MiB, one of exactly the largest
    range compared by reads (64 KiB) and one a byte longer, an empty one and a tiny one: seeded."""
    generator = torch.Generator().manual_seed(59)
    path = tmp_path_factory.mktemp("spanning") / "spanning.safetensors"
    save_file({"a": torch.randint(0, 256, (20 * MIB + 3,), dtype=torch.uint8, generator=generator),
               "b": torch.randint(0, 256, (8 * MIB,), dtype=torch.uint8, generator=generator),
               "c": torch.randint(0, 256, (64 << 10,), dtype=torch.uint8, generator=generator),
               "d": torch.randint(0, 256, ((64 << 10) + 1,), dtype=torch.uint8, generator=generator),
               "e": torch.zeros(0, 4), "f": torch.randn(3, generator=generator)}, str(path))
    return path


@pytest.mark.parametrize(("length", "at"), [(20 * MIB + 3, 0), (20 * MIB + 3, 8 * MIB - 1), (20 * MIB + 3, 8 * MIB),
                                            (20 * MIB + 3, 16 * MIB), (20 * MIB + 3, -1), (8 * MIB, -1),
                                            (8 * MIB, 0), (64 << 10, -1), ((64 << 10) + 1, -1), (12, -1)])
def test_one_bit_anywhere_in_a_copied_tensor_is_refused(spanning: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, length: int, at: int) -> None:
    """At a chunk's first or last byte, in the last partial chunk, in a range read rather than mapped."""
    _flip_after_copy(monkeypatch, length, at)
    result = run_cli("convert", spanning, "-o", tmp_path / "out.safetensors")
    assert result.exit_code == 2, result.stdout
    assert "verification failed: the bytes of" in result.stderr and "differ from the source" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_the_copy_reads_back_as_the_source(spanning: Path, tmp_path: Path) -> None:
    done = run_json("convert", str(spanning), "-o", str(tmp_path / "out.safetensors"))
    assert done[0] == 0 and done[1]["write"]["tensors_verified"] == 6, done
    source, copy = load_file(spanning), load_file(tmp_path / "out.safetensors")
    assert source.keys() == copy.keys() and all(torch.equal(source[k], copy[k]) for k in source)


def test_small_tensors_are_compared_without_a_map_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """memory4 mapped and unmapped both files for every tensor compared: 100,000 tensors of 16 bytes took the
    comparing thread 3.5-4.2 s before memory4 and 4.9-6.5 s after it (measured here, 2 busy cores); read, 1.0-1.5 s.
    Red team 41 reads larger ranges' chunks into buffers (`_read_chunk`) too: a small range is two reads alone."""
    generator = torch.Generator().manual_seed(5)
    source = tmp_path / "tiny.safetensors"
    save_file({f"t{i}": torch.randn(4, generator=generator) for i in range(1000)}, str(source))
    chunks = []
    real_read_chunk = byte_copy.RangeComparer._read_chunk

    def counted_read_chunk(self, name, source, fd, offset, count, which):  # type: ignore[no-untyped-def]
        chunks.append(count)
        return real_read_chunk(self, name, source, fd, offset, count, which)

    monkeypatch.setattr(byte_copy.RangeComparer, "_read_chunk", counted_read_chunk)
    code, done = run_json("convert", str(source), "-o", str(tmp_path / "out.safetensors"))
    assert code == 0 and done["write"]["tensors_verified"] == 1000 and done["write"]["method"] == "copy", done
    assert chunks == []
    assert (tmp_path / "out.safetensors").read_bytes()[-16000:] == source.read_bytes()[-16000:]


def test_strided_tensors_written_a_piece_at_a_time_are_the_safetensors_librarys_bytes(tmp_path: Path) -> None:
    """memory4 writes a strided tensor 4 MiB at a time: a transpose, a permute, a bool and a bf16 transpose, a row of
    4.8 MB (taken apart itself), an 8 MB column of a 2-wide tensor, an expand, an empty transpose. The file is the one
    the safetensors library writes of their contiguous copies, byte for byte."""
    generator = torch.Generator().manual_seed(59)
    tensors = {
        "t2": torch.randn(300, 500, generator=generator).t(),
        "bf": torch.randn(64, 96, generator=generator).to(torch.bfloat16).t(),
        "bo": (torch.randn(40, 30, generator=generator) > 0).t(),
        "i8": torch.randint(-128, 127, (20, 30, 40), dtype=torch.int8, generator=generator).permute(2, 0, 1),
        "big_row": torch.randn(3, 1_200_000, generator=generator)[:, 1:],
        "col": torch.randn(2_000_000, 2, generator=generator)[:, 0],
        "exp": torch.randn(1, 500, generator=generator).expand(700, 500),
        "empty": torch.randn(0, 5).t(),
    }
    assert not any(t.is_contiguous() for name, t in tensors.items() if name != "empty")
    torch.save(tensors, tmp_path / "strided.bin")
    code, done = run_json("convert", str(tmp_path / "strided.bin"), "-o", str(tmp_path / "out.safetensors"))
    assert code == 0 and done["write"]["method"] == "torch" and done["write"]["tensors_verified"] == 8, done
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "ref.safetensors"),
              metadata={"format": "pt"})
    assert (tmp_path / "out.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_a_plan_that_places_nothing_on_the_gpus_given_streams_nothing_to_them(tmp_path: Path) -> None:
    """A 1 KB GPU holds no module: the map is {"": "cpu"}, which accelerate's dispatch_model moves to the CPU whole
    (one device, no hooks). The plan said its 13.68 MB were "moved to the GPU for every generated token" and that
    "some modules stay in RAM and are streamed to the GPU"."""
    folder = _config(tmp_path / "llama")
    args = ("plan-devices", str(folder), "--gpu", "1KB", "--cpu", "1GB", "--dtype", "fp16")
    code, planned = run_json(*args)
    assert code == 0 and planned["device_map"] == {"": "cpu"} and planned["verdict"] == "needs-cpu-offload", planned
    text = " ".join(run_cli(*args).stdout.split())
    assert ("offload: 13.68 MB in CPU RAM, 0 B on disk: the map names no GPU, so the model runs on the CPU and "
            "nothing is moved to a GPU") in text, text
    assert ("verdict: needs CPU offload (no module is placed on the GPUs given: the model runs on the CPU, nothing "
            "streamed to a GPU)") in text, text
    assert "moved to the GPU for every" not in text
