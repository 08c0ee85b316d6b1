"""plan86: plan-devices' offload accounting, the cases plan85 left open.

1. A tied tensor was said loaded by every offloaded module that holds it. accelerate's dispatch_model keeps a
   `tied_params_map` (keyed by the data pointer of the tensor in CPU RAM, which the weights map of "cpu" entries
   serves): a hook that finds the tensor already on its execution device uses that copy. So a tied twin inside an
   enclosing module whose hook loaded it (BERT's cls.predictions.bias around its decoder's tied bias) is not loaded
   again, and an offloaded twin of one placed on the main GPU is not loaded at all. Weights offloaded to disk are
   read anew at each load and still counted per module.
2. The warning for a main GPU pushed over its budget by what accelerate adds there counted the offloaded modules'
   buffers alone, against the whole --gpu: the offloaded weights a hook copies there while its module runs (the
   room accelerate's planner keeps for the largest layer) and --reserve are counted now.
3. A generating encoder-decoder's cross-attention key / value projections were known by name (EncDecAttention.k,
   encoder_attn.k_proj, ...): Pix2Struct's encoder_decoder_attention.attention.key and ProphetNet's
   cross_attn.key_proj were said per token. They are read from the attention modules' forward code now, and said
   per input only where generate() caches (Pix2Struct's default config does not).
4. bert2bert (review83's EncoderDecoderModel of two BERTs): the 83,200 B gap was review83's first harness, which
   summed every stored weight under each hook's prefix (836,608 B per token, measured: cls.predictions' hook counted
   its children's weights too); 83,200 B above it is 753,408 B, the report before plan84 / plan85 (769,024 B less
   the 16,640-byte tied reload plan85 added, plus the 1,024 B of buffers plan84 took out), by arithmetic. What the
   hooks copy is 768,768 B per token; the report said 769,024 B (the decoder's tied prediction bias once more, item
   1). tests/test_plan84's `_bytes_loaded` counts the copies, "cpu" entries served from RAM as on a GPU machine.

The oracle is accelerate itself: the model dispatched by dispatch_model on the map, and the bytes its hooks copy
while generate() makes 3 and 6 tokens (tests/test_plan84's `_bytes_loaded`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.test_plan84 import _bytes_loaded


def _bert2bert(folder: Path) -> Path:
    """review83's bert2bert: a tiny seeded EncoderDecoderModel of two BERTs, the decoder's output embeddings and
    prediction bias tied (BERT's default)."""
    import transformers

    torch.manual_seed(0)
    sizes = {"vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
             "intermediate_size": 256, "max_position_embeddings": 64}
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(**sizes),
        transformers.BertConfig(**sizes, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    config.architectures = ["EncoderDecoderModel"]
    transformers.EncoderDecoderModel(config=config).save_pretrained(folder)
    return folder


def _measured(folder: Path, placed: dict[str, Any], tmp_path: Path, causal: bool = False) -> tuple[int, int]:
    """(per input, per token) as accelerate's hooks copy them in generate()."""
    three = _bytes_loaded(folder, placed, 3, tmp_path, causal=causal)
    six = _bytes_loaded(folder, placed, 6, tmp_path, causal=causal)
    per_token = (six - three) // 3
    return three - 3 * per_token, per_token


def test_bert2bert_per_token_leaves_out_the_bias_its_enclosing_hook_loaded(tmp_path: Path) -> None:
    """bert2bert planned by transformers' planner with its decoder offloaded to the CPU: the decoder's
    cls.predictions hook loads its bias, and the decoder Linear inside it, whose bias is that tensor, finds the copy
    on the GPU: per token, the hooks copy 768,768 B (the report said 769,024 B, the 256-byte bias once more)."""
    folder = _bert2bert(tmp_path / "bert2bert")
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    total = whole["weights_bytes"] + whole["buffers_bytes"]
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{int(total * 0.35)}B", "--cpu", "1GB")
    placed = data["device_map"]
    assert placed.get("decoder") == "cpu", placed
    per_input, per_token = _measured(folder, placed, tmp_path)
    off = data["offload"]
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"]) == (per_input, per_token), (off, per_input, per_token)
    # the word embeddings' second load (lm_head's) is still a reload; the bias is not
    assert off["tied_reloaded_per_token_bytes"] == 64 * 64 * 4, off


def test_a_decoder_offloaded_to_disk_reads_its_tied_bias_at_each_hook(tmp_path: Path) -> None:
    """The same bert2bert with its decoder on disk (a hand map, --disk): each hook reads the tensor from its file,
    at a new address that tied_params_map does not know, and copies it: the bias is loaded twice per token, as the
    report says (tied_reloaded_per_token_bytes holds both tied pairs)."""
    folder = _bert2bert(tmp_path / "bert2bert")
    placed: dict[str, Any] = {"encoder": 0, "decoder": "disk"}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--disk", "--map",
                          str(mapping))
    per_input, per_token = _measured(folder, placed, tmp_path)
    off = data["offload"]
    assert off["bytes_per_token"] == per_token, (off, per_token)
    assert off["per_input_disk_bytes"] + off["per_input_cpu_bytes"] == per_input, (off, per_input)
    assert off["tied_reloaded_per_token_bytes"] == 64 * 64 * 4 + 64 * 4, off


def _gpt2(folder: Path) -> Path:
    from tests.test_plan85 import _gpt2

    return _gpt2(folder)


@pytest.mark.parametrize("wte, lm_head", [("cpu", 0), (0, "disk"), ("disk", "disk")])
def test_an_offloaded_twin_of_a_tensor_on_the_main_gpu_is_not_streamed_from_ram(
        tmp_path: Path, wte: int | str, lm_head: int | str) -> None:
    """A tied GPT-2 on a hand map: wte in CPU RAM and lm_head on the GPU, the map counts the tensor in CPU RAM
    (wte's name comes first) and the report said it streamed every token (16.38 KB); wte's hook uses the copy
    lm_head's placement put on the GPU, and copies nothing: 0 B per token, and tied_on_gpu_bytes says the 16.38 KB.
    A twin on disk is read from its file every call and copied, as said, by this harness, which writes both names to
    its offload: from_pretrained itself cannot run a twin on disk beside one on the GPU, which the tied-split error
    says (tests/test_plan87), and the report then gives no traffic figure (tests/test_plan88)."""
    folder = _gpt2(tmp_path / "gpt2")
    placed = {"transformer.wte": wte, "lm_head": lm_head, "transformer.wpe": 0, "transformer.drop": 0,
              "transformer.h": 0, "transformer.ln_f": 0}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--disk", "--map", str(mapping)]
    code, data = run_json(*args)
    per_input, per_token = _measured(folder, placed, tmp_path, causal=True)
    tied = 64 * 64 * 4
    assert per_token == tied * [wte, lm_head].count("disk"), per_token
    off = data["offload"]
    if (wte, lm_head) == (0, "disk"):
        # from_pretrained cannot run it: the report gives no figure of what it would stream (tests/test_plan88)
        assert off["bytes_per_token"] is None and off["tied_on_gpu_bytes"] is None, off
        return
    assert off["bytes_per_token"] == per_token, (off, per_token)
    assert off["tied_on_gpu_bytes"] == (tied if wte == "cpu" else 0), off
    if wte == "cpu":
        from weightdoctor.units import format_bytes

        text = run_cli(*args).stdout.replace("\n ", " ")
        [line] = [line for line in text.splitlines() if line.startswith("offload:")]
        assert "for every generated token" not in line, line
        assert f"{format_bytes(tied)} of tied weights counted in CPU RAM are not moved" in line, line


# --- 3. cross-attention key / value projections whatever they are called --------------------------------------------


def _pix2struct(folder: Path, use_cache: bool = True) -> tuple[Path, dict[str, Any]]:
    """A tiny seeded float32 Pix2Struct (its decoder's cross-attention `encoder_decoder_attention.attention.key` /
    `.value`), saved, and generate()'s inputs for it; its text_config's use_cache as given (Pix2Struct's default
    is False: generate() then keeps no cache)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Pix2StructConfig(
        text_config={"num_layers": 3, "hidden_size": 64, "d_kv": 16, "num_heads": 4, "d_ff": 256, "vocab_size": 64,
                     "pad_token_id": 0, "decoder_start_token_id": 0, "eos_token_id": 63, "use_cache": use_cache},
        vision_config={"num_hidden_layers": 3, "hidden_size": 64, "d_kv": 16, "num_attention_heads": 4, "d_ff": 256,
                       "patch_embed_hidden_size": 32},
        architectures=["Pix2StructForConditionalGeneration"])
    model = transformers.Pix2StructForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id, model.generation_config.pad_token_id = 0, 0
    model.save_pretrained(folder)
    # 6 patches of a 2 x 3 grid: each its row and column number (1-based, which the encoder embeds), then its pixels
    patches = torch.randn(1, 6, 34, generator=torch.Generator().manual_seed(0))
    patches[0, :, 0] = torch.tensor([1, 1, 1, 2, 2, 2])
    patches[0, :, 1] = torch.tensor([1, 2, 3, 1, 2, 3])
    return folder, {"flattened_patches": patches, "attention_mask": torch.ones(1, 6, dtype=torch.long)}


def _prophetnet(folder: Path) -> tuple[Path, dict[str, Any]]:
    """A tiny seeded float32 ProphetNet (its decoder's `cross_attn.key_proj` / `.value_proj`), saved."""
    import transformers

    torch.manual_seed(0)
    config = transformers.ProphetNetConfig(
        vocab_size=64, hidden_size=64, encoder_ffn_dim=256, decoder_ffn_dim=256, num_encoder_layers=3,
        num_decoder_layers=3, num_encoder_attention_heads=4, num_decoder_attention_heads=4, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=63, decoder_start_token_id=1, ngram=2,
        architectures=["ProphetNetForConditionalGeneration"])
    transformers.ProphetNetForConditionalGeneration(config).save_pretrained(folder)
    return folder, {"inputs": torch.tensor([[5, 6, 7, 8, 2]])}


@pytest.mark.parametrize("kind", ["pix2struct", "pix2struct-no-cache", "prophetnet"])
def test_cross_attention_keys_and_values_with_other_names_are_said_once_per_input(tmp_path: Path, kind: str) -> None:
    """Pix2Struct's decoder calls its cross-attention `encoder_decoder_attention`, ProphetNet's projections are
    `key_proj` / `value_proj`: neither name was known, and their key / value projections, which generate() runs on
    the first step only (EncoderDecoderCache), were said per token. They are found from the modules' forward code
    now: the report's per-input and per-token bytes are what accelerate's hooks copy. A Pix2Struct whose config says
    use_cache=False (its default) keeps no cache: its decoder projects them at every token, and they are said so."""
    if kind == "prophetnet":
        folder, inputs = _prophetnet(tmp_path / kind)
        # ProphetNet reads decoder.ngram_embeddings.weight without calling the module: accelerate cannot offload it
        # (a meta tensor at generate()), so the decoder's layers are offloaded by hand, the rest on the GPU
        placed: dict[str, Any] = {"prophetnet.word_embeddings": 0, "prophetnet.encoder": 0,
                                  "prophetnet.decoder.word_embeddings": 0,
                                  "prophetnet.decoder.position_embeddings": 0, "prophetnet.decoder.ngram_embeddings": 0,
                                  "prophetnet.decoder.layers": "cpu", "prophetnet.decoder.embeddings_layer_norm": 0,
                                  "lm_head": 0}
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps(placed))
        code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping))
    else:
        folder, inputs = _pix2struct(tmp_path / kind, use_cache=kind == "pix2struct")
        code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
        total = whole["weights_bytes"] + whole["buffers_bytes"]
        code, data = run_json("plan-devices", str(folder), "--gpu", f"{int(total * 0.3)}B", "--cpu", "1GB")
        placed = data["device_map"]
    assert any(where == "cpu" and "decoder" in name for name, where in placed.items()), placed
    three = _bytes_loaded(folder, placed, 3, tmp_path, inputs=inputs)
    six = _bytes_loaded(folder, placed, 6, tmp_path, inputs=inputs)
    per_token = (six - three) // 3
    off = data["offload"]
    if kind == "prophetnet":
        # Its per-token bytes are more than its offloaded layers hold (ProphetNet's decoder calls some modules more
        # than once a step, for its n-gram streams): the cross-attention's share, once per input, is what is checked
        assert off["per_input_cpu_bytes"] == three - 3 * per_token > 0, (off, three - 3 * per_token, per_token)
        return
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"]) == (three - 3 * per_token, per_token), \
        (off, three - 3 * per_token, per_token)


# --- 2. the main GPU's budget: --reserve, and the offloaded weights a hook copies there -----------------------------


def _peak_onloaded(folder: Path, placed: dict[str, Any], tmp_path: Path) -> tuple[int, int]:
    """(what the dispatched model holds on its main device, the most its hooks add there at once in generate()):
    the distinct tensors not on the meta device, at dispatch and at each hook's call."""
    import accelerate.hooks as hooks

    from tests.test_plan84 import _dispatched

    model = _dispatched(folder, placed, tmp_path)

    def held() -> int:
        seen: dict[int, int] = {}
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.device.type != "meta":
                seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        return sum(seen.values())

    start = held()
    peak = [0]
    original = hooks.AlignDevicesHook.pre_forward

    def pre_forward(self: Any, module: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, module, *args, **kwargs)
        peak[0] = max(peak[0], held() - start)
        return result

    hooks.AlignDevicesHook.pre_forward = pre_forward
    try:
        with torch.no_grad():
            model.generate(torch.tensor([[5, 6, 7, 8, 2]]), max_new_tokens=2, min_new_tokens=2, do_sample=False,
                           num_beams=1)
    finally:
        hooks.AlignDevicesHook.pre_forward = original
    return start, peak[0]


def test_the_main_gpu_budget_counts_the_weights_a_hook_copies_there(tmp_path: Path) -> None:
    """BART's map as transformers plans it, checked on GPUs sized around what accelerate puts on the main one: the
    map's share and the offloaded modules' buffers for good, and, while an offloaded module runs, its weights, which
    its hook copies there (measured: the most at once in generate()). The warning compared the map's share and the
    buffers alone with the --gpu size: it said nothing where the weights copied there left no room."""
    from tests.test_plan84 import _bart
    from weightdoctor.units import format_bytes

    folder = _bart(tmp_path / "bart")
    code, data = run_json("plan-devices", str(folder), "--gpu", "400KB", "--cpu", "1GB")
    placed = data["device_map"]
    held, onloaded = _peak_onloaded(folder, placed, tmp_path)
    assert held == data["devices"][0]["used_bytes"] + data["offload"]["buffers_on_gpu_bytes"] and onloaded > 0
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    needed = held + onloaded
    for gpu, warned in ((needed - 1, True), (needed, False)):
        code, checked = run_json("plan-devices", str(folder), "--gpu", f"{gpu}B", "--cpu", "1GB", "--map",
                                 str(mapping))
        said = [w for w in checked["warnings"] if "accelerate adds" in w]
        assert bool(said) == warned, (gpu, checked["warnings"])
        if said:
            assert f"up to {format_bytes(onloaded)} of offloaded weights its hooks copy there" in said[0], said
            assert f"{format_bytes(needed)}, over its {format_bytes(gpu)} budget" in said[0], said


def test_the_main_gpu_budget_is_less_the_reserve() -> None:
    """A computed plan keeps --reserve free on each GPU: what accelerate adds on the main GPU (buffers, weights
    copied there) is measured against the GPU less the reserve, where it was measured against the whole GPU (plan-
    devices refuses --reserve beside --map, so this is said of computed plans)."""
    from weightdoctor.plan_devices import kept_buffers_over_budget_warning

    device_map: dict[str, int | str] = {"a": 0, "b": "cpu"}
    per_device: dict[int | str, int] = {0: 900, "cpu": 500}
    capacities: dict[int | str, int] = {0: 1000, "cpu": 10**6}
    assert kept_buffers_over_budget_warning(device_map, per_device, capacities, 40, onloaded=60) is None
    said = kept_buffers_over_budget_warning(device_map, per_device, capacities, 40, reserve=1, onloaded=60)
    assert said is not None and "1.00 KB, over its 999 B budget (--gpu 1.00 KB less --reserve 1 B)" in said, \
        said
