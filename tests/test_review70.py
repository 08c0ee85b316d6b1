"""review70: the review of review68 (`swapped-sides`, the RoAd / DeLoRA / WaveFT / AdaLoRA-on-conv checks, the
merge note, inspect's adapter sizes), each checked against the installed peft (0.21): get_peft_model(...)
.save_pretrained writes the adapter, PeftModel.from_pretrained / merge_and_unload say what loads and merges.

- `swapped-sides` was said of any model against an adapter: every weight of A the adapter does not store is
  "adapter-base", whether or not the adapter adapts A. Another model (none of the adapter's modules), or a whole
  PEFT model (its layers under `.base_layer.`), was "the model it adapts", and the command given said "none of its
  modules is in B".
- The command the note gives dropped `--revision` / `--revision-b` (it read the repos' main, or a revision the
  cache does not have) and A's `--key` (B takes none: the command failed on a list, "pick it with --key 0").
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json


class _Base(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(16, 16)
        self.up = torch.nn.Linear(16, 32)
        self.norm = torch.nn.LayerNorm(16)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous() for name, tensor in module.state_dict().items()}


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """(a LoRA saved by peft on q and up, its base as a safetensors file, the base's state dict)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _state(_Base())
    save_file(base, str(tmp_path / "base.safetensors"))
    torch.manual_seed(0)
    get_peft_model(_Base(), LoraConfig(r=4, target_modules=["q", "up"])).save_pretrained(str(tmp_path / "lora"))
    return tmp_path / "lora", tmp_path / "base.safetensors", base


def _reasons(data: dict) -> set[str]:
    return {entry["reason"] for entry in data["missing"] + data["unexpected"]}


def _pasted(note: str) -> list[str]:
    """The `diff-keys` words after "run weightdoctor" in a swapped-sides note, as a shell splits them."""
    return shlex.split(note.rsplit("run weightdoctor ", 1)[1])


def test_a_model_the_adapter_does_not_adapt_is_not_called_swapped(tmp_path: Path, pair: tuple) -> None:
    """Another model (none of the adapter's modules) and a whole PEFT-wrapped model (q and up under .base_layer.,
    its own LoRA beside them) against a LoRA were "B is a PEFT adapter and A the model it adapts", and the command
    given (`diff-keys LORA A`) said "none of its modules is in B": no swapped sides, the pasted command no check."""
    from peft import LoraConfig, get_peft_model

    lora, base, _ = pair
    save_file({"enc.a.weight": torch.zeros(8, 8), "enc.b.weight": torch.zeros(8, 8), "enc.b.bias": torch.zeros(8)},
              str(tmp_path / "other.safetensors"))
    torch.manual_seed(0)
    save_file(_state(get_peft_model(_Base(), LoraConfig(r=4, target_modules=["q", "up"]))),
              str(tmp_path / "wrapped.safetensors"))
    for model in ("other.safetensors", "wrapped.safetensors"):
        _, forward = run_json("diff-keys", str(lora), str(tmp_path / model))
        assert "none of its modules is in B" in forward["notes"][0], model
        code, data = run_json("diff-keys", str(tmp_path / model), str(lora))
        assert code == 1 and "swapped-sides" not in _reasons(data), (model, data["notes"])
        assert not any(note.startswith("B is a PEFT adapter") for note in data["notes"]), model
    # Its own base, and the model with the LoRA merged (merge_and_unload), are still: the command checks the fit.
    from peft import PeftModel

    torch.manual_seed(0)
    save_file(_state(PeftModel.from_pretrained(_Base(), str(lora)).merge_and_unload()),
              str(tmp_path / "merged.safetensors"))
    for model in (base, tmp_path / "merged.safetensors"):
        code, data = run_json("diff-keys", str(model), str(lora))
        assert code == 1 and _reasons(data) == {"swapped-sides"}, model
        code, checked = run_json(*_pasted(data["notes"][0]))
        assert code == 0 and "2 of them in B with shapes that fit" in checked["notes"][0], model


def test_the_command_given_reads_the_revisions_this_run_read(tmp_path: Path, pair: tuple,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`diff-keys org/base org/lora --revision v1 --revision-b v2` gave `diff-keys org/lora org/base`: main, which
    neither repo's cache has (the command failed); each revision now goes with its side."""
    from fixtures.build import write_hub_cache

    lora, base, _ = pair
    (tmp_path / "base-files").mkdir()
    base.rename(tmp_path / "base-files" / "model.safetensors")
    cache = tmp_path / "hub"
    write_hub_cache(cache, "org/base", tmp_path / "base-files", revision="v1")
    write_hub_cache(cache, "org/lora", lora, revision="v2")
    write_hub_cache(cache, "org/lora", lora, revision="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = {("--revision", "v1", "--revision-b", "v2"): "org/lora org/base --revision v2 --revision-b v1",
             ("--revision", "v1"): "org/lora org/base --revision v1"}
    for flags, expected in cases.items():
        code, data = run_json("diff-keys", "org/base", "org/lora", *flags)
        assert code == 1 and _reasons(data) == {"swapped-sides"}, flags
        assert data["notes"][0].endswith(f"to check it, run weightdoctor diff-keys {expected}"), data["notes"]
        code, checked = run_json(*_pasted(data["notes"][0]))
        assert code == 0 and "2 of them in B with shapes that fit" in checked["notes"][0], flags
    # A local adapter against the repo's base at v1: B's revision, --revision-b (A is read from the disk).
    code, data = run_json("diff-keys", "org/base", str(lora), "--revision", "v1")
    assert data["notes"][0].endswith(f"run weightdoctor diff-keys {lora} org/base --revision-b v1"), data["notes"]
    assert run_json(*_pasted(data["notes"][0]))[0] == 0


def test_the_command_given_reads_the_state_dict_key_picked(tmp_path: Path, pair: tuple) -> None:
    """`diff-keys TRAIN.pt LORA --key 0` (the state dict a list's first item) gave `diff-keys LORA TRAIN.pt`, which
    B reads without a key: "no state dict ... found; ... pick it with --key 0", a flag B does not take. The note
    now writes A's state dict first (convert --key), then compares the adapter with that file."""
    from tests.helpers import run_cli

    lora, _, base = pair
    torch.save([base, {"step": 3}], tmp_path / "train run.pt")
    code, data = run_json("diff-keys", str(tmp_path / "train run.pt"), str(lora), "--key", "0")
    assert code == 1 and _reasons(data) == {"swapped-sides"}
    note = data["notes"][0]
    written = tmp_path / "train run.0.safetensors"
    source = shlex.quote(str(tmp_path / "train run.pt"))
    convert = f"weightdoctor convert {source} --key 0 -o {shlex.quote(written.name)}"
    assert f"to check it, write A's state dict (--key 0) to a file of its own, as diff-keys takes no --key for B " \
           f"({convert}), then run weightdoctor diff-keys {lora} {shlex.quote(written.name)}" in note
    # The two commands, run as given (from the folder the file is written into), check the adapter.
    convert_words = shlex.split(convert)[1:]
    convert_words[convert_words.index("-o") + 1] = str(written)
    assert run_cli(*convert_words).exit_code == 0
    words = _pasted(note)
    words[-1] = str(written)
    code, checked = run_json(*words)
    assert code == 0 and "2 of them in B with shapes that fit" in checked["notes"][0]
