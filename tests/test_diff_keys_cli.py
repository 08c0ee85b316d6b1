"""`weightdoctor diff-keys` end to end on real fixture checkpoints: JSON, tables, exit codes, errors."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures.diff_pairs import Pair, build_pairs
from tests.helpers import REPO_ROOT, run_cli, run_json

REQUIRED_KEYS = {"matched", "missing", "unexpected", "mismatched", "dtype_differences", "suggested_renames"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    return build_pairs(tmp_path_factory.mktemp("diff_pairs_cli"))


def test_ddp_prefix_json_fix_and_recheck(pairs: dict[str, Pair]) -> None:
    pair = pairs["ddp-prefix"]
    code, data = run_json("diff-keys", pair.a, pair.b)
    assert code == 1
    assert set(data) >= REQUIRED_KEYS
    assert data["matched"] == 0 and len(data["missing"]) == 41 and len(data["unexpected"]) == 41
    assert set(data["missing"][0]) == {"name", "reason", "severity", "detail"}
    assert {(i["reason"], i["severity"]) for i in data["unexpected"]} == {("wrapper-prefix", "error")}
    (fix,) = data["suggested_renames"]
    assert fix["flag"] == "--rename '^module\\.='" and fix["matches_gained"] == 41
    assert data["matched_after_renames"] == 41
    assert "re.sub('^module\\\\.', '', key, count=1)" in data["python_snippet"]
    assert data["values"] is None
    # The printed flag is accepted by diff-keys itself, and then everything matches.
    code, again = run_json("diff-keys", pair.a, pair.b, *shlex.split(fix["flag"]))
    assert code == 0
    assert (again["matched"], again["missing"], again["unexpected"]) == (41, [], [])
    assert again["renames_applied"] == [fix["flag"]]


@pytest.mark.parametrize("name", ["lora-peft", "legacy-gamma-beta", "base-into-head", "compile-prefix"])
def test_every_printed_fix_rechecks_clean(pairs: dict[str, Pair], name: str) -> None:
    pair = pairs[name]
    code, data = run_json("diff-keys", pair.a, pair.b)
    flags = [part for fix in data["suggested_renames"] for part in shlex.split(fix["flag"])]
    assert flags
    code, again = run_json("diff-keys", pair.a, pair.b, *flags)
    assert again["matched"] == data["matched_after_renames"]
    assert [i for i in again["missing"] + again["unexpected"] if i["reason"] not in ("task-head", "adapter")] == []
    assert code == 0


def test_rich_output_is_grouped_with_reasons_and_fix(pairs: dict[str, Pair]) -> None:
    result = run_cli("diff-keys", pairs["lora-peft"].a, pairs["lora-peft"].b)
    assert result.exit_code == 1
    out = result.stdout
    assert "weightdoctor diff-keys" in out and "0 of 41 keys of B" in out
    assert "Missing" in out and "Unexpected" in out
    assert "adapter" in out and "wrapper-prefix" in out
    assert "suggested fix" in out
    assert "--rename '^base_model\\.model\\.='" in out
    assert "state_dict = {rename(k): v for k, v in state_dict.items()}" in out
    assert result.stderr == ""


def test_mismatch_and_dtype_in_checkpoint_mode(pairs: dict[str, Pair], tmp_path: Path) -> None:
    code, data = run_json("diff-keys", pairs["vocab-resized"].a, pairs["vocab-resized"].b)
    assert code == 0  # a resized vocabulary is a warning
    assert data["mismatched"] == [{
        "name": "bert.embeddings.word_embeddings.weight", "shape_a": [99, 32], "shape_b": [120, 32],
        "reason": "vocab-size", "severity": "warn", "detail": "99×32 in A, 120×32 in B"}]
    code, _ = run_json("diff-keys", pairs["vocab-resized"].a, pairs["vocab-resized"].b, "--fail-on", "warn")
    assert code == 1
    from safetensors.torch import load_file, save_file

    half = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in load_file(pairs["identical"].a / "model.safetensors").items()}, half)
    code, data = run_json("diff-keys", half, pairs["identical"].a / "model.safetensors")
    assert code == 0 and data["matched"] == 41
    assert len(data["dtype_differences"]) == 41
    assert data["dtype_differences"][0]["dtype_a"] == "float16" and data["dtype_differences"][0]["severity"] == "info"


def test_model_class_mode(pairs: dict[str, Pair], fx: dict[str, Path]) -> None:
    code, data = run_json("diff-keys", pairs["base-into-head"].a, "--model-class", "BertForSequenceClassification",
                          "--config", pairs["base-into-head"].b)
    assert code == 0
    assert data["mode"] == "model-class" and data["model_class"] == "BertForSequenceClassification"
    assert [(i["name"], i["reason"], i["severity"]) for i in data["missing"]] == [
        ("classifier.weight", "task-head", "info"), ("classifier.bias", "task-head", "info")]
    assert data["unexpected"] == [] and data["matched"] == 39
    code, _ = run_json("diff-keys", pairs["base-into-head"].a, "--model-class", "BertForSequenceClassification",
                       "--config", pairs["base-into-head"].b, "--fail-on", "info")
    assert code == 1
    # --num-labels changes the head: a mismatch transformers would re-initialize.
    code, data = run_json("diff-keys", fx["bert"], "--model-class", "BertForSequenceClassification",
                          "--num-labels", "5")
    assert code == 0
    assert {(m["name"], m["reason"]) for m in data["mismatched"]} == {
        ("classifier.weight", "head-size"), ("classifier.bias", "head-size")}
    # Legacy names and the tied GPT-2 head: from_pretrained handles them, so nothing is reported.
    code, data = run_json("diff-keys", pairs["legacy-gamma-beta"].a, "--model-class", "BertForSequenceClassification")
    assert (code, data["missing"], data["unexpected"], data["matched"]) == (0, [], [], 41)
    code, data = run_json("diff-keys", fx["gpt2"], "--model-class", "GPT2LMHeadModel")
    assert (code, data["missing"], data["matched"]) == (0, [], data["total_b"])


def test_auto_classes_and_no_lookalike_head_renames(pairs: dict[str, Pair]) -> None:
    code, data = run_json("diff-keys", pairs["base-into-head"].a, "--model-class", "AutoModelForSequenceClassification",
                          "--config", pairs["base-into-head"].b)
    assert code == 0 and [i["name"] for i in data["missing"]] == ["classifier.weight", "classifier.bias"]
    # A base model into a masked LM: pooler.dense and cls.predictions.transform.dense have the same shapes,
    # but mapping one head onto another is not a fix.
    code, data = run_json("diff-keys", pairs["base-into-head"].a, "--model-class", "BertForMaskedLM",
                          "--config", pairs["base-into-head"].b)
    assert code == 0 and data["suggested_renames"] == []
    assert {i["reason"] for i in data["missing"] + data["unexpected"]} == {"task-head"}
    result = run_cli("diff-keys", pairs["base-into-head"].a, "--model-class", "AutoModelForImageClassification")
    assert result.exit_code == 2 and "no model for model_type 'bert'" in result.stderr


def test_model_class_suggests_a_fix_that_rechecks(pairs: dict[str, Pair]) -> None:
    pair = pairs["compile-prefix"]
    code, data = run_json("diff-keys", pair.a, "--model-class", "BertForSequenceClassification")
    assert code == 1
    (fix,) = data["suggested_renames"]
    code, again = run_json("diff-keys", pair.a, "--model-class", "BertForSequenceClassification",
                           *shlex.split(fix["flag"]))
    assert (code, again["missing"], again["unexpected"]) == (0, [], [])


def test_repo_ids_and_sharded_sources(fx: dict[str, Path], hub_env: Path) -> None:
    code, data = run_json("diff-keys", "weightdoctor-tests/tiny-bert", fx["bert-sharded-bin"])
    assert code == 0 and data["matched"] == 41 and data["missing"] == data["unexpected"] == []
    code, data = run_json("diff-keys", fx["bert-sharded"], fx["bert-sharded-bin"], "--values")
    assert code == 0 and data["matched"] == 41 and all(v["identical"] for v in data["values"])
    code, data = run_json("diff-keys", fx["files"] / "bert.safetensors", "--model-class", "BertModel",
                          "--config", "weightdoctor-tests/tiny-bert")
    assert code == 0 and data["matched"] == 39
    assert {i["reason"] for i in data["unexpected"]} == {"task-head"}


def test_values(pairs: dict[str, Pair], fx: dict[str, Path]) -> None:
    code, data = run_json("diff-keys", fx["bert"], fx["bert-bin"], "--values")
    assert code == 0
    assert len(data["values"]) == 41 and all(v["identical"] for v in data["values"])
    assert set(data["values"][0]) >= {"name", "identical", "max_abs_diff", "rel_change"}
    assert data["values"][0]["max_abs_diff"] == 0.0
    # A training checkpoint one optimizer step later: every layer moved a little.
    code, data = run_json("diff-keys", fx["files"] / "training.pt", fx["bert"], "--values")
    assert code == 0
    changed = [v for v in data["values"] if not v["identical"]]
    assert changed and all(v["max_abs_diff"] > 0 for v in changed)
    state = torch.load(fx["files"] / "training.pt", weights_only=True)["model_state_dict"]
    from safetensors.torch import load_file

    ref = load_file(fx["bert"] / "model.safetensors")
    name = "bert.encoder.layer.1.attention.self.query.weight"
    delta = state[name].double() - ref[name].double()
    expected = float(torch.linalg.norm(delta) / torch.linalg.norm(ref[name].double()))
    (row,) = [v for v in data["values"] if v["name"] == name]
    assert row["rel_change"] == pytest.approx(expected, rel=1e-9)
    assert data["layers_changed_most"] and {"layer", "rel_change", "tensors"} <= set(data["layers_changed_most"][0])
    # With a rename, values are compared under the new names.
    pair = pairs["ddp-prefix"]
    code, data = run_json("diff-keys", pair.a, pair.b, "--values", "--rename", "module\\.=")
    assert code == 0 and len(data["values"]) == 41 and all(v["identical"] for v in data["values"])
    result = run_cli("diff-keys", fx["files"] / "training.pt", fx["bert"], "--values")
    assert "Layers changed most" in result.stdout and "‖A−B‖/‖B‖" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.safetensors", "{bert}"], "nope.safetensors"),
        (["{bert}"], "either a second checkpoint B or --model-class"),
        (["{bert}", "{bert}", "--model-class", "BertModel"], "either a second checkpoint B or --model-class"),
        (["{bert}", "{bert}", "--rename", "(unclosed="], "bad regular expression"),
        (["{bert}", "{bert}", "--rename", "noequals"], "expected REGEX=REPLACEMENT"),
        (["{bert}", "{bert}", "--rename", "^bert\\.encoder\\.layer\\.\\d+=x"], "map both"),
        (["{bert}", "{bert}", "--fail-on", "fatal"], "--fail-on"),
        (["{bert}", "--model-class", "NoSuchModel"], "NoSuchModel"),
        (["{bert}", "--model-class", "BertModel", "--values"], "--values"),
        (["{bert}", "{bert}", "--config", "{bert}"], "--config and --num-labels only apply"),
        (["{files}/bert.safetensors", "--model-class", "BertModel"], "needs a config"),
        (["{bert}", "--model-class", "BertModel", "--config", "no/such-repo"], "no/such-repo"),
    ],
)
def test_bad_input_exits_2_with_one_line(fx: dict[str, Path], args: list[str], message: str) -> None:
    filled = [a.format(bert=fx["bert"], files=fx["files"]) for a in args]
    result = run_cli("diff-keys", *filled)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_corrupt_b_names_the_file(fx: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes((fx["bert"] / "model.safetensors").read_bytes()[:5000])
    result = run_cli("diff-keys", fx["bert"], bad)
    assert result.exit_code == 2 and str(bad) in result.stderr and "truncated" in result.stderr


def test_headers_only_in_a_fresh_process(pairs: dict[str, Pair]) -> None:
    code = (
        "import sys\n"
        "from weightdoctor.cli import app\n"
        "try:\n"
        f"    app(['diff-keys', {str(pairs['ddp-prefix'].a)!r}, {str(pairs['ddp-prefix'].b)!r}, '--json'])\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code, 'torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert "EXIT 1 False False" in result.stderr, result.stderr
    assert json.loads(result.stdout)["suggested_renames"][0]["flag"] == "--rename '^module\\.='"


def test_head_lookalike_is_not_a_rename() -> None:
    """A (2, H) classifier must not be 'renamed' onto token_type_embeddings (2, H) or qa_outputs.

    The committed example has num_labels = type_vocab_size = 2, so shapes alone would pair them; the
    answer must be what from_pretrained reports: new qa_outputs, dropped classifier and pooler.
    """
    from transformers import BertForQuestionAnswering

    example = REPO_ROOT / "fixtures" / "example"
    result = run_cli("diff-keys", example, "--model-class", "BertForQuestionAnswering", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["suggested_renames"] == []
    assert {(k["name"], k["reason"]) for k in data["missing"]} == {
        ("qa_outputs.weight", "task-head"), ("qa_outputs.bias", "task-head")}
    assert {k["reason"] for k in data["unexpected"]} == {"task-head"}
    _, info = BertForQuestionAnswering.from_pretrained(example, output_loading_info=True)
    assert set(info["missing_keys"]) == {k["name"] for k in data["missing"]}
    assert set(info["unexpected_keys"]) == {k["name"] for k in data["unexpected"]}


def test_values_of_packed_and_complex_tensors(tmp_path: Path) -> None:
    """float4 (no arithmetic in torch): compared by its decoded values, never a crash; complex tensors that
    differ only in their imaginary parts are not identical (a float64 cast would drop those parts)."""
    from safetensors.torch import save_file

    packed = torch.arange(8, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    changed = (torch.arange(8, dtype=torch.uint8) + 1).view(torch.float4_e2m1fn_x2)
    real = torch.ones(3, dtype=torch.complex64)
    save_file({"p": packed, "q": packed.clone(), "c": real}, str(tmp_path / "a.safetensors"))
    save_file({"p": packed, "q": changed, "c": real + 1j}, str(tmp_path / "b.safetensors"))
    code, data = run_json("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--values")
    assert code == 0, data
    rows = {row["name"]: row for row in data["values"]}
    assert rows["p"]["identical"] is True and rows["p"]["max_abs_diff"] == 0.0
    # float4 decodes exactly (tests/test_fixlist9.py checks the numbers): a change of known size, not NaN.
    assert rows["q"]["identical"] is False and rows["q"]["max_abs_diff"] > 0 and rows["q"]["rel_change"] > 0
    assert rows["c"]["identical"] is False and rows["c"]["max_abs_diff"] == pytest.approx(1.0)
    assert rows["c"]["rel_change"] == pytest.approx(1 / 2 ** 0.5)


def test_bad_flags_and_configs_are_usage_errors_not_unexpected_ones(tmp_path: Path) -> None:
    """A replacement naming a group the pattern lacks blames the flag (it blamed the input file); a config
    whose values the config class refuses is one line about the config."""
    from safetensors.torch import save_file

    a = tmp_path / "a.safetensors"
    save_file({"w": torch.ones(2)}, str(a))
    result = run_cli("diff-keys", str(a), str(a), "--rename", r"w=\g<nope>")
    assert result.exit_code == 2 and r"--rename 'w=\\g<nope>': unknown group name 'nope'" in result.stderr
    # (a dtype no model is built in is no longer one: the keys are compared without it, tests/hostile/test_redteam32)
    for name, values in (("types", {"hidden_size": "abc"}), ("eps", {"layer_norm_eps": "tiny"})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", **values}))
        result = run_cli("diff-keys", str(a), "--model-class", "BertModel", "--config", str(folder))
        assert result.exit_code == 2, result.stderr
        assert "unexpected" not in result.stderr and "config.json cannot build a 'bert' config" in result.stderr


@pytest.fixture(scope="module")
def meta_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from fixtures.diff_pairs import build_meta_llama_pair

    return build_meta_llama_pair(tmp_path_factory.mktemp("meta_llama"))


def test_meta_llama_layout_is_named_and_never_renamed(meta_llama: tuple[Path, Path]) -> None:
    """Meta's consolidated.00.pth against a Hugging Face Llama: every difference is the layout, and no
    rename is offered, because a rename alone leaves wq/wk in Meta's rotary order (checked below)."""
    meta, hf = meta_llama
    code, data = run_json("diff-keys", str(meta), str(hf))
    assert code == 1 and data["matched"] == 0
    assert data["suggested_renames"] == [] and data["python_snippet"] is None
    assert len(data["missing"]) == len(data["unexpected"]) == 21
    assert {(i["reason"], i["severity"]) for i in data["missing"] + data["unexpected"]} == {("foreign-layout", "error")}
    assert any("convert_llama_weights_to_hf.py" in note for note in data["notes"])
    text = run_cli("diff-keys", str(meta), str(hf)).stdout
    assert "foreign-layout" in text and "--rename" not in text and "convert_llama_weights_to_hf.py" in text

    # Why no rename: renamed, wq is not q_proj; permuted as transformers' script does, it is.
    stored = torch.load(meta, weights_only=True)
    from safetensors.torch import load_file

    q_proj = load_file(hf / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    wq = stored["layers.0.attention.wq.weight"]
    assert not torch.equal(wq, q_proj)
    rows, cols = wq.shape
    assert torch.equal(wq.view(4, rows // 8, 2, cols).transpose(1, 2).reshape(rows, cols), q_proj)

    # The other way round: a Hugging Face checkpoint into Meta's layout.
    code, data = run_json("diff-keys", str(hf), str(meta))
    assert code == 1 and data["suggested_renames"] == []
    assert {i["reason"] for i in data["missing"] + data["unexpected"]} == {"foreign-layout"}
    assert any("Meta's original one" in note for note in data["notes"])


def test_meta_llama_layout_against_the_model_class(meta_llama: tuple[Path, Path], tmp_path: Path) -> None:
    """--model-class: the same sets from_pretrained reports, every one of them the layout."""
    from transformers import LlamaForCausalLM

    from fixtures.diff_pairs import save_state_dict_folder

    meta, hf = meta_llama
    code, data = run_json("diff-keys", str(meta), "--model-class", "LlamaForCausalLM", "--config", str(hf))
    assert code == 1 and data["suggested_renames"] == []
    folder = save_state_dict_folder(torch.load(meta, weights_only=True), json.loads((hf / "config.json").read_text()),
                                    tmp_path / "meta-as-folder")
    _, info = LlamaForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert {i["name"] for i in data["missing"]} == set(info["missing_keys"])
    assert {i["name"] for i in data["unexpected"]} == set(info["unexpected_keys"])
    assert {i["reason"] for i in data["missing"] + data["unexpected"]} == {"foreign-layout"}
    assert any("convert_llama_weights_to_hf.py" in note for note in data["notes"])


def test_lookalike_names_without_both_layouts_are_not_a_foreign_layout(tmp_path: Path) -> None:
    """`attention.wq` alone (B holds no Hugging Face attention) is an ordinary unknown difference."""
    from safetensors.torch import save_file

    save_file({"layers.0.attention.wq.weight": torch.zeros(4, 4)}, tmp_path / "a.safetensors")
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(12, 4)}, tmp_path / "b.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 1 and data["notes"] == []
    assert {i["reason"] for i in data["missing"] + data["unexpected"]} == {"unknown"}


def test_a_single_file_stable_diffusion_checkpoint_against_a_diffusers_unet(tmp_path: Path) -> None:
    """A CivitAI-style single file (`model.diffusion_model.input_blocks.*`, `first_stage_model.*`,
    `cond_stage_model.*`) against a diffusers UNet folder: every key was "unknown", with no word of what to do;
    it is the original LDM layout, which diffusers' from_single_file converts (no rename does)."""
    from safetensors.torch import save_file

    single = tmp_path / "mix.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
               "model.diffusion_model.time_embed.0.weight": torch.zeros(32, 8),
               "first_stage_model.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(8)}, single)
    unet = tmp_path / "unet"
    unet.mkdir()
    save_file({"conv_in.weight": torch.zeros(8, 4, 3, 3), "time_embedding.linear_1.weight": torch.zeros(32, 8),
               "down_blocks.0.resnets.0.conv1.weight": torch.zeros(8, 8, 3, 3)},
              unet / "diffusion_pytorch_model.safetensors")
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    code, data = run_json("diff-keys", str(single), str(unet))
    assert code == 1 and data["suggested_renames"] == []
    assert {i["reason"] for i in data["missing"] + data["unexpected"]} == {"foreign-layout"}
    assert {i["detail"] for i in data["unexpected"]} == {"single-file Stable Diffusion layout (in A)"}
    assert {i["detail"] for i in data["missing"]} == {"diffusers' layout (in B)"}
    assert len(data["notes"]) == 1 and data["notes"][0].startswith(
        "A is a single-file Stable Diffusion checkpoint in the original (LDM) layout") and \
        "from_single_file" in data["notes"][0]
    code, data = run_json("diff-keys", str(unet), str(single))
    assert code == 1 and "convert_diffusers_to_original_stable_diffusion.py" in data["notes"][0]
    # A kohya LoRA (lora_unet_*) against the single file is no such pair.
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, lora)
    code, data = run_json("diff-keys", str(lora), str(single))
    assert data["notes"] == [] and {i["reason"] for i in data["missing"]} == {"unknown"}


def test_a_transposed_matrix_is_named(pairs: dict[str, Pair], tmp_path: Path) -> None:
    """nanoGPT's nn.Linear (out×in) against GPT-2's Conv1D (in×out): the same weights, transposed."""
    from safetensors.torch import load_file, save_file

    gpt2 = load_file(pairs["gpt2-tied"].a / "model.safetensors")
    linear = {k: (v.t().contiguous() if k.endswith(("c_attn.weight", "c_fc.weight")) else v) for k, v in gpt2.items()}
    save_file(linear, tmp_path / "nanogpt.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "nanogpt.safetensors"), str(pairs["gpt2-tied"].a))
    assert code == 1 and len(data["mismatched"]) == 4
    attn = next(m for m in data["mismatched"] if m["name"] == "transformer.h.0.attn.c_attn.weight")
    assert (attn["reason"], attn["severity"]) == ("transposed", "error")
    assert attn["shape_a"] == [96, 32] and attn["shape_b"] == [32, 96] and "transpose" in attn["detail"]
    # attn.c_proj is 32×32: it matches by shape, and the note says it is most likely transposed too.
    assert any("square weights of the same blocks (e.g. transformer.h.0.attn.c_proj.weight)" in note
               for note in data["notes"])
    code, data = run_json("diff-keys", str(pairs["gpt2-tied"].a), str(pairs["gpt2-tied"].a))
    assert data["notes"] == []


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fixtures.diff_pairs import build_peft_adapter

    return build_peft_adapter(tmp_path_factory.mktemp("peft_adapter"))


def _peft_unexpected(adapter: Path, base: Path) -> list[str]:
    """What peft itself reports loading `adapter` into `base`: the adapter keys it has no module for."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), PeftConfig.from_pretrained(adapter))
    return set_peft_model_state_dict(model, load_file(adapter / "adapter_model.safetensors")).unexpected_keys


def test_a_peft_adapter_into_its_base_is_healthy(peft_adapter: dict[str, Path]) -> None:
    """An adapter stores no base weights by design: they are `adapter-base` (info), each LoRA pair is checked
    against the module it targets, and nothing is suggested as a rename."""
    adapter, base = peft_adapter["adapter"], peft_adapter["base"]
    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0 and data["worst_severity"] == "info" and data["suggested_renames"] == []
    assert _peft_unexpected(adapter, base) == []  # peft agrees: every adapter key has its module
    reasons = {i["name"]: (i["reason"], i["severity"], i["detail"]) for i in data["missing"] + data["unexpected"]}
    assert reasons["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"] == (
        "adapter", "info", "LoRA on model.layers.1.self_attn.v_proj.weight")
    assert reasons["model.layers.0.mlp.up_proj.weight"][:2] == ("adapter-base", "info")
    assert reasons["lm_head.weight"] == (
        "adapter", "info", "the adapter stores it whole, as base_model.model.lm_head.weight")
    assert any("PEFT adapter: LoRA (rank 4) on 5 modules, 5 of them in B" in n for n in data["notes"])
    # The same verdict against the model class.
    code, data = run_json("diff-keys", str(adapter), "--model-class", "LlamaForCausalLM", "--config", str(base))
    assert code == 0 and {i["severity"] for i in data["missing"] + data["unexpected"]} == {"info"}


def test_a_peft_adapter_for_another_size_or_depth_is_an_error(peft_adapter: dict[str, Path]) -> None:
    adapter = peft_adapter["adapter"]
    # Wider hidden states: peft refuses with size mismatches; diff-keys names each LoRA tensor that does not fit.
    code, data = run_json("diff-keys", str(adapter), str(peft_adapter["wider"]))
    assert code == 1
    errors = {i["name"]: i["detail"] for i in data["unexpected"] if i["severity"] == "error"}
    assert "does not fit model.layers.0.self_attn.q_proj.weight (48×48 in B)" in \
        errors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    with pytest.raises(RuntimeError, match="size mismatch"):
        _peft_unexpected(adapter, peft_adapter["wider"])
    # One layer fewer: peft drops layer 1's LoRA weights (its unexpected keys); diff-keys says the same.
    code, data = run_json("diff-keys", str(adapter), str(peft_adapter["shallower"]))
    assert code == 1
    errors = sorted(i["name"] for i in data["unexpected"] if i["severity"] == "error")
    assert errors == sorted(_peft_unexpected(adapter, peft_adapter["shallower"]))
    assert all("which B does not have" in i["detail"] for i in data["unexpected"] if i["severity"] == "error")


def test_a_dora_adapter_into_its_base_is_healthy(peft_adapter: dict[str, Path]) -> None:
    """DoRA saves `<module>.lora_magnitude_vector` (one value per output feature) beside each LoRA pair: it was
    an error, "saved for ...lora_magnitude_vector, which B does not have", where peft loads it."""
    adapter, base = peft_adapter["dora"], peft_adapter["base"]
    code, data = run_json("diff-keys", str(adapter), str(base))
    assert _peft_unexpected(adapter, base) == []  # peft agrees: every adapter key has its module
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
    reasons = {i["name"]: (i["reason"], i["severity"], i["detail"]) for i in data["unexpected"]}
    assert reasons["base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector"] == (
        "adapter", "info", "LoRA on model.layers.0.self_attn.v_proj.weight")
    # Against a wider base the magnitudes do not fit either.
    code, data = run_json("diff-keys", str(adapter), str(peft_adapter["wider"]))
    errors = {i["name"]: i["detail"] for i in data["unexpected"] if i["severity"] == "error"}
    assert code == 1 and "does not fit model.layers.0.self_attn.q_proj.weight (48×48 in B)" in \
        errors["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"]


def test_a_zero_dim_lora_tensor_is_a_misfit_not_a_crash(peft_adapter: dict[str, Path], tmp_path: Path) -> None:
    """A hostile or broken adapter: 0-dim lora_A / lora_embedding_A tensors have no rank and fit no module."""
    import shutil

    from safetensors.torch import load_file, save_file

    adapter = tmp_path / "adapter"
    shutil.copytree(peft_adapter["adapter"], adapter)
    tensors = load_file(adapter / "adapter_model.safetensors")
    broken = [name for name in tensors if ".lora_A." in name or "lora_embedding_A" in name][:2]
    for name in broken:
        tensors[name] = torch.tensor(1.0)
    save_file(tensors, adapter / "adapter_model.safetensors")
    code, data = run_json("diff-keys", str(adapter), str(peft_adapter["base"]))
    assert code == 1, data
    errors = {i["name"]: i["detail"] for i in data["unexpected"] if i["severity"] == "error"}
    assert set(broken) <= set(errors) and all("does not fit" in errors[name] for name in broken)


def test_an_untied_output_layer_into_a_base_model_is_a_dropped_head(tmp_path: Path) -> None:
    """A's config says its lm_head is not tied: dropped into a LlamaModel it is a head of its own, not a tied copy
    of the embeddings (which a tied GPT-2 head is)."""
    from fixtures.diff_pairs import tiny_llama

    model = tiny_llama(layers=1)
    model.save_pretrained(tmp_path / "lm")
    model.model.save_pretrained(tmp_path / "base")
    code, data = run_json("diff-keys", str(tmp_path / "lm"), str(tmp_path / "base"))
    head = next(i for i in data["unexpected"] if i["name"] == "lm_head.weight")
    assert (head["reason"], head["severity"], head["detail"]) == ("task-head", "info", "not used by B, dropped")


def test_a_task_class_drops_the_unused_part_of_a_composite_checkpoint(tmp_path: Path) -> None:
    """BART's LM checkpoint into BartForSequenceClassification (final_logits_bias unused, the head new) and
    CLIPModel into CLIPForImageClassification (the text tower unused): transformers loads both and reports the
    same keys; they are the usual fine-tuning start, so info, exit 0, as into CLIPVisionModel."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BartForSequenceClassification,
        CLIPConfig,
        CLIPForImageClassification,
        CLIPModel,
    )

    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
    )).save_pretrained(tmp_path / "bart")
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=20, bos_token_id=0, eos_token_id=1),
        vision_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37), projection_dim=16)).save_pretrained(tmp_path / "clip")
    for folder, cls in (("bart", BartForSequenceClassification), ("clip", CLIPForImageClassification)):
        _, info = cls.from_pretrained(tmp_path / folder, output_loading_info=True)
        code, data = run_json("diff-keys", str(tmp_path / folder), "--model-class", cls.__name__)
        assert code == 0, data
        assert {i["name"] for i in data["unexpected"]} == set(info["unexpected_keys"])
        assert {i["name"] for i in data["missing"]} == set(info["missing_keys"])
        # BART's final_logits_bias is its generation head's (test_lead26), CLIP's text tower a part B lacks.
        dropped = "task-head" if folder == "bart" else "unused-part"
        assert {(i["reason"], i["severity"]) for i in data["unexpected"]} == {(dropped, "info")}
        assert {(i["reason"], i["severity"]) for i in data["missing"]} == {("task-head", "info")}


def test_resized_embeddings_are_named_and_the_default_load_refusal_is_said(tmp_path: Path) -> None:
    """A vocabulary resize is `vocab-size` also where the embedding is called `embeddings` (Mamba, RWKV); any
    shape mismatch stops from_pretrained unless ignore_mismatched_sizes=True, which a note says."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=1, expand=2, conv_kernel=2)
    MambaForCausalLM(config).save_pretrained(tmp_path / "mamba")
    config.vocab_size = 80
    config.save_pretrained(tmp_path / "bigger")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        MambaForCausalLM.from_pretrained(tmp_path / "mamba", config=config)
    code, data = run_json("diff-keys", str(tmp_path / "mamba"), "--model-class", "MambaForCausalLM",
                          "--config", str(tmp_path / "bigger"))
    assert [(m["name"], m["reason"]) for m in data["mismatched"]] == [("backbone.embeddings.weight", "vocab-size")]
    assert any("ignore_mismatched_sizes=True" in note for note in data["notes"])


def test_the_reader_s_warnings_about_a_and_b_are_said(fx: dict[str, Path], tmp_path: Path) -> None:
    """A folder holding model.safetensors and pytorch_model.bin reads the first; diff-keys says so, as inspect
    does, in JSON (`warnings`) and on stderr."""
    import shutil

    folder = tmp_path / "both"
    shutil.copytree(fx["bert"], folder)
    shutil.copy(fx["files"] / "bert.bin", folder / "pytorch_model.bin")
    code, data = run_json("diff-keys", str(folder), str(fx["bert"]))
    assert code == 0 and any(w.startswith("A: ") and "pytorch_model.bin" in w for w in data["warnings"]), data
    assert not any(w.startswith("B: ") for w in data["warnings"])
    result = run_cli("diff-keys", str(fx["bert"]), str(folder))
    assert "warning: B: " in result.stderr and "pytorch_model.bin" in result.stderr
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert any("pytorch_model.bin" in w for w in data["warnings"]), data["warnings"]


def test_a_prefix_is_a_base_model_prefix_only_where_from_pretrained_handles_it(tmp_path: Path) -> None:
    """Lightning's `model.` on a BERT (base prefix `bert`): from_pretrained loads nothing, so it is an error
    even with both folders carrying configs; on a Llama (base prefix `model`) it is what from_pretrained strips
    (warn). Into a plain state dict (no config, no loader), LayerNorm gamma/beta are errors too."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertForSequenceClassification

    from fixtures.diff_pairs import tiny_llama

    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))
    llama = tiny_llama(layers=1)
    for name, model in (("bert", bert), ("llama", llama)):
        model.save_pretrained(tmp_path / name)
        lightning = tmp_path / f"{name}-lightning"
        lightning.mkdir()
        (lightning / "config.json").write_text((tmp_path / name / "config.json").read_text())
        save_file({f"model.{k}": v for k, v in load_file(tmp_path / name / "model.safetensors").items()},
                  lightning / "model.safetensors")
        _, info = type(model).from_pretrained(lightning, output_loading_info=True)
        code, data = run_json("diff-keys", str(lightning), str(tmp_path / name))
        severities = {i["severity"] for i in data["missing"] + data["unexpected"]}
        if info["missing_keys"]:  # BERT: nothing loads
            assert name == "bert" and code == 1 and severities == {"error"}, data["worst_severity"]
            # from_pretrained leaves it as it leaves DDP's `module.`: a wrapper's prefix, not BERT's base prefix
            assert {i["reason"] for i in data["missing"] + data["unexpected"]} == {"wrapper-prefix"}
        else:  # Llama: from_pretrained strips `model.` itself
            assert name == "llama" and code == 0 and severities == {"warn"}
    plain = tmp_path / "plain.safetensors"
    weights = load_file(tmp_path / "bert" / "model.safetensors")
    save_file(weights, plain)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in weights.items()}
    save_file(legacy, tmp_path / "legacy.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "legacy.safetensors"), str(plain))
    assert code == 1 and {(i["reason"], i["severity"]) for i in data["missing"]} == {("legacy-name", "error")}


def test_a_head_whose_input_width_changed_is_a_shape_error(tmp_path: Path) -> None:
    """A label-count change resizes a head's rows (head-size, warn); its input width is the architecture."""
    from safetensors.torch import save_file

    save_file({"body.weight": torch.zeros(8, 8), "classifier.weight": torch.zeros(4, 16)}, tmp_path / "a.safetensors")
    save_file({"body.weight": torch.zeros(8, 8), "classifier.weight": torch.zeros(4, 8)}, tmp_path / "b.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 1 and [(m["reason"], m["severity"]) for m in data["mismatched"]] == [("shape", "error")]
    save_file({"body.weight": torch.zeros(8, 8), "classifier.weight": torch.zeros(5, 8)}, tmp_path / "c.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "c.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 0 and [(m["reason"], m["severity"]) for m in data["mismatched"]] == [("head-size", "warn")]


def test_a_narrow_table_breaks_keys_after_a_dot(tmp_path: Path) -> None:
    """At 80 columns (a pipe, a CI log) long key patterns break after a dot (Rich's fold cut them mid-word:
    `model.bert.embeddi` / `ngs.*`); the suggested fix still prints the flag whole."""
    from safetensors.torch import load_file

    from tests.helpers import run_subprocess

    weights = load_file(REPO_ROOT / "fixtures" / "example" / "model.safetensors")
    torch.save({f"model.wrapped_by.a_trainer.{k}": v for k, v in weights.items()}, tmp_path / "a.pt")
    out = run_subprocess("diff-keys", tmp_path / "a.pt", REPO_ROOT / "fixtures" / "example",
                         env={"COLUMNS": "80"}).stdout
    # The tables fit; the suggested fix is soft-wrapped (left to the terminal) so that its command and snippet
    # paste whole: each is one line however long.
    tables, fix = out.split("suggested fix", 1)
    assert max(map(len, tables.splitlines())) <= 80
    [recheck] = [line for line in fix.splitlines() if "re-check with: weightdoctor diff-keys " in line]
    assert len(recheck) > 80 and recheck.rstrip().endswith("a_trainer\\.='"), recheck
    table = out[out.index("Unexpected"):out.index("reasons")]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]
    keys: list[str] = []
    for cells in rows:
        if cells[2]:  # a row's first line has its reason
            keys.append(cells[0])
        elif cells[0]:
            assert keys[-1].endswith("."), keys[-1]
            keys[-1] += cells[0]
    assert "model.wrapped_by.a_trainer.bert.embeddings.*" in keys
    fix = out[out.index("suggested fix"):]
    assert "--rename '^model\\.wrapped_by\\.a_trainer\\.='" in fix


def test_unexplained_keys_against_a_transformers_folder_point_to_the_model_class_check(tmp_path: Path) -> None:
    """transformers 5 holds DeiT's weights under other names in memory than on disk (`layers.0.attention.k_proj`
    against `encoder.layer.0.attention.attention.key`): a `torch.save(model.state_dict())` against the saved
    folder has keys no rename explains. The note names the --model-class check, which says from_pretrained
    loads it cleanly."""
    from transformers import DeiTConfig, DeiTForImageClassification

    torch.manual_seed(0)
    model = DeiTForImageClassification(DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=64, image_size=32, patch_size=16))
    model.save_pretrained(tmp_path / "hub")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    code, data = run_json("diff-keys", str(tmp_path / "sd.pt"), str(tmp_path / "hub"))
    assert code == 1 and any(i["reason"] == "unknown" for i in data["missing"])
    [note] = [n for n in data["notes"] if "--model-class" in n]
    command = note.split("what it reports: weightdoctor ")[1]
    code, checked = run_json(*shlex.split(command))
    assert code == 0 and not checked["missing"] and not checked["unexpected"] and checked["matched"] > 0
    # Between two plain state dicts (no config names a class) there is no such check to point to.
    torch.save(model.state_dict(), tmp_path / "sd2.pt")
    _, plain = run_json("diff-keys", str(tmp_path / "sd.pt"), str(tmp_path / "sd2.pt"))
    assert not any("--model-class" in n for n in plain["notes"])


def _tiny_deit() -> torch.nn.Module:
    from transformers import DeiTConfig, DeiTForImageClassification

    torch.manual_seed(0)
    return DeiTForImageClassification(DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, image_size=32, patch_size=16))


def _check_in_note(notes: list[str]) -> list[str]:
    [note] = [n for n in notes if "--model-class" in n]
    return shlex.split(note.split("what it reports: weightdoctor ")[1])


def test_the_model_class_note_reads_a_as_this_run_did(tmp_path: Path) -> None:
    """A's state dict nested in a training checkpoint under a prefix the user renamed away: the check the note
    gives carries --key and the --rename (without them it would compare the wrong keys), and reports the clean
    load."""
    model = _tiny_deit()
    model.save_pretrained(tmp_path / "hub")
    wrapped = {f"net.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "run.ckpt")
    code, data = run_json("diff-keys", str(tmp_path / "run.ckpt"), str(tmp_path / "hub"), "--rename", r"^net\.=")
    assert code == 1 and any(i["reason"] == "unknown" for i in data["missing"])
    command = _check_in_note(data["notes"])
    assert command[command.index("--key") + 1] == "state_dict"
    assert command[command.index("--rename") + 1] == r"^net\.="
    code, checked = run_json(*command)
    assert code == 0 and not checked["missing"] and not checked["unexpected"] and checked["matched"] > 0


def test_the_model_class_note_carries_the_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B a Hub repo at a revision: the check reads B's config at that revision; A and B at two revisions of
    one repo (which one --revision cannot name): its --config is B's snapshot folder."""
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    model = _tiny_deit()
    cache = tmp_path / "cache"
    model.save_pretrained(tmp_path / "saved")
    write_hub_cache(cache, "org/deit", tmp_path / "saved", revision="v2")
    in_memory = tmp_path / "in-memory"  # keys as the model holds them, not as save_pretrained writes them
    in_memory.mkdir()
    save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(in_memory / "model.safetensors"))
    write_hub_cache(cache, "org/deit", in_memory, revision="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    torch.save(model.state_dict(), tmp_path / "sd.pt")

    _, data = run_json("diff-keys", str(tmp_path / "sd.pt"), "org/deit", "--revision", "v2")
    command = _check_in_note(data["notes"])
    assert command[command.index("--config") + 1] == "org/deit" and command[command.index("--revision") + 1] == "v2"
    code, checked = run_json(*command)
    assert code == 0 and not checked["missing"] and not checked["unexpected"]

    _, data = run_json("diff-keys", "org/deit", "org/deit", "--revision", "v1", "--revision-b", "v2")
    command = _check_in_note(data["notes"])
    assert command[command.index("--revision") + 1] == "v1"
    assert command[command.index("--config") + 1] == data["resolved_b"]
    code, checked = run_json(*command)
    assert code == 0 and not checked["missing"] and not checked["unexpected"]


def test_the_model_class_note_gives_a_check_that_runs(tmp_path: Path) -> None:
    """B given as its weights file: the note's --config named that file, which --config reads as JSON (exit 2);
    it names B's folder. An architecture transformers does not have gets no note (its check exits 2)."""
    from safetensors.torch import save_file

    folder = tmp_path / "b"
    folder.mkdir()
    save_file({"omega.q": torch.zeros(5), "encoder.x.weight": torch.zeros(2)}, folder / "model.safetensors")
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"alpha": torch.zeros(3), "encoder.x.weight": torch.zeros(2)}, tmp_path / "a.safetensors")
    _, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(folder / "model.safetensors"))
    [note] = [n for n in data["notes"] if "--model-class" in n]
    command = shlex.split(note.split("what it reports: weightdoctor ")[1])
    assert command[command.index("--config") + 1] == str(folder)
    code, checked = run_json(*command)
    assert code in (0, 1) and checked["mode"] == "model-class"
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["NotARealModel"]}))
    _, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(folder))
    assert not [n for n in data["notes"] if "--model-class" in n]


def test_names_in_wide_characters_break_after_a_dot(tmp_path: Path) -> None:
    """A CJK character takes two cells: lines counted in characters overflowed the column and Rich cut the
    names mid-segment (`注意` / `力`). They break after a dot, in inspect's and diff-keys' tables alike."""
    from rich.cells import cell_len
    from safetensors.torch import save_file

    from tests.helpers import run_subprocess

    names = ["模型.嵌入.词嵌入.权重", "编码器.层.0.注意力.自我.查询.权重", "编码器.层.0.注意力.自我.键值.权重偏置参数"]
    save_file({n: torch.zeros(2, 2) for n in names}, tmp_path / "a.safetensors")
    save_file({f"前缀.{n}": torch.zeros(2, 2) for n in names}, tmp_path / "b.safetensors")
    for args, section, end in (
            (("inspect", tmp_path / "a.safetensors"), "Tensors", None),
            (("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors"), "Unexpected", "reasons")):
        out = run_subprocess(*args, env={"COLUMNS": "60"}).stdout
        # The tables fit; the suggested fix is left to the terminal to wrap, so that it pastes whole.
        assert max(map(cell_len, out.split("suggested fix")[0].splitlines())) <= 60
        table = out[out.index(section):out.index(end) if end else None]
        cells = [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")]
        pieces = [c for c in cells if c and not c.isascii()]
        assert all(p.endswith(".") or p.endswith(("权重", "权重偏置参数")) for p in pieces), pieces
        assert "".join(pieces).replace("*", "0") == "".join(names), pieces


def test_values_of_a_base_model_against_its_fine_tuned_head_model(tmp_path: Path) -> None:
    """A BertModel checkpoint against the BertForSequenceClassification fine-tuned from it: from_pretrained adds
    `bert.` itself (warn), so --values compares under that prefix, as the weights load, and says so (it compared
    nothing: "0 of 0 common tensors"); a wrapper prefix (error) is not applied, and a note says why nothing was."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = {"embeddings.word_embeddings.weight": torch.randn(16, 4), "encoder.layer.0.output.dense.weight":
            torch.randn(4, 4), "encoder.layer.1.output.dense.weight": torch.randn(4, 4)}
    tuned = {f"bert.{k}": v.clone() for k, v in base.items()}
    tuned["bert.encoder.layer.1.output.dense.weight"] += 0.5
    tuned["classifier.weight"] = torch.randn(2, 4)
    for name, weights, arch in (("base", base, "BertModel"), ("tuned", tuned, "BertForSequenceClassification")):
        (tmp_path / name).mkdir()
        save_file(weights, str(tmp_path / name / "model.safetensors"), metadata={"format": "pt"})
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": [arch]}))
    code, data = run_json("diff-keys", tmp_path / "base", tmp_path / "tuned", "--values")
    assert code == 0 and data["matched"] == 0
    assert {i["reason"] for i in data["unexpected"]} == {"base-model-prefix"}
    assert {v["name"]: v["identical"] for v in data["values"]} == {
        "bert.embeddings.word_embeddings.weight": True, "bert.encoder.layer.0.output.dense.weight": True,
        "bert.encoder.layer.1.output.dense.weight": False}
    assert [(lc["layer"], lc["identical"]) for lc in data["layers_changed_most"]] == [
        ("bert.encoder.layer.1", False), ("bert.embeddings.word_embeddings", True), ("bert.encoder.layer.0", True)]
    assert data["renames_applied"] == []
    assert data["notes"] == ["values compared as from_pretrained loads A into B: under --rename '^=bert.' (the "
                             "base-model prefix it adds or strips itself)"]
    # The other way round from_pretrained strips `bert.`: the same three pairs.
    code, data = run_json("diff-keys", tmp_path / "tuned", tmp_path / "base", "--values")
    assert code == 0 and sorted(v["name"] for v in data["values"]) == sorted(base)
    # DDP's `module.` is no prefix from_pretrained handles: not applied, and the note says what to add.
    torch.save({f"module.{k}": v for k, v in base.items()}, tmp_path / "ddp.pt")
    code, data = run_json("diff-keys", tmp_path / "ddp.pt", tmp_path / "base", "--values")
    assert code == 1 and data["values"] == []
    assert data["notes"] == ["no tensor has the same name in A and B, so no values were compared: add the "
                             "suggested fix (--rename '^module\\.=') to compare them under it"]


def test_a_peft_modules_to_save_head_is_renamed_from_its_trained_copy(tmp_path: Path) -> None:
    """A PEFT model's state dict with modules_to_save=["classifier"] holds the head twice: the frozen
    `original_module` and the trained `modules_to_save.default`. The suggested fix renamed the frozen one onto
    `classifier.` (a simpler rename, same gain): convert with it handed back the untrained head. The fix now
    takes the trained copy, as merge_and_unload does, and the frozen copy is left as an adapter key."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    head, trained = torch.randn(3, 4), torch.randn(3, 4)
    b = {"bert.embeddings.word_embeddings.weight": torch.randn(8, 4), "bert.encoder.layer.0.output.dense.weight":
         torch.randn(4, 4), "bert.encoder.layer.0.attention.self.query.weight": torch.randn(4, 4),
         "classifier.weight": head}
    (tmp_path / "base").mkdir()
    save_file(b, str(tmp_path / "base" / "model.safetensors"))
    a = {f"base_model.model.{k}": b[k] for k in ("bert.embeddings.word_embeddings.weight",
                                                 "bert.encoder.layer.0.output.dense.weight")}
    a |= {"base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.weight":
         b["bert.encoder.layer.0.attention.self.query.weight"],
         "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight": torch.randn(2, 4),
         "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.default.weight": torch.randn(4, 2),
         "base_model.model.classifier.original_module.weight": head,
         "base_model.model.classifier.modules_to_save.default.weight": trained}
    torch.save(a, tmp_path / "peft.pt")
    code, data = run_json("diff-keys", tmp_path / "peft.pt", tmp_path / "base")
    flags = [s["flag"] for s in data["suggested_renames"]]
    assert flags == ["--rename '^base_model\\.model\\.='",
                     "--rename '^classifier\\.modules_to_save\\.default\\.=classifier.'",
                     "--rename '\\.base_layer\\.=.'"], flags
    assert data["matched_after_renames"] == 4
    assert {u["name"]: (u["reason"], u["severity"]) for u in data["unexpected"]
            if "original_module" in u["name"]} == {"base_model.model.classifier.original_module.weight":
                                                   ("adapter", "warn")}
    # The fix, copy-pasted into convert: the head written is the trained one.
    renames = [part for flag in flags for part in shlex.split(flag)]
    code, _ = run_json("convert", tmp_path / "peft.pt", "-o", tmp_path / "out.safetensors", *renames)
    assert code == 0
    assert torch.equal(load_file(tmp_path / "out.safetensors")["classifier.weight"], trained)


def test_values_table_puts_an_overflowed_tensor_first(tmp_path: Path) -> None:
    """fp32 against its fp16 cast, one value overflowed: that tensor's change is NaN (inf on one side). The table
    sorted by -rel_change, and a NaN key leaves sorted() without an order: the overflow sat mid-table, under
    tensors changed by 0.02%. Now it comes first, as in the layer ranking, then the rest by size of change."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a = {f"t{i}.weight": torch.randn(64) for i in range(6)}
    a["t3.weight"][0] = 7e4  # beyond fp16
    a["t4.weight"] *= 1e-6  # mostly flushed to zero in fp16: a large relative change
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({k: v.half() for k, v in a.items()}, str(tmp_path / "b.safetensors"))
    result = run_cli("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--values")
    assert result.exit_code == 0, result.stderr
    table = result.stdout.split("Values: ", 1)[1].split("Layers changed most", 1)[0]
    rows = [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│ t")]
    assert rows[:2] == ["t3.weight", "t4.weight"], rows
    code, data = run_json("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--values")
    changes = {v["name"]: v["rel_change"] for v in data["values"]}
    rest = [changes[name] for name in rows[1:]]
    assert rest == sorted(rest, reverse=True) and rows[0] == "t3.weight"


def test_the_model_class_note_keeps_a_at_its_own_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A a Hub repo at its default branch, B the same repo at --revision-b v2: the check gave `--revision v2`,
    which --model-class applies to A as well, so it compared A at v2 (another checkpoint). It names B's snapshot
    as --config and leaves A's revision alone."""
    from safetensors.torch import save_file

    from fixtures.build import write_hub_cache

    model = _tiny_deit()
    cache = tmp_path / "cache"
    model.save_pretrained(tmp_path / "saved")
    write_hub_cache(cache, "org/deit", tmp_path / "saved", revision="v2")
    in_memory = tmp_path / "in-memory"
    in_memory.mkdir()
    save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(in_memory / "model.safetensors"))
    write_hub_cache(cache, "org/deit", in_memory)  # main
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    _, data = run_json("diff-keys", "org/deit", "org/deit", "--revision-b", "v2")
    command = _check_in_note(data["notes"])
    assert "--revision" not in command and command[command.index("--config") + 1] == data["resolved_b"]
    code, checked = run_json(*command)
    assert code == 0 and not checked["missing"] and checked["resolved_a"] == data["resolved_a"]


def test_the_model_class_note_carries_a_rename_with_an_equals_sign(tmp_path: Path) -> None:
    """A --rename whose regex holds `=` (given as `\\=`): the check wrote it back unescaped, `--rename 'k=v=x'`,
    which parses as the regex `k` and the replacement `v=x`; it renamed other keys than this run did."""
    model = _tiny_deit()
    model.save_pretrained(tmp_path / "hub")
    torch.save({f"n=1.{name}": tensor for name, tensor in model.state_dict().items()}, tmp_path / "sd.pt")
    code, data = run_json("diff-keys", str(tmp_path / "sd.pt"), str(tmp_path / "hub"), "--rename", r"^n\=1\.=")
    command = _check_in_note(data["notes"])
    assert command[command.index("--rename") + 1] == r"^n\=1\.="
    code, checked = run_json(*command)
    assert code == 0 and not checked["missing"] and not checked["unexpected"] and checked["matched"] > 0


def test_group_tables_on_a_very_narrow_console_keep_names_and_words_whole(tmp_path: Path) -> None:
    """At 56 columns the keys' column had 11 cells and the detail 10: Rich cut names mid-segment (`bert.embedd` /
    `ings.LayerN`) and words (`initialize` / `d`); at 40 the reason and severity too (`unkno…`). Each group is told
    in lines of its own there: its keys, then reason, severity and count, then the detail."""
    from rich.cells import cell_len
    from safetensors.torch import save_file

    from tests.helpers import REPO_ROOT, run_subprocess

    save_file({"[bold]x.weight": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    for width in (40, 56):
        out = run_subprocess("diff-keys", tmp_path / "a.safetensors", REPO_ROOT / "fixtures" / "example",
                             env={"COLUMNS": str(width)}).stdout
        tables = out[out.index("Missing"):out.index("reasons")]
        # A command a note gives is printed whole on a line of its own, to be copied (ux14): the terminal wraps it.
        lines = [line for line in out.splitlines() if not line.startswith("weightdoctor diff-keys ")]
        assert max(map(cell_len, lines)) <= width and "…" not in tables
        cells = [line.strip("│ ") for line in tables.splitlines() if line.startswith("│")]
        assert "bert.embeddings.LayerNorm.bias" in cells and "unknown · error · ×64" in cells
        assert "new, initialized at random" in cells and "[bold]x.weight" in tables  # markup shown, not applied
