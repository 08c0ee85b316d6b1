"""diff-keys analysis: reasons, grouping, rename detection, values, and the from_pretrained oracle."""

from __future__ import annotations

import gc
import io
import json
import math
import shlex
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from rich.console import Console

from fixtures.diff_pairs import Pair, build_pairs
from tests.helpers import run_cli
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.diff_keys import (
    LEGACY_RENAMES,
    KeySpec,
    classify_key,
    classify_mismatch,
    collapse_indices,
    compare_values,
    config_ties,
    diff_checkpoints,
    diff_specs,
    exit_code,
    layer_of,
    rename_reason,
    suggest_renames,
)
from weightdoctor.errors import CorruptCheckpoint, UsageError
from weightdoctor.load_simulation import diff_checkpoint_against_model
from weightdoctor.renames import Rename, apply_renames, parse_rename
from weightdoctor.render.diff_keys import render_diff_keys


def spec(name: str, *shape: int, dtype: str = "float32") -> KeySpec:
    return KeySpec(name, tuple(shape), dtype)


def specs(*items: KeySpec) -> dict[str, KeySpec]:
    return {s.name: s for s in items}


def llama_keys(layers: int, prefix: str = "model.") -> dict[str, KeySpec]:
    out = [spec(f"{prefix}embed_tokens.weight", 100, 8)]
    for i in range(layers):
        for leaf in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            out.append(spec(f"{prefix}layers.{i}.{leaf}.weight", 8, 8))
        out += [spec(f"{prefix}layers.{i}.input_layernorm.weight", 8),
                spec(f"{prefix}layers.{i}.post_attention_layernorm.weight", 8)]
    out += [spec(f"{prefix}norm.weight", 8), spec("lm_head.weight", 100, 8)]
    return specs(*out)


# --------------------------------------------------------------------------------------------- grouping


def test_collapse_indices() -> None:
    assert collapse_indices("encoder.layer.11.attention.self.query.weight") == (
        "encoder.layer.*.attention.self.query.weight")
    assert collapse_indices("h.0.mlp.experts.7.w1") == "h.*.mlp.experts.*.w1"
    assert collapse_indices("0.weight") == "*.weight"
    assert collapse_indices("layer10x.weight") == "layer10x.weight"


def test_thousand_key_diff_reads_in_one_screen() -> None:
    a = {f"module.{n}": KeySpec(f"module.{n}", s.shape, s.dtype) for n, s in llama_keys(111).items()}
    b = llama_keys(111)
    report = diff_specs(a, b)
    assert len(report.missing) == len(report.unexpected) == 1002
    assert len(report.groups) <= 2 * 6
    assert sum(g.count for g in report.groups if g.kind == "missing") == 1002
    assert {g.reason for g in report.groups} == {"wrapper-prefix"}
    assert report.suggested_renames[0].flag == "--rename '^module\\.='"
    assert report.matched_after_renames == len(b)


def test_groups_collapse_layers_with_counts() -> None:
    b = llama_keys(12)
    a = {n: s for n, s in b.items() if "q_proj" not in n}
    report = diff_specs(a, b)
    (group,) = report.groups
    assert (group.kind, group.pattern, group.count, group.reason) == (
        "missing", "model.layers.*.self_attn.q_proj.weight", 12, "unknown")


# --------------------------------------------------------------------------------------------- reasons


@pytest.mark.parametrize(
    ("name", "kind", "reason", "severity"),
    [
        ("classifier.weight", "missing", "task-head", "info"),
        ("score.weight", "missing", "task-head", "info"),
        ("qa_outputs.bias", "unexpected", "task-head", "info"),
        ("bert.pooler.dense.weight", "missing", "task-head", "info"),
        ("bert.embeddings.position_ids", "unexpected", "buffer", "info"),
        ("backbone.bn1.num_batches_tracked", "unexpected", "buffer", "info"),
        ("transformer.h.3.attn.bias", "unexpected", "buffer", "info"),
        ("model.layers.0.self_attn.rotary_emb.inv_freq", "unexpected", "buffer", "info"),
        ("model.layers.0.self_attn.q_proj.lora_A.default.weight", "unexpected", "adapter", "warn"),
        ("transformer.prefix_encoder.embedding.weight", "unexpected", "adapter", "warn"),
        ("model.layers.0.mlp.down_proj.weight.absmax", "unexpected", "quantization", "warn"),
        ("model.layers.0.mlp.down_proj.SCB", "unexpected", "quantization", "warn"),
        ("model.layers.0.mlp.down_proj.qzeros", "unexpected", "quantization", "warn"),
        ("encoder.block.3.weird.weight", "missing", "unknown", "error"),
    ],
)
def test_classify_key(name: str, kind: str, reason: str, severity: str) -> None:
    assert classify_key(name, spec(name, 4, 4), kind, {})[:2] == (reason, severity)


def test_tied_output_embedding_is_info_only_when_an_embedding_can_supply_it() -> None:
    other = specs(spec("transformer.wte.weight", 99, 32), spec("transformer.wpe.weight", 64, 32))
    assert classify_key("lm_head.weight", spec("lm_head.weight", 99, 32), "missing", other) == (
        "tied-weight", "info", "tied to transformer.wte.weight")
    # A different vocabulary cannot be tied: then it is a missing head.
    assert classify_key("lm_head.weight", spec("lm_head.weight", 50, 32), "missing", other)[0] == "task-head"
    groups = [["lm_head.weight", "transformer.wte.weight"]]
    assert classify_key("lm_head.weight", spec("lm_head.weight", 1), "unexpected", {}, groups)[0] == "tied-weight"


def test_untied_target_config_means_a_missing_head_is_not_tied() -> None:
    a = specs(spec("model.embed_tokens.weight", 100, 8))
    b = specs(spec("model.embed_tokens.weight", 100, 8), spec("lm_head.weight", 100, 8))
    assert diff_specs(a, b).missing[0].reason == "tied-weight"
    assert diff_specs(a, b, tie_embeddings=False).missing[0].reason == "task-head"
    assert config_ties({"tie_word_embeddings": False}) is False
    assert config_ties({"text_config": {"tie_word_embeddings": True}}) is True
    assert config_ties({"model_type": "llama"}) is None and config_ties(None) is None


def test_docstring_examples() -> None:
    import doctest

    from weightdoctor import diff_keys

    assert doctest.testmod(diff_keys).failed == 0


@pytest.mark.parametrize(
    ("name", "shape_a", "shape_b", "reason", "severity"),
    [
        ("bert.embeddings.word_embeddings.weight", (99, 32), (120, 32), "vocab-size", "warn"),
        ("lm_head.weight", (99, 32), (120, 32), "vocab-size", "warn"),
        ("bert.embeddings.position_embeddings.weight", (64, 32), (128, 32), "position-length", "warn"),
        ("transformer.wpe.weight", (1024, 8), (2048, 8), "position-length", "warn"),
        ("classifier.weight", (3, 32), (5, 32), "head-size", "warn"),
        ("bert.encoder.layer.0.attention.self.query.weight", (32, 32), (64, 64), "shape", "error"),
        ("bert.embeddings.word_embeddings.weight", (99, 32), (99, 64), "shape", "error"),
    ],
)
def test_classify_mismatch(name: str, shape_a: tuple, shape_b: tuple, reason: str, severity: str) -> None:
    assert classify_mismatch(name, shape_a, shape_b)[:2] == (reason, severity)


# --------------------------------------------------------------------------------------------- renames


def shapes(items: dict[str, KeySpec]) -> dict[str, tuple[int, ...]]:
    return {n: s.shape for n, s in items.items()}


def test_suggest_strip_add_and_replace_prefix() -> None:
    b = shapes(llama_keys(2))
    stripped = {n.removeprefix("model."): s for n, s in b.items()}
    (add,) = suggest_renames(stripped, b)
    # `lm_head.weight` already matches, so the added prefix spares it.
    assert (add.pattern, add.replacement, add.matches_gained) == ("^(?!(?:lm_head)\\.)", "model.", len(b) - 1)
    assert rename_reason(Rename(add.pattern, add.replacement)) == ("base-model-prefix", "warn")
    wrapped = {"module." + n: s for n, s in b.items()}
    (strip,) = suggest_renames(wrapped, b)
    assert strip.flag == "--rename '^module\\.='" and strip.matches_gained == len(b)
    swapped = {n.replace("model.", "transformer.", 1): s for n, s in b.items()}
    (replace,) = suggest_renames(swapped, b)
    assert (replace.pattern, replace.replacement) == ("^transformer\\.", "model.")


def test_suggest_renames_apply_and_match_everything() -> None:
    b = shapes(llama_keys(3))
    a = {"base_model.model." + n.replace(".layers.", ".blocks."): s for n, s in b.items()}
    found = suggest_renames(a, b)
    mapping = apply_renames(a, [Rename(r.pattern, r.replacement) for r in found])
    assert sorted(mapping.values()) == sorted(b)
    assert len(found) == 2


def test_the_two_wrappers_fsdp1_puts_inside_every_block_are_dropped_together(tmp_path: Path) -> None:
    """FSDP1 with activation checkpointing, saved from the wrapped model: `_fsdp_wrapped_module.` in front and
    `_fsdp_wrapped_module._checkpoint_wrapped_module.` inside every block. Dropping either inner wrapper alone
    matches nothing, so only the prefix strip was suggested (3 of 30 keys)."""
    import re

    from safetensors.torch import save_file

    from tests.helpers import run_cli

    b = shapes(llama_keys(3))
    a = {"_fsdp_wrapped_module." + re.sub(r"^(model\.layers\.\d+\.)",
                                          r"\1_fsdp_wrapped_module._checkpoint_wrapped_module.", n): s
         for n, s in b.items()}
    found = suggest_renames(a, b)
    assert [(r.pattern, r.replacement) for r in found] == [
        (r"^_fsdp_wrapped_module\.", ""), (r"\._fsdp_wrapped_module\._checkpoint_wrapped_module\.", ".")]
    mapping = apply_renames(a, [Rename(r.pattern, r.replacement) for r in found])
    assert sorted(mapping.values()) == sorted(b)
    # The flags re-check from the command line: everything loads.
    for name, keys in (("a", a), ("b", b)):
        save_file({key: torch.zeros(shape) for key, shape in keys.items()}, tmp_path / f"{name}.safetensors")
    flags = [arg for r in found for arg in shlex.split(r.flag)]
    result = run_cli("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors", *flags, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["matched"] == len(b) and not report["missing"] + report["unexpected"]


def test_suggest_legacy_names_win_over_lookalikes() -> None:
    b = {"enc.LayerNorm.weight": (8,), "enc.LayerNorm.bias": (8,)}
    a = {"enc.LayerNorm.gamma": (8,), "enc.LayerNorm.beta": (8,)}
    assert sorted(r.replacement for r in suggest_renames(a, b)) == ["LayerNorm.bias", "LayerNorm.weight"]


def test_suggest_respects_shapes_and_collisions() -> None:
    # `classifier.weight` has the name of nothing in B with its shape: no rename is invented for it.
    assert suggest_renames({"classifier.weight": (3, 8)}, {"norm.weight": (8,)}) == []
    # Stripping `module.` would make two keys one: refused.
    assert suggest_renames({"module.w": (2,), "w": (2,), "x": (1,)}, {"w": (2,), "y": (5,)}) == []


def test_suggested_flags_parse_back_to_the_same_renames() -> None:
    b = {"a=b.weight": (2,), "x.weight": (3,), "enc.layer.0.w": (4,)}
    a = {"module.a=b.weight": (2,), "module.x.weight": (3,), "module.enc.layers.0.w": (4,)}
    found = suggest_renames(a, b)
    for suggestion in found:
        (flag, spec) = shlex.split(suggestion.flag)
        assert flag == "--rename"
        assert parse_rename(spec) == Rename(suggestion.pattern, suggestion.replacement)
    assert sorted(apply_renames(a, [parse_rename(shlex.split(s.flag)[1]) for s in found]).values()) == sorted(b)


def test_legacy_renames_agree_with_transformers() -> None:
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    from transformers.core_model_loading import rename_source_key

    legacy = get_checkpoint_conversion_mapping("legacy")
    for key in ("bert.encoder.layer.0.output.LayerNorm.gamma", "bert.embeddings.LayerNorm.beta",
                "encoder.conv.weight_g", "encoder.conv.weight_v", "bert.LayerNorm.weight"):
        theirs, _ = rename_source_key(key, legacy, [])
        ours = key
        for rename in LEGACY_RENAMES:
            ours = rename.apply(ours)
        assert ours == theirs, key


# --------------------------------------------------------------------------------------------- diff


def test_diff_specs_counts_dtypes_and_direction() -> None:
    a = specs(spec("w", 2, 2), spec("extra", 1), spec("emb.word_embeddings.weight", 10, 4),
              spec("n", 2, dtype="bfloat16"))
    b = specs(spec("w", 2, 2), spec("classifier.weight", 3, 4), spec("emb.word_embeddings.weight", 12, 4), spec("n", 2))
    report = diff_specs(a, b)
    assert report.matched == 2  # w and n (n differs only in dtype)
    assert [(i.name, i.reason) for i in report.missing] == [("classifier.weight", "task-head")]
    assert [(i.name, i.reason, i.severity) for i in report.unexpected] == [("extra", "unknown", "error")]
    assert [(m.name, m.shape_a, m.shape_b, m.reason) for m in report.mismatched] == [
        ("emb.word_embeddings.weight", [10, 4], [12, 4], "vocab-size")]
    assert [(d.name, d.dtype_a, d.dtype_b, d.severity) for d in report.dtype_differences] == [
        ("n", "bfloat16", "float32", "info")]
    assert report.worst_severity == "error"
    assert exit_code(report, "error") == 1
    assert exit_code(diff_specs(b, b), "info") == 0


def test_exit_code_thresholds() -> None:
    b = specs(spec("w", 2), spec("classifier.weight", 3, 2))
    report = diff_specs(specs(spec("w", 2)), b)
    assert report.worst_severity == "info"
    assert [exit_code(report, level) for level in ("info", "warn", "error")] == [1, 0, 0]
    with pytest.raises(UsageError, match="fail-on"):
        exit_code(report, "fatal")


def test_renames_are_applied_before_diffing_and_collisions_refused() -> None:
    a = specs(spec("module.w", 2), spec("module.v", 3))
    b = specs(spec("w", 2), spec("v", 3))
    report = diff_specs(a, b, [Rename(r"^module\.", "")])
    assert (report.matched, report.missing, report.unexpected, report.renames_applied) == (
        2, [], [], ["--rename '^module\\.='"])
    with pytest.raises(UsageError, match="map both"):
        diff_specs(a, b, [Rename(r"^module\.\w", "x")])


# --------------------------------------------------------------------------------------------- values


def test_compare_values_numbers() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    rows, layers = compare_values(iter([("layer.0.w", a, b), ("layer.1.w", a, a.clone()),
                                        ("head.w", torch.zeros(2), torch.zeros(2))]))
    changed, same, zeros = rows
    assert not changed.identical and changed.max_abs_diff == 1.0
    assert math.isclose(changed.rel_change, 1.0 / float(torch.linalg.norm(b.double())), rel_tol=1e-12)
    assert same.identical and same.rel_change == 0.0 and same.max_abs_diff == 0.0
    assert zeros.identical and zeros.rel_change == 0.0
    assert [layer.layer for layer in layers][0] == "layer.0"
    assert layers[0].tensors == 1 and not layers[0].identical


def test_compare_values_nan_inf_dtypes() -> None:
    nan = torch.tensor([float("nan"), 1.0])
    rows, _ = compare_values(iter([
        ("a", nan, nan.clone()),
        ("b", torch.tensor([1.0]), torch.tensor([0.0])),
        ("c", torch.tensor([1.0, 2.5], dtype=torch.float32), torch.tensor([1.0, 2.5], dtype=torch.bfloat16)),
        ("d", torch.tensor([1.0 + 2 ** -10]), torch.tensor([1.0 + 2 ** -10]).to(torch.bfloat16)),
        ("e", torch.tensor([1, 2]), torch.tensor([1, 3])),
        ("f", torch.tensor([float("nan"), 5.0]), torch.tensor([1.0, 1.0])),
    ]))
    assert rows[0].identical
    assert rows[1].rel_change == math.inf
    assert rows[2].identical and (rows[2].dtype_a, rows[2].dtype_b) == ("float32", "bfloat16")
    assert not rows[3].identical  # bf16 lost the low bits: the conversion was not lossless
    assert not rows[4].identical and rows[4].max_abs_diff == 1.0
    assert not rows[5].identical and math.isnan(rows[5].max_abs_diff) and math.isnan(rows[5].rel_change)


def test_compare_values_holds_one_pair_at_a_time() -> None:
    alive: list[weakref.ref] = []

    def pairs() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for i in range(5):
            gc.collect()
            assert all(ref() is None for ref in alive), "an earlier pair is still referenced"
            # Larger than diff_keys.BATCH_PAIR_ELEMENTS: smaller pairs are held together, up to a bound
            # (tests/test_perf10.py).
            a, b = torch.randn(160, 160), torch.randn(160, 160)
            alive.extend([weakref.ref(a), weakref.ref(b)])
            yield f"layers.{i}.w", a, b
            del a, b

    rows, layers = compare_values(pairs())
    assert len(rows) == 5 and len(layers) == 5


def test_layer_of() -> None:
    assert layer_of("bert.encoder.layer.3.attention.self.query.weight") == "bert.encoder.layer.3"
    assert layer_of("classifier.weight") == "classifier"
    assert layer_of("weight") == "weight"


# --------------------------------------------------------------------------------------------- oracle


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    return build_pairs(tmp_path_factory.mktemp("diff_pairs"))


def _from_pretrained_report(pair: Pair) -> tuple[set, set, set]:
    import transformers
    from transformers import AutoConfig

    cls = getattr(transformers, pair.model_class)
    config = AutoConfig.from_pretrained(pair.b)
    _, info = cls.from_pretrained(pair.a, config=config, output_loading_info=True, ignore_mismatched_sizes=True)
    return (set(info["missing_keys"]), set(info["unexpected_keys"]),
            {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]})


PAIR_NAMES = ["identical", "ddp-prefix", "compile-prefix", "base-into-head", "head-into-base", "vocab-resized",
              "positions-resized", "num-labels", "lora-peft", "legacy-gamma-beta", "gpt2-tied", "gpt2-bin-tied",
              "stale-buffers-gpt2", "stale-buffers-bert", "roberta-mlm-into-base", "gpt2-base-into-lm",
              "gpt2-lm-into-base"]


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_model_class_mode_equals_from_pretrained(pairs: dict[str, Pair], name: str) -> None:
    pair = pairs[name]
    with open_checkpoint(pair.a) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(pair.b))
    ours = ({i.name for i in report.missing}, {i.name for i in report.unexpected},
            {(m.name, tuple(m.shape_a), tuple(m.shape_b)) for m in report.mismatched})
    assert ours == _from_pretrained_report(pair)


def _plain_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Keys and shapes as the libraries read them: safe_open for safetensors, torch.load for pickles."""
    from safetensors import safe_open

    file = path / "model.safetensors"
    if file.exists():
        with safe_open(str(file), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    state_dict = torch.load(path / "pytorch_model.bin", weights_only=True, map_location="cpu")
    return {k: tuple(v.shape) for k, v in state_dict.items()}


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_checkpoint_mode_equals_plain_set_difference(pairs: dict[str, Pair], name: str) -> None:
    pair = pairs[name]
    a, b = _plain_keys(pair.a), _plain_keys(pair.b)
    with open_checkpoint(pair.a) as ca, open_checkpoint(pair.b) as cb:
        report = diff_checkpoints(ca, cb)
    assert {i.name for i in report.missing} == set(b) - set(a)
    assert {i.name for i in report.unexpected} == set(a) - set(b)
    assert {m.name for m in report.mismatched} == {k for k in set(a) & set(b) if a[k] != b[k]}
    assert report.matched == sum(1 for k in set(a) & set(b) if a[k] == b[k])


def test_fixture_pairs_get_the_expected_reasons(pairs: dict[str, Pair]) -> None:
    def checkpoint_report(name: str):
        with open_checkpoint(pairs[name].a) as ca, open_checkpoint(pairs[name].b) as cb:
            return diff_checkpoints(ca, cb)

    def model_report(name: str):
        with open_checkpoint(pairs[name].a) as checkpoint:
            return diff_checkpoint_against_model(checkpoint, pairs[name].model_class, config=str(pairs[name].b))

    ddp = checkpoint_report("ddp-prefix")
    assert {i.reason for i in ddp.missing + ddp.unexpected} == {"wrapper-prefix"}
    lora = checkpoint_report("lora-peft")
    assert {i.reason for i in lora.unexpected if "lora_" in i.name} == {"adapter"}
    assert [r.flag for r in lora.suggested_renames] == [
        "--rename '^base_model\\.model\\.='", "--rename '\\.base_layer\\.=.'"]
    legacy = checkpoint_report("legacy-gamma-beta")
    assert {i.reason for i in legacy.unexpected} == {"legacy-name"} and legacy.worst_severity == "warn"
    head = model_report("base-into-head")
    assert [(i.name, i.reason) for i in head.missing] == [("classifier.weight", "task-head"),
                                                          ("classifier.bias", "task-head")]
    assert head.worst_severity == "info"
    assert {(m.reason) for m in model_report("vocab-resized").mismatched} == {"vocab-size"}
    assert {(m.reason) for m in model_report("positions-resized").mismatched} == {"position-length"}
    assert {(m.reason) for m in model_report("num-labels").mismatched} == {"head-size"}
    tied = checkpoint_report("gpt2-tied")
    assert [(i.name, i.reason) for i in tied.missing] == [("lm_head.weight", "tied-weight")]
    stale = model_report("stale-buffers-gpt2")
    assert {(i.reason, i.severity) for i in stale.unexpected} == {("buffer", "info")}
    ddp_model = model_report("ddp-prefix")
    assert [r.flag for r in ddp_model.suggested_renames] == ["--rename '^module\\.='"]
    assert ddp_model.matched_after_renames == ddp_model.total_b


# --------------------------------------------------------------------------------------------- renderer


def test_renderer_groups_and_prints_the_fix() -> None:
    a = {f"module.{n}": KeySpec(f"module.{n}", s.shape, s.dtype) for n, s in llama_keys(12).items()}
    report = diff_specs(a, llama_keys(12), source_a="a.safetensors", source_b="b.safetensors")
    buffer = io.StringIO()
    render_diff_keys(report, Console(file=buffer, width=120, color_system=None))
    text = buffer.getvalue()
    assert "0 of 111 keys of B" in text
    assert "model.layers.*" in text and "108" in text
    assert "--rename '^module\\.='" in text
    assert "state_dict = {rename(k): v for k, v in state_dict.items()}" in text
    assert text.count("\n") < 60


def test_a_component_that_fits_several_names_equally_gets_no_rename() -> None:
    """Meta's Llama `attention_norm`/`ffn_norm` have the shape of both `input_layernorm` and
    `post_attention_layernorm`: a rename chosen by shape alone could load weights into the wrong place."""
    a = {f"model.layers.{i}.{n}.weight": KeySpec(f"model.layers.{i}.{n}.weight", (8,), "float32")
         for i in range(2) for n in ("attention_norm", "ffn_norm")}
    b = {f"model.layers.{i}.{n}.weight": KeySpec(f"model.layers.{i}.{n}.weight", (8,), "float32")
         for i in range(2) for n in ("input_layernorm", "post_attention_layernorm")}
    report = diff_specs(a, b)
    assert report.suggested_renames == []
    # One component with one fitting name is still suggested.
    single = {"model.layers.0.attn_norm.weight": KeySpec("model.layers.0.attn_norm.weight", (8,), "float32")}
    target = {"model.layers.0.input_layernorm.weight": KeySpec("model.layers.0.input_layernorm.weight", (8,),
                                                               "float32")}
    assert [r.replacement for r in diff_specs(single, target).suggested_renames] == ["input_layernorm"]


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mixtral as save_pretrained writes it: per-expert w1/w2/w3, which transformers 5 merges on load."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mixtral") / "mixtral"
    MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4, num_local_experts=4,
                                     num_experts_per_tok=2)).save_pretrained(folder)
    return folder


def test_experts_fused_against_one_per_expert_are_named_with_the_check_that_answers(mixtral: Path,
                                                                                    tmp_path: Path) -> None:
    """A transformers 5 `model.state_dict()` (experts fused per projection) against the Hub's per-expert files:
    the expert keys are `expert-layout` (no rename fixes them; none is suggested for them), and the note's
    --model-class command is the check that says what from_pretrained does (it loads both cleanly)."""
    from transformers import MixtralForCausalLM

    from tests.helpers import run_json

    fused = tmp_path / "fused.pt"
    torch.save({k: v.contiguous() for k, v in MixtralForCausalLM.from_pretrained(mixtral).state_dict().items()},
               fused)
    code, data = run_json("diff-keys", str(fused), str(mixtral))
    layout = {i["name"]: i for i in data["missing"] + data["unexpected"] if i["reason"] == "expert-layout"}
    assert code == 1 and {i["severity"] for i in layout.values()} == {"error"}
    assert "model.layers.0.mlp.experts.gate_up_proj" in layout  # fused in A
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in layout  # one per expert in B
    assert not any("experts" in r["pattern"] or "w1" in r["pattern"] for r in data["suggested_renames"])
    [note] = [n for n in data["notes"] if "MoE experts" in n]
    assert note.startswith("B stores the MoE experts one tensor per expert")
    command = note.split("what from_pretrained reports: weightdoctor ")[1]
    code, checked = run_json(*shlex.split(command))
    assert code == 0 and not checked["missing"] and not checked["unexpected"] and checked["matched"] > 0
    # The other way round, into a plain state dict (no config names a class): only load_state_dict is there.
    code, data = run_json("diff-keys", str(mixtral / "model.safetensors"), str(fused))
    [note] = [n for n in data["notes"] if "MoE experts" in n]
    assert code == 1 and note.startswith("A stores the MoE experts one tensor per expert")
    assert "--model-class" not in note


def test_merged_experts_are_shape_checked_as_from_pretrained_does(mixtral: Path, tmp_path: Path) -> None:
    """transformers' WeightConverters stack the experts and concatenate w1/w3: run on meta tensors, the shapes
    they make equal what from_pretrained reports; a conversion that fails is what makes from_pretrained raise."""
    from safetensors.torch import load_file
    from transformers import MixtralForCausalLM

    from fixtures.diff_pairs import save_state_dict_folder

    config = json.loads((mixtral / "config.json").read_text())
    weights = load_file(mixtral / "model.safetensors")
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in weights  # the per-expert layout
    three = save_state_dict_folder({k: v for k, v in weights.items() if "experts.3." not in k}, config,
                                   tmp_path / "three-experts")
    pair = Pair("three-experts", three, mixtral, "MixtralForCausalLM", "one expert of four dropped")
    with open_checkpoint(pair.a) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(pair.b))
    ours = ({i.name for i in report.missing}, {i.name for i in report.unexpected},
            {(m.name, tuple(m.shape_a), tuple(m.shape_b)) for m in report.mismatched})
    assert ours == _from_pretrained_report(pair)
    assert ("model.layers.0.mlp.experts.gate_up_proj", (3, 96, 32), (4, 96, 32)) in ours[2]
    assert report.worst_severity == "error"
    with open_checkpoint(mixtral) as checkpoint:  # the healthy one: nothing to report
        healthy = diff_checkpoint_against_model(checkpoint, "MixtralForCausalLM")
    assert (healthy.missing, healthy.unexpected, healthy.mismatched) == ([], [], [])

    broken = dict(weights)
    broken["model.layers.1.block_sparse_moe.experts.2.w1.weight"] = broken[
        "model.layers.1.block_sparse_moe.experts.2.w1.weight"][:40]
    folder = save_state_dict_folder(broken, config, tmp_path / "ragged-experts")
    with pytest.raises(RuntimeError, match="conversion"):
        MixtralForCausalLM.from_pretrained(folder)
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, "MixtralForCausalLM")
    assert [(i.name, i.severity) for i in report.missing] == [("model.layers.1.mlp.experts.gate_up_proj", "error")]
    assert report.missing[0].detail.startswith("from_pretrained raises: its WeightConverter cannot build this")


def test_an_expert_of_a_shape_no_tensor_can_have_is_refused_when_read(mixtral: Path, tmp_path: Path) -> None:
    """A header may give a zero-element expert dims whose strides overflow int64: no tensor, not even a meta
    one, has that shape, and the safetensors library's load_file and from_pretrained fail on the file. The diff
    completed with the expert's WeightConverter an error until the reader learnt to refuse such a tensor
    (redteam43): now the file is refused when it is read, in one line naming the tensor and why."""
    import struct

    from safetensors.torch import load_file

    weights = load_file(mixtral / "model.safetensors")
    huge = "model.layers.1.block_sparse_moe.experts.2.w1.weight"
    header: dict[str, object] = {}
    data = bytearray()
    for name, tensor in sorted(weights.items()):
        raw = b"" if name == huge else tensor.contiguous().view(torch.uint8).numpy().tobytes()
        shape = [0, 2**62, 2**62] if name == huge else list(tensor.shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    folder = tmp_path / "huge-expert"
    folder.mkdir()
    (folder / "config.json").write_text((mixtral / "config.json").read_text())
    text = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(data))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    with pytest.raises(CorruptCheckpoint, match="Stride calculation overflowed") as refused:
        open_checkpoint(folder)
    assert huge in str(refused.value), refused.value
    result = run_cli("diff-keys", str(folder), "--model-class", "MixtralForCausalLM")
    assert result.exit_code == 2 and result.stdout == "", (result.exit_code, result.stdout)
    [line] = result.stderr.strip().splitlines()
    assert "model.safetensors" in line and huge in line and "2**63 - 1" in line, line


def test_both_the_per_expert_and_the_merged_form_of_an_expert_is_an_error(mixtral: Path, tmp_path: Path) -> None:
    """A half-converted checkpoint: the old per-expert tensors plus layer 0's merged ones. from_pretrained
    fails on the pair (transformers 5: AttributeError); diff-keys must not say it loads cleanly. A's count is
    its own tensors, not the names they become once merged."""
    from safetensors.torch import load_file
    from transformers import MixtralConfig, MixtralForCausalLM

    from fixtures.diff_pairs import save_state_dict_folder

    config = json.loads((mixtral / "config.json").read_text())
    weights = load_file(mixtral / "model.safetensors")
    with torch.device("meta"):
        merged = MixtralForCausalLM(MixtralConfig.from_pretrained(mixtral)).state_dict()
    both = dict(weights)
    for part in ("gate_up_proj", "down_proj"):
        name = f"model.layers.0.mlp.experts.{part}"
        both[name] = torch.zeros(merged[name].shape)
    folder = save_state_dict_folder(both, config, tmp_path / "both")
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises, it does not load
        MixtralForCausalLM.from_pretrained(folder)
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, "MixtralForCausalLM")
    assert report.worst_severity == "error" and report.total_a == len(both)
    errors = {i.name: i.detail for i in report.missing if i.severity == "error"}
    assert "also the tensors its WeightConverter merges into it" in errors["model.layers.0.mlp.experts.gate_up_proj"]
    with open_checkpoint(mixtral) as checkpoint:  # the old layout alone: every tensor counted as A's
        assert diff_checkpoint_against_model(checkpoint, "MixtralForCausalLM").total_a == len(weights)


def test_a_composite_checkpoint_into_one_of_its_towers(tmp_path: Path) -> None:
    """CLIPModel's checkpoint into CLIPTextModel / CLIPVisionModel: the config's text_config / vision_config is
    taken (as transformers' from_pretrained takes it), the sets equal from_pretrained's, and the other tower is
    dropped by design (unused-part, info: exit 0)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    folder = tmp_path / "clip"
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=20, bos_token_id=0, eos_token_id=1),
        vision_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=37), projection_dim=16)).save_pretrained(folder)
    import transformers

    for model_class, dropped in (("CLIPTextModel", "vision_model"), ("CLIPVisionModel", "text_model")):
        with open_checkpoint(folder) as checkpoint:
            report = diff_checkpoint_against_model(checkpoint, model_class)
        ours = ({i.name for i in report.missing}, {i.name for i in report.unexpected},
                {(m.name, tuple(m.shape_a), tuple(m.shape_b)) for m in report.mismatched})
        # The reference: from_pretrained with no config of its own, as users call it.
        _, info = getattr(transformers, model_class).from_pretrained(folder, output_loading_info=True)
        assert ours == (set(info["missing_keys"]), set(info["unexpected_keys"]),
                        {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]})
        assert report.missing == [] and report.worst_severity == "info"
        tower = [i for i in report.unexpected if i.name.startswith(dropped + ".")]
        assert tower and {(i.reason, i.severity) for i in tower} == {("unused-part", "info")}
        assert exit_code(report, "error") == 0


def test_a_needless_rename_step_is_not_suggested_in_model_class_mode(tmp_path: Path) -> None:
    """ViT saved from DDP: stripping `module.` is the whole fix; transformers loads `vit.encoder.layer.` as it is,
    so no second rename (the rename search alone, on the model's own names, would add one)."""
    from safetensors.torch import load_file
    from transformers import ViTConfig, ViTForImageClassification

    from fixtures.diff_pairs import save_state_dict_folder

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=37))
    model.save_pretrained(tmp_path / "clean")
    weights = load_file(tmp_path / "clean" / "model.safetensors")
    ddp = save_state_dict_folder({f"module.{k}": v for k, v in weights.items()}, model.config.to_dict(),
                                 tmp_path / "ddp")
    with open_checkpoint(ddp) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, "ViTForImageClassification", config=str(tmp_path / "clean"))
    assert [s.flag for s in report.suggested_renames] == ["--rename '^module\\.='"]
    assert report.matched_after_renames == len(weights)


@pytest.mark.parametrize(("name", "shape_a", "shape_b", "reason"), [
    # A wider feed-forward layer is another architecture, whatever the bias or the module is called.
    ("encoder.layer.0.intermediate.dense.bias", (37,), (41,), "shape"),
    ("model.decoder.layers.0.fc1.weight", (37, 32), (41, 32), "shape"),
    # Vocabulary-sized tensors of GPT-NeoX, BART and BERT's MLM head.
    ("gpt_neox.embed_in.weight", (99, 32), (107, 32), "vocab-size"),
    ("final_logits_bias", (1, 99), (1, 107), "vocab-size"),
    ("cls.predictions.bias", (99,), (107,), "vocab-size"),
    # BART's classification head with another number of labels.
    ("classification_head.out_proj.bias", (3,), (5,), "head-size"),
    ("classification_head.out_proj.weight", (3, 32), (5, 32), "head-size"),
])
def test_mismatch_reasons_by_component(name: str, shape_a: tuple, shape_b: tuple, reason: str) -> None:
    assert classify_mismatch(name, shape_a, shape_b)[0] == reason


def test_heads_outside_the_base_model_are_task_heads_whatever_their_names(tmp_path: Path) -> None:
    """BartModel into BartForSequenceClassification: `classification_head.*` is what the task class adds to its
    base (`model`), so new and random by design (info), as from_pretrained reports them missing."""
    from transformers import BartConfig, BartModel

    torch.manual_seed(0)
    folder = tmp_path / "bart"
    BartModel(BartConfig(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
                         max_position_embeddings=64)).save_pretrained(folder)
    pair = Pair("bart-cls", folder, folder, "BartForSequenceClassification", "a base model into a classifier")
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class)
    assert {i.name for i in report.missing} == _from_pretrained_report(pair)[0]
    assert {(i.name.split(".")[0], i.reason, i.severity) for i in report.missing} == {
        ("classification_head", "task-head", "info")}


@pytest.mark.parametrize("name", ["model.layers.0.self_attn.rotary_emb.original_inv_freq",
                                  "transformer.h.0.attn.embed_positions",
                                  "model.layers.0.self_attn.rotary_emb.cos_cached"])
def test_saved_rotary_buffers_are_buffers(name: str) -> None:
    assert classify_key(name, KeySpec(name, (8,), "float32"), "unexpected", {})[:2] == ("buffer", "info")
    # A learned position embedding of the same word is a weight (BART, OPT).
    learned = "model.encoder.embed_positions.weight"
    assert classify_key(learned, KeySpec(learned, (8, 4), "float32"), "unexpected", {})[0] != "buffer"


def test_lightning_model_prefix_on_bert_is_an_error_against_the_model_class(pairs: dict[str, Pair],
                                                                            tmp_path: Path) -> None:
    """BERT's base prefix is `bert.`: from_pretrained strips no `model.` (Lightning's attribute), nothing loads."""
    from safetensors.torch import load_file

    from fixtures.diff_pairs import save_state_dict_folder

    pair = pairs["identical"]
    weights = load_file(pair.a / "model.safetensors")
    folder = save_state_dict_folder({f"model.{k}": v for k, v in weights.items()},
                                    json.loads((pair.a / "config.json").read_text()), tmp_path / "lightning")
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(pair.b))
    assert report.worst_severity == "error" and exit_code(report, "error") == 1
    assert {(i.reason, i.severity) for i in report.unexpected} == {("wrapper-prefix", "error")}
    assert [s.flag for s in report.suggested_renames] == ["--rename '^model\\.='"]


def _saved_from_ddp(folder: Path, out: Path) -> Path:
    """A copy of a save_pretrained folder with `module.` before every key, as a DDP-wrapped model saves it."""
    from safetensors.torch import load_file

    from fixtures.diff_pairs import save_state_dict_folder

    weights = load_file(folder / "model.safetensors")
    return save_state_dict_folder({f"module.{k}": v for k, v in weights.items()},
                                  json.loads((folder / "config.json").read_text()), out)


def test_a_ddp_prefix_on_merged_experts_is_found_and_fixed(mixtral: Path, tmp_path: Path) -> None:
    """Mixtral saved from DDP: the experts transformers would merge count as unexpected with their merged name
    (once each), and stripping `module.` is still the fix that re-checks clean."""
    folder = _saved_from_ddp(mixtral, tmp_path / "ddp")
    pair = Pair("mixtral-ddp", folder, mixtral, "MixtralForCausalLM", "saved from DDP")
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(mixtral))
    names = [i.name for i in report.unexpected]
    assert len(names) == len(set(names))
    assert ({i.name for i in report.missing}, set(names)) == _from_pretrained_report(pair)[:2]
    assert [s.flag for s in report.suggested_renames] == ["--rename '^module\\.='"]
    assert {(i.reason, i.severity) for i in report.unexpected} == {("wrapper-prefix", "error")}
    with open_checkpoint(folder) as checkpoint:
        fixed = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(mixtral),
                                              renames=[Rename(r"^module\.", "")])
    assert (fixed.missing, fixed.unexpected, fixed.mismatched) == ([], [], [])


def test_a_config_with_a_tagged_infinity_builds_the_model(tmp_path: Path) -> None:
    """transformers 5 saves Mamba2's `time_step_limit` (0.0, inf) as `[0.0, {"__float__": "Infinity"}]` and reads
    it back as a float; diff-keys --model-class used to refuse that config.json (exit 2, a validation error)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    folder = tmp_path / "mamba2"
    Mamba2ForCausalLM(Mamba2Config(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_heads=4, head_dim=8,
                                   state_size=8, n_groups=1, expand=2)).save_pretrained(folder)
    assert "__float__" in (folder / "config.json").read_text()
    pair = Pair("mamba2", folder, folder, "Mamba2ForCausalLM", "as saved")
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class)
    assert report.matched == report.total_b and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert _from_pretrained_report(pair) == (set(), set(), set())


def test_weights_tied_to_a_prefixed_key_take_the_prefix_reason(tmp_path: Path) -> None:
    """BART saved from DDP: `model.encoder.embed_tokens` / `decoder.embed_tokens` / `lm_head` are tied to
    `model.shared`, so A stores none of them; they stay missing until `module.` is stripped, as `shared` does.
    They used to be `unknown` (error, "no known cause") and lm_head `tied-weight` (info) though none loads."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    clean = tmp_path / "clean"
    BartForConditionalGeneration(BartConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
    )).save_pretrained(clean)
    folder = _saved_from_ddp(clean, tmp_path / "ddp")
    pair = Pair("bart-ddp", folder, clean, "BartForConditionalGeneration", "saved from DDP")
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(clean))
    assert ({i.name for i in report.missing}, {i.name for i in report.unexpected}) == _from_pretrained_report(pair)[:2]
    tied = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    assert tied <= {i.name for i in report.missing}
    assert {(i.reason, i.severity, i.detail) for i in report.missing} == {
        ("wrapper-prefix", "error", "--rename '^module\\.='")}
    assert report.matched_after_renames == report.total_b


def test_a_lookalike_step_does_not_hide_the_rename_that_loads(tmp_path: Path) -> None:
    """PegasusModel (saved by transformers 5: `shared.weight`, no tied `decoder.embed_tokens`) into
    PegasusForCausalLM: the greedy search first maps the encoder onto the decoder (a lookalike onto weights that
    already load), which from_pretrained rejects; the step after it, `shared.` -> `decoder.embed_tokens.`, loads
    the embedding. It used to be dropped with the lookalike ("no rename makes more of the model load")."""
    from safetensors.torch import load_file
    from transformers import PegasusConfig, PegasusModel

    from fixtures.diff_pairs import save_state_dict_folder

    torch.manual_seed(0)
    folder = tmp_path / "pegasus"
    PegasusModel(PegasusConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                               decoder_ffn_dim=32, max_position_embeddings=32)).save_pretrained(folder)
    pair = Pair("pegasus-decoder", folder, folder, "PegasusForCausalLM", "a seq2seq base into its decoder")
    with open_checkpoint(folder) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class)
    assert ({i.name for i in report.missing}, {i.name for i in report.unexpected}) == _from_pretrained_report(pair)[:2]
    assert "model.decoder.embed_tokens.weight" in {i.name for i in report.missing}
    assert [s.flag for s in report.suggested_renames] == ["--rename '^shared\\.=decoder.embed_tokens.'"]
    assert report.matched_after_renames == report.total_b
    assert {(i.name, i.reason) for i in report.missing} == {("model.decoder.embed_tokens.weight", "renamed"),
                                                            ("lm_head.weight", "renamed")}
    # The rename, applied, is what from_pretrained loads: nothing missing.
    weights = {("decoder.embed_tokens.weight" if k == "shared.weight" else k): v
               for k, v in load_file(folder / "model.safetensors").items()}
    fixed = save_state_dict_folder(weights, json.loads((folder / "config.json").read_text()), tmp_path / "fixed")
    missing, _, mismatched = _from_pretrained_report(Pair("fixed", fixed, folder, pair.model_class, ""))
    assert (missing, mismatched) == (set(), set())


def _bert_bin_folder(state_dict: dict, folder: Path) -> Path:
    """A tiny BERT classifier's config and `state_dict` (anything torch.save takes) as `pytorch_model.bin`."""
    from fixtures.build import build_bert

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(build_bert().config.to_dict()))
    torch.save(state_dict, folder / "pytorch_model.bin")
    return folder


def test_non_tensor_entries_of_a_bin_are_unexpected_as_from_pretrained_says(tmp_path: Path) -> None:
    """from_pretrained reads every key of a `.bin`'s top-level dict: a `version: 2` or an `optimizer` dict beside
    the weights is listed as unexpected (and ignored); one named after a weight makes it raise."""
    from fixtures.build import build_bert

    weights = build_bert().state_dict()
    folder = _bert_bin_folder({**weights, "version": 2, "optimizer": {"lr": 0.1}}, tmp_path / "extra")
    pair = Pair("non-tensors", folder, folder, "BertForSequenceClassification", "")
    with open_checkpoint(str(folder)) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class)
    assert ({i.name for i in report.missing}, {i.name for i in report.unexpected}, set()) == \
        _from_pretrained_report(pair)
    assert {(i.name, i.reason, i.severity) for i in report.unexpected} == {
        ("version", "not-a-tensor", "info"), ("optimizer", "not-a-tensor", "info")}
    assert report.worst_severity == "info"

    broken = _bert_bin_folder({**weights, "classifier.bias": "oops"}, tmp_path / "named-like-a-weight")
    with pytest.raises(TypeError):
        _from_pretrained_report(Pair("broken", broken, broken, pair.model_class, ""))
    with open_checkpoint(str(broken)) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, pair.model_class)
    assert [(i.name, i.reason, i.severity) for i in report.missing] == [("classifier.bias", "not-a-tensor", "error")]
    assert report.missing[0].detail.startswith("from_pretrained raises")


def test_a_training_checkpoint_against_the_model_class_says_from_pretrained_cannot_read_it(tmp_path: Path) -> None:
    """The state dict under `state_dict` is compared (as --key reads it), but from_pretrained(A) reads the top level:
    it loads none of the weights, and the note says so."""
    from fixtures.build import build_bert

    folder = _bert_bin_folder({"state_dict": build_bert().state_dict(), "epoch": 3}, tmp_path / "training")
    with pytest.raises(AttributeError):  # no dtype in the config: it looks for one in the "state dict" and fails
        _from_pretrained_report(Pair("training", folder, folder, "BertForSequenceClassification", ""))
    with open_checkpoint(str(folder)) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, "BertForSequenceClassification")
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    [note] = [n for n in report.notes if "from_pretrained(A) itself reads the file's top level" in n]
    assert "'state_dict'" in note
    # The command the note gives writes a folder from_pretrained loads with every weight.
    command = shlex.split(note.split("first (", 1)[1].split(", a folder", 1)[0])
    assert command[:2] == ["weightdoctor", "convert"] and command[2] == str(folder)
    from tests.helpers import run_cli

    assert run_cli(*command[1:]).exit_code == 0
    import transformers

    _, info = transformers.BertForSequenceClassification.from_pretrained(command[-1], output_loading_info=True)
    assert not any(info.values()), info


@pytest.mark.parametrize("saved", ["DeiTForImageClassificationWithTeacher", "DeiTForImageClassification"])
def test_an_auto_class_with_several_classes_for_a_model_type_picks_as_from_pretrained(saved: str,
                                                                                        tmp_path: Path) -> None:
    """AutoModelForImageClassification maps DeiT to two classes (with and without the distillation head): the
    config's `architectures` picks one, as from_pretrained does (it was an AttributeError on the tuple)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=37)
    getattr(transformers, saved)(config).save_pretrained(tmp_path / "deit")
    teacher = tmp_path / "teacher-config"  # the config of the other class, for the weights of this one
    teacher.mkdir()
    other = "DeiTForImageClassification" if saved.endswith("Teacher") else "DeiTForImageClassificationWithTeacher"
    (teacher / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": [other]}))
    for config_folder in (tmp_path / "deit", teacher):
        pair = Pair("deit", tmp_path / "deit", config_folder, "AutoModelForImageClassification", "")
        with open_checkpoint(str(pair.a)) as checkpoint:
            report = diff_checkpoint_against_model(checkpoint, pair.model_class, config=str(config_folder))
        ours = ({i.name for i in report.missing}, {i.name for i in report.unexpected}, set())
        assert ours == _from_pretrained_report(pair)
        assert bool(ours[0] or ours[1]) == (config_folder == teacher)  # the other class: its head differs


@pytest.mark.parametrize(("model_class", "missing_part"), [("Qwen2ForCausalLM", "self_attn.q_proj.bias"),
                                                           ("MixtralForCausalLM", "mlp.experts.gate_up_proj")])
def test_a_class_of_another_model_type_is_built_as_from_pretrained_builds_it(model_class: str, missing_part: str,
                                                                              tmp_path: Path) -> None:
    """A Llama checkpoint into Qwen2ForCausalLM: from_pretrained reads Llama's config.json with Qwen2Config (it
    warns) and reports the q/k/v biases Llama lacks; weightdoctor refused ("needs a 'qwen2' config")."""
    import transformers

    from fixtures.diff_pairs import tiny_llama

    tiny_llama().save_pretrained(tmp_path / "llama")
    with open_checkpoint(str(tmp_path / "llama")) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, model_class)
    ours = ({i.name for i in report.missing}, {i.name for i in report.unexpected},
            {(m.name, tuple(m.shape_a), tuple(m.shape_b)) for m in report.mismatched})
    # No config object: from_pretrained reads A's config.json with the class's own config class.
    _, info = getattr(transformers, model_class).from_pretrained(tmp_path / "llama", output_loading_info=True,
                                                                 ignore_mismatched_sizes=True)
    assert ours == (set(info["missing_keys"]), set(info["unexpected_keys"]),
                    {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]})
    assert any(missing_part in name for name in ours[0]) and report.matched > 0
    assert any(f"{model_class} is no 'llama' model" in note for note in report.notes)


def test_a_folder_whose_weights_from_pretrained_does_not_look_for_says_so(tmp_path: Path) -> None:
    """from_pretrained(folder) reads model.safetensors / pytorch_model.bin (or their index) and raises on a folder
    holding `model.pt`: the report (of what model.pt holds) says so, rather than "loads cleanly" alone."""
    from fixtures.build import build_bert

    model = build_bert()
    odd, plain = tmp_path / "odd", tmp_path / "plain"
    for folder, name in ((odd, "model.pt"), (plain, "pytorch_model.bin")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
        torch.save(model.state_dict(), folder / name)
    with pytest.raises(OSError, match="no file named"):
        _from_pretrained_report(Pair("odd", odd, odd, "BertForSequenceClassification", ""))
    for folder, says in ((odd, True), (plain, False)):
        with open_checkpoint(str(folder)) as checkpoint:
            report = diff_checkpoint_against_model(checkpoint, "BertForSequenceClassification")
        assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
        assert any("raises here" in note and "model.pt" in note for note in report.notes) == says


@pytest.mark.parametrize("max_shard_size", [None, "40KB"])
def test_a_folder_from_pretrained_reads_named_relatively_gets_no_such_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_shard_size: str | None) -> None:
    """`diff-keys m --model-class X` run inside m's parent (a relative source): from_pretrained reads m's
    model.safetensors (or its index) as it is, so no note may say it raises; it did, comparing the file's
    relative path with the folder's absolute one."""
    from fixtures.build import build_bert

    model = build_bert()
    model.save_pretrained(tmp_path / "m", **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    monkeypatch.chdir(tmp_path)
    with open_checkpoint("m") as checkpoint:
        assert checkpoint.sharded == (max_shard_size is not None)
        report = diff_checkpoint_against_model(checkpoint, "BertForSequenceClassification")
    assert not any("raises here" in note for note in report.notes), report.notes
    from tests.helpers import run_cli

    result = run_cli("diff-keys", "m", "--model-class", "BertForSequenceClassification")
    assert "raises here" not in result.stdout + result.stderr


def test_the_verdict_does_not_say_a_training_checkpoint_loads_cleanly_as_it_is(tmp_path: Path) -> None:
    """Its nested state dict matches the model, but from_pretrained(A) does not read it: the verdict says both
    (`from_pretrained_reads_a` false), where it said "A loads into B cleanly" beside a note saying the opposite."""
    from fixtures.build import build_bert
    from tests.helpers import run_cli

    model = build_bert()
    training = _bert_bin_folder({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "training")
    plain = _bert_bin_folder(model.state_dict(), tmp_path / "plain")
    for folder, reads in ((training, False), (plain, True)):
        with open_checkpoint(str(folder)) as checkpoint:
            report = diff_checkpoint_against_model(checkpoint, "BertForSequenceClassification")
        assert report.worst_severity is None and report.from_pretrained_reads_a is reads
        result = run_cli("diff-keys", folder, "--model-class", "BertForSequenceClassification")
        text = " ".join(result.stdout.replace("│", " ").split())
        assert ("A loads into the model cleanly" in text) == reads
        assert ("from_pretrained(A) itself does not read it as it is" in text) == (not reads)
    result = run_cli("diff-keys", plain, plain, "--json")
    assert json.loads(result.stdout)["from_pretrained_reads_a"] is None


def test_a_whole_peft_model_of_a_fused_moe_is_no_adapter_against_its_saved_per_expert_layout() -> None:
    """A PEFT-wrapped Mixtral's full state dict (experts fused, as transformers 5 holds them) against the merged
    model's save_pretrained (one tensor per expert, as the Hub stores them): most of B's *names* are missing from
    A, but A holds all of B's weights. Found by scripts/diff_pairs_sweep.py (mixtral/lora): diff-keys called it an
    adapter that "stores no base weights" and suggested no rename."""
    hidden, inter, experts, layers = 32, 64, 4, 2

    def spec(name: str, *shape: int) -> KeySpec:
        return KeySpec(name, shape, "float32")

    a, b = [spec("base_model.model.model.embed_tokens.weight", 96, hidden),
            spec("base_model.model.lm_head.weight", 96, hidden)], [spec("model.embed_tokens.weight", 96, hidden),
                                                                   spec("lm_head.weight", 96, hidden)]
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "v_proj"):
            a += [spec(f"base_model.model.{p}self_attn.{proj}.base_layer.weight", hidden, hidden),
                  spec(f"base_model.model.{p}self_attn.{proj}.lora_A.default.weight", 4, hidden),
                  spec(f"base_model.model.{p}self_attn.{proj}.lora_B.default.weight", hidden, 4)]
            b.append(spec(f"{p}self_attn.{proj}.weight", hidden, hidden))
        a += [spec(f"base_model.model.{p}mlp.experts.gate_up_proj", experts, 2 * inter, hidden),
              spec(f"base_model.model.{p}mlp.experts.down_proj", experts, hidden, inter),
              spec(f"base_model.model.{p}mlp.gate.weight", experts, hidden)]
        b += [spec(f"{p}block_sparse_moe.experts.{e}.{w}.weight", *(
            (hidden, inter) if w == "w2" else (inter, hidden))) for e in range(experts) for w in ("w1", "w2", "w3")]
        b.append(spec(f"{p}block_sparse_moe.gate.weight", experts, hidden))
    report = diff_specs({s.name: s for s in a}, {s.name: s for s in b})
    assert not any("stores no base weights" in note for note in report.notes), report.notes
    assert [s.flag for s in report.suggested_renames][:1] == ["--rename '^base_model\\.model\\.='"]
    assert report.matched_after_renames is not None and report.matched_after_renames >= 2 + 4 * layers // 2
    assert not {i.reason for i in report.missing if i.name == "model.embed_tokens.weight"} & {"adapter-base"}


def test_a_key_transformers_renames_per_model_is_not_a_random_head(tmp_path: Path) -> None:
    """GPT-NeoX holds its output layer as `lm_head` (transformers 5) and saves it as `embed_out` (its conversion
    mapping): `torch.save(model.state_dict())` against `save_pretrained` is one weight under two names, which
    from_pretrained maps, not a head "initialized at random". Found by scripts/diff_pairs_sweep.py (gpt_neox/bin)."""
    import transformers

    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4))
    model.save_pretrained(tmp_path / "saved")
    (tmp_path / "dumped").mkdir()
    model.config.save_pretrained(tmp_path / "dumped")
    torch.save(model.state_dict(), tmp_path / "dumped" / "pytorch_model.bin")
    with open_checkpoint(str(tmp_path / "dumped")) as a, open_checkpoint(str(tmp_path / "saved")) as b:
        report = diff_checkpoints(a, b)
    assert [(i.name, i.reason, i.severity) for i in report.missing] == [("embed_out.weight", "renamed", "warn")]
    assert [(i.name, i.reason, i.severity) for i in report.unexpected] == [("lm_head.weight", "renamed", "warn")]
    assert "lm_head.weight" in report.missing[0].detail
    note = next(n for n in report.notes if "conversion mapping" in n)
    assert "embed_out.weight" in note and "--model-class GPTNeoXForCausalLM" in note


def test_a_whole_peft_model_renamed_onto_its_base_is_no_adapter_that_stores_no_base_weights() -> None:
    """A PEFT model's full state dict under the suggested renames (`^base_model\\.model\\.=`, `\\.base_layer\\.=.`)
    against the merged model: every base weight matches, the LoRA pairs are left over. The matched keys are not in
    `unexpected`, so diff-keys counted none of them and called A an adapter that "stores no base weights" (found by
    scripts/diff_pairs_sweep.py, every */lora pair re-checked with its fix). Loading it drops the LoRA deltas: warn."""
    def spec(name: str, *shape: int) -> KeySpec:
        return KeySpec(name, shape, "float32")

    a = [spec("base_model.model.embed.weight", 96, 32), spec("base_model.model.head.weight", 96, 32)]
    b = [spec("embed.weight", 96, 32), spec("head.weight", 96, 32)]
    for i in range(2):
        a += [spec(f"base_model.model.layers.{i}.q.base_layer.weight", 32, 32),
              spec(f"base_model.model.layers.{i}.q.lora_A.default.weight", 4, 32),
              spec(f"base_model.model.layers.{i}.q.lora_B.default.weight", 32, 4)]
        b.append(spec(f"layers.{i}.q.weight", 32, 32))
    renames = [Rename(r"^base_model\.model\.", ""), Rename(r"\.base_layer\.", ".")]
    report = diff_specs({s.name: s for s in a}, {s.name: s for s in b}, renames)
    assert report.matched == len(b)
    assert not any("stores no base weights" in note for note in report.notes), report.notes
    assert {(i.reason, i.severity) for i in report.unexpected} == {("adapter", "warn")}
