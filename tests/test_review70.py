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

import json
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
    assert f"to check it, write A's state dict as this run read it (--key 0) to a file of its own, as diff-keys " \
           f"takes no --key for B " \
           f"({convert}), then run weightdoctor diff-keys {lora} {shlex.quote(written.name)}" in note
    # The two commands, run as given (from the folder the file is written into), check the adapter.
    convert_words = shlex.split(convert)[1:]
    convert_words[convert_words.index("-o") + 1] = str(written)
    assert run_cli(*convert_words).exit_code == 0
    words = _pasted(note)
    words[-1] = str(written)
    code, checked = run_json(*words)
    assert code == 0 and "2 of them in B with shapes that fit" in checked["notes"][0]


class _Wide(torch.nn.Module):
    def __init__(self, features_in: int, features_out: int) -> None:
        super().__init__()
        self.q = torch.nn.Linear(features_in, features_out)
        self.norm = torch.nn.LayerNorm(8)


def test_a_lora_pair_is_compared_with_its_layer_both_ways_at_once(tmp_path: Path) -> None:
    """Each factor alone was compared with either axis of a 2-D weight (GPT-2's Conv1D is in × out): a LoRA made
    for a 32→32 Linear "fit" a 32→48 and a 48→32 one, info, which PeftModel.from_pretrained refuses (size
    mismatch). B's outputs and A's inputs now have to be one weight's, Linear's way or Conv1D's; AdaLoRA's pair
    (saved without .weight) alike. GPT-2's Conv1D (fan_in_fan_out) still fits its own base."""
    import transformers
    from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model

    for features in ((32, 32), (32, 48), (48, 32)):
        torch.manual_seed(0)
        save_file(_state(_Wide(*features)), str(tmp_path / f"q{features[0]}x{features[1]}.safetensors"))
    configs = {"lora": LoraConfig(r=4, target_modules=["q"]),
               "adalora": AdaLoraConfig(init_r=6, target_r=4, total_step=10, target_modules=["q"])}
    for method, config in configs.items():
        torch.manual_seed(0)
        get_peft_model(_Wide(32, 32), config).save_pretrained(str(tmp_path / method))
        for features in ((32, 32), (32, 48), (48, 32)):
            torch.manual_seed(0)
            try:
                PeftModel.from_pretrained(_Wide(*features), str(tmp_path / method))
                loads = True
            except RuntimeError as exc:
                assert "size mismatch" in str(exc)
                loads = False
            code, data = run_json("diff-keys", str(tmp_path / method),
                                  str(tmp_path / f"q{features[0]}x{features[1]}.safetensors"))
            assert (code == 0) == loads, (method, features, data["notes"])
            details = {entry["detail"] for entry in data["unexpected"] if entry["severity"] == "error"}
            rank = 4 if method == "lora" else 6
            assert details == (set() if loads else {
                f"lora_B 32×{rank} and lora_A {rank}×32 make a 32×32 update, which q.weight "
                f"({features[1]}×{features[0]} in B) is not, either way round: an adapter for another model size"}), \
                (method, features)
            assert loads or "1 of them does not fit B's shapes" in data["notes"][0]
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64,
                                                                n_positions=16))
    save_file({name: tensor for name, tensor in _state(gpt2).items() if name != "lm_head.weight"},
              str(tmp_path / "gpt2.safetensors"))
    get_peft_model(gpt2, LoraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)).save_pretrained(
        str(tmp_path / "gpt2-lora"))
    code, data = run_json("diff-keys", str(tmp_path / "gpt2-lora"), str(tmp_path / "gpt2.safetensors"))
    assert code == 0 and "2 modules, 2 of them in B with shapes that fit" in data["notes"][0]


def test_inspect_counts_an_adapter_s_size_in_words_that_are_true(tmp_path: Path) -> None:
    """peft's default CPT config (one token id, so num_virtual_tokens=1) was "CPT (1 virtual tokens)"; a WaveFT
    adapter was "WaveFT (2592 frequencies)" and diff-keys' "holds 64 frequencies", where peft's WaveFTConfig counts
    n_frequency in wavelet coefficients (FourierFT's are frequencies)."""
    from peft import CPTConfig, FourierFTConfig, WaveFTConfig, get_peft_model
    from typer.testing import CliRunner

    from tests.helpers import run_cli

    written = {"cpt": CPTConfig(task_type="CAUSAL_LM")}
    for name, config in written.items():
        config.save_pretrained(str(tmp_path / name))
        save_file({"prompt_embeddings": torch.zeros(1, 16)}, str(tmp_path / name / "adapter_model.safetensors"))
    for name, config in {"waveft": WaveFTConfig(target_modules=["q"]), "fourierft": FourierFTConfig(
            n_frequency=1, target_modules=["q"])}.items():
        torch.manual_seed(0)
        get_peft_model(_Wide(64, 64), config).save_pretrained(str(tmp_path / name))
    wide = CliRunner(env={"COLUMNS": "300"})
    expected = {"cpt": "PEFT adapter  CPT (1 virtual token) (CAUSAL_LM)",
                "waveft": "PEFT adapter  WaveFT (2592 wavelet coefficients) on q",
                "fourierft": "PEFT adapter  FourierFT (1 frequency) on q"}
    for name, line in expected.items():
        result = run_cli("inspect", str(tmp_path / name), runner=wide)
        assert result.exit_code == 0 and line in result.stdout, (name, result.stdout)
    save_file(_state(_Wide(16, 16)), str(tmp_path / "small.safetensors"))  # 256 entries, fewer than 2592
    code, data = run_json("diff-keys", str(tmp_path / "waveft"), str(tmp_path / "small.safetensors"))
    assert code == 1 and "waveft_spectrum 2592 holds 2592 wavelet coefficients, more than the 256 entries of " \
        "q.weight (16×16 in B)" in " ".join(entry["detail"] for entry in data["unexpected"]), data["unexpected"]


def test_a_kohya_lora_pair_is_compared_with_its_layer_both_ways_at_once(tmp_path: Path) -> None:
    """kohya's lora_down (r × in) and lora_up (out × r) were compared with either axis of the weight one by one:
    a LoRA made for an 8→8 attention projection "fit" an 8→16 and a 16→8 one, where up @ down (8×8) is no update
    of the weight (diffusers' load_lora_weights raises a size mismatch on the converted pair)."""
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{module}.lora_down.weight": torch.zeros(2, 8), f"{module}.lora_up.weight": torch.zeros(8, 2),
               f"{module}.alpha": torch.tensor(2.0)}, str(tmp_path / "kohya.safetensors"))
    for out, features in ((8, 8), (8, 16), (16, 8)):
        unet = tmp_path / f"unet{out}x{features}.safetensors"
        save_file({"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": torch.zeros(out, features),
                   "down_blocks.0.resnets.0.norm1.weight": torch.zeros(8)}, str(unet))
        code, data = run_json("diff-keys", str(tmp_path / "kohya.safetensors"), str(unet))
        details = {entry["detail"] for entry in data["unexpected"] if entry["severity"] == "error"}
        if (out, features) == (8, 8):
            assert code == 0 and not details and "1 of them in B with shapes that fit" in data["notes"][0]
            continue
        assert code == 1 and details == {
            f"lora_up 8×2 and lora_down 2×8 make a 8×8 update, which down_blocks.0.attentions.0.transformer_blocks.0."
            f"attn1.to_q.weight ({out}×{features} in B) is not, either way round: an adapter for another model "
            "size"}, (out, features, data["unexpected"])
        assert "0 of them in B with shapes that fit" in data["notes"][0]


def test_an_adalora_adapter_is_named_in_diff_keys_note_as_inspect_names_it(tmp_path: Path) -> None:
    """inspect says "AdaLoRA init_r=6 target_r=4"; diff-keys' note said "A is a PEFT adapter: LoRA (rank 6)"."""
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    torch.manual_seed(0)
    save_file(_state(_Wide(32, 32)), str(tmp_path / "base.safetensors"))
    for name, config in {"adalora": AdaLoraConfig(init_r=6, target_r=4, total_step=10, target_modules=["q"]),
                         "lora": LoraConfig(r=6, target_modules=["q"])}.items():
        torch.manual_seed(0)
        get_peft_model(_Wide(32, 32), config).save_pretrained(str(tmp_path / name))
        code, data = run_json("diff-keys", str(tmp_path / name), str(tmp_path / "base.safetensors"))
        method = "AdaLoRA" if name == "adalora" else "LoRA"
        assert code == 0, data["notes"]
        assert data["notes"][0].startswith(
            f"A is a PEFT adapter: {method} (rank 6) on 1 module, 1 of them in B with shapes that fit")


def test_the_command_given_renames_a_as_this_run_did(tmp_path: Path, pair: tuple,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`diff-keys DDP.safetensors LORA --rename '^module\\.='` (A saved under DDP's module. prefix) gave `diff-keys
    LORA DDP.safetensors`, which does not rename B's keys: "none of its modules is in B". A is now written out
    renamed first (convert --rename, a folder to a folder), and the adapter compared with that copy."""
    from tests.helpers import run_cli

    lora, _, base = pair
    monkeypatch.chdir(tmp_path)
    ddp = {f"module.{name}": tensor for name, tensor in base.items()}
    save_file(ddp, str(tmp_path / "ddp.safetensors"))
    (tmp_path / "ddp run").mkdir()
    save_file(ddp, str(tmp_path / "ddp run" / "model.safetensors"))
    for source, written in (("ddp.safetensors", "ddp.renamed.safetensors"), ("ddp run", "ddp run.renamed")):
        code, data = run_json("diff-keys", source, str(lora), "--rename", "^module\\.=")
        assert code == 1 and _reasons(data) == {"swapped-sides"}
        convert = f"weightdoctor convert {shlex.quote(source)} --rename '^module\\.=' -o {shlex.quote(written)}"
        assert data["notes"][0].endswith(
            f"to check it, write A's state dict as this run read it (--rename '^module\\.=') to "
            f"{'a file' if written.endswith('.safetensors') else 'a folder'} of its own, as diff-keys renames only "
            f"A's keys ({convert}), then run weightdoctor diff-keys {lora} {shlex.quote(written)}"), data["notes"]
        assert run_cli(*shlex.split(convert)[1:]).exit_code == 0
        code, checked = run_json(*_pasted(data["notes"][0]))
        assert code == 0 and "2 of them in B with shapes that fit" in checked["notes"][0], source


def test_a_linear_lora_does_not_fit_the_transposed_layer(tmp_path: Path) -> None:
    """A LoRA made for a 32→64 nn.Linear (adapter_config.json's fan_in_fan_out false) "fit" a 64→32 Linear, whose
    weight is the update's shape the other way round (as GPT-2's Conv1D stores it): PeftModel.from_pretrained
    refuses it (size mismatch). peft saves fan_in_fan_out true for a Conv1D target, whose adapter still fits."""
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(0)
    get_peft_model(_Wide(32, 64), LoraConfig(r=4, target_modules=["q"])).save_pretrained(str(tmp_path / "lora"))
    save_file(_state(_Wide(64, 32)), str(tmp_path / "transposed.safetensors"))
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(_Wide(64, 32), str(tmp_path / "lora"))
    code, data = run_json("diff-keys", str(tmp_path / "lora"), str(tmp_path / "transposed.safetensors"))
    assert code == 1 and {entry["detail"] for entry in data["unexpected"] if entry["severity"] == "error"} == {
        "lora_B 64×4 and lora_A 4×32 make a 64×32 update, which q.weight (32×64 in B) is only the other way round, "
        "as GPT-2's Conv1D stores it, while adapter_config.json's fan_in_fan_out is false (the adapter adapts an "
        "nn.Linear, out × in): an adapter for another layer"}, data["unexpected"]
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64,
                                                                n_positions=16))
    save_file({name: tensor for name, tensor in _state(gpt2).items() if name != "lm_head.weight"},
              str(tmp_path / "gpt2.safetensors"))
    get_peft_model(gpt2, LoraConfig(r=4, target_modules=["c_attn", "c_fc"])).save_pretrained(str(tmp_path / "g"))
    assert json.loads((tmp_path / "g" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    code, data = run_json("diff-keys", str(tmp_path / "g"), str(tmp_path / "gpt2.safetensors"))
    assert code == 0 and "2 modules, 2 of them in B with shapes that fit" in data["notes"][0]
