"""Thirdparty37: fairscale FSDP flat parameters against the model they flatten (diff-keys), and fairseq's
model-parallel parts (model_part-0.pt, model_part-1.pt, ...; checkpoint_last-model_part-0.pt; metaseq's
reshard-model_part-0.pt) read alone, as a folder, against the whole model and planned onto devices.

fairseq and fairscale are not installed here: the files are written as their save code writes them (fairseq's
checkpoint_utils.save_state: `args` / `cfg`, `model`, `optimizer_history`, `extra_state`), the model-parallel parts'
weights split as fairseq's model_parallel modules split them (Megatron's ColumnParallelLinear for k/q/v_proj and fc1
and VocabParallelEmbedding for embed_tokens along dim 0, RowParallelLinear for out_proj and fc2 along dim 1, their
biases and the layer norms whole in every part), the split metaseq's scripts/reshard_mp.py undoes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_cli, run_json
from tests.test_third_party_layouts36 import _fairseq_fsdp_shard, _save_fairseq


def _said(text: str) -> str:
    """Rich's output as one line: table borders and wrapping gone."""
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


# --- fairscale FSDP flat parameters in diff-keys ---------------------------------------------------------------


def test_diff_keys_names_fairscale_flat_params_and_their_unflattening(tmp_path: Path) -> None:
    """Before: A's three flat_param_0 and B's 45 weights were all `unknown: no known cause`."""
    shard = _fairseq_fsdp_shard(tmp_path / "checkpoint_last-shard0.pt")
    whole = _save_fairseq(tmp_path / "checkpoint_best.pt", (0.0, 0.0))
    code, report = run_json("diff-keys", str(shard), str(whole))
    assert code == 1, report
    unexpected = {row["name"]: row for row in report["unexpected"]}
    assert set(unexpected) == {"flat_param_0", "encoder.layers.0.flat_param_0", "decoder.layers.0.flat_param_0"}
    assert {row["reason"] for row in unexpected.values()} == {"fairscale-flat-param"}, unexpected
    assert unexpected["decoder.layers.0.flat_param_0"]["detail"].startswith(
        "2,128 values of decoder.layers.0 in one 1-D tensor, padded"), unexpected
    assert "the modules no inner FSDP wraps" in unexpected["flat_param_0"]["detail"], unexpected
    missing = {row["name"]: row for row in report["missing"]}
    assert {row["reason"] for row in missing.values()} == {"fairscale-flat-param"}, {
        name: row["reason"] for name, row in missing.items() if row["reason"] != "fairscale-flat-param"}
    assert missing["decoder.layers.0.fc1.weight"]["detail"] == "flattened into A's decoder.layers.0.flat_param_0"
    assert missing["encoder.embed_tokens.weight"]["detail"] == "flattened into A's flat_param_0"
    # The output layer too, which was "task-head: initialised at random".
    assert missing["decoder.output_projection.weight"]["detail"] == "flattened into A's flat_param_0"
    note = next(note for note in report["notes"] if "fairscale FSDP flat parameter" in note)
    assert note.startswith("A holds 3 fairscale FSDP flat parameters (encoder.layers.0.flat_param_0, "
                           "decoder.layers.0.flat_param_0 and 1 more)"), note
    assert "consolidate_shard_weights(shard_weights=[each file's 'model'], shard_metadata=[each file's " \
           "'fsdp_metadata'])" in note, note
    assert "local_state_dict()" in note and "FULL_STATE_DICT" in note, note
    # torch's FSDP note is not given for fairscale's parameters.
    assert not any("use_orig_params" in n for n in report["notes"]), report["notes"]
    text = run_cli("diff-keys", str(shard), str(whole))
    said = _said(text.stdout)
    assert "fairscale-flat-param" in said and "fsdp_metadata" in said, text.stdout


def test_a_two_dimensional_flat_param_name_is_not_called_fairscale(tmp_path: Path) -> None:
    """A model's own 2-D `proj.flat_param_0` missing from the other side stays what it was."""
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"proj.flat_param_0": torch.randn(4, 4), "proj.bias": torch.zeros(4)}, a)
    torch.save({"proj.weight": torch.randn(4, 4), "proj.bias": torch.zeros(4)}, b)
    code, report = run_json("diff-keys", str(a), str(b))
    assert code == 1, report
    assert [row["reason"] for row in report["unexpected"]] != ["fairscale-flat-param"], report["unexpected"]
    assert not any("fairscale" in note for note in report["notes"]), report["notes"]
