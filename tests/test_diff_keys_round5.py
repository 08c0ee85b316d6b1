"""diff-keys, round 5: what rounds renumber2 / thirdparty32 left, then users' cases.

GroundingDINO (IDEA-Research/GroundingDINO, not installed): groundingdino_swint_ogc.pth holds {"model": the DDP model's
state dict, every name `module.`-prefixed}; its util/inference.py's load_model reads it as
`model.load_state_dict(clean_state_dict(checkpoint["model"]), strict=False)`, and util/utils.py's clean_state_dict
drops `module.` from each name that starts with it (both read with the search tool). The file is written here as
tests/test_third_party_layouts17.py's _grounding_dino writes it, and B is the same state dict without the prefix (what
build_model(args).state_dict() names).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_json
from tests.test_third_party_layouts17 import _grounding_dino


def test_a_grounding_dino_checkpoints_ddp_prefix_is_a_warning_against_its_own_layout(tmp_path: Path) -> None:
    """groundingdino_swint_ogc.pth against GroundingDINO's own unprefixed names: every key was a wrapper-prefix
    error (exit 1), where GroundingDINO's load_model strips `module.` itself (clean_state_dict), as open_clip's
    loader does (decided in tests/test_third_party_layouts32.py)."""
    from safetensors.torch import save_file

    path = tmp_path / "groundingdino_swint_ogc.pth"
    state = _grounding_dino(path)
    bare = {name[len("module."):]: tensor for name, tensor in state.items()}
    save_file(bare, tmp_path / "groundingdino_own.safetensors")
    code, data = run_json("diff-keys", str(path), str(tmp_path / "groundingdino_own.safetensors"))
    rows = data["missing"] + data["unexpected"]
    assert data["matched"] == 0 and len(rows) == 2 * len(state), data
    assert {(row["reason"], row["severity"]) for row in rows} == {("wrapper-prefix", "warn")}, rows
    assert all("GroundingDINO's load_model strips module." in row["detail"] for row in rows), rows
    said = [note for note in data["notes"] if note.startswith("A is a GroundingDINO checkpoint")]
    assert len(said) == 1 and f"{len(state)} keys differ from B only by module." in said[0] \
        and "clean_state_dict" in said[0] and "strict=False" in said[0] \
        and "--rename '^module\\.='" in said[0], data["notes"]
    assert code == 0 and data["worst_severity"] == "warn", data
    assert [r["flag"] for r in data["suggested_renames"]] == ["--rename '^module\\.='"], data["suggested_renames"]
    # The rename, pasted, matches every key.
    code, data = run_json("diff-keys", str(path), str(tmp_path / "groundingdino_own.safetensors"),
                          "--rename", "^module\\.=")
    assert code == 0 and data["matched"] == len(state) and not data["missing"] + data["unexpected"], data
    # A DDP save of a model that is not GroundingDINO's keeps the error; so does a GroundingDINO file where another
    # key is missing too (the prefix is not all that differs: its strict=False load would leave that key unset).
    other, plain = tmp_path / "other.pt", tmp_path / "plain.pt"
    torch.save({"model": {"module.backbone.0.weight": torch.ones(2, 2), "module.transformer.weight": torch.ones(2)}},
               other)
    torch.save({"backbone.0.weight": torch.ones(2, 2), "transformer.weight": torch.ones(2)}, plain)
    code, data = run_json("diff-keys", str(other), str(plain))
    assert code == 1 and {row["severity"] for row in data["missing"]} == {"error"}, data
    assert not any("GroundingDINO" in note for note in data["notes"]), data["notes"]


def _votes_one_by_one(sample_splits: list[list[tuple[str, str]]], by_rest: dict[str, set[str]],
                      limit: int) -> list[tuple[tuple[str, str, str], int]]:
    """The prefix votes as _candidate_renames cast them before (one vote a split and a target prefix), ranked; a
    module inside one numbered layer of alike layers gets no vote onto a prefix with no number (the lookalike rule
    of this round, narrowed in review 83 to layers that another sampled layer holds the module of too)."""
    import heapq
    from collections import Counter

    def numbers_hidden(prefix: str) -> list[tuple[str, ...]]:
        parts = prefix.rstrip(".").split(".")
        return [(*parts[:i], "#", *parts[i + 1:]) for i, part in enumerate(parts[:-1]) if part.isdigit()]

    # Inside a layer of alike layers: another sampled prefix differs from it by that number alone (review 83).
    seen = {prefix for splits in sample_splits for prefix, _ in splits}

    def inside_a_layer(prefix: str) -> bool:
        return any(sum(pattern in numbers_hidden(other) for other in seen) > 1 for pattern in numbers_hidden(prefix))

    votes: Counter[tuple[str, str, str]] = Counter()
    for splits in sample_splits:
        for prefix, rest in splits:
            for target_prefix in by_rest.get(rest, ()):
                if inside_a_layer(prefix) and not any(part.isdigit() for part in target_prefix.split(".")):
                    continue
                if target_prefix != prefix:
                    votes[("prefix", prefix, target_prefix)] += 1
    return heapq.nsmallest(limit, votes.items(), key=lambda item: (-item[1], len(item[0][2]), item[0]))


def test_grouped_prefix_votes_rank_as_votes_cast_one_by_one() -> None:
    """The prefix votes are counted by groups of prefixes holding the same rests (subquadratic in renumbered
    layers); on random name sets the ranking is the one the votes cast one by one gave, for every limit."""
    import random

    from weightdoctor.diff_keys import _leading_splits
    from weightdoctor.prefix_votes import top_prefix_votes

    rng = random.Random(5)
    heads = ["model.", "module.", "m.", "", "base_model.model.", "x=y.", "model.decoder.", "blocks.0.", "h.1.a."]
    tails = ["w", "b", "attn.q.weight", "attn.k.weight", "mlp.fc.weight", "norm.weight", "0.w"]
    for case in range(300):
        def names(count: int) -> list[str]:
            head = rng.choice(heads)
            return sorted({f"{rng.choice([head, rng.choice(heads)])}{rng.choice(['layers', 'h', 'blocks'])}."
                           f"{rng.randrange(rng.choice([3, 12, 40]))}.{rng.choice(tails)}" for _ in range(count)})
        sample, targets = names(rng.randrange(1, 80)), names(rng.randrange(1, 80))
        if case % 3 == 0:  # a renumbered copy: the case the grouping is for
            offset = rng.randrange(1, 50)
            targets = sorted({re_number(name, offset) for name in sample} | set(targets[:5]))
        sample_splits = [list(_leading_splits(name)) for name in sample]
        wanted = {rest for splits in sample_splits for _, rest in splits}
        by_rest: dict[str, set[str]] = {}
        for target in targets:
            for prefix, rest in _leading_splits(target):
                if rest in wanted:
                    by_rest.setdefault(rest, set()).add(prefix)
        for limit in (1, 2, 8, 30):
            assert top_prefix_votes(sample_splits, by_rest, limit) == \
                _votes_one_by_one(sample_splits, by_rest, limit), (case, limit, sample, targets)


def re_number(name: str, offset: int) -> str:
    """`name` with each number component moved up by `offset`."""
    return ".".join(str(int(part) + offset) if part.isdigit() else part for part in name.split("."))


def test_renumbered_layers_are_still_all_renamed_and_the_report_unchanged(tmp_path: Path) -> None:
    """The benchmark's pair at a small size (benchmarks/bench_renumbered.py): every layer renamed by the block
    search, as before the grouped votes."""
    from benchmarks.bench_renumbered import write_pair
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.diff_keys import diff_checkpoints

    a, b = write_pair(tmp_path, 60)
    with open_checkpoint(str(a), structure_only=True) as ca, open_checkpoint(str(b), structure_only=True) as cb:
        report = diff_checkpoints(ca, cb)
    assert report.matched_after_renames == 600 and len(report.suggested_renames) == 60, report.suggested_renames
    assert report.suggested_renames[0].flag == "--rename '^model\\.layers\\.0\\.=model.layers.60.'", \
        report.suggested_renames[0]


def _tiny_llama(folder: Path, layers: int, seed: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_a_distilled_student_against_its_teacher_says_the_depths(tmp_path: Path) -> None:
    """A 2-layer student against its 4-layer teacher (the same Llama, fewer num_hidden_layers): the teacher's layers
    2-3 were `unknown: no known cause` with no detail, and A's extra layers loaded into the student an error, though
    from_pretrained drops them and loads the rest. The keys --model-class lists are from_pretrained's own."""
    import transformers
    from transformers import AutoConfig, LlamaForCausalLM

    student, teacher = _tiny_llama(tmp_path / "student", 2, 1), _tiny_llama(tmp_path / "teacher", 4, 2)
    extra = {f"model.layers.{n}.{tail}" for n in (2, 3) for tail in (
        "input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight")}
    code, data = run_json("diff-keys", str(student), str(teacher))
    assert {row["name"] for row in data["missing"]} == extra and not data["unexpected"], data
    assert {(row["reason"], row["severity"]) for row in data["missing"]} == {("layer-count", "error")}, data
    assert {row["detail"] for row in data["missing"]} == {
        "B's model.layers 2, 3, which A has none of (A has 2 layers): starts from its init"}, data["missing"]
    depths = "B has 4 layers under model.layers (0-3), A has 2 (0, 1)"
    said = [note for note in data["notes"] if note.startswith(depths)]
    assert len(said) == 1 and "start from their init" in said[0] and "No rename fixes it" in said[0], data["notes"]
    assert code == 1 and not data["suggested_renames"], data
    # The teacher into the student: its layers 2-3 are dropped, the student gets every weight: a warning.
    code, data = run_json("diff-keys", str(teacher), str(student))
    assert {row["name"] for row in data["unexpected"]} == extra and not data["missing"], data
    assert {(row["reason"], row["severity"]) for row in data["unexpected"]} == {("layer-count", "warn")}, data
    said = [note for note in data["notes"] if note.startswith("A has 4 layers under model.layers (0-3), B has 2")]
    assert len(said) == 1 and "B is A cut to its first 2 layers" in said[0], data["notes"]
    assert code == 0 and data["worst_severity"] == "warn", data
    # --model-class against from_pretrained itself (output_loading_info), both ways.
    transformers.logging.set_verbosity_error()
    for a, config in ((student, teacher), (teacher, student)):
        code, data = run_json("diff-keys", str(a), "--model-class", "LlamaForCausalLM", "--config", str(config))
        _, info = LlamaForCausalLM.from_pretrained(a, config=AutoConfig.from_pretrained(config),
                                                   output_loading_info=True)
        assert {row["name"] for row in data["missing"]} == set(info["missing_keys"]), (data, info)
        assert {row["name"] for row in data["unexpected"]} == set(info["unexpected_keys"]), (data, info)
        assert {row["reason"] for row in data["missing"] + data["unexpected"]} == {"layer-count"}, data


def test_layers_that_are_not_the_same_layers_stay_unknown(tmp_path: Path) -> None:
    """The depth reading holds only where the extra layers have the names and shapes of the other side's layer 0
    and every key of them differs: a wider extra layer, or one key of a shared layer missing too, is not it."""
    from safetensors.torch import save_file

    shared = {f"h.{n}.w": torch.ones(4, 4) for n in range(2)}
    save_file(shared, tmp_path / "a.safetensors")
    save_file({**shared, "h.2.w": torch.ones(8, 4)}, tmp_path / "wider.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "wider.safetensors"))
    assert [(row["name"], row["reason"]) for row in data["missing"]] == [("h.2.w", "unknown")], data
    save_file({"h.0.w": torch.ones(4, 4), "h.0.b": torch.ones(4), "h.1.w": torch.ones(4, 4),
               "h.1.b": torch.ones(4), "h.2.w": torch.ones(4, 4), "h.2.b": torch.ones(4)},
              tmp_path / "deeper.safetensors")
    save_file({"h.0.w": torch.ones(4, 4), "h.0.b": torch.ones(4), "h.1.w": torch.ones(4, 4)},
              tmp_path / "short.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "short.safetensors"), str(tmp_path / "deeper.safetensors"))
    assert {row["reason"] for row in data["missing"]} == {"unknown"}, data
    assert code == 1 and not any("layers under" in note for note in data["notes"]), data["notes"]


def _timm_vit(path: Path, hidden: int, layers: int, labels: int, seed: int) -> dict[str, torch.Tensor]:
    """A timm ViT's state dict (vit_base_patch16_224's names: cls_token, pos_embed, patch_embed.proj, blocks.N with
    norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2; the final norm and head), at a tiny size."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    state = {"cls_token": torch.randn(1, 1, hidden, generator=generator),
             "pos_embed": torch.randn(1, 17, hidden, generator=generator),
             "patch_embed.proj.weight": torch.randn(hidden, 3, 8, 8, generator=generator),
             "patch_embed.proj.bias": torch.randn(hidden, generator=generator),
             "norm.weight": torch.randn(hidden, generator=generator),
             "norm.bias": torch.randn(hidden, generator=generator),
             "head.weight": torch.randn(labels, hidden, generator=generator), "head.bias": torch.zeros(labels)}
    for n in range(layers):
        for part, shape in (("norm1.weight", (hidden,)), ("norm1.bias", (hidden,)), ("attn.qkv.weight", (3 * hidden,
                            hidden)), ("attn.qkv.bias", (3 * hidden,)), ("attn.proj.weight", (hidden, hidden)),
                            ("attn.proj.bias", (hidden,)), ("norm2.weight", (hidden,)), ("norm2.bias", (hidden,)),
                            ("mlp.fc1.weight", (2 * hidden, hidden)), ("mlp.fc1.bias", (2 * hidden,)),
                            ("mlp.fc2.weight", (hidden, 2 * hidden)), ("mlp.fc2.bias", (hidden,))):
            state[f"blocks.{n}.{part}"] = torch.randn(*shape, generator=generator)
    save_file(state, path)
    return state


def test_a_timm_vit_against_transformers_vit_is_not_offered_layer_0s_norm_as_the_final_norm(tmp_path: Path) -> None:
    """timm's ViT weights against transformers' ViTForImageClassification: the rename search offered
    `^blocks\\.0\\.norm1\\.=vit.layernorm.` (one 1-D norm of the hidden size each), which, pasted, loads layer 0's
    pre-attention norm into the final norm without a word; convert_vit_timm_to_pytorch.py maps timm's final `norm.`
    there. Every key the printed renames (and the snippet) match now is the one that converter puts there."""
    import shlex

    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(3)
    config = ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8, num_labels=10)
    ViTForImageClassification(config).save_pretrained(tmp_path / "hf-vit")
    state = _timm_vit(tmp_path / "timm_vit.safetensors", 16, 2, 10, 4)
    code, data = run_json("diff-keys", str(tmp_path / "timm_vit.safetensors"), str(tmp_path / "hf-vit"))
    assert code == 1 and any(note.startswith("A is a timm-style ViT") for note in data["notes"]), data["notes"]
    flags = [rename["flag"] for rename in data["suggested_renames"]]
    assert flags and not any("blocks" in flag for flag in flags), flags
    # The converter's names for the keys the renames can reach (transformers' convert_vit_timm_to_pytorch.py).
    converted = {"norm.weight": "vit.layernorm.weight", "norm.bias": "vit.layernorm.bias",
                 "cls_token": "vit.embeddings.cls_token", "pos_embed": "vit.embeddings.position_embeddings"}
    words = [word for flag in flags for word in shlex.split(flag)]
    code, after = run_json("diff-keys", str(tmp_path / "timm_vit.safetensors"), str(tmp_path / "hf-vit"), *words)
    unexpected_after = {row["name"] for row in after["unexpected"]}
    namespace: dict[str, object] = {"state_dict": dict(state)}
    exec(data["python_snippet"], namespace)  # the snippet as printed, on A's own state dict
    renamed = namespace["state_dict"]
    assert isinstance(renamed, dict)
    b_names = {row["name"] for row in data["missing"]}
    landed = {old: new for old, new in zip(state, renamed, strict=True) if new in b_names}
    assert landed == converted, landed
    assert after["matched"] == len(converted), after
    assert len(unexpected_after) == len(data["unexpected"]) - len(converted), after


def test_values_say_a_change_that_is_a_casts_rounding_alone(tmp_path: Path) -> None:
    """--values on two fp16 checkpoints of one model, one tensor saved through bfloat16 and back, and on bf16 and
    fp16 copies of one fp32 model: each changed tensor showed ‖A−B‖/‖B‖ ~ 0.002 and nothing said it was a cast's
    rounding, not training. A trained change (a small update in fp32, saved in fp16) is not said to be one."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(8)
    # One tensor past the batched comparison's size (compare_pair), the others batched (compare_pairs_batch).
    weights = {"big.weight": torch.randn(256, 128, generator=generator) * 0.02,
               "small.weight": torch.randn(64, 16, generator=generator) * 0.02,
               "norm.weight": 1 + torch.randn(64, generator=generator) * 0.01}
    fp16 = {name: tensor.half() for name, tensor in weights.items()}
    save_file(fp16, tmp_path / "fp16.safetensors")
    through_bf16 = {**fp16, "big.weight": weights["big.weight"].bfloat16().half(),
                    "small.weight": weights["small.weight"].bfloat16().half()}
    save_file(through_bf16, tmp_path / "through_bf16.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "through_bf16.safetensors"), str(tmp_path / "fp16.safetensors"),
                          "--values")
    rows = {row["name"]: row for row in data["values"]}
    assert not rows["big.weight"]["identical"] and not rows["small.weight"]["identical"], rows
    assert rows["big.weight"]["rounded_to"] == rows["small.weight"]["rounded_to"] == "A is B rounded to bfloat16"
    assert rows["norm.weight"]["identical"] and rows["norm.weight"]["rounded_to"] is None, rows
    said = [note for note in data["notes"] if "differ by a cast's rounding alone" in note]
    assert len(said) == 1 and said[0].startswith("2 of the 2 changed tensors") \
        and "every change between them is a cast's" in said[0], data["notes"]
    assert code == 0, data
    # bf16 against fp16 copies of the same fp32 weights: every tensor is the other rounded to bfloat16.
    save_file({name: tensor.bfloat16() for name, tensor in weights.items()}, tmp_path / "bf16.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "bf16.safetensors"), str(tmp_path / "fp16.safetensors"),
                          "--values")
    assert {row["rounded_to"] for row in data["values"]} == {"A is B rounded to bfloat16"}, data["values"]
    assert any(note.startswith("3 of the 3 changed tensors differ by a cast's rounding") for note in data["notes"])
    # A trained change of the size of bf16's rounding (1e-3 relative), saved in fp16: not a cast.
    trained = {**fp16, "big.weight": (weights["big.weight"] * (1 + 1e-3 * torch.randn(256, 128, generator=generator)))
               .half(), "small.weight": (weights["small.weight"] + 1e-5).half()}
    save_file(trained, tmp_path / "trained.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "trained.safetensors"), str(tmp_path / "fp16.safetensors"),
                          "--values")
    changed = [row for row in data["values"] if not row["identical"]]
    assert len(changed) == 2 and all(row["rounded_to"] is None for row in changed), changed
    assert not any("cast's rounding" in note for note in data["notes"]), data["notes"]
