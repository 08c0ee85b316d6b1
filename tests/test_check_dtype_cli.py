"""`weightdoctor check-dtype` through the CLI: JSON schema and values, tables, --fail-on exit codes, bad input."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fixtures.dtype_fixtures import build_dtype_fixtures, planted_state_dict
from tests.helpers import REPO_ROOT, run_cli, run_json, run_subprocess

TARGET_KEYS = {"verdict", "overflow", "underflow", "subnormal", "max_rel_error", "tensors"}


@pytest.fixture(scope="module")
def dfx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_dtype_fixtures(tmp_path_factory.mktemp("dtype-cli"))


def test_json_schema_and_values(dfx: dict[str, Path]) -> None:
    code, data = run_json("check-dtype", dfx["planted"], "--target", "fp16,bf16")
    assert code == 0
    assert {"stored_dtypes", "config_torch_dtype", "targets", "recommendation"} <= set(data)
    assert set(data["targets"]) == {"fp16", "bf16"}
    for target in data["targets"].values():
        assert set(target) >= TARGET_KEYS
        assert {"name", "dtype", "verdict", "overflow", "underflow", "subnormal", "changed", "max_rel_error"} <= set(
            target["tensors"][0])
    assert data["config_torch_dtype"] == "float32"
    assert data["stored_dtypes"]["float16"] == {"num_tensors": 1, "num_params": 64, "bytes": 128}
    assert data["stored_dtypes"]["int64"]["num_tensors"] == 1
    assert data["mixed_storage"] is True
    fp16 = data["targets"]["fp16"]
    # Counts equal torch's own .to(float16) over the state dict the fixture wrote.
    state = planted_state_dict()
    expected_overflow = sum(
        int((torch.isfinite(t) & ~torch.isfinite(t.to(torch.float16))).sum()) for t in state.values()
        if t.is_floating_point()
    )
    expected_underflow = sum(
        int(((t != 0) & torch.isfinite(t) & (t.to(torch.float16) == 0)).sum()) for t in state.values()
        if t.is_floating_point()
    )
    assert fp16["overflow"] == expected_overflow == 5
    assert fp16["underflow"] == expected_underflow
    assert fp16["verdict"] == "unsafe" and data["targets"]["bf16"]["verdict"] == "lossy"
    assert data["targets"]["bf16"]["overflow"] == 0
    rec = data["recommendation"]
    assert rec["best"] == "bf16"
    regex = re.search(r"--keep-fp32 '([^']+)'", rec["commands"]["fp16"]).group(1)
    unsafe = {t["name"] for t in fp16["tensors"] if t["verdict"] == "unsafe"}
    assert {n for n in state if re.search(regex, n)} == unsafe
    assert "weightdoctor convert" in rec["text"] and "fp16 is unsafe" in rec["text"]
    assert data["limits"].startswith("Weights alone cannot tell")
    assert data["sample"] is None and data["local"] is None


@pytest.mark.parametrize(
    "source, args, code",
    [
        ("planted", ["--target", "fp16", "--fail-on", "unsafe"], 1),
        ("planted", ["--target", "fp16", "--fail-on", "lossy"], 1),
        ("planted", ["--target", "bf16", "--fail-on", "unsafe"], 0),
        ("planted", ["--target", "bf16", "--fail-on", "lossy"], 1),
        ("planted", ["--target", "fp16"], 0),
        ("bert-bf16-no-dtype", ["--target", "bf16,fp32", "--fail-on", "lossy"], 0),
        ("bert-bf16-no-dtype", ["--target", "fp16", "--fail-on", "unsafe"], 0),
    ],
)
def test_fail_on_exit_codes(dfx: dict[str, Path], source: str, args: list[str], code: int) -> None:
    result = run_cli("check-dtype", dfx[source], *args, "--json")
    assert result.exit_code == code
    data = json.loads(result.stdout)  # the JSON is printed whatever the exit code
    assert set(data["targets"]) == set(args[1].split(","))


def test_table_output(dfx: dict[str, Path]) -> None:
    result = run_cli("check-dtype", dfx["planted"], "--target", "fp16,bf16")
    assert result.exit_code == 0
    out = result.stdout
    for expected in ("weightdoctor check-dtype", "What each cast does", "Worst tensors for fp16", "unsafe",
                     "recommendation", "--keep-fp32", "Weights alone cannot tell", "overflows"):
        assert expected in out, expected
    assert result.stderr == ""


def test_default_targets_add_fp32_for_low_precision(dfx: dict[str, Path]) -> None:
    code, data = run_json("check-dtype", dfx["bert-bf16-says-fp16"])
    assert code == 0 and list(data["targets"]) == ["fp16", "bf16", "fp32"]
    assert data["targets"]["bf16"]["verdict"] == "safe" and data["targets"]["fp32"]["verdict"] == "safe"
    assert data["config_agreement"]["status"] == "differs"
    assert "silent re-cast" in data["config_agreement"]["message"]


def test_fp8_targets(dfx: dict[str, Path]) -> None:
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    code, data = run_json("check-dtype", dfx["planted"], "--target", "fp8_e4m3,fp8_e5m2")
    x = torch.tensor([1e5])
    e4m3_saturates = bool(torch.isfinite(x.to(torch.float8_e4m3fn).float()).all())
    e4m3 = data["targets"]["fp8_e4m3"]
    assert ("saturates" in e4m3["torch_behaviour"]) == e4m3_saturates
    assert (e4m3["saturated"] > 0) == e4m3_saturates and e4m3["verdict"] == "unsafe"
    assert "per-tensor or per-block scales" in data["recommendation"]["text"]


def test_sample_and_filter(dfx: dict[str, Path]) -> None:
    code, data = run_json("check-dtype", dfx["planted"], "--target", "fp16", "--sample", "100", "--filter", r"^stack\.")
    assert code == 0
    rows = data["targets"]["fp16"]["tensors"]
    assert [r["name"] for r in rows] == ["stack.0.norm.weight", "stack.1.norm.weight"]
    assert all(r["values"] == 100 for r in rows)
    assert data["sample"]["values_per_tensor"] == 100 and "seed 0" in data["sample"]["note"]
    _, again = run_json("check-dtype", dfx["planted"], "--target", "fp16", "--sample", "100", "--filter", r"^stack\.")
    assert again["targets"] == data["targets"]
    result = run_cli("check-dtype", dfx["planted"], "--target", "fp16", "--sample", "100")
    assert "sampled" in result.stdout


def test_local_on_this_machine(dfx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, data = run_json("check-dtype", dfx["bert-fp32-says-bf16"], "--target", "bf16", "--local")
    assert code == 0
    assert data["local"]["cuda_available"] is False and data["local"]["devices"] == []
    assert data["local"]["auto_dtype"]["dtype"] == "bfloat16"
    assert "torch_dtype" in data["local"]["auto_dtype"]["reason"]
    result = run_cli("check-dtype", dfx["bert-fp32-says-bf16"], "--target", "bf16", "--local")
    assert "no CUDA device" in result.stdout and "bfloat16" in result.stdout


def test_repo_id_source(fx: dict[str, Path], hub_env: Path) -> None:
    code, data = run_json("check-dtype", "weightdoctor-tests/tiny-bert", "--target", "fp16")
    assert code == 0 and data["targets"]["fp16"]["verdict"] in ("lossy", "unsafe")
    assert sum(c["num_params"] for c in data["stored_dtypes"].values()) == 20077


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "fp7"], "unknown target dtype 'fp7'"),
        (["--fail-on", "maybe"], "--fail-on 'maybe': choose one of info, warn, error, unsafe, lossy"),
        (["--sample", "0"], "--sample must be a positive number"),
        (["--filter", "("], "bad regular expression"),
    ],
)
def test_bad_usage_exit_2(dfx: dict[str, Path], args: list[str], message: str) -> None:
    result = run_cli("check-dtype", dfx["planted"], *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_input_exit_2(tmp_path: Path) -> None:
    missing = run_cli("check-dtype", tmp_path / "nope.safetensors")
    assert missing.exit_code == 2 and "no such file or directory" in missing.stderr
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    result = run_cli("check-dtype", junk)
    assert result.exit_code == 2 and str(junk) in result.stderr and "Traceback" not in result.stderr



def test_a_filter_that_matches_nothing_or_a_negative_worst_is_bad_usage(dfx: dict[str, Path]) -> None:
    """A CI gate (`--fail-on lossy --filter ...`) must not pass because a typo left nothing to check."""
    source = next(iter(dfx.values()))
    for args in (("check-dtype", source, "--filter", "no_such_name", "--fail-on", "lossy"),
                 ("inspect", source, "--stats", "--filter", "no_such_name", "--fail-on", "warn"),
                 ("inspect", source, "--filter", "no_such_name")):
        result = run_cli(*args)
        assert result.exit_code == 2 and "--filter 'no_such_name' matches no tensor name" in result.stderr, args
    result = run_cli("check-dtype", source, "--worst", "-1")
    assert result.exit_code == 2 and "--worst must be 0 or more" in result.stderr


def test_help_does_not_import_torch() -> None:
    proc = run_subprocess("check-dtype", "--help")
    assert proc.returncode == 0 and "--fail-on" in proc.stdout
    code = "import sys, weightdoctor.cli, weightdoctor.commands.check_dtype; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.stdout.strip() == "False"


def test_memory_figures_are_what_convert_writes(tmp_path: Path) -> None:
    """The plain cast and the suggested `--keep-fp32` both: fp8 tensors stay 1 byte, the regex's every match fp32."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    tensors = {f"layers.{i}.{part}.weight": torch.randn(16, 16, generator=generator)
               for i in range(3) for part in ("attn", "mlp", "norm")}
    tensors["layers.0.norm.weight"][0, 0] = 1e6  # overflow fp16: two norms are the offenders, and the
    tensors["layers.1.norm.weight"][0, 0] = 1e6  # suggested regex covers the third as well
    tensors["layers.0.scale"] = torch.randn(16, 16, generator=generator).to(torch.float8_e4m3fn)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    code, data = run_json("check-dtype", tmp_path / "model.safetensors")
    fp16 = data["targets"]["fp16"]
    assert fp16["keep_fp32"], fp16
    code, plain = run_json("convert", tmp_path / "model.safetensors", "-o", tmp_path / "plain.safetensors",
                           "--dtype", "fp16", "--allow-overflow")
    assert code in (0, 1) and plain["plan"]["total_bytes"] == fp16["memory_bytes"]
    code, kept = run_json("convert", tmp_path / "model.safetensors", "-o", tmp_path / "kept.safetensors",
                          "--dtype", "fp16", "--keep-fp32", fp16["keep_fp32"])
    assert code == 0 and kept["plan"]["total_bytes"] == fp16["keep_fp32_memory_bytes"]


def test_tied_weights_are_cast_once_in_a_pickle_as_in_its_safetensors(fx: dict[str, Path]) -> None:
    """gpt2's lm_head.weight is transformer.wte.weight: the .bin (both names, one storage) and the
    safetensors save (one name) give the same figures, and the figures inspect gives."""
    results = {}
    for form in (fx["files"] / "gpt2-tied.bin", fx["gpt2"]):
        code, data = run_json("check-dtype", form, "--target", "fp16")
        assert code in (0, 1), data
        target = data["targets"]["fp16"]
        results[form.name] = (data["stored_dtypes"], data["memory_bytes"]["stored"], target["tensors_checked"],
                              target["values"], target["changed"])
        _, inspected = run_json("inspect", form)
        assert data["stored_dtypes"]["float32"]["num_params"] == inspected["num_params"]
    first, second = results.values()
    assert first == second


def test_a_filter_matching_only_the_tied_name_still_checks_the_tensor(fx: dict[str, Path]) -> None:
    """`--filter lm_head` on gpt2's .bin, where lm_head.weight is the embedding under a second name."""
    code, data = run_json("check-dtype", fx["files"] / "gpt2-tied.bin", "--filter", "lm_head", "--target", "fp16")
    assert code == 0, data
    assert data["targets"]["fp16"]["tensors_checked"] == 1
    assert [t["name"] for t in data["targets"]["fp16"]["tensors"]] == ["lm_head.weight"]


def test_float64_values_beyond_fp32_get_no_keep_fp32_command(tmp_path: Path) -> None:
    """--keep-fp32 keeps a tensor in fp32: no remedy for float64 values fp32 cannot hold (1e300). No convert
    command that convert itself would refuse is suggested; the fixable case keeps its command."""
    from safetensors.torch import save_file

    tensors = {"big.f32": torch.tensor([1e6, 1.0]), "f64.f64": torch.tensor([1e300, 1e-300, 1.0], dtype=torch.float64)}
    save_file(tensors, tmp_path / "model.safetensors")
    for targets in ("fp16", "fp16,bf16,fp32"):
        code, data = run_json("check-dtype", tmp_path / "model.safetensors", "--target", targets)
        fp16 = data["targets"]["fp16"]
        assert fp16["verdict"] == "unsafe" and fp16["unsafe_in_fp32"] == ["f64.f64"], fp16
        assert fp16["keep_fp32"] is None and "fp16" not in data["recommendation"]["commands"]
        assert "fp32 cannot hold either" in data["recommendation"]["text"]
    assert data["targets"]["fp32"]["keep_fp32"] is None  # keeping in fp32 is no remedy for a cast to fp32
    code, _ = run_json("convert", tmp_path / "model.safetensors", "-o", tmp_path / "out.safetensors", "--dtype", "fp16",
                       "--keep-fp32", "f64")
    assert code == 2  # what convert says of the same: fp32 loses them too
    save_file({"big.f32": tensors["big.f32"], "ok.f64": torch.tensor([1e6, 1.0], dtype=torch.float64)},
              tmp_path / "fixable.safetensors")
    code, data = run_json("check-dtype", tmp_path / "fixable.safetensors", "--target", "fp16")
    command = data["recommendation"]["commands"]["fp16"]
    assert data["targets"]["fp16"]["unsafe_in_fp32"] == [] and "--keep-fp32" in command
    assert run_json("convert", tmp_path / "fixable.safetensors", "-o", tmp_path / "fixed.safetensors", "--dtype",
                    "fp16", "--keep-fp32", data["targets"]["fp16"]["keep_fp32"])[0] == 0


def test_a_narrow_console_cuts_no_number_and_breaks_names_after_a_dot() -> None:
    """At 80 columns (a pipe, a CI log) the per-target table had its numbers cut to `0/29 of…` / `0.08…`:
    it is turned to one row per measure; the worst-tensor names break after a dot, and nothing is wider."""
    from tests.helpers import REPO_ROOT, run_subprocess

    out = run_subprocess("check-dtype", REPO_ROOT / "fixtures" / "example", "--worst", "3",
                         env={"COLUMNS": "80"}).stdout
    assert "…" not in out and max(map(len, out.splitlines())) <= 80
    table = out[out.index("What each cast does"):out.index("what torch's")]
    assert "│ tensors   │ 0/29 of 73 │ 0/29 of 73 │" in table and "│ max rel   │     0.0848 │    0.00389 │" in table
    worst = out[out.index("Worst tensors for fp16 (stored float32)"):out.index("Worst tensors for bf16")]
    names = [line.split("│")[1].strip() for line in worst.splitlines() if line.startswith("│")]
    assert "bert.encoder." in names and "dense.weight" in names  # segments, never a cut word
    assert all(n == "" or n.endswith(".") or n.endswith("weight") or n.endswith("bias") for n in names), names


def test_every_target_fits_a_narrow_console_without_cutting(tmp_path: Path) -> None:
    """Five targets at 50 columns: the per-measure table folds its headers and numbers (fp8_e4m3 and fp8_e5m2 were
    both cut to `fp8_e…`, 0.00206 to `0.00…`)."""
    import torch
    from safetensors.torch import save_file

    from tests.helpers import run_subprocess

    torch.manual_seed(0)
    save_file({"a.weight": torch.randn(64, 64) * 100}, tmp_path / "one.safetensors")
    out = run_subprocess("check-dtype", tmp_path / "one.safetensors", "--target", "all",
                         env={"COLUMNS": "50"}).stdout
    table = out[out.index("What each cast does"):out.index("what torch's")]
    assert "…" not in table and max(map(len, out.splitlines())) <= 50


def test_worst_tensors_on_a_very_narrow_console_keep_words_whole() -> None:
    """At 60 columns the name and `why` columns had 7 cells each: Rich cut `value(s` / `)` and names to a few
    letters. Each tensor is told in lines of its own there: its whole name, its figures, its reason."""
    from tests.helpers import REPO_ROOT, run_subprocess

    out = run_subprocess("check-dtype", REPO_ROOT / "fixtures" / "example", "--worst", "2",
                         env={"COLUMNS": "60"}).stdout
    assert max(map(len, out.splitlines())) <= 60
    worst = out[out.index("Worst tensors for fp16 (stored float32)"):out.index("Worst tensors for bf16")]
    lines = [line.strip("│ ") for line in worst.splitlines() if line.startswith("│")]
    assert lines[0] == "bert.encoder.layer.2.output.dense.weight"
    assert lines[1].startswith("lossy · out of range 0 · underflow 0 ·")
    assert "16,383 values rounded, 44 subnormal" in lines


def _one_in_a_hundred_flushed() -> torch.Tensor:
    values = torch.full((100,), 0.5)
    values[0] = 1e-10  # below fp16's smallest subnormal: one value in 100 becomes 0
    return values


def _two_of_two_hundred_finite_flushed() -> torch.Tensor:
    values = torch.full((400,), float("nan"))
    values[:200] = 0.5
    values[:2] = 1e-10
    return values


@pytest.mark.parametrize("make", [_one_in_a_hundred_flushed, _two_of_two_hundred_finite_flushed])
def test_convert_refuses_what_check_dtype_calls_unsafe(tmp_path: Path, make: Callable[[], torch.Tensor]) -> None:
    """1% of the finite non-zero values flushed to zero by fp16: check-dtype says unsafe (>= 1%). convert refused
    only above 1%, and counted NaN as values that could be flushed (beside 200 NaN, 2 of 200 was 0.5%): it cast
    both without a word. Both count the same values and draw the line at 1% now."""
    from safetensors.torch import save_file

    save_file({"w": make()}, str(tmp_path / "edge.safetensors"))
    _, data = run_json("check-dtype", tmp_path / "edge.safetensors")
    assert data["targets"]["fp16"]["tensors"][0]["verdict"] == "unsafe"
    result = run_cli("convert", tmp_path / "edge.safetensors", "-o", tmp_path / "out.safetensors", "--dtype", "fp16")
    assert result.exit_code == 2 and not (tmp_path / "out.safetensors").exists()
    assert "w (1.0% of non-zero values become 0). Nothing was written." in result.stderr


def test_the_keep_fp32_remedy_says_from_pretrained_casts_the_kept_tensors_too(
    fx: dict[str, Path], tmp_path: Path,
) -> None:
    """check-dtype's `convert --keep-fp32` writes the overflowing tensor in fp32, but from_pretrained loads a model
    folder at one dtype: the weight overflows to inf all the same. Beside a config, the remedy says so."""
    import shutil

    import transformers
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(fx["bert"], model)
    state = load_file(model / "model.safetensors")
    state["bert.pooler.dense.weight"][0, 0] = 1e5
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})
    code, data = run_json("check-dtype", model, "--target", "fp16")
    assert code == 0
    (line,) = [x for x in data["recommendation"]["lines"] if x.startswith("fp16 is unsafe")]
    assert line.endswith("; that file is for loaders that keep each tensor's dtype: from_pretrained loads every "
                         "tensor as fp16 all the same (only its class's _keep_in_fp32_modules stay fp32)")
    # What the clause says, measured: the recommended convert, then from_pretrained.
    keep = data["targets"]["fp16"]["keep_fp32"]
    assert run_json("convert", model, "-o", tmp_path / "half", "--dtype", "fp16", "--keep-fp32", keep)[0] == 0
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "half", dtype="auto")
    assert loaded.pooler.dense.weight.dtype == torch.float16 and torch.isinf(loaded.pooler.dense.weight).any()
    # A lone weights file, no config beside it: no such clause.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model / "model.safetensors", alone / "model.safetensors")
    code, data = run_json("check-dtype", alone / "model.safetensors", "--target", "fp16")
    assert data["recommendation"]["commands"]["fp16"] and "from_pretrained loads" not in data["recommendation"]["text"]




def _tiny_t5(folder: Path, planted: dict[str, float], config_dtype: str | None = "float16") -> Path:
    """A tiny seeded T5 saved with save_pretrained, `planted` values written into its weights (name -> value at
    [0, 0]), config.json's dtype set to `config_dtype`."""
    import transformers

    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, decoder_start_token_id=0))
    with torch.no_grad():
        for name, value in planted.items():
            model.get_parameter(name)[0, 0] = value
    model.save_pretrained(folder)
    if config_dtype:
        config = json.loads((folder / "config.json").read_text())
        config["dtype"] = config_dtype
        (folder / "config.json").write_text(json.dumps(config))
    return folder


WO = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
WI = "encoder.block.0.layer.1.DenseReluDense.wi.weight"
BOTH_WO = ["decoder.block.0.layer.2.DenseReluDense.wo.weight", WO]


def test_a_config_at_the_target_names_what_its_class_keeps_in_fp32(tmp_path: Path) -> None:
    """T5 keeps `wo` in float32 when from_pretrained loads at float16 (_keep_in_fp32_modules). Found by
    scripts/check_dtype_sweep.py: under a float16 config, check-dtype said from_pretrained(dtype='auto') 'hits
    exactly this' although `wo`'s overflow never happens at load; now it names the tensors kept in fp32 and
    says which overflow from_pretrained does hit."""
    import transformers

    only_wo = _tiny_t5(tmp_path / "only-wo", {WO: 1e5})
    code, data = run_json("check-dtype", only_wo, "--target", "fp16")
    lines = [x for x in data["recommendation"]["lines"] if x.startswith("config.json says float16")]
    assert lines == ["config.json says float16: from_pretrained(dtype='auto') loads these weights as float16 but "
                     "keeps the 1 unsafe tensor in float32 (_keep_in_fp32_modules): it does not hit this"]
    fp16 = data["targets"]["fp16"]
    assert code == 0 and fp16["verdict"] == "unsafe" and fp16["kept_fp32_at_load"] == BOTH_WO
    (line,) = [x for x in data["recommendation"]["lines"] if x.startswith("fp16 is unsafe")]
    assert line.endswith("from_pretrained loads every tensor as fp16 all the same, except the 1 unsafe one its "
                         f"class keeps in fp32 (_keep_in_fp32_modules): {WO}")
    loaded = transformers.T5ForConditionalGeneration.from_pretrained(only_wo, dtype="auto")
    wo = loaded.get_parameter(WO)
    assert wo.dtype == torch.float32 and torch.isfinite(wo).all()  # what the line says, measured

    both = _tiny_t5(tmp_path / "both", {WO: 1e5, WI: 1e5})
    code, data = run_json("check-dtype", both, "--target", "fp16")
    assert data["targets"]["fp16"]["kept_fp32_at_load"] == BOTH_WO
    lines = [x for x in data["recommendation"]["lines"] if x.startswith("config.json says float16")]
    assert lines == ["config.json says float16: from_pretrained(dtype='auto') loads these weights as float16 and "
                     f"hits this in 1 of the 2 unsafe tensors; its class keeps {WO} in float32 "
                     "(_keep_in_fp32_modules)"]
    loaded = transformers.T5ForConditionalGeneration.from_pretrained(both, dtype="auto")
    assert torch.isinf(loaded.get_parameter(WI)).any() and torch.isfinite(loaded.get_parameter(WO)).all()

    # Without a config at the target, or at bf16 (T5 has no _keep_in_fp32_modules_strict), nothing is kept.
    code, data = run_json("check-dtype", _tiny_t5(tmp_path / "bf16", {WO: 3.4e38}, "float32"), "--target", "bf16")
    assert data["targets"]["bf16"]["verdict"] == "unsafe" and data["targets"]["bf16"]["kept_fp32_at_load"] == []
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.safetensors").write_bytes((only_wo / "model.safetensors").read_bytes())
    code, data = run_json("check-dtype", alone / "model.safetensors", "--target", "fp16")
    assert data["targets"]["fp16"]["kept_fp32_at_load"] is None


def test_the_suggested_output_of_an_index_is_a_folder_beside_the_model_not_inside_it(
    fx: dict[str, Path], tmp_path: Path,
) -> None:
    """check-dtype on `model.safetensors.index.json` suggested `-o .../model.safetensors.index.json-fp16`: a folder
    named like a JSON file, written inside the source model's own folder (found by scripts/check_dtype_sweep.py).
    An index stands for its model folder: the output is that folder's name with the target, beside it."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "bert-sharded"
    shutil.copytree(fx["bert-sharded"], model)
    first = sorted(model.glob("model-*.safetensors"))[0]
    state = load_file(first)
    state[next(iter(state))].view(-1)[0] = 1e5
    save_file(state, str(first), metadata={"format": "pt"})
    for source, output in ((model / "model.safetensors.index.json", tmp_path / "bert-sharded-fp16"),
                           (model, tmp_path / "bert-sharded-fp16"),
                           (first, first.with_name(f"{first.stem}-fp16.safetensors"))):
        code, data = run_json("check-dtype", source, "--target", "fp16")
        command = data["recommendation"]["commands"]["fp16"]
        assert code == 0 and command.startswith(f"weightdoctor convert {source} -o {output} --dtype fp16 "), command


def test_the_suggested_convert_reads_the_state_dict_that_was_checked(tmp_path: Path) -> None:
    """`check-dtype ckpt.pt --key ema` checked the EMA weights but suggested `convert ckpt.pt ...` without `--key`:
    convert found the other state dict (`model`) and wrote it, exit 0, not a word (found while extending
    scripts/check_dtype_sweep.py to training checkpoints). The command now names the state dict it checked."""
    import shlex

    from safetensors.torch import load_file

    model = {"w": torch.ones(4, 4), "n": torch.ones(4)}
    ema = {"w": torch.full((4, 4), 2.0), "n": torch.full((4,), 2.0)}
    ema["n"][0] = 1e5
    torch.save({"model": model, "ema": ema, "step": 3}, tmp_path / "ckpt.pt")
    code, data = run_json("check-dtype", tmp_path / "ckpt.pt", "--key", "ema", "--target", "fp16")
    command = data["recommendation"]["commands"]["fp16"]
    assert code == 0 and command.endswith(" --key ema"), command
    words = shlex.split(command)
    out = tmp_path / "out.safetensors"
    words[words.index("-o") + 1] = str(out)
    assert run_json(*words[1:])[0] == 0
    written = load_file(out)
    assert written["n"][0] == 1e5 and written["n"].dtype == torch.float32 and (written["w"] == 2).all()


def test_the_suggested_convert_names_the_revision_checked() -> None:
    """A Hub source read at `--revision v1`: the command converts that revision, not main."""
    from weightdoctor.check_dtype import TargetReport, TensorCast, recommend

    row = TensorCast("n", "float32", "unsafe", 4, 1, 0, 0, 0, 1, 0.0, 0.0, 0, 0, "1 finite value becomes inf/NaN")
    report = TargetReport("float16", "unsafe", 1, 1, 0, 4, 1, 0, 0, 0, 1, 0.25, 0.0, 0.0, 65504.0, 6.1e-5, "", 8,
                          "^(?:n)$", 16, [row])
    rec = recommend("org/name", {"fp16": report}, {}, None, revision="v1", key="ema")
    assert rec.commands["fp16"] == ("weightdoctor convert org/name -o name-fp16 --dtype fp16 --keep-fp32 "
                                    "'^(?:n)$' --revision v1 --key ema")


def test_the_suggested_output_of_a_repo_id_is_a_folder_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o org/name-fp16` would create a folder `org/` in the working directory; the suggestion names the
    model alone, and the command runs as printed."""
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    model = tmp_path / "model"
    model.mkdir()
    save_file({"big.weight": torch.tensor([1.0, 70000.0]), "small.weight": torch.ones(4)}, model / "model.safetensors")
    cache = tmp_path / "hub"
    write_hub_cache(cache, "some-org/overflowing", model)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, data = run_json("check-dtype", "some-org/overflowing", "--target", "fp16")
    assert code == 0, data
    command = data["recommendation"]["commands"]["fp16"]
    assert " -o overflowing-fp16 " in command, command
    result = run_cli(*shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "overflowing-fp16" / "model.safetensors").is_file() and not (tmp_path / "some-org").exists()
