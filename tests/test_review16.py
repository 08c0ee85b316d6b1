"""Review of the thirdparty8, redteam11 and ux10 merges: false positives on ordinary inputs.

- diff-keys: MoE experts stored fused with each matrix transposed ((E, in, out) against (E, out, in)) were given
  reason channels-last, "as MLX stores convolutions", which they are not.
- A Hub cache whose branch has a slash (refs/feature/x) read with --revision feature (or org/m@feature/x, which
  is revision feature and file x) was told refs/feature "is not a regular file" and to delete that ref, which
  deletes the branch's ref.
- A page of the Hub's website (huggingface.co/docs/transformers/index, /blog/moe) had its path offered as the
  repo id to type, or was read as repo blog/moe.
- convert --to fp16 / shard --format bf16 (a dtype given to the format option) did not say --dtype casts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def test_moe_experts_transposed_are_not_called_an_mlx_convolution(tmp_path: Path) -> None:
    """Fused expert weights (num_experts, hidden, 2 * intermediate) against (num_experts, 2 * intermediate,
    hidden), as transformers versions and other code bases store them, are a batched transpose; the 3-dim
    swap looked like a channels-last Conv1d kernel."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    gate_up = torch.randn(4, 16, 32)
    save_file({"model.layers.0.mlp.experts.gate_up_proj": gate_up.contiguous()}, str(tmp_path / "a.safetensors"))
    save_file({"model.layers.0.mlp.experts.gate_up_proj": gate_up.transpose(1, 2).contiguous()},
              str(tmp_path / "b.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 1, data
    [row] = data["mismatched"]
    assert row["reason"] != "channels-last", row
    assert "MLX" not in row["detail"] and "movedim" not in row["detail"], row
    assert row["reason"] == "shape" and row["detail"] == ("4×16×32 in A, 4×32×16 in B: the last two axes swapped, "
                                                          "each of the 4 matrices transposed"), row


def test_a_conv1d_kernel_stored_channels_last_is_still_said_so() -> None:
    """The MLX case the reason is for keeps it: whisper's conv1 (384 out, 80 mel bins in, width 3)."""
    from weightdoctor.diff_keys import classify_mismatch

    reason, _, detail = classify_mismatch("encoder.conv1.weight", (384, 3, 80), (384, 80, 3))
    assert reason == "channels-last" and "input channels last in A" in detail, detail
    reason, _, _ = classify_mismatch("encoder.conv2.weight", (384, 384, 3), (384, 3, 384))
    assert reason == "channels-last"
    reason, _, _ = classify_mismatch("unet.conv_in.weight", (320, 4, 3, 3), (320, 3, 3, 4))
    assert reason == "channels-last"


def _cache_with_a_slashed_branch(cache: Path) -> None:
    from safetensors.torch import save_file

    repo = cache / "models--org--m"
    for ref, commit, name in (("main", "a" * 40, "w_main"), ("feature/x", "d" * 40, "w_feature")):
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
        (repo / "snapshots" / commit).mkdir(parents=True)
        save_file({name: torch.zeros(2)}, str(repo / "snapshots" / commit / "model.safetensors"))


def test_a_revision_naming_a_folder_of_refs_is_not_a_broken_ref(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """refs/feature/ is the folder huggingface_hub keeps branch feature/x's ref in: --revision feature is a
    revision that is not cached, not a broken ref to delete (deleting it deletes feature/x's ref)."""
    _cache_with_a_slashed_branch(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, data = run_json("inspect", "org/m", "--revision", "feature/x")
    assert code == 0 and [t["name"] for t in data["tensors"]] == ["w_feature"], data
    for args in (["org/m", "--revision", "feature"], ["org/m@feature/x"]):
        result = run_cli("inspect", *args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "Traceback" not in message, message
        assert "delete that ref" not in message and "not a regular file" not in message, message
        assert "revision 'feature' of 'org/m' is not in the Hugging Face cache" in message, message
        assert "feature/x -> dddddddddd" in message, message
    assert (tmp_path / "models--org--m" / "refs" / "feature" / "x").read_text() == "d" * 40


@pytest.mark.parametrize("address", ["https://huggingface.co/docs/transformers/index", "https://huggingface.co/blog/moe",
                                     "https://huggingface.co/models?search=llama", "huggingface.co/papers/2401.00001"])
def test_a_page_of_the_hub_website_is_not_offered_as_a_repo_id(address: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A documentation or blog page pasted as the source was answered 'give the repo id instead:
    docs/transformers/index' (no repo id has three parts, and the Hub keeps docs/ for its own pages), or read as
    repo blog/moe and said not to be cached."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", address)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "Traceback" not in message, message
    assert message == (f"error: {address}: a page of the Hugging Face website, not of a repo: give the id "
                       "(org/name) of the model repo to read"), message
    # A repo's own address keeps its reading, a repo without an org too.
    from weightdoctor.checkpoint.hub import url_source_hint

    assert url_source_hint("https://huggingface.co/bert-base-uncased/tree/main") == \
        "a web address, not a local path: give the repo id instead: bert-base-uncased"


def test_a_dtype_given_to_the_format_option_names_dtype(tmp_path: Path) -> None:
    """`convert --to fp16` ('convert it to fp16') was told only "choose safetensors or bin", which does not say
    that the cast it asked for is --dtype's."""
    torch.save({"w": torch.zeros(2, 2)}, tmp_path / "m.pt")
    for command, option, value in (("convert", "--to", "fp16"), ("shard", "--format", "bfloat16")):
        args = [command, str(tmp_path / "m.pt"), "-o", str(tmp_path / f"out-{command}"), option, value]
        result = run_cli(*args, *(["--max", "1GB"] if command == "shard" else []))
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, message
        assert message == (f"error: {option} {value!r}: choose one of safetensors, bin; {value} is a dtype: "
                           f"--dtype {value} casts to it"), message
        assert not (tmp_path / f"out-{command}").exists()
    # What was said before stays: a pickle's suffix is 'bin', a typo the format meant.
    from weightdoctor.convert import format_choice

    assert format_choice("--to", "pt") == "--to 'pt': choose one of safetensors, bin; did you mean 'bin'?"
