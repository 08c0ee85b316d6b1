"""perf16: diff-keys --model-class runs transformers' fp8 dequantization once per distinct input shape (outputs
equal with and without the memo); a zip's raw central-directory view builds no second member for each record
zipfile's view already lists."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks.deepseek_synth import write_deepseek_v3
from fixtures.zips import write_many_entry_zip as _many_entry_zip
from tests.helpers import fp8_block_state_dict, run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")

from weightdoctor import load_simulation  # noqa: E402
from weightdoctor.security import archive  # noqa: E402


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deepseek") / "deepseek-v3"
    write_deepseek_v3(folder, layers=5, experts=8, shards=6)
    return folder


@pytest.fixture(scope="module")
def fp8_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fixlist23's FineGrainedFP8 Llama: each layer's projections in float8 with their [128, 128] block scales."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, vocab_size=256,
                                      tie_word_embeddings=False)
    state_dict = fp8_block_state_dict(transformers.LlamaForCausalLM(config).state_dict(),
                                      lambda name: name.startswith("model.layers.") and name.endswith("proj.weight"))
    folder = tmp_path_factory.mktemp("fp8") / "fp8"
    folder.mkdir()
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config.to_dict() | {
        "torch_dtype": "bfloat16", "quantization_config": {
            "quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}}))
    return folder


def _diff_keys(folder: Path, model_class: str) -> tuple[int, str]:
    result = run_cli("diff-keys", str(folder), "--model-class", model_class, "--config", str(folder / "config.json"),
                     "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, result.stdout


def _counting_dequantize(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    real = fp8.Fp8Dequantize._dequantize_one

    def counting(self: Any, quantized: Any, scales: Any, output_dtype: Any = None) -> Any:
        calls.append(tuple(quantized.shape))
        return real(self, quantized, scales, output_dtype=output_dtype)

    monkeypatch.setattr(fp8.Fp8Dequantize, "_dequantize_one", counting)
    return calls


@pytest.mark.parametrize("layout", ["deepseek", "fp8_llama"])
def test_dequantize_memo_changes_no_output(layout: str, request: pytest.FixtureRequest,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = request.getfixturevalue(layout)
    model_class = "DeepseekV3ForCausalLM" if layout == "deepseek" else "AutoModelForCausalLM"
    memoized = _diff_keys(folder, model_class)
    monkeypatch.setattr(load_simulation.MetaDequantizeMemo, "attach", lambda self, converter: None)
    assert _diff_keys(folder, model_class) == memoized  # exit code and every byte of --json
    report = json.loads(memoized[1])
    if not torch.cuda.is_available():  # dequantized: the scales merged into their weights
        assert not [u for u in report["unexpected"] if u["name"].endswith("weight_scale_inv")]
    if layout == "deepseek" and not torch.cuda.is_available():
        # kv_a_proj_with_mqa's error (576 rows on 5 scale rows), raised again from the memo for layers 1 to 4
        details = [m["detail"] for m in report["missing"]]
        assert len(details) == 5 and len(set(details)) == 1 and "not divisible by scale grid" in details[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="from_pretrained dequantizes only without a GPU")
def test_fp8_dequantization_runs_once_per_distinct_input(deepseek: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DeepSeek-V3's 45k fp8 expert weights each ran transformers' dequantization on meta tensors (half of
    # diff-keys --model-class's 17.7 s of CPU at full scale); they come in a handful of shapes.
    calls = _counting_dequantize(monkeypatch)
    code, stdout = _diff_keys(deepseek, "DeepseekV3ForCausalLM")
    assert code == 1 and json.loads(stdout)["total_a"] == 279
    shapes = {(2048, 7168), (7168, 2048), (1536, 7168), (24576, 1536), (576, 7168), (32768, 512), (7168, 16384),
              (18432, 7168), (7168, 18432)}
    assert set(calls) == shapes
    # once per shape in each of the load simulations (the first and the rename search's re-runs), not once per
    # fp8 weight (69 of them here in each)
    assert len(calls) <= 5 * len(shapes) < 69


def test_memo_repeats_results_and_errors_as_transformers_makes_them() -> None:
    memo = load_simulation.MetaDequantizeMemo()
    op = fp8.Fp8Dequantize(None)
    converter = type("Converter", (), {"operations": [op]})()
    memo.attach(converter)
    weight = torch.empty((256, 384), dtype=torch.float8_e4m3fn, device="meta")
    scales = torch.empty((2, 3), dtype=torch.float32, device="meta")
    first, second = (op._dequantize_one(weight, scales, output_dtype=torch.bfloat16) for _ in range(2))
    expected = fp8.Fp8Dequantize(None)._dequantize_one(weight, scales, output_dtype=torch.bfloat16)
    for got in (first, second):
        assert (got.shape, got.stride(), got.dtype, got.device.type) == (
            expected.shape, expected.stride(), expected.dtype, expected.device.type)
    assert second is not first and memo.calls == 1
    # another output dtype is another input
    assert op._dequantize_one(weight, scales, output_dtype=torch.float32).dtype == torch.float32
    assert memo.calls == 2
    ragged = torch.empty((5, 3), dtype=torch.float32, device="meta")
    messages = []
    for _ in range(2):
        with pytest.raises(ValueError, match="not divisible by scale grid") as raised:
            op._dequantize_one(weight, ragged)
        messages.append(str(raised.value))
    assert messages[0] == messages[1] == "Weight shape (256, 384) not divisible by scale grid (5, 3)."
    assert memo.calls == 3
    # real tensors are not memoized: their values matter
    real_weight = torch.ones((128, 128), dtype=torch.float8_e4m3fn)
    for value in (1.0, 2.0):
        out = op._dequantize_one(real_weight, torch.full((1, 1), value), output_dtype=torch.float32)
        assert float(out[0, 0]) == value


def _zip_cases(tmp_path: Path) -> dict[str, bytes]:
    """Archives whose two central-directory views agree, differ, or cannot be read."""
    saved = io.BytesIO()
    generator = torch.Generator().manual_seed(0)
    torch.save({f"layers.{i}.weight": torch.randn(3, 5, generator=generator) for i in range(40)}, saved)
    cases = {"torch.save": saved.getvalue(), "many": _many_entry_zip(tmp_path / "many.bin", 3000).read_bytes()}
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive_file:
        archive_file.writestr("archive/data.pkl", b"\x80\x02}q\x00." * 50)
        archive_file.writestr("archive/big", b"\0" * 100_000)
        archive_file.writestr("archive/" + "n" * 300, b"x")
    cases["deflated"] = deflated.getvalue()
    cases["prepended"] = b"\0" * 77 + cases["deflated"]  # zipfile shifts every offset, miniz does not
    cases["joined"] = cases["deflated"] + cases["torch.save"]
    cases["truncated"] = cases["torch.save"][: len(cases["torch.save"]) // 2]
    # One record miniz's view lists and zipfile's does not: the classic end record points at a second directory.
    many = bytearray(cases["many"])
    cases["renamed local header"] = bytes(many.replace(b"archive/data/7", b"archive/data/X", 1))
    end = many.rfind(b"PK\x05\x06")
    count, size, offset = struct.unpack_from("<HII", many, end + 10)
    cases["short directory"] = bytes(many[:end]) + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count - 1, count - 1,
                                                               size, offset, 0)
    return cases


def _layout(data: bytes) -> archive.ZipLayout:
    with archive.command_cache():
        return archive.read_layout(io.BytesIO(data), len(data))


def test_raw_view_skips_only_the_members_zipfile_holds(tmp_path: Path) -> None:
    # The raw (miniz) view returns the members zipfile's view lacks, and counts every member with a local header
    # as it did when it returned them all: what _read_layout compares is unchanged.
    for name, data in _zip_cases(tmp_path).items():
        handle = io.BytesIO(data)
        try:
            strict = archive._from_central_directory(handle, len(data))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error):
            continue
        known = {(m.name, m.header_offset): m for m in strict.members}
        for offset, size, _declared in archive._central_directory_locations(handle, len(data), []):
            everything, entries, with_header = archive._raw_central_directory(handle, len(data), offset, size)
            unknown, entries_again, with_header_again = archive._raw_central_directory(
                handle, len(data), offset, size, dict(known))
            assert (entries_again, with_header_again) == (entries, with_header) == (entries, len(everything)), name
            assert unknown == [m for m in everything if (m.name, m.header_offset) not in known], name
    layouts = {name: _layout(data) for name, data in _zip_cases(tmp_path).items()}
    assert len(layouts["many"].members) == 3000 and not layouts["many"].problems
    assert any("local header names it 'archive/data/X'" in n for n in layouts["renamed local header"].notes)
    assert any("different readers" in p for p in layouts["prepended"].problems)
    assert any("different readers" in p for p in layouts["joined"].problems)


def test_members_both_views_list_are_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The raw (miniz) view built a ZipMember for each of the million records zipfile's view already held, then
    # dropped it: about a second of inspect on a 1M-entry zip. It builds only those zipfile does not list.
    built = {"n": 0}
    real = archive.ZipMember.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built["n"] += 1
        real(self, *args, **kwargs)

    monkeypatch.setattr(archive.ZipMember, "__init__", counting)
    cases = _zip_cases(tmp_path)
    layout = _layout(cases["many"])
    assert len(layout.members) == 3000 and built["n"] == 3000
    built["n"] = 0
    layout = _layout(cases["short directory"])  # the views disagree on nothing but the count miniz goes by
    assert any("counts 2,999 entries" in note for note in layout.notes), layout.notes
    assert built["n"] == 3000


def test_inspect_of_a_many_entry_zip_says_what_it_said(tmp_path: Path) -> None:
    source = _many_entry_zip(tmp_path / "many.bin", 2000)
    result = run_cli("inspect", str(source), "--json")
    assert result.exit_code == 2
    assert "many.bin" in result.stderr and "no data.pkl record" in result.stderr and "Traceback" not in result.stderr
