"""Renumbered layers and experts in diff-keys, round 2 (after test_user_mistakes19).

Covers: two experts of one MoE layer saved under other numbers (experts 2 and 5 saved as 9 and 11) in Mixtral,
Qwen3-MoE and OLMoE checkpoints: diff-keys said "unknown" and offered no rename; now it offers one rename an
expert, paired in the order of their numbers, and says names and shapes cannot tell which is which (every expert
of a layer has the same shapes) and to check with --values, which shows a crossed pairing. A pipeline stage saved
from 0 (a Llama's layers 12-23 saved as 0-11) against the stage as numbered in the model: diff-keys offered 6
renames, paired by the names' text (layer 10 onto 14, layer 2 not at all); now all 12 in order, with the note that
--rename cannot add to a number (its replacement is text), so the list is one rename a layer, in full, in order, as
the Python snippet gives it. Each rename list pasted into diff-keys reports nothing missing or unexpected, and into
convert writes a file that from_pretrained loads with every weight the original's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import json_report, run_cli
from tests.test_user_mistakes19 import _MOE_KINDS, _flags, _renumbered, saved_moe
from tests.test_user_mistakes19 import _loads_as_the_original as _loads_as


@pytest.fixture(scope="module", params=_MOE_KINDS)
def moe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny MoE of eight experts a layer, saved by save_pretrained (per-expert keys), and its state dict."""
    return saved_moe(request.param, tmp_path_factory, experts=8)


def _expert_of(name: str) -> str:
    return name.split(".experts.")[1].split(".")[0]


def test_two_experts_renumbered_get_a_rename_each_paired_in_order_with_the_tie_said(
        moe: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, original = moe
    renumbered = _renumbered(folder, tmp_path / "renumbered", [(1, 2, 9), (1, 5, 11)])
    report = json_report("diff-keys", str(renumbered), str(folder))
    # was: no suggestion, "unknown: no known cause" on both sides
    pairs = [(rename["pattern"].split("experts\\.")[1].split("\\.")[0], rename["replacement"].split("experts.")[1])
             for rename in report["suggested_renames"]]
    assert pairs == [("9", "2."), ("11", "5.")]
    assert all(rename["pattern"].startswith("^model\\.layers\\.1\\.") for rename in report["suggested_renames"])
    assert report["matched_after_renames"] == report["total_b"]
    (note,) = [note for note in report["notes"] if "experts 9, 11 have the names and shapes" in note]
    assert "names and shapes cannot tell which is which" in note and "(9 with 2, 11 with 5)" in note
    assert "not a constant offset: a guess" in note and "--values" in note
    assert {_expert_of(issue["name"]) for issue in report["missing"]} == {"2", "5"}

    again = json_report("diff-keys", str(renumbered), str(folder), *_flags(report))
    assert (again["missing"], again["unexpected"], again["mismatched"]) == ([], [], [])
    fixed = tmp_path / "fixed"
    converted = run_cli("convert", str(renumbered), "-o", str(fixed), *_flags(report))
    assert converted.exit_code == 0, converted.output
    _loads_as(fixed, original, folder)


def test_two_experts_renumbered_crossed_get_the_same_guess_and_values_show_it(
        moe: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Experts 2 and 5 saved as 11 and 9: the names and shapes are those of the case above, so is the guess; the
    note says it is one, and --values with the renames shows the two experts' weights all changed."""
    folder, _ = moe
    crossed = _renumbered(folder, tmp_path / "crossed", [(1, 2, 11), (1, 5, 9)])
    report = json_report("diff-keys", str(crossed), str(folder))
    assert [rename["replacement"].split("experts.")[1] for rename in report["suggested_renames"]] == ["2.", "5."]
    assert any("cannot tell which is which" in note for note in report["notes"])
    checked = json_report("diff-keys", str(crossed), str(folder), "--values", *_flags(report))
    changed = {row["name"] for row in checked["values"] if not row["identical"]}
    assert changed and {_expert_of(name) for name in changed} == {"2", "5"}
    assert all(".layers.1." in name for name in changed)


def test_two_experts_renumbered_against_the_class_get_a_rename_each(moe: tuple[Path, dict[str, Any]],
                                                                    tmp_path: Path) -> None:
    """Against the model class: expert-numbering named the two, and no rename was offered (one expert only)."""
    import transformers

    folder, original = moe
    architecture = transformers.AutoConfig.from_pretrained(folder).architectures[0]
    renumbered = _renumbered(folder, tmp_path / "renumbered", [(1, 2, 9), (1, 5, 11)])
    report = json_report("diff-keys", str(renumbered), "--model-class", architecture)
    assert {issue["reason"] for issue in report["missing"]} == {"expert-numbering"}
    assert [rename["replacement"].rpartition("experts.")[2] for rename in report["suggested_renames"]] == ["2.", "5."]
    assert [rename["pattern"].rpartition("experts\\.")[2] for rename in report["suggested_renames"]] == [
        "9\\.", "11\\."]
    assert all("the numbers 2, 5 the model lacks, in the order of their numbers" in issue["detail"]
               and "tells which is which" in issue["detail"] for issue in report["missing"])
    assert any("(9 with 2, 11 with 5), not a constant offset: a guess" in note for note in report["notes"])
    assert report["matched_after_renames"] == report["total_b"]
    again = json_report("diff-keys", str(renumbered), "--model-class", architecture, *_flags(report))
    assert (again["missing"], again["unexpected"], again["mismatched"]) == ([], [], [])
    fixed = tmp_path / "fixed"
    assert run_cli("convert", str(renumbered), "-o", str(fixed), *_flags(report)).exit_code == 0
    _loads_as(fixed, original, folder)


def _llama(layers: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def test_a_pipeline_stage_saved_from_0_gets_every_layer_renamed_in_order(tmp_path: Path) -> None:
    """Layers 12-23 of a 24-layer Llama saved by the second pipeline stage as 0-11, against that stage as the model
    numbers it. Was: 6 renames, the first layers by the text of their names (0, 1, 10, 11, ... onto 12, 13, 14,
    15, ...: layer 10 onto 14)."""
    import torch
    from safetensors.torch import load_file, save_file

    model = _llama(24)
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    folder = tmp_path / "original"
    model.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    first = {n: t for n, t in weights.items() if not n.startswith("model.layers.") or int(n.split(".")[2]) < 12}
    second = {n: t for n, t in weights.items() if n not in first or n in ("model.norm.weight", "lm_head.weight")}
    for name in ("model.norm.weight", "lm_head.weight"):
        first.pop(name, None)
    save_file(second, str(tmp_path / "stage1_numbered.safetensors"))
    saved_from_0 = {}
    for name, tensor in second.items():
        if name.startswith("model.layers."):
            number = int(name.split(".")[2])
            name = name.replace(f"model.layers.{number}.", f"model.layers.{number - 12}.", 1)
        saved_from_0[name] = tensor
    stage = tmp_path / "stage1.safetensors"
    save_file(saved_from_0, str(stage))

    report = json_report("diff-keys", str(stage), str(tmp_path / "stage1_numbered.safetensors"))
    assert [(r["pattern"], r["replacement"]) for r in report["suggested_renames"]] == [
        (f"^model\\.layers\\.{n}\\.", f"model.layers.{n + 12}.") for n in range(12)]
    assert report["matched_after_renames"] == report["total_b"]
    (note,) = [note for note in report["notes"] if "model.layers 0-11 have the names and shapes" in note]
    assert "B's model.layers 12-23" in note and "a constant offset of +12" in note
    assert "--rename cannot add to a number" in note and "all 12 listed, applied in the order given" in note
    assert report["python_snippet"].count("re.sub(") == 12

    again = json_report("diff-keys", str(stage), str(tmp_path / "stage1_numbered.safetensors"), *_flags(report))
    assert (again["missing"], again["unexpected"], again["mismatched"]) == ([], [], [])
    converted_path = tmp_path / "stage1_renamed.safetensors"
    converted = run_cli("convert", str(stage), "-o", str(converted_path), *_flags(report))
    assert converted.exit_code == 0, converted.output
    # The two stages merged: the model from_pretrained loads whole, every weight the original's.
    renamed = load_file(converted_path)
    assert all(torch.equal(renamed[name], tensor) for name, tensor in second.items())
    merged = tmp_path / "merged"
    shutil.copytree(folder, merged)
    save_file({**first, **renamed}, str(merged / "model.safetensors"), metadata={"format": "pt"})
    _loads_as(merged, original, folder)


def test_a_renumbered_layer_against_a_base_model_class_gets_the_rename_that_loads(tmp_path: Path) -> None:
    """A Llama saved by LlamaForCausalLM (names under `model.`, the embeddings tied) whose layer 1 was saved as
    `model.layers.7.`, against LlamaModel, whose names are `layers.1.` without the prefix: diff-keys said "no rename
    makes more of the model load with from_pretrained" (the search renamed layer 7 onto `layers.0.`, which A's
    `model.layers.0.` fills already); now the rename in the checkpoint's own form, `model.layers.1.`."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    base = {name: tensor.clone() for name, tensor in model.model.state_dict().items()}
    folder = tmp_path / "renumbered"
    model.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    assert "lm_head.weight" not in weights and "model.layers.1.mlp.up_proj.weight" in weights
    save_file({name.replace("model.layers.1.", "model.layers.7."): tensor for name, tensor in weights.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})

    _, info = LlamaModel.from_pretrained(folder, output_loading_info=True)  # the library's own report
    said = json_report("diff-keys", str(folder), "--model-class", "LlamaModel")
    assert {issue["name"] for issue in said["missing"]} == set(info["missing_keys"])
    assert {issue["name"] for issue in said["unexpected"]} == set(info["unexpected_keys"])
    assert [(r["pattern"], r["replacement"]) for r in said["suggested_renames"]] == [
        ("^model\\.layers\\.7\\.", "model.layers.1.")]  # was none
    assert "no rename makes more of the model load with from_pretrained" not in said["notes"]
    assert any("A's model.layers.7 has the names and shapes of the model's model.layers.1" in note
               for note in said["notes"])
    assert said["matched_after_renames"] == said["total_b"]
    again = json_report("diff-keys", str(folder), "--model-class", "LlamaModel", *_flags(said))
    assert (again["missing"], again["unexpected"], again["mismatched"]) == ([], [], [])
    fixed = tmp_path / "fixed"
    assert run_cli("convert", str(folder), "-o", str(fixed), *_flags(said)).exit_code == 0
    loaded, info = LlamaModel.from_pretrained(fixed, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    state = loaded.state_dict()
    assert set(state) == set(base) and all(torch.equal(state[name], base[name]) for name in base)


def test_prefix_renames_applied_at_once_give_what_they_give_one_by_one() -> None:
    """rename_all's one pass over a run of prefix renames, and rename_steps' first step a name, against
    Rename.apply rename by rename: a renumbered block, a chain (0 -> 1, 1 -> 2: the same name renamed twice), a
    prefix inside another, a rename spared by a regex, in random orders."""
    import random

    from weightdoctor.renames import Rename, rename_all, rename_steps

    names = [f"m.layers.{i}.{tail}" for i in range(30) for tail in ("w", "b")] + ["m.layers.x", "head.w", "m.n.w"]
    blocks = [
        [Rename(f"^m\\.layers\\.{i}\\.", f"m.layers.{i + 40}.") for i in range(30)],
        [Rename(f"^m\\.layers\\.{i}\\.", f"m.layers.{i + 1}.") for i in range(10)],
        [Rename("^m\\.layers\\.1\\.", "m.layers.31."), Rename("^m\\.layers\\.", "m.blocks."),
         Rename("^m\\.layers\\.2\\.", "z.")],
        [Rename("^m\\.layers\\.3\\.", "m.layers.4."), Rename("^m\\.layers\\.4\\.", "m.layers.3."),
         Rename("layers", "layer"), Rename("^m\\.layer\\.5\\.", "m.layer.50.")],
    ]
    rng = random.Random(0)
    for renames in [*blocks, *(rng.sample(block, len(block)) for block in blocks for _ in range(5))]:
        expected = []
        first = []
        for name in names:
            step = -1
            for index, rename in enumerate(renames):
                renamed = rename.apply(name)
                if renamed != name and step < 0:
                    step = index
                name = renamed
            expected.append(name)
            first.append(step)
        assert rename_all(names, renames) == expected, renames
        assert rename_steps(names, renames) == (expected, first), renames


def test_a_renumbered_block_is_explained_in_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 300-layer stage saved from 0: the report's reasons for its 300 renames came from one rename_all over every
    unexpected key a rename (300 passes over 1,200 names, quadratic: ~20 s at 10,000 keys, with the rename search's
    own regex a name and a rename); now the prefix renames are one run, looked up. The timing itself:
    benchmarks/bench_renumbered.py (medians in the renumber2 report)."""
    import weightdoctor.diff_keys as diff_keys
    import weightdoctor.renames as renames
    from benchmarks.bench_diff_keys import write_sparse_safetensors

    specs = [("a.weight", (4, 4)), ("b.weight", (4,)), ("c.weight", (8, 4)), ("d.weight", (4, 8))]
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_sparse_safetensors(a, [(f"model.layers.{i}.{n}", s) for i in range(300) for n, s in specs])
    write_sparse_safetensors(b, [(f"model.layers.{i + 300}.{n}", s) for i in range(300) for n, s in specs])
    passes: list[int] = []
    applied: list[int] = []
    real_rename_all, real_apply = renames.rename_all, renames.Rename.apply

    def counted(names: Any, given: Any) -> list[str]:
        passes.append(1)
        return real_rename_all(names, given)

    def counted_apply(self: Any, name: str) -> str:
        applied.append(1)
        return real_apply(self, name)

    monkeypatch.setattr(diff_keys, "rename_all", counted)
    monkeypatch.setattr(renames, "rename_all", counted)
    monkeypatch.setattr(renames.Rename, "apply", counted_apply)
    report = json_report("diff-keys", str(a), str(b))
    assert [r["replacement"] for r in report["suggested_renames"]] == [f"model.layers.{i + 300}." for i in range(300)]
    assert {issue["reason"] for issue in report["missing"] + report["unexpected"]} == {"renamed"}
    assert report["matched_after_renames"] == 1200
    assert len(passes) < 10 and len(applied) < 1200, (len(passes), len(applied))
