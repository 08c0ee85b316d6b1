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
