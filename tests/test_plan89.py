"""plan89: plan-devices, tied twins on two GPUs, and a submodule called both directly and through its parent.

1. A hand-written map with tied twins on two GPUs (GPT-2's wte on cuda:0, lm_head on cuda:1) loads: dispatch_model
   copies the tensor onto the second GPU (plan88's `tied_copy_bytes`). But it then ties the twins back to one copy
   (accelerate 1.16's `retie_parameters`: the tensor of the first name in sorted order not on the meta device), so
   the other twin's module runs with its weight on the other GPU: its forward raises (tensors on two devices). The
   tied-split error said only "on different devices", and the report gave the map a verdict and traffic figures as
   if it ran. It now says what from_pretrained does, no traffic figure is given and the verdict is does-not-fit. The
   planner itself never parts tied twins: a --gpu budget too small for the rest keeps lm_head beside wte.
2. A forward that calls a submodule itself and also through its parent (Sam3Model: detr_decoder.box_head, and
   detr_decoder, whose layer loop calls box_head) runs it once per route: the longest name the forward calls was
   taken alone, and the repeated loads were undercounted (offload.repeated_calls_per_token_bytes).

Measured with accelerate's own dispatch_model and hooks on the CPU, each GPU stood in for by torch.device("cpu", k).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import bytes_loaded_by_forward, run_cli, run_json

TIED = 64 * 64 * 4  # the tiny GPT-2's wte / lm_head table, float32


# --- 1. tied twins on two GPUs ----------------------------------------------------------------------------------------


def _weights_on_another_gpu(folder: Path, device_map: dict[str, int | str]) -> tuple[dict[str, tuple[Any, Any]],
                                                                                     set[Any]]:
    """({module: (the GPU its weight lies on, the GPU its hook runs it on)} for the modules whose weight lies on
    another GPU than their hook's, the devices accelerate's tied_params_map holds a copy of the tied tensor on),
    after dispatch_model dispatched the tied model on the map as from_pretrained dispatches it. Each tensor's GPU is
    followed by its data pointer: where from_pretrained loads it (its module's entry; a tied copy where the source
    tie_weights points it at sits), then where each move accelerate makes puts it."""
    import accelerate.hooks as hooks
    from accelerate import dispatch_model
    from accelerate.utils.modeling import normalize_device

    from tests.test_plan84 import _load

    model = _load(folder)

    def entry(name: str) -> int | str:
        return device_map[max((key for key in device_map if not key or name == key or name.startswith(f"{key}.")),
                              key=len)]

    def standin(where: int | str) -> Any:
        return torch.device("cpu", where) if isinstance(where, int) else where

    copies = set(getattr(model, "all_tied_weights_keys", None) or {})
    lies_on: dict[int, Any] = {tensor.data_ptr(): normalize_device(standin(entry(name)))
                               for name, tensor in model.named_parameters(remove_duplicate=False)
                               if name not in copies}
    original = hooks.set_module_tensor_to_device

    def placing(module: Any, name: str, device: Any, value: Any = None, **kwargs: Any) -> Any:
        owner, _, leaf = name.rpartition(".")
        holder = module.get_submodule(owner)
        before = getattr(holder, leaf)
        out = original(module, name, device, value=value, **kwargs)
        after = getattr(holder, leaf)
        if leaf in holder._parameters and type(after) is torch.Tensor:
            # a move to a stand-in copies, and Parameter.to() of a copy is a Tensor
            holder._parameters[leaf] = after = torch.nn.Parameter(after, requires_grad=False)
        if str(device) != "meta" and after.data_ptr() != before.data_ptr():
            lies_on[after.data_ptr()] = normalize_device(device)
        return out

    hooks.set_module_tensor_to_device = placing
    try:
        main = next(where for where in device_map.values() if isinstance(where, int))
        model = dispatch_model(model, {name: standin(where) for name, where in device_map.items()},
                               main_device=standin(main), offload_buffers=False)
    finally:
        hooks.set_module_tensor_to_device = original
    wrong: dict[str, tuple[Any, Any]] = {}
    held: set[Any] = set()
    for name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        weight = module._parameters.get("weight")
        if hook is None or weight is None or weight.device.type == "meta":
            continue
        for devices in (hook.tied_params_map or {}).values():
            held.update(devices)
        if lies_on.get(weight.data_ptr()) != normalize_device(hook.execution_device):
            wrong[name] = (lies_on.get(weight.data_ptr()), normalize_device(hook.execution_device))
    return wrong, held


@pytest.mark.parametrize("wte, lm_head", [(0, 1), (1, 0)])
def test_tied_twins_on_two_gpus_load_with_a_copy_but_do_not_run(tmp_path: Path, wte: int, lm_head: int) -> None:
    """dispatch_model holds the table on both GPUs, then points both twins at lm_head's copy (lm_head.weight sorts
    first): wte runs on its GPU with its weight on lm_head's (measured), and its first forward raises there. The
    error says so, with the copy still counted where accelerate puts it; verdict does-not-fit, no traffic figure."""
    from tests.test_plan87 import _gpt2_map

    folder, placed, mapping = _gpt2_map(tmp_path, wte, lm_head)
    wrong, held = _weights_on_another_gpu(folder, placed)
    cpu = torch.device("cpu", wte), torch.device("cpu", lm_head)
    assert wrong == {"transformer.wte": (cpu[1], cpu[0])}, wrong
    assert held == set(cpu), held  # a copy on each GPU
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--gpu", "1GB", "--map", str(mapping)]
    code, data = run_json(*args)
    assert code == 1, data
    [split] = [finding for finding in data["findings"] if finding["code"] == "tied-split"]
    message = " ".join(split["message"].split())
    assert f"dispatch_model then ties the twins back to one copy (lm_head.weight's, on cuda:{lm_head}" in message
    assert f"so transformer.wte runs on cuda:{wte} with its weight on cuda:{lm_head} and the first forward raises " \
           "RuntimeError" in message, message
    assert data["verdict"] == "does-not-fit", data["verdict"]
    assert data["offload"]["bytes_per_token"] is None, data["offload"]
    # the copy from_pretrained's dispatch makes is still said where accelerate puts it
    if lm_head == 1:
        [cuda1] = [device for device in data["devices"] if device["device"] == "cuda:1"]
        assert [(r["label"], r["tied_copy_bytes"]) for r in cuda1["ranges"]] == [("lm_head", TIED)], cuda1
    text = " ".join(run_cli(*args).stdout.split())
    assert "error tied-split: tied parameters lm_head.weight, transformer.wte.weight are on different devices " \
           "(cuda:0, cuda:1): from_pretrained loads it with a copy of the tensor on each GPU" in text, text
    assert "verdict: does not fit (from_pretrained cannot run this map" in text, text


def test_a_tied_twin_offloaded_beside_one_gpu_still_runs(tmp_path: Path) -> None:
    """wte on cuda:0, lm_head in CPU RAM: the offloaded twin is on the meta device when dispatch_model reties, so
    both point at wte's tensor on cuda:0, where lm_head's hook runs it (measured): no module's weight is on another
    GPU, and the map keeps its verdict and traffic figures (the tied-split error stands, without the GPU text)."""
    from tests.test_plan87 import _gpt2_map

    folder, placed, mapping = _gpt2_map(tmp_path, 0, "cpu")
    wrong, _ = _weights_on_another_gpu(folder, placed)
    assert wrong == {}, wrong
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping))
    [split] = [finding for finding in data["findings"] if finding["code"] == "tied-split"]
    assert "dispatch_model then ties" not in split["message"], split
    assert data["verdict"] == "needs-cpu-offload" and data["offload"]["bytes_per_token"] is not None, data


def test_the_planner_keeps_tied_twins_on_one_gpu_whatever_the_budget(tmp_path: Path) -> None:
    """A first GPU with room for the embeddings and not the layers: transformers' planner (its
    all_tied_weights_keys groups) places lm_head with wte on cuda:0, though it comes last, after the layers on
    cuda:1. No budget parts them; no tied-split finding."""
    from tests.test_plan85 import _gpt2

    folder = _gpt2(tmp_path / "gpt2")
    code, data = run_json("plan-devices", str(folder), "--gpu", "300KB", "--gpu", "1MB", "--strategy", "sequential")
    assert code == 0 and data["findings"] == [], data["findings"]
    placed = data["device_map"]
    assert (placed["transformer.wte"], placed["lm_head"], placed["transformer.h"]) == (0, 0, 1), placed


# --- 2. a submodule called itself and through its parent -------------------------------------------------------------


_MODELING = '''
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(8, 8)
        self.out = nn.Linear(8, 8)
        self.spare = nn.Linear(8, 8)  # never run by this forward: its caller runs it

    def forward(self, x):
        for _ in range(2):
            x = self.inner(x)
        return self.out(x)


class Model(nn.Module):
    _no_split_modules = []

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.block = Block()
        self.head = nn.Linear(8, 8)

    def forward(self, x):
        x = self.embed(x)
        x = self.block.inner(x)  # the deep submodule, called itself
        x = self.block.spare(x)
        x = self.block(x)  # and through its parent, twice there
        return self.head(x)
'''
LINEAR = (8 * 8 + 8) * 4  # one nn.Linear(8, 8)'s weight and bias, float32


def _hand_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The modeling file, imported as a module of transformers: the planner reads the forwards of transformers'
    classes only (a model it plans is built from them)."""
    path = tmp_path / "modeling_plan89.py"
    path.write_text(_MODELING)
    spec = importlib.util.spec_from_file_location("transformers.modeling_plan89", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "transformers.modeling_plan89", module)
    spec.loader.exec_module(module)
    return module


def _loaded_in_one_forward(model: Any, device_map: dict[str, int | str], tmp_path: Path) -> int:
    """The bytes accelerate's hooks load onto the execution device in one forward of `model` dispatched on the map
    as from_pretrained dispatches it, its GPU entries run on the CPU here (the main device), its "cpu" entries
    served from the model's own tensors (tests/test_plan84's `_dispatched`)."""
    import tempfile

    from accelerate import dispatch_model
    from accelerate.utils import extract_submodules_state_dict, offload_state_dict

    in_ram = extract_submodules_state_dict(model.state_dict(), [n for n, w in device_map.items() if w == "cpu"])
    offload_dir = tempfile.mkdtemp(dir=tmp_path)
    offload_state_dict(offload_dir, {})
    # main_device="cpu" offloads only "disk" entries: the "cpu" ones are marked so, the weights map serves them
    offloaded = {name: "cpu" if isinstance(where, int) else "disk" for name, where in device_map.items()}
    model = dispatch_model(model, offloaded, main_device="cpu", state_dict=in_ram, offload_dir=offload_dir,
                           offload_buffers=False)
    return bytes_loaded_by_forward(model, torch.ones(1, 8))


def test_a_submodule_called_itself_and_through_its_parent_is_loaded_at_each_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """block.inner runs once from the model's forward and twice from block's: 3 loads a forward, measured; spare,
    which only the model runs, and out, once each. The report counted inner once (the longest name the model's
    forward calls, block.inner, taken alone): 2 x 288 B too few."""
    from weightdoctor.plan_devices import PlannedModel, PlanRequest, plan_devices

    module = _hand_written(tmp_path, monkeypatch)
    torch.manual_seed(0)
    placed: dict[str, int | str] = {"embed": 0, "block": "cpu", "head": 0}
    measured = _loaded_in_one_forward(module.Model().eval(), placed, tmp_path)
    assert measured == (3 + 1 + 1) * LINEAR, measured
    planned = PlannedModel(module.Model(), "config", "Model", "fp32", None)
    report = plan_devices(planned, PlanRequest(gpus=[10**9], cpu=10**9, manual_map=placed, suggest=False))
    offload = report.offload
    assert offload.cpu_bytes == 3 * LINEAR, offload
    assert (offload.bytes_per_token, offload.repeated_calls_per_token_bytes) == (measured, 2 * LINEAR), offload


def test_the_routes_read_from_transformers_code() -> None:
    """Sam3Model's forward calls detr_decoder.box_head itself and detr_decoder, whose loop over its layers calls
    box_head each time: 1 + layers runs of each of its three Linears (those past a branch of the MLP's forward
    counted once a call, as before); it was 1. PPDocLayoutV2's reading order calls embeddings.norm itself, and its
    embeddings' forward never does: once, not once more through them."""
    import transformers

    from weightdoctor.plan_devices import _calls_per_step

    for config, model_class, name, expected in (
            (transformers.Sam3Config(), transformers.Sam3Model, "detr_decoder.box_head.layer3", None),
            (transformers.PPDocLayoutV2Config(), transformers.PPDocLayoutV2ForObjectDetection,
             "reading_order.embeddings.norm", 1)):
        with torch.device("meta"):
            model = model_class(config)
        if expected is None:
            expected = 1 + len(model.detr_decoder.layers)
            assert expected == 7, expected
        modules = dict(model.named_modules())
        assert name in modules, name
        assert _calls_per_step(modules, name.split("."), {}) == expected, name
