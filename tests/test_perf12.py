"""Round 12 of speed work on diff-keys: each fast path gives exactly what the plain code gave.

- The embedding tie scans (`_ties_to_embedding`, `_filled_by_output_embedding`) pick candidates with a C-level
  `endswith` before the regex: held to the old full scan on generated key sets (spellings the regex takes, names
  that end alike but that it refuses, `position`, other shapes, mappings keyed by other names than the specs').
- The reader skips its long-name pass when the safetensors header is within the limit: held to the pass on
  generated headers around a lowered limit (ASCII, multi-byte UTF-8, `\\uXXXX` escapes), and a long name is still
  refused with the same message.

Nothing here is timed: benchmarks/bench_diff_keys.py and docs/bench-diff-keys.md.
"""

from __future__ import annotations

import json
import random
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest

from weightdoctor import diff_keys
from weightdoctor.checkpoint import open_checkpoint, reader
from weightdoctor.diff_keys import KeySpec, _filled_by_output_embedding, _ties_to_embedding
from weightdoctor.errors import CorruptCheckpoint


def _ties_slow(name: str, shape: tuple[int, ...], other: Mapping[str, KeySpec]) -> str | None:
    """`_ties_to_embedding` before the fast path: a regex search on every key of `other`."""
    if not diff_keys._OUTPUT_EMBEDDING.search(name):
        return None
    for candidate in other.values():
        if diff_keys._INPUT_EMBEDDING.search(candidate.name) and candidate.shape == shape \
                and "position" not in candidate.name:
            return candidate.name
    return None


def _filled_slow(name: str, shape: tuple[int, ...], other: Mapping[str, KeySpec]) -> str | None:
    """`_filled_by_output_embedding` before the fast path."""
    if not diff_keys._INPUT_EMBEDDING.search(name) or "position" in name:
        return None
    for candidate in other.values():
        if diff_keys._OUTPUT_EMBEDDING.search(candidate.name) and candidate.shape == shape:
            return candidate.name
    return None


def _alternatives(regex: object) -> list[str]:
    """The alternatives of an embedding regex, `(^|\\.)(a|b\\.c)\\.weight$`, as plain text."""
    body = re.search(r"\(\^\|\\\.\)\((.*)\)\\\.weight\$", regex._pattern)  # type: ignore[attr-defined]
    assert body is not None
    return [alternative.replace("\\.", ".") for alternative in body.group(1).split("|")]


OUTPUT_WORDS = _alternatives(diff_keys._OUTPUT_EMBEDDING)
INPUT_WORDS = _alternatives(diff_keys._INPUT_EMBEDDING)


def test_the_suffixes_cover_every_spelling_the_regexes_take() -> None:
    """The fast path is exact only if every name a regex matches ends with one of its suffixes."""
    assert len(OUTPUT_WORDS) == 8 and len(INPUT_WORDS) == 7
    for words, ends, regex in ((OUTPUT_WORDS, diff_keys._OUTPUT_EMBEDDING_ENDS, diff_keys._OUTPUT_EMBEDDING),
                               (INPUT_WORDS, diff_keys._INPUT_EMBEDDING_ENDS, diff_keys._INPUT_EMBEDDING)):
        for word in words:
            for name in (f"{word}.weight", f"model.{word}.weight", f"a.b.{word}.weight"):
                assert regex.search(name), name
                assert name.endswith(ends), name


def _random_name(rng: random.Random) -> str:
    words = OUTPUT_WORDS + INPUT_WORDS
    prefix = rng.choice(["", "model.", "module.", "transformer.", "a.b.", "x", "position.", "bert.embeddings.",
                         "module.model.layers.3."])
    body = rng.choice(words + ["layers.0.mlp", "wpe", "position_embeddings", "norm", "q_proj", "shared_x"])
    suffix = rng.choice([".weight", ".weight", ".weight", ".bias", ".weights", "_weight", ".weight.x", ""])
    # Names that end like an embedding but that the regex refuses (`xlm_head.weight`: no dot before the word).
    glue = rng.choice(["", "", "x", "_"]) if prefix and not prefix.endswith(".") else ""
    return prefix + glue + body + suffix


@pytest.mark.parametrize("seed", range(40))
def test_embedding_scans_equal_the_full_scan(seed: int) -> None:
    rng = random.Random(seed)
    shapes = [(10, 4), (9, 4), (10, 4), (4, 10)]
    for _ in range(25):
        names = list(dict.fromkeys(_random_name(rng) for _ in range(rng.randrange(0, 40))))
        other = {name: KeySpec(name, rng.choice(shapes), "float32") for name in names}
        if rng.random() < 0.2:  # a mapping whose keys are not the specs' names (the scans read `.name`)
            other = {f"k{i}": spec for i, spec in enumerate(other.values())}
        for name in [_random_name(rng) for _ in range(8)] + [f"{w}.weight" for w in OUTPUT_WORDS + INPUT_WORDS]:
            shape = rng.choice(shapes)
            assert _ties_to_embedding(name, shape, other) == _ties_slow(name, shape, other), (name, other)
            assert _filled_by_output_embedding(name, shape, other) == _filled_slow(name, shape, other), (name, other)


def test_embedding_scans_find_the_first_fit_among_many() -> None:
    """A DDP A (every key under `module.`) of 3,000 keys: the input embedding is filled from its output one, the
    first of the right shape in A's order, and one refused by the regex (`xlm_head`) or the shape is passed over."""
    other = {f"module.model.layers.{i}.mlp.weight": KeySpec(f"module.model.layers.{i}.mlp.weight", (4, 4), "bf16")
             for i in range(3000)}
    for name, shape in (("module.xlm_head.weight", (10, 4)), ("module.head.lm_head.weight", (9, 4)),
                        ("module.lm_head.weight.x", (10, 4)), ("module.output_embeddings.weight", (10, 4)),
                        ("module.lm_head.weight", (10, 4))):
        other[name] = KeySpec(name, shape, "bf16")
    assert _filled_by_output_embedding("model.embed_tokens.weight", (10, 4), other) == \
        "module.output_embeddings.weight" == _filled_slow("model.embed_tokens.weight", (10, 4), other)
    assert _filled_by_output_embedding("model.position_embeddings.weight", (10, 4), other) is None
    inputs = {n: KeySpec(n, (10, 4), "bf16") for n in ("a.position.wte.weight", "a.xwte.weight", "a.wte.weight")}
    assert _ties_to_embedding("lm_head.weight", (10, 4), {**other, **inputs}) == "a.wte.weight"


def _write_header(path: Path, names: list[str], ensure_ascii: bool) -> int:
    header: dict[str, object] = {}
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    raw = json.dumps(header, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * len(names)))
    return len(raw)


@pytest.mark.parametrize("seed", range(6))
def test_long_name_check_equals_the_pass_over_every_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         seed: int) -> None:
    """With the limit lowered to a few dozen characters, headers just under, at and over it (names of ASCII, of
    multi-byte characters, written as escapes or not): refused exactly when a name is longer than the limit, with
    the message the pass gave; a header within the limit, whose names cannot be longer, is read."""
    rng = random.Random(seed)
    limit = 60
    monkeypatch.setattr(reader, "MAX_NAME_CHARS", limit)
    refused = read = 0
    for case in range(30):
        alphabet = rng.choice(["ab.", "é.ü", "中.文", "a\U0001f600"])
        names = list(dict.fromkeys("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80)))
                                   for _ in range(rng.randrange(1, 4))))
        path = tmp_path / f"h{case}.safetensors"
        size = _write_header(path, names, ensure_ascii=rng.random() < 0.5)
        long_name = next((name for name in names if len(name) > limit), None)
        if long_name is None:
            with open_checkpoint(path) as checkpoint:
                assert [t.name for t in checkpoint.tensors] == names
            read += 1
            continue
        assert size > limit  # the skip never applies to a header that holds a long name
        with pytest.raises(CorruptCheckpoint) as caught:
            open_checkpoint(path)
        assert caught.value.message == (
            f"tensor name {long_name[:60]!r}... is {len(long_name):,} characters long (the limit is {limit:,}): no "
            "model names a tensor so; printing it took minutes")
        refused += 1
    assert refused and read


def test_a_name_past_the_real_limit_is_still_refused(tmp_path: Path) -> None:
    """A 1 MiB + 1 name (its header is past the limit, so the pass runs): the same one-line refusal as before."""
    name = "w" * (reader.MAX_NAME_CHARS + 1)
    path = tmp_path / "long.safetensors"
    _write_header(path, [name, "b"], ensure_ascii=True)
    with pytest.raises(CorruptCheckpoint, match=r"is 1,048,577 characters long \(the limit is 1,048,576\)"):
        open_checkpoint(path)


# Names of the layouts `foreign_layout` knows (each detector's words and evidence), `{}` an index; with lookalikes
# whose only difference is a digit (`norm_2.` where LitGPT's test looks for `norm_1.`).
_LAYOUT_NAMES = (
    "layers.{}.attention.wq.weight", "layers.{}.feed_forward.w1.weight", "tok_embeddings.weight",
    "model.layers.{}.self_attn.q_proj.weight", "model.layers.{}.mlp.gate_proj.weight", "model.embed_tokens.weight",
    "transformer.h.{}.norm_1.weight", "transformer.h.{}.norm_2.weight", "transformer.h.{}.attn.qkv.weight",
    "transformer.h.{}.attn.attn.weight", "transformer.h.{}.mlp.fc_1.weight", "transformer.wte.weight",
    "model.diffusion_model.input_blocks.{}.0.weight", "first_stage_model.encoder.down.{}.block.0.conv1.weight",
    "down_blocks.{}.resnets.0.conv1.weight", "mid_block.attentions.0.to_q.weight", "up_blocks.{}.attentions.0.w",
    "control_model.input_blocks.{}.0.weight", "control_model.zero_convs.{}.0.weight",
    "controlnet_down_blocks.{}.weight", "controlnet_cond_embedding.conv_in.weight",
    "double_blocks.{}.img_attn.qkv.weight", "single_blocks.{}.linear1.weight", "joint_blocks.{}.x_block.attn.qkv.w",
    "transformer_blocks.{}.attn.to_q.weight", "single_transformer_blocks.{}.norm.linear.weight",
    "body.{}.block1.weight", "conv_in.weight", "adapter.body.{}.resnets.0.block1.weight", "adapter.conv_in.weight",
    "blk.{}.attn_q.weight", "blk.{}.ffn_gate.weight", "token_embd.weight", "output_norm.weight",
    "onnx::MatMul_{}", "encoder.blocks.{}.attn.query.weight", "model.encoder.layers.{}.self_attn.q_proj.weight",
    "encoder.sentence_encoder.layers.{}.self_attn.q_proj.weight", "emb_layer_norm_after.weight",
    "esm.encoder.layer.{}.attention.self.query.weight", "esm.encoder.emb_layer_norm_after.weight",
    "image_encoder.blocks.{}.attn.qkv.weight", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "vision_encoder.layers.{}.attn.qkv.weight", "shared_image_embedding.positional_embedding",
    "image_encoder.trunk.blocks.{}.attn.qkv.weight", "sam_mask_decoder.transformer.layers.{}.w",
    "vision_encoder.backbone.blocks.{}.attn.qkv.weight", "encoder.pos_conv.0.weight", "post_extract_proj.weight",
    "encoder.pos_conv_embed.conv.weight", "feature_projection.projection.weight", "label_embs_concat",
    "transformer.resblocks.{}.attn.in_proj_weight", "visual.transformer.resblocks.{}.attn.in_proj_weight",
    "text_model.encoder.layers.{}.self_attn.q_proj.weight", "vision_model.encoder.layers.{}.self_attn.k_proj.bias",
    "blocks.{}.attn.qkv.weight", "encoder.layer.{}.attention.attention.query.weight", "depth_head.projects.{}.w",
    "layers.{}.attention.q_proj.weight", "dense.kernel", "embed.embedding", "norm.scale", "dense.weight",
    "embed.weight", "norm.weight", "module.model.layers.{}.mlp.w{}.weight",
)


def _layout_names(rng: random.Random) -> list[str]:
    indices = [0, 1, 2, 10, 11, 12, 21, 100, 111, 120, 1110]
    chosen = rng.sample(_LAYOUT_NAMES, rng.randrange(1, 12))
    names = [template.format(*(rng.choice(indices) for _ in range(template.count("{}"))))
             for template in chosen for _ in range(rng.randrange(1, 4))]
    return list(dict.fromkeys(names))


@pytest.mark.parametrize("seed", range(60))
def test_foreign_layout_on_folded_names_equals_it_on_the_names(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated pairs of key lists from every layout the detectors know, indices with every digit: the same whys
    and note as with the names joined as they are."""
    rng = random.Random(seed)
    cases = [(_layout_names(rng), _layout_names(rng)) for _ in range(20)]
    folded = [diff_keys.foreign_layout(unexpected, missing) for unexpected, missing in cases]
    monkeypatch.setattr(diff_keys, "_word_text", "\n".join)
    assert folded == [diff_keys.foreign_layout(unexpected, missing) for unexpected, missing in cases]
    assert any(whys for whys, _ in folded) or any(note for _, note in folded) or seed % 3


def test_word_text_folds_indices_and_keeps_every_word() -> None:
    names = [f"module.model.layers.{i}.mlp.w{j}.weight" for i in range(1111) for j in range(3)]
    text = diff_keys._word_text(names)
    assert len(text.split("\n")) < 100 < len(names)
    assert "layers.1.mlp.w1." in text and "layers.111.mlp.w1." in text and "layers.0.mlp.w0." in text
    assert "layers.2." not in text and "w2." not in text  # folded: to be tested only for words without them
    assert diff_keys._word_text(["a\nb.1", "b.1"]) == "a\nb.1"  # a newline in a name splits a line, loses none


def _joined_uses() -> tuple[list[str], list[str]]:
    """Every string constant that diff_keys.py tests `in` a joined text, and every use of such a text that is not
    a substring test (nor passing it on, or naming it): what `_word_text` folds must only be searched for words."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(diff_keys))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    joined_names = {"joined", "joined_unexpected", "joined_missing"}
    # The functions handed folded texts: the detectors (and `holds`) take them as parameters; foreign_layout makes
    # them. (adapter_fit's own `joined` is the names joined as they are.)
    scopes = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and (
        node.name == "foreign_layout" or joined_names & {arg.arg for arg in node.args.args})]
    assert len(scopes) > 10
    words: list[str] = []
    odd: list[str] = []
    for node in (inner for scope in scopes for inner in ast.walk(scope)):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn) and any(
                isinstance(n, ast.Name) and n.id in joined_names for n in ast.walk(node.comparators[0])):
            if isinstance(node.left, ast.Constant):
                words.append(node.left.value)
            elif not (isinstance(node.left, ast.Name) and node.left.id == "word"):
                odd.append(ast.unparse(node))
        if isinstance(node, ast.Name) and node.id in joined_names and isinstance(node.ctx, ast.Load):
            use: ast.AST = node
            while isinstance(parents[use], ast.BinOp | ast.IfExp | ast.Tuple):
                use = parents[use]
            parent = parents[use]
            allowed = (isinstance(parent, ast.Compare) and (use in parent.comparators or isinstance(
                parent.ops[0], ast.Is | ast.IsNot))) or (isinstance(parent, ast.Attribute)
                                                         and parent.attr == "__contains__") or isinstance(
                parent, ast.Call | ast.keyword | ast.Assign | ast.For | ast.comprehension | ast.Return)
            if not allowed:
                odd.append(ast.unparse(parent))
    return words, odd


def test_every_word_the_detectors_test_survives_the_folding() -> None:
    words, odd = _joined_uses()
    words += [*diff_keys._LDM_WORDS, *diff_keys._DIFFUSERS_WORDS]
    words += [w for layout in diff_keys._RENAMED_LAYOUTS for w in (*layout.a_words, *layout.b_words)]
    assert "norm_1." in words and "onnx::" in words and len(words) > 30
    assert [w for w in words if "\n" in w or set(w) & set("023456789")] == []
    assert odd == []
