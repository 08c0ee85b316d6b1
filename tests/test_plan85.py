"""plan85: plan-devices' offload figures, what round plan84 left.

Found through the CLI on tiny seeded transformers checkpoints: a tensor tied between two offloaded modules (GPT-2's
`wte` / `lm_head`, BERT's word embeddings / `cls.predictions.decoder`) is loaded by each module's hook on every
call (accelerate frees it after each forward), but the map counts it once, and bytes_per_token said it once
(16.38 KB too little per token on a tiny tied GPT-2). A hand-written map that holds one of the two on the GPU and
the other offloaded (flagged tied-split) still has the offloaded one's hook load it every token; the report said
0 B where it was the twin on the GPU.

The oracle is accelerate itself, as in tests/test_plan84: the model dispatched by dispatch_model on the map, and
the bytes its hooks' pre_forward loads counted while generate() makes 3 and 6 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.test_plan84 import _bytes_loaded, _dispatched, _encoder_decoder


def _gpt2(folder: Path) -> Path:
    """A tiny seeded float32 GPT-2 whose lm_head is tied to wte (64 x 64 float32: 16,384 bytes)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=64, n_layer=3, n_head=4, n_positions=64, bos_token_id=1,
                                     eos_token_id=63, architectures=["GPT2LMHeadModel"])
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def _causal_bytes_loaded(folder: Path, device_map: dict[str, int | str], new_tokens: int, tmp_path: Path) -> int:
    """The bytes accelerate's hooks' pre_forward loads while a decoder-only model generates `new_tokens` tokens."""
    return _bytes_loaded(folder, device_map, new_tokens, tmp_path, causal=True)


_REST = {"transformer.wpe": 0, "transformer.drop": 0, "transformer.h": 0, "transformer.ln_f": 0}


@pytest.mark.parametrize("wte, lm_head", [("cpu", "cpu"), (0, "cpu"), ("cpu", 0)])
def test_a_tied_tensor_is_streamed_by_each_offloaded_module_that_holds_it(
        tmp_path: Path, wte: int | str, lm_head: int | str) -> None:
    """A tied GPT-2 checked on a hand-written map: the bytes its hooks copy per generated token (6 tokens less 3)
    are the report's bytes_per_token: both wte and lm_head offloaded, the tied tensor twice (it said it once). One of
    them on the GPU, the other offloaded to the CPU: none, since dispatch_model's tied_params_map hands the offloaded
    one's hook the copy its twin placed on the GPU (plan86: this test measured disk-backed offload, which reads it
    anew, and the report said it once per token); where the map counts it in CPU RAM (wte), tied_on_gpu_bytes says
    so. cpu_bytes, what CPU RAM holds, counts it once. The text says the same figure per token."""
    folder = _gpt2(tmp_path / "gpt2")
    placed = {"transformer.wte": wte, "lm_head": lm_head, **_REST}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping)]
    code, data = run_json(*args)
    three = _causal_bytes_loaded(folder, placed, 3, tmp_path)
    six = _causal_bytes_loaded(folder, placed, 6, tmp_path)
    per_token = (six - three) // 3
    tied = 64 * 64 * 4
    assert per_token == (2 * tied if (wte, lm_head) == ("cpu", "cpu") else 0), per_token
    off = data["offload"]
    assert (off["bytes_per_token"], off["per_input_cpu_bytes"]) == (per_token, three - 3 * per_token), off
    assert off["cpu_bytes"] == (tied if wte == "cpu" else 0), off
    assert off["tied_on_gpu_bytes"] == (tied if (wte, lm_head) == ("cpu", 0) else 0), off
    from weightdoctor.units import format_bytes

    text = run_cli(*args).stdout.replace("\n ", " ")
    line = " ".join(line for line in text.splitlines() if line.startswith("offload:"))  # none: nothing in CPU RAM
    if per_token:
        assert f"{format_bytes(per_token)} moved to the GPU for every generated token" in line, line
    else:
        assert "for every generated token" not in line, line
    if off["tied_on_gpu_bytes"]:
        assert f"{format_bytes(tied)} of tied weights counted in CPU RAM are not moved" in line, line


def _tied_encoder_decoder(folder: Path, decoder: str) -> Path:
    """plan84's EncoderDecoderModel (BERT encoder, GPT-2 or BERT decoder) with its decoder's output embeddings tied
    to its input embeddings (the default)."""
    return _encoder_decoder(folder, decoder, tied=True)


@pytest.mark.parametrize("decoder", ["gpt2", "bert"])
def test_a_tied_decoder_offloaded_by_transformers_planner_streams_its_embeddings_twice(
        tmp_path: Path, decoder: str) -> None:
    """An EncoderDecoderModel whose decoder ties its output embeddings to its input ones, planned by transformers'
    planner with the decoder offloaded: both modules' hooks load the tied tensor every token, and the report's
    per-token bytes are what they load."""
    folder = _tied_encoder_decoder(tmp_path / decoder, decoder)
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    args = ["plan-devices", str(folder), "--gpu", f"{int((whole['weights_bytes'] + whole['buffers_bytes']) * 0.35)}B",
            "--cpu", "1GB"]
    code, data = run_json(*args)
    placed = data["device_map"]
    assert placed.get("decoder") == "cpu", placed
    three = _bytes_loaded(folder, placed, 3, tmp_path)
    six = _bytes_loaded(folder, placed, 6, tmp_path)
    per_token = (six - three) // 3
    off = data["offload"]
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"]) == (three - 3 * per_token, per_token), \
        (off, three - 3 * per_token, per_token)
    # the loads beyond the map's one copy: the decoder's tied pairs (word embeddings), but for BERT's decoder bias,
    # whose twin its enclosing cls.predictions' hook has loaded for the length of its call (plan86)
    from tests.test_plan84 import _load

    model = _load(folder)
    tensors = dict(model.named_parameters(remove_duplicate=False))
    twins = sum(tensors[copy].numel() * tensors[copy].element_size()
                for copy, target in model.all_tied_weights_keys.items() if copy.startswith("decoder.")
                and not copy.startswith(f"{target.rpartition('.')[0]}."))
    assert twins >= 64 * 64 * 4 and off["tied_reloaded_per_token_bytes"] == twins, (off, twins)


# --- the offloaded modules' buffers, on the first GPU -----------------------------------------------------------------


def test_a_hand_map_that_fits_but_for_the_buffers_accelerate_keeps_on_the_gpu_is_warned(tmp_path: Path) -> None:
    """BART's map as transformers plans it (its final_logits_bias, a buffer, on the CPU with the offloaded layers),
    checked on a GPU of exactly what the map puts there: dispatch_model materializes that buffer on its main GPU
    beside the modules placed there, one buffer more than the budget, and a warning says so (nothing was said); a
    GPU with room for it (and for the weights an offloaded module's hook copies there, plan86) gets no warning. The
    map is not changed."""
    from tests.test_plan84 import _bart

    folder = _bart(tmp_path / "bart")
    code, data = run_json("plan-devices", str(folder), "--gpu", "400KB", "--cpu", "1GB")
    placed = data["device_map"]
    on_gpu = data["devices"][0]["used_bytes"]
    kept = data["offload"]["buffers_on_gpu_bytes"]
    assert kept > 0 and placed["final_logits_bias"] == "cpu", (placed, kept)
    # what accelerate leaves materialized on its main device (the CPU stands in for cuda:0, the CPU entries on disk)
    model = _dispatched(folder, placed, tmp_path)
    seen: set[int] = set()
    held = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != "meta" and id(tensor) not in seen:
            seen.add(id(tensor))
            held += tensor.numel() * tensor.element_size()
    assert held == on_gpu + kept, (held, on_gpu, kept)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    # and, while an offloaded module runs, the weights its hook copies there (plan86)
    from tests.test_plan86 import _peak_onloaded

    onloaded = _peak_onloaded(folder, placed, tmp_path)[1]
    for room, warned in ((held + onloaded - 1, True), (held + onloaded, False)):
        code, checked = run_json("plan-devices", str(folder), "--gpu", f"{room}B", "--cpu", "1GB", "--map",
                                 str(mapping))
        assert checked["device_map"] == placed
        said = [w for w in checked["warnings"] if "buffers of the offloaded modules there" in w]
        assert bool(said) == warned, (room, checked["warnings"])
        if said:
            from weightdoctor.units import format_bytes

            assert f"{format_bytes(held + onloaded)}, over its {format_bytes(room)} budget" in said[0], said
