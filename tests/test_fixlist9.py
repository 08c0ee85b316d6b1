"""Fix list 9: small gaps earlier rounds left out (kohya LoRA against a single file, PiSSA / OLoRA init, singular
wording, an undeletable destination, float4 values, legacy .bin dtypes, a rename onto a dropped tied alias)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_json


def _kohya_lora(modules: dict[str, tuple[int, int]], path: Path, rank: int = 2) -> None:
    """A kohya-style LoRA file: lora_down (r × in), lora_up (out × r) and alpha for each flat module name."""
    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    for module, (out, inp) in modules.items():
        state[f"{module}.lora_down.weight"] = torch.zeros(rank, inp)
        state[f"{module}.lora_up.weight"] = torch.zeros(out, rank)
        state[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(state, path)


def test_a_kohya_lora_against_a_single_file_stable_diffusion_checkpoint_is_checked_module_by_module(
        tmp_path: Path) -> None:
    """A kohya LoRA (diffusers-named UNet modules, as sd-scripts names SD 1.x ones, or LDM-named, as SDXL's) against
    the original single file it adapts (`model.diffusion_model.*`, `cond_stage_model.*`): every key was an
    "unknown" error and no note said what A is."""
    from safetensors.torch import save_file

    single = tmp_path / "v1-5.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
               "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": torch.zeros(8, 8, 3, 3),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": torch.zeros(8, 8),
               "model.diffusion_model.middle_block.1.proj_out.weight": torch.zeros(8, 8, 1, 1),
               "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 6),
               "model.diffusion_model.time_embed.0.weight": torch.zeros(32, 8),
               "first_stage_model.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
               "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": torch.zeros(6, 6)},
              single)
    lora = tmp_path / "style.safetensors"
    _kohya_lora({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (8, 8),
                 "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (8, 6),
                 "lora_unet_mid_block_attentions_0_proj_out": (8, 8),
                 "lora_unet_down_blocks_0_resnets_0_conv1": (8, 8),
                 "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (8, 8),
                 "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (6, 6)}, lora)
    # A LoRA on the 3×3 conv1 is a LoCon one: its lora_down a 3×3 convolution, its lora_up a 1×1 one (review52: a
    # 2-D pair on a 3×3 kernel does not fit it).
    from safetensors.torch import load_file

    state = load_file(str(lora))
    state["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] = torch.zeros(2, 8, 3, 3)
    state["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"] = torch.zeros(8, 2, 1, 1)
    save_file(state, str(lora))
    code, data = run_json("diff-keys", str(lora), str(single))
    assert code == 0 and len(data["notes"]) == 1
    assert data["notes"][0].startswith("A is a kohya-style LoRA") and \
        "on 5 modules of the text encoder, UNet / transformer (in B, a single-file Stable Diffusion checkpoint), " \
        "5 of them in B with shapes that fit" in data["notes"][0]  # input_blocks_1_1 is down_blocks_0_attentions_0
    details = {item["name"]: (item["reason"], item["severity"], item["detail"]) for item in data["unexpected"]}
    assert details["lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight"] == (
        "adapter", "info", "LoRA on model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight")
    assert details["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"][2] == \
        "LoRA on model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    assert details["lora_unet_mid_block_attentions_0_proj_out.alpha"][2] == \
        "the alpha of the LoRA on model.diffusion_model.middle_block.1.proj_out"
    assert details["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"][2] == \
        "LoRA on cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert {item["reason"] for item in data["missing"]} == {"adapter-base"}

    # An SDXL single file: te1 is CLIP under conditioner.embedders.0, te2 OpenCLIP's (fused q/k/v, not mapped); a
    # LoRA for a wider model does not fit, and a module the file lacks is dropped.
    sdxl = tmp_path / "sdxl.safetensors"
    save_file({"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight": torch.zeros(8, 8),
               "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight":
                   torch.zeros(6, 6),
               "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(18, 6)}, sdxl)
    lora_xl = tmp_path / "xl.safetensors"
    _kohya_lora({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (16, 16),
                 "lora_unet_input_blocks_5_1_transformer_blocks_0_attn1_to_q": (8, 8),
                 "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (6, 6),
                 "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (6, 6)}, lora_xl)
    code, data = run_json("diff-keys", str(lora_xl), str(sdxl))
    assert code == 1 and "3 modules of the first text encoder, UNet / transformer (in B, a single-file Stable " \
        "Diffusion checkpoint), 1 of them in B with shapes that fit" in data["notes"][0]
    details = {item["name"]: (item["severity"], item["detail"]) for item in data["unexpected"]}
    assert details["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight"] == (
        "error", "16×2 does not fit model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight "
                 "(8×8 in B): an adapter for another model size")
    assert details["lora_unet_input_blocks_5_1_transformer_blocks_0_attn1_to_q.lora_down.weight"][0] == "error"
    assert details["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] == (
        "info", "for the second text encoder, which B holds in another layout: not checked")
    assert details["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] == (
        "info", "LoRA on conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight")


def _peft_adapter(out: Path, init: str | bool) -> Path:
    """A peft LoRA adapter on a tiny Llama's q_proj and v_proj, saved at its initialization."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from fixtures.diff_pairs import tiny_llama

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(tiny_llama(0), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=init))  # type: ignore[arg-type]
        model.save_pretrained(out)
    return out


def test_pissa_and_olora_adapters_are_not_called_trained_or_at_a_default_init(tmp_path: Path) -> None:
    """PiSSA and OLoRA start lora_A and lora_B from the base weights' SVD / QR: inspect --stats called such an
    adapter, saved before any step, "trained" (100% of matrix parameters moved from kaiming / zeros)."""
    for init in ("pissa", "olora"):
        adapter = _peft_adapter(tmp_path / init, init)
        code, data = run_json("inspect", str(adapter), "--stats")
        assert code == 0, data
        assert (data["weights"]["state"], data["weights"]["trained_share"]) == ("unknown", None)
        assert data["weights"]["warnings"] == [
            f'adapter_config.json says init_lora_weights="{init}": peft sets these LoRA halves from the base model '
            "(not at random, not at zero), so whether they trained is not judged from the adapter alone; compare it "
            "with the adapter saved at initialization (diff-keys --values) to tell"]
        lora = [t for t in data["tensors"] if ".lora_" in t["name"]]
        assert len(lora) == 8 and {t["init"]["label"] for t in lora} == {"undetermined"}
        assert {t["init"]["at_init"] for t in lora} == {None}
        assert {t["init"]["expected"]["description"] for t in lora} == {f"{init} (set from the base model's weights)"}
        assert data["findings"] == []
    # A PiSSA lora_B all zero is no adapter at its init (PiSSA never starts one at zero): said so.
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "pissa" / "adapter_model.safetensors"
    state = load_file(weights)
    zeroed = next(name for name in state if ".lora_B." in name)
    state[zeroed] = torch.zeros_like(state[zeroed])
    save_file(state, weights)
    code, data = run_json("inspect", str(tmp_path / "pissa"), "--stats")
    assert [(f["code"], f["tensor"]) for f in data["findings"]] == [("all-zero", zeroed)]
    assert data["findings"][0]["hint"] == ('adapter_config.json init_lora_weights="pissa" starts it from the base '
                                           "model's weights, never at zero: it was zeroed, or its values were lost "
                                           "on save")


def test_a_gaussian_initialized_lora_at_init_is_at_init(tmp_path: Path) -> None:
    """init_lora_weights="gaussian" starts lora_A at normal(0, 1/r), not kaiming_uniform: an adapter saved before
    training was called "trained"."""
    code, data = run_json("inspect", str(_peft_adapter(tmp_path / "g", "gaussian")), "--stats")
    assert code == 0 and data["weights"]["state"] == "initialization", data["weights"]
    lora_a = [t["init"] for t in data["tensors"] if ".lora_A." in t["name"]]
    assert {(i["at_init"], i["expected"]["description"]) for i in lora_a} == {(True, "normal(0, 0.25)")}


def test_counts_of_one_take_the_singular(tmp_path: Path) -> None:
    """Messages said "1 keys", "a state dict of 1 tensors", "dict, 1 entries", "1 values become inf", "file is 1
    bytes", "1 of 4 rows are all zero (dead units: 2)": one helper (weightdoctor.wording) now picks the word."""
    from safetensors.torch import save_file

    from tests.helpers import run_cli
    from weightdoctor.wording import counted, plural

    assert [counted(1, "key"), counted(0, "key"), counted(1500, "value"), counted(1500, "byte", grouped=False)] == [
        "1 key", "0 keys", "1,500 values", "1500 bytes"]
    assert [plural(1, "entry", "entries"), plural(2, "entry", "entries"), plural(1, "is", "are")] == [
        "entry", "entries", "is"]
    # diff-keys' header: two one-tensor files.
    save_file({"w": torch.zeros(2)}, tmp_path / "a.safetensors")
    save_file({"v": torch.zeros(2)}, tmp_path / "b.safetensors")
    text = " ".join(run_cli("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
                            ).stdout.replace("│", " ").split())
    # (A's and B's rows end "1 key"; a long tmp path may fold, so they are counted, not matched with the path)
    assert text.count(" 1 key ") >= 2 and "0 of 1 key of B" in text and "1 keys" not in text, text
    assert "with these renames 1 of 1 key matches (now 0)" in text, text
    # inspect's other entries: a nested state dict of one tensor, a dict of one entry, a list of one item.
    torch.save({"model": {"w": torch.ones(2)}, "ema": {"v": torch.ones(2)}, "meta": {"epoch": 3}, "steps": [1]},
               tmp_path / "ckpt.pt")
    code, data = run_json("inspect", str(tmp_path / "ckpt.pt"))
    assert "ema (a state dict of 1 tensor: pick it with --key)" in data["other_entries"], data["other_entries"]
    assert "meta (dict, 1 entry)" in data["other_entries"] and "steps (list, 1 item)" in data["other_entries"]
    # check-dtype's stored dtypes: one tensor of one parameter.
    save_file({"s": torch.ones(1)}, tmp_path / "one.pt.safetensors")
    text = " ".join(run_cli("check-dtype", str(tmp_path / "one.pt.safetensors")).stdout.replace("│", " ").split())
    assert "float32: 1 tensor, 1 param," in text, text
    # A one-byte file is no safetensors file.
    (tmp_path / "one.safetensors").write_bytes(b"\0")
    result = run_cli("inspect", str(tmp_path / "one.safetensors"))
    assert result.exit_code == 2 and "file is 1 byte, too short to be safetensors" in result.stderr, result.stderr
    # inspect --stats: one dead row of four.
    weight = torch.randn(4, 64)
    weight[2] = 0
    save_file({"layer.weight": weight}, tmp_path / "dead.safetensors")
    code, data = run_json("inspect", str(tmp_path / "dead.safetensors"), "--stats")
    assert "1 of 4 rows is all zero (dead unit: 2)" in [f["message"] for f in data["findings"]], data["findings"]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_force_over_an_output_that_cannot_be_deleted_says_why_and_leaves_no_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """shard --force over a folder whose earlier save holds an immutable file swapped the new save in, could not
    delete the old one and left it, hidden, in `.out.wdstage-*`, while saying every old shard was "replaced";
    convert --force over an immutable file said only "operation not permitted". The inode flags are faked here
    (chattr needs root); the real flag is tried in the test below."""
    from safetensors.torch import save_file

    from tests.helpers import run_cli
    from weightdoctor.writers import atomic

    save_file({f"l{i}.weight": torch.randn(64, 64) for i in range(4)}, tmp_path / "src.safetensors")
    out = tmp_path / "out"
    assert run_cli("shard", str(tmp_path / "src.safetensors"), "-o", str(out), "--max", "20KB").exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    stuck = out / "model-00001-of-00004.safetensors"
    real_flags = atomic._inode_flags
    monkeypatch.setattr(atomic, "_inode_flags", lambda path: 0x10 if Path(path) == stuck else real_flags(path))
    result = run_cli("shard", str(tmp_path / "src.safetensors"), "-o", str(out), "--max", "40KB", "--force")
    assert result.exit_code == 2 and result.stdout == ""
    assert " ".join(result.stderr.split()) == (
        f"error: {out}: cannot replace the existing output: {stuck} is immutable (chattr +i): it cannot be renamed "
        "or deleted; it was left as it is, and nothing was left behind")
    assert sorted(p.name for p in out.iterdir()) == before and _hidden(tmp_path) == []

    # A file output: os.replace fails (as it does over an immutable file) and the flag says why.
    assert run_cli("convert", str(tmp_path / "src.safetensors"), "-o", str(tmp_path / "c.safetensors"),
                   "--dtype", "fp16").exit_code == 0
    target = tmp_path / "c.safetensors"
    monkeypatch.setattr(atomic, "_inode_flags", lambda path: 0x20 if Path(path) == target else 0)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted", str(dst))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    result = run_cli("convert", str(tmp_path / "src.safetensors"), "-o", str(target), "--dtype", "bf16", "--force")
    assert result.exit_code == 2 and " ".join(result.stderr.split()) == (
        f"error: {target}: cannot replace the existing output: {target} is append-only (chattr +a): it cannot be "
        "renamed or deleted; it was left as it is, and nothing was left behind")
    assert _hidden(tmp_path) == []


def test_a_force_over_a_really_immutable_folder_or_its_parent(tmp_path: Path) -> None:
    """The same with chattr +i, where this system allows it (root, a file system with inode flags)."""
    import shutil
    import subprocess

    from safetensors.torch import save_file

    from tests.helpers import run_cli

    save_file({f"l{i}.weight": torch.randn(64, 64) for i in range(4)}, tmp_path / "src.safetensors")
    parent = tmp_path / "p"
    out = parent / "out"
    assert run_cli("shard", str(tmp_path / "src.safetensors"), "-o", str(out), "--max", "20KB").exit_code == 0
    old = out / "model-00002-of-00004.safetensors"
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(old)], capture_output=True).returncode:
        pytest.skip("chattr +i is not allowed here")
    try:
        for stuck, words in [(old, f"{old} is immutable (chattr +i): it cannot be renamed or deleted"),
                             (parent, f"the folder {parent} is immutable (chattr +i): nothing in it can be renamed "
                                      "or deleted")]:
            subprocess.run(["chattr", "+i", str(stuck)], check=True)
            result = run_cli("shard", str(tmp_path / "src.safetensors"), "-o", str(out), "--max", "40KB", "--force")
            subprocess.run(["chattr", "-i", str(stuck)], check=True)
            assert result.exit_code == 2 and words in " ".join(result.stderr.split()), result.stderr
            assert _hidden(parent) == [] and old.exists()
        # A file output whose folder is immutable: its temp file cannot be made beside it, and that is why.
        single = parent / "one.safetensors"
        assert run_cli("convert", str(tmp_path / "src.safetensors"), "-o", str(single)).exit_code == 0
        subprocess.run(["chattr", "+i", str(parent)], check=True)
        result = run_cli("convert", str(tmp_path / "src.safetensors"), "-o", str(single), "--dtype", "fp16", "--force")
        subprocess.run(["chattr", "-i", str(parent)], check=True)
        assert result.exit_code == 2 and " ".join(result.stderr.split()) == (
            f"error: {single}: cannot replace the existing output: the folder {parent} is immutable (chattr +i): "
            "nothing in it can be renamed or deleted; it was left as it is, and nothing was left behind")
    finally:
        subprocess.run(["chattr", "-i", str(old), str(parent)], capture_output=True)


def test_float4_values_are_compared_by_what_they_decode_to(tmp_path: Path) -> None:
    """diff-keys --values gave NaN for max_abs_diff and rel_change of any changed float4_e2m1fn_x2 tensor (torch
    cannot cast it); its 16 codes decode exactly, so the change has a size."""
    from safetensors.torch import save_file

    def f4(*codes: int) -> torch.Tensor:
        return torch.tensor(codes, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)

    # 0x21: 0.5 and 1.0; 0x31: 0.5 and 1.5; 0x9A: -1.0 and -0.5 (sign bit 8).
    save_file({"blocks.0.w": f4(0x21, 0x9A), "blocks.1.w": f4(0x21, 0x9A)}, tmp_path / "a.safetensors")
    save_file({"blocks.0.w": f4(0x31, 0x9A), "blocks.1.w": f4(0x21, 0x9A)}, tmp_path / "b.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--values")
    assert code == 0, data
    rows = {row["name"]: row for row in data["values"]}
    assert rows["blocks.0.w"]["identical"] is False and rows["blocks.0.w"]["max_abs_diff"] == 0.5
    assert rows["blocks.0.w"]["rel_change"] == pytest.approx(0.5 / 3.75 ** 0.5)
    assert (rows["blocks.1.w"]["identical"], rows["blocks.1.w"]["max_abs_diff"], rows["blocks.1.w"]["rel_change"]) \
        == (True, 0.0, 0.0)
    assert rows["blocks.0.w"]["dtype_a"] == rows["blocks.0.w"]["dtype_b"] == "float4_e2m1fn_x2"
    layers = {layer["layer"]: layer for layer in data["layers_changed_most"]}
    assert layers["blocks.0"]["rel_change"] == pytest.approx(0.5 / 3.75 ** 0.5) and layers["blocks.1"]["identical"]


def test_a_legacy_bin_with_uint64_or_float8_storages_is_one_clear_line(tmp_path: Path) -> None:
    """torch.save(..., _use_new_zipfile_serialization=False) of uint64 / float8 tensors writes untyped storages
    its own legacy reader cannot rebuild: the refusal was torch's "AttributeError: type object 'torch.storage.
    UntypedStorage' has no attribute 'dtype'"."""
    from tests.helpers import run_cli

    for dtype, name in [(torch.uint64, "uint64"), (torch.float8_e4m3fn, "float8_e4m3fn")]:
        path = tmp_path / f"{name}.bin"
        torch.save({"ok": torch.ones(2), "w": torch.ones(4).to(dtype)}, path, _use_new_zipfile_serialization=False)
        result = run_cli("inspect", str(path))
        assert result.exit_code == 2 and result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
        assert " ".join(result.stderr.split()) == (
            f"error: {path}: a legacy-format (non-zip) torch.save file holding {name} tensors, whose storages torch "
            "reads only from its zip format (no torch.load reads this file); re-save the weights in torch >= 2.x's "
            "default zip format (torch.save without _use_new_zipfile_serialization=False) or as safetensors")
    # A legacy file of float32 and bfloat16 (storage classes of their own) still reads.
    torch.save({"w": torch.ones(2), "b": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "old.bin",
               _use_new_zipfile_serialization=False)
    code, data = run_json("inspect", str(tmp_path / "old.bin"))
    assert code == 0 and data["format"] == "pytorch-legacy" and data["num_tensors"] == 2


def test_a_rename_written_for_a_tied_output_layer_that_was_not_saved_is_explained(tmp_path: Path) -> None:
    """A tied GPT-2 saved by save_pretrained stores transformer.wte.weight only (lm_head.weight is dropped):
    --rename '^lm_head\\.=output.' renamed nothing, and B's output.weight was an "unknown" error, unexplained."""
    import warnings

    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                                           bos_token_id=0, eos_token_id=0))
        model.save_pretrained(tmp_path / "gpt2")
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["output.weight"] = state.pop("lm_head.weight")  # a model that stores its output layer on its own
    save_file(state, tmp_path / "untied.safetensors")
    flag = r"--rename '^lm_head\.=output.'"
    code, data = run_json("diff-keys", str(tmp_path / "gpt2"), str(tmp_path / "untied.safetensors"),
                          "--rename", r"^lm_head\.=output.")
    assert code == 1 and data["unexpected"] == []
    assert data["missing"] == [{"name": "output.weight", "reason": "tied-weight", "severity": "error", "detail":
                                f"{flag} names it after lm_head.weight, which A does not store: A ties it to "
                                "transformer.wte.weight"}]
    assert data["notes"] == [
        f"{flag} renames no key of A onto output.weight: A ties its lm_head.weight to transformer.wte.weight "
        "(tie_word_embeddings), so it was stored once, as transformer.wte.weight, and lm_head.weight was left out "
        "on save; B stores output.weight on its own: fill it with a copy (state_dict['output.weight'] = "
        "state_dict['transformer.wte.weight']), or load into a model that ties them"]
    # A that stores its lm_head: the rename does its work, nothing to explain.
    stored = dict(state)
    stored["lm_head.weight"] = stored.pop("output.weight")
    save_file(stored, tmp_path / "stored.safetensors")
    code, data = run_json("diff-keys", str(tmp_path / "stored.safetensors"), str(tmp_path / "untied.safetensors"),
                          "--rename", r"^lm_head\.=output.")
    assert code == 0 and data["missing"] == [] and data["notes"] == []
