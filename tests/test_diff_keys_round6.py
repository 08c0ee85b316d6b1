"""diff-keys, round 6: renames that rename only what they match."""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from tests.helpers import run_json
from tests.test_diff_keys_round5 import _timm_vit


def _renames_each_raise_matched(a: Path, b: Path) -> tuple[list[str], list[int], dict]:
    """The suggested renames of `diff-keys A B`, and `matched` with none, the first, the first two ... of them applied
    through --rename, and the last run's report."""
    code, data = run_json("diff-keys", str(a), str(b))
    flags = [rename["flag"] for rename in data["suggested_renames"]]
    counts = [data["matched"]]
    after = data
    for count in range(1, len(flags) + 1):
        words = [word for flag in flags[:count] for word in shlex.split(flag)]
        code, after = run_json("diff-keys", str(a), str(b), *words)
        counts.append(after["matched"])
    assert counts[-1] == data["matched_after_renames"] or not flags, (counts, data["matched_after_renames"])
    return flags, counts, after


def test_a_timm_vits_renames_rename_only_the_keys_they_match(tmp_path: Path) -> None:
    """timm's ViT against transformers' ViTForImageClassification: the search offered
    `--rename '^(?!(?:vit)\\.)=vit.embeddings.'`, `vit.embeddings.` before all 29 keys but the final norm's, for two
    of them (cls_token, and pos_embed that the next rename turns into position_embeddings); the other 27 were left
    named `vit.embeddings.blocks.0.attn.qkv.weight`..., which neither side has, in the report after the renames and
    in what the snippet writes. The rename is now narrowed to the keys it matches; each suggested rename, applied,
    raises `matched`, and every key left unmatched keeps its own name."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(3)
    config = ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8, num_labels=10)
    ViTForImageClassification(config).save_pretrained(tmp_path / "hf-vit")
    state = _timm_vit(tmp_path / "timm_vit.safetensors", 16, 2, 10, 4)
    flags, counts, after = _renames_each_raise_matched(tmp_path / "timm_vit.safetensors", tmp_path / "hf-vit")
    assert all(later > earlier for earlier, later in zip(counts, counts[1:], strict=False)), (flags, counts)
    assert counts[-1] == 4, (flags, counts)  # the final norm's two, cls_token, pos_embed: as before
    left = {row["name"] for row in after["unexpected"]}
    assert len(left) == len(state) - 4 and left <= set(state), sorted(left - set(state))
    assert "--rename '^(cls_token|pos_embed)(?![^.])=vit.embeddings.\\1'" in flags, flags


def test_every_suggested_rename_of_the_fixture_pairs_raises_matched(tmp_path: Path) -> None:
    """fixtures.diff_pairs' workflow pairs (DDP, compile, LoRA, legacy names, base into head...): each suggested
    rename, applied in turn with --rename, matches more keys of B, and all of them match what they said."""
    from fixtures.diff_pairs import build_pairs

    checked = []
    for name, pair in build_pairs(tmp_path).items():
        flags, counts, _ = _renames_each_raise_matched(pair.a, pair.b)
        assert all(later > earlier for earlier, later in zip(counts, counts[1:], strict=False)), (name, flags, counts)
        if flags:
            checked.append(name)
    assert {"ddp-prefix", "compile-prefix", "lora-peft"} <= set(checked), checked
