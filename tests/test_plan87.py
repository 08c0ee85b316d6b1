"""plan87: plan-devices, what round plan86 left.

1. A tied tensor loaded on a GPU other than the main one (GPT-2's wte on cuda:1) whose twin is offloaded to the CPU
   is copied to the main GPU at every call, GPU to GPU (the offload serves that GPU's tensor): counted per token,
   as before, and said apart now (tied_from_gpu_per_token_bytes), not as from CPU RAM.
2. A twin on disk beside one elsewhere: from_pretrained cannot run the map (KeyError at the first forward, or a
   raise at load); the tied-split error says so. Both on disk: 32,768 B per token, as said.
3. A tied twin on a GPU other than the one the tensor is loaded on is a copy dispatch_model makes there: the main
   GPU's budget warning counts it.
4. A range whose tied parameters are counted under another name (a tied lm_head's 0 B) says what it is tied to.
5. The per-token figure of a generating encoder-decoder split its decoder's cross-attention key / value projections
   out (once per input) where generate() caches, as the config built from config.json says. from_pretrained gives
   the model the folder's generation_config.json where there is one, whole: a use_cache it sets wins, and one it
   leaves out is generate()'s default, True, whatever config.json says. It is read now.
6. ProphetNet's n-gram self-attention calls out_proj and relative_pos_embeddings twice a step: read from its code,
   loaded twice.

Items 1 and 3 are measured with each GPU stood in for by a CPU device of its own (`_gpu_standin`), item 2 with
from_pretrained itself, the CPU its main device. Elsewhere the oracle is accelerate itself, as in tests/test_plan84:
the model loaded by from_pretrained from the folder, dispatched by dispatch_model on the map, and the bytes its hooks
copy while generate() makes 3 and 6 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.test_plan84 import _bart, _bytes_loaded
from tests.test_plan86 import _pix2struct


def _measured(folder: Path, placed: dict[str, Any], tmp_path: Path, inputs: dict[str, Any] | None = None
              ) -> tuple[int, int]:
    """(per input, per token) as accelerate's hooks copy them in generate()."""
    three = _bytes_loaded(folder, placed, 3, tmp_path, inputs=inputs)
    six = _bytes_loaded(folder, placed, 6, tmp_path, inputs=inputs)
    per_token = (six - three) // 3
    return three - 3 * per_token, per_token


def _set_generation_use_cache(folder: Path, use_cache: bool | None) -> None:
    """generation_config.json's use_cache set to `use_cache`, or taken out (None); config.json left as it is."""
    path = folder / "generation_config.json"
    saved = json.loads(path.read_text())
    saved.pop("use_cache", None)
    if use_cache is not None:
        saved["use_cache"] = use_cache
    path.write_text(json.dumps(saved))


@pytest.mark.parametrize("kind", ["bart-no-cache", "pix2struct-default-cache"])
def test_generation_config_json_decides_whether_cross_attention_keys_are_cached(tmp_path: Path, kind: str) -> None:
    """BART (config.json use_cache true) whose generation_config.json says use_cache false: generate() keeps no
    cache, and its offloaded decoder projects the encoder's states at every token; the report said those
    projections once per input. Pix2Struct whose text_config says use_cache false (its default) with a
    generation_config.json that sets none: generate() caches (its default), and they run once per input; the report
    said them per token. Both now follow generation_config.json, as from_pretrained loads it."""
    inputs = None
    if kind == "bart-no-cache":
        folder = _bart(tmp_path / kind)
        _set_generation_use_cache(folder, False)
    else:
        folder, inputs = _pix2struct(tmp_path / kind, use_cache=False)
        _set_generation_use_cache(folder, None)
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    total = whole["weights_bytes"] + whole["buffers_bytes"]
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{int(total * 0.3)}B", "--cpu", "1GB")
    placed = data["device_map"]
    assert any(where == "cpu" and "decoder" in name for name, where in placed.items()), placed
    per_input, per_token = _measured(folder, placed, tmp_path, inputs)
    off = data["offload"]
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"]) == (per_input, per_token), (off, per_input, per_token)


# --- 1 and 3. a tied tensor's twins on two GPUs, or on a GPU and in CPU RAM -------------------------------------------


def _gpu_standin(folder: Path, device_map: dict[str, int | str], new_tokens: int) -> tuple[int, dict[int, int]]:
    """(bytes accelerate's hooks copy while a decoder-only model generates `new_tokens` tokens, {GPU: bytes
    dispatch_model copies onto it beyond the tensors from_pretrained loaded there}), the model dispatched on the map
    as from_pretrained dispatches it on a machine with those GPUs: each GPU k stood in for by torch.device("cpu", k),
    a device of its own for accelerate (its own key in `tied_params_map`, and a move there copies), so that the main
    GPU is not the other GPU; "cpu" entries served from the model's tensors, as dispatch_model extracts them from
    model.state_dict() where the main device is no CPU. Each tensor is taken as loaded where from_pretrained loads it
    (its module's device; a tied copy where the source tie_weights points it at is): a move of it there copies
    nothing on a GPU, and is not counted."""
    import accelerate.hooks as hooks
    from accelerate import dispatch_model
    from accelerate.utils import extract_submodules_state_dict
    from accelerate.utils.modeling import normalize_device

    from tests.test_plan84 import _load

    model = _load(folder)

    def device_of(name: str) -> int | str:
        return device_map[max((key for key in device_map if not key or name == key or name.startswith(f"{key}.")),
                              key=len)]

    def standin(where: int | str) -> Any:
        return torch.device("cpu", where) if isinstance(where, int) else where

    sources = set(getattr(model, "all_tied_weights_keys", None) or {})
    loaded_on = {tensor.data_ptr(): normalize_device(standin(device_of(name)))
                 for name, tensor in model.named_parameters(remove_duplicate=False) if name not in sources}
    in_ram = extract_submodules_state_dict(model.state_dict(), [n for n, w in device_map.items() if w == "cpu"])
    original = hooks.set_module_tensor_to_device
    moved: set[int] = set()
    added: dict[int, int] = {}

    def as_parameter(holder: Any, leaf: str) -> None:
        # a move to a stand-in copies (the copy reports plain "cpu"), and Parameter.to() of a copy is a Tensor
        tensor = holder._parameters.get(leaf)
        if tensor is not None and type(tensor) is torch.Tensor:
            holder._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)

    def placing(module: Any, name: str, device: Any, value: Any = None, tied_params_map: Any = None,
                **kwargs: Any) -> Any:
        owner, _, leaf = name.rpartition(".")
        holder = module.get_submodule(owner)
        before = getattr(holder, leaf)
        if value is None and before.data_ptr() in moved:
            return None  # already moved to that GPU: a second hook's move there copies nothing
        out = original(module, name, device, value=value, tied_params_map=tied_params_map, **kwargs)
        as_parameter(holder, leaf)
        after = getattr(holder, leaf)
        if value is None and str(device) != "meta" and after.data_ptr() not in moved | {before.data_ptr()}:
            moved.add(after.data_ptr())
            if loaded_on.get(before.data_ptr()) != normalize_device(device):
                added[device.index] = added.get(device.index, 0) + after.numel() * after.element_size()
        return out

    hooks.set_module_tensor_to_device = placing
    try:
        main = list(set(device_map.values()) - {"cpu", "disk"})[0]  # as dispatch_model picks its main device
        model = dispatch_model(model, {name: standin(where) for name, where in device_map.items()},
                               main_device=standin(main), state_dict=in_ram or None, offload_buffers=False)
    finally:
        hooks.set_module_tensor_to_device = original
    copied = [0]

    def counting(module: Any, name: str, device: Any, value: Any = None, tied_params_map: Any = None,
                 **kwargs: Any) -> Any:
        owner, _, leaf = name.rpartition(".")
        holder = module.get_submodule(owner)
        if value is not None and str(device) != "meta":
            there = tied_params_map is not None and any(
                normalize_device(device) in tied_params_map.get(tensor.data_ptr(), {})
                for tensor in (value, getattr(holder, leaf)))
            if not there:
                copied[0] += value.numel() * value.element_size()
        out = original(module, name, device, value=value, tied_params_map=tied_params_map, **kwargs)
        as_parameter(holder, leaf)
        return out

    hooks.set_module_tensor_to_device = counting
    try:
        with torch.no_grad():
            out = model.generate(torch.tensor([[5, 6, 7, 8, 2]]), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, num_beams=1, pad_token_id=0)
    finally:
        hooks.set_module_tensor_to_device = original
    assert out.shape[1] == 5 + new_tokens, out.shape
    return copied[0], added


def _gpt2_map(tmp_path: Path, wte: int | str, lm_head: int | str) -> tuple[Path, dict[str, int | str], Path]:
    from tests.test_plan85 import _REST, _gpt2

    folder = _gpt2(tmp_path / "gpt2")
    placed = {"transformer.wte": wte, "lm_head": lm_head, **_REST}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    return folder, placed, mapping


@pytest.mark.parametrize("wte, lm_head", [(1, "cpu"), ("cpu", 1)])
def test_a_tied_twin_offloaded_beside_one_on_another_gpu_is_copied_per_token(
        tmp_path: Path, wte: int | str, lm_head: int | str) -> None:
    """A tied GPT-2 on two GPUs, one of its twins offloaded to the CPU and the other on cuda:1, not the main GPU
    (cuda:0, where the offloaded module runs): no copy of the tensor is on cuda:0, so the offloaded module's hook
    copies it there at every call (16,384 B per token, measured). With wte on cuda:1, from_pretrained loads the
    tensor there and the offload serves that GPU's tensor: it is copied GPU to GPU, and nothing is in CPU RAM; the
    report said it moved from CPU RAM like the rest (tied_from_gpu_per_token_bytes now says it)."""
    from weightdoctor.units import format_bytes

    folder, placed, mapping = _gpt2_map(tmp_path, wte, lm_head)
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping)]
    code, data = run_json(*args)
    three, _ = _gpu_standin(folder, placed, 3)
    six, _ = _gpu_standin(folder, placed, 6)
    per_token = (six - three) // 3
    tied = 64 * 64 * 4
    assert (per_token, three - 3 * per_token) == (tied, 0), (per_token, three)
    off = data["offload"]
    assert off["bytes_per_token"] == per_token, off
    assert (off["cpu_bytes"], off["tied_from_gpu_per_token_bytes"]) == ((0, tied) if wte == 1 else (tied, 0)), off
    text = run_cli(*args).stdout.replace("\n ", " ")
    [line] = [line for line in text.splitlines() if line.startswith("offload:")]
    said = f"of that, {format_bytes(tied)} is tied weights copied from the GPU their twin is loaded on"
    assert (said in line) == (wte == 1), line


@pytest.mark.parametrize("wte", ["cpu", 1])
def test_the_copy_of_a_tied_tensor_accelerate_places_on_the_main_gpu_counts_in_its_budget(
        tmp_path: Path, wte: int | str) -> None:
    """A tied GPT-2 with lm_head on the main GPU and wte in CPU RAM or on cuda:1, where from_pretrained loads the
    tensor and the map counts it: dispatch_model's lm_head hook copies it onto cuda:0 for good (16,384 B beyond the
    map's share there, measured), and wte's hook, offloaded, uses that copy (nothing copied per token). The warning
    for a main GPU over its budget with what accelerate adds did not count it (nor was it said for cuda:1): a
    cuda:0 one byte short of the map's share and the copy is warned now, one of exactly that not; the offloaded wte
    is not counted among the weights its hooks copy there."""
    from weightdoctor.units import format_bytes

    folder, placed, mapping = _gpt2_map(tmp_path, wte, 0)
    three, added = _gpu_standin(folder, placed, 3)
    six, _ = _gpu_standin(folder, placed, 6)
    tied = 64 * 64 * 4
    assert (three, six, added) == (0, 0, {0: tied}), (three, six, added)
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--gpu", "1GB", "--cpu", "1GB", "--map",
                          str(mapping))
    needed = data["devices"][0]["used_bytes"] + added[0]
    for gpu, warned in ((needed - 1, True), (needed, False)):
        code, checked = run_json("plan-devices", str(folder), "--gpu", f"{gpu}B", "--gpu", "1GB", "--cpu", "1GB",
                                 "--map", str(mapping))
        said = [w for w in checked["warnings"] if "accelerate adds" in w]
        assert bool(said) == warned, (gpu, checked["warnings"])
        if said:
            assert f"a {format_bytes(tied)} copy of tied weights (lm_head.weight = transformer.wte.weight, loaded on " \
                   f"{'cpu' if wte == 'cpu' else 'cuda:1'}" in said[0], said
            assert "offloaded weights its hooks copy" not in said[0], said


# --- 2. a tied twin on disk beside one elsewhere ----------------------------------------------------------------------


def _from_pretrained_copies(folder: Path, device_map: dict[str, int | str], new_tokens: int, tmp_path: Path) -> int:
    """The bytes accelerate's hooks copy while the model, loaded by from_pretrained itself on `device_map` (the CPU
    its main device: "cpu" entries run where they lie, "disk" ones are offloaded as on a GPU machine), generates
    `new_tokens` tokens; what from_pretrained or generate() raises is raised."""
    import tempfile

    import accelerate.hooks as hooks
    import transformers
    from accelerate.utils.modeling import normalize_device

    model = transformers.GPT2LMHeadModel.from_pretrained(folder, device_map=device_map,
                                                         offload_folder=tempfile.mkdtemp(dir=tmp_path)).eval()
    original = hooks.set_module_tensor_to_device
    copied = [0]

    def counting(module: Any, name: str, device: Any, value: Any = None, tied_params_map: Any = None,
                 **kwargs: Any) -> Any:
        if value is not None and str(device) != "meta":
            owner, _, leaf = name.rpartition(".")
            there = tied_params_map is not None and any(
                normalize_device(device) in tied_params_map.get(tensor.data_ptr(), {})
                for tensor in (value, getattr(module.get_submodule(owner), leaf)))
            if not there:
                copied[0] += value.numel() * value.element_size()
        return original(module, name, device, value=value, tied_params_map=tied_params_map, **kwargs)

    hooks.set_module_tensor_to_device = counting
    try:
        with torch.no_grad():
            model.generate(torch.tensor([[5, 6, 7, 8, 2]]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, num_beams=1, pad_token_id=0)
    finally:
        hooks.set_module_tensor_to_device = original
    return copied[0]


@pytest.mark.parametrize("wte, lm_head", [(0, "disk"), ("disk", 0), ("disk", "disk")])
def test_a_tied_twin_on_disk_beside_one_elsewhere_cannot_run(
        tmp_path: Path, wte: int | str, lm_head: int | str) -> None:
    """A tied GPT-2 with one twin on disk and the other on the GPU: the report said 16.38 KB read from disk per token
    (plan86's harness wrote both names to its offload). from_pretrained loads the tensor once, where wte sits, and
    places no twin on disk beside one elsewhere: with lm_head on disk its first forward raises KeyError
    'lm_head.weight' (the offload index holds the checkpoint's names), with wte on disk the load raises (measured
    with the CPU as main device, where the GPU's modules lie): the tied-split error now says so. Both on disk: each
    hook reads the tensor from disk at every call, 32,768 B per token, as the report says."""
    folder, placed, mapping = _gpt2_map(tmp_path, wte, lm_head)
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--disk", "--map",
                          str(mapping))
    on_cpu = {name: "cpu" if isinstance(where, int) else where for name, where in placed.items()}
    [split] = [f for f in data["findings"] if f["code"] == "tied-split"] or [None]
    if wte == lm_head:
        three = _from_pretrained_copies(folder, on_cpu, 3, tmp_path)
        six = _from_pretrained_copies(folder, on_cpu, 6, tmp_path)
        assert (six - three) // 3 == data["offload"]["bytes_per_token"] == 2 * 64 * 64 * 4, (three, six)
        assert split is None
        return
    raised = KeyError if lm_head == "disk" else ValueError
    with pytest.raises(raised):
        _from_pretrained_copies(folder, on_cpu, 3, tmp_path)
    assert split is not None and "from_pretrained cannot run this map" in split["message"], data["findings"]
    said = "first forward raises KeyError 'lm_head.weight'" if lm_head == "disk" else "it raises while it loads"
    assert said in split["message"], split


# --- 4. a tied head's 0 B ---------------------------------------------------------------------------------------------


def test_a_tied_head_says_what_it_shares_its_storage_with(tmp_path: Path) -> None:
    """A tied GPT-2 planned on a GPU that takes its embeddings: `lm_head → cuda:0 0 B` read as an empty module (its
    weight is wte's tensor, counted under transformer.wte.weight); the line now says it is tied to that name, and
    the JSON range names it (tied_to). A range holding the tensor itself names nothing."""
    from tests.test_plan85 import _gpt2

    folder = _gpt2(tmp_path / "gpt2")
    args = ["plan-devices", str(folder), "--gpu", "300KB", "--cpu", "1GB"]
    code, data = run_json(*args)
    ranges = {r["label"]: r for device in data["devices"] for r in device["ranges"]}
    assert data["device_map"]["lm_head"] == 0 and ranges["lm_head"]["bytes"] == 0, data["device_map"]
    assert ranges["lm_head"]["tied_to"] == ["transformer.wte.weight"], ranges["lm_head"]
    assert ranges["transformer.wte"]["tied_to"] == [] and ranges["transformer.wte"]["bytes"] == 64 * 64 * 4
    text = " ".join(run_cli(*args).stdout.split())
    assert "lm_head → cuda:0 0 B (tied to transformer.wte.weight: shares its storage, counted there)" in text, text


# --- 6. ProphetNet's n-gram self-attention calls two of its modules twice a step --------------------------------------


def test_modules_called_twice_a_step_are_loaded_twice(tmp_path: Path) -> None:
    """ProphetNet's decoder layers offloaded (plan86's hand map): its n-gram self-attention calls out_proj and
    relative_pos_embeddings once for its main stream and once for its predicting streams, and accelerate's hooks
    load them at each call: the report said 149,760 B too little per token. The calls are read from the attention's
    code now: the per-token and per-input figures are what the hooks copy, and the text says the share."""
    from tests.test_plan86 import _prophetnet
    from weightdoctor.units import format_bytes

    folder, inputs = _prophetnet(tmp_path / "prophetnet")
    placed: dict[str, Any] = {"prophetnet.word_embeddings": 0, "prophetnet.encoder": 0,
                              "prophetnet.decoder.word_embeddings": 0, "prophetnet.decoder.position_embeddings": 0,
                              "prophetnet.decoder.ngram_embeddings": 0, "prophetnet.decoder.layers": "cpu",
                              "prophetnet.decoder.embeddings_layer_norm": 0, "lm_head": 0}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping)]
    code, data = run_json(*args)
    per_input, per_token = _measured(folder, placed, tmp_path, inputs)
    off = data["offload"]
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"]) == (per_input, per_token), (off, per_input, per_token)
    # out_proj (64 x 64 + 64) and relative_pos_embeddings (64 x 128 + 128), float32, in each of 3 layers
    twice = 3 * 4 * (64 * 64 + 64 + 64 * 128 + 128)
    assert off["repeated_calls_per_token_bytes"] == twice == 149_760, off
    text = " ".join(run_cli(*args).stdout.split())
    assert f"of that, {format_bytes(twice)} is modules their layer calls more than once a generated token" in text, \
        text
