"""plan88: plan-devices, tied copies on a second GPU, tied twins on disk, modules called in loops.

1. A tied tensor loaded on one device whose twin is placed on a GPU other than the main one (GPT-2's lm_head on
   cuda:1, wte on cuda:0 or in CPU RAM): dispatch_model copies it onto that GPU for good. The map counts it once, as
   transformers' compute_module_sizes does (lm_head 0 B); the copy is said beside that GPU's share and in its range
   (devices[].ranges[].tied_copy_bytes), and the budget warning counts it on any GPU, not the main one alone.
2. A map from_pretrained cannot run (a tied twin on disk beside one elsewhere) gave a per-token figure beside its
   error: no traffic figure is said now, the JSON's are null, and the verdict is does-not-fit.
3. Modules a forward calls in a loop are loaded at each call: HRM's L_module (H_cycles x L_cycles a step), ALBERT's
   shared layer group (once per num_hidden_layers); and a forward a class inherits, or reaches through super(), is
   read from its parent (a hand-written modeling file: no transformers class was found with a repeated call in an
   inherited forward).

Items 1 and 3 are measured with accelerate itself (tests/test_plan87's GPU stand-ins, tests/test_plan84's hooks).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import bytes_loaded_by_forward, run_cli, run_json

TIED = 64 * 64 * 4  # the tiny GPT-2's wte / lm_head table, float32


# --- 1. a tied twin on a GPU other than the main one ------------------------------------------------------------------


@pytest.mark.parametrize("wte", [0, "cpu"])
def test_a_tied_twin_on_a_second_gpu_is_a_copy_said_and_counted_in_its_budget(tmp_path: Path, wte: int | str) -> None:
    """lm_head on cuda:1, wte (where from_pretrained loads the tensor) on cuda:0 or in CPU RAM: dispatch_model copies
    the 16,384 B table onto cuda:1 (measured). cuda:1's share stays 0 B, as transformers' compute_module_sizes counts
    lm_head; the range and the device line say the copy, and a cuda:1 one byte short of it is warned (it was not:
    only the main GPU was checked), one of exactly that not."""
    import transformers
    from transformers.integrations.accelerate import compute_module_sizes

    from tests.test_plan87 import _gpt2_map, _gpu_standin
    from weightdoctor.units import format_bytes

    folder, placed, mapping = _gpt2_map(tmp_path, wte, 1)
    _, added = _gpu_standin(folder, placed, 3)
    assert added == {1: TIED}, added
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_pretrained(folder))
    accelerate_counts = compute_module_sizes(model)[0]
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping)]
    _, data = run_json(*args, "--gpu", "1GB")
    [cuda1] = [device for device in data["devices"] if device["device"] == "cuda:1"]
    [head] = cuda1["ranges"]
    assert cuda1["used_bytes"] == head["bytes"] == accelerate_counts["lm_head"] == 0, cuda1
    assert (head["tied_to"], head["tied_copy_bytes"]) == (["transformer.wte.weight"], added[1]), head
    [cuda0] = [device for device in data["devices"] if device["device"] == "cuda:0"]
    assert all(item["tied_copy_bytes"] == 0 for item in cuda0["ranges"]), cuda0
    for gpu, warned in ((added[1] - 1, True), (added[1], False)):
        _, checked = run_json(*args, "--gpu", f"{gpu}B")
        said = [w for w in checked["warnings"] if w.startswith("cuda:1 holds")]
        assert bool(said) == warned, (gpu, checked["warnings"])
        if said:
            assert f"accelerate adds a {format_bytes(TIED)} copy of tied weights (lm_head.weight = " \
                   f"transformer.wte.weight, loaded on {'cuda:0' if wte == 0 else 'cpu'}" in said[0], said
            assert "buffers" not in said[0] and "hooks copy" not in said[0], said
    text = " ".join(run_cli(*args, "--gpu", "1GB").stdout.split())
    assert f"0 B of 1.00 GB (+ {format_bytes(TIED)} of tied copies accelerate adds here)" in text, text
    assert f"lm_head → cuda:1 0 B (tied to transformer.wte.weight, counted there: accelerate keeps a " \
           f"{format_bytes(TIED)} copy of it here, not in this figure)" in text, text


# --- 2. a map from_pretrained cannot run ------------------------------------------------------------------------------


@pytest.mark.parametrize("wte, lm_head", [(0, "disk"), ("disk", 0), ("cpu", "disk")])
def test_a_map_from_pretrained_cannot_run_says_no_traffic(tmp_path: Path, wte: int | str, lm_head: int | str) -> None:
    """A tied twin on disk beside one elsewhere: from_pretrained raises at load or at the first forward
    (tests/test_plan87 measures it). The report printed '16.38 KB moved to the GPU for every generated token' beside
    that error: now no figure of what it would stream is said, the JSON's are null (cpu_bytes / disk_bytes, where the
    map counts the tensors, stay), and the verdict is does-not-fit, said as the map's, not the budgets'."""
    from tests.test_plan87 import _gpt2_map

    folder, _, mapping = _gpt2_map(tmp_path, wte, lm_head)
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--disk", "--map", str(mapping)]
    code, data = run_json(*args)
    assert code == 1 and data["verdict"] == "does-not-fit", data["verdict"]
    off = data["offload"]
    assert isinstance(off["cpu_bytes"], int) and isinstance(off["disk_bytes"], int), off
    assert all(value is None for key, value in off.items() if key not in ("cpu_bytes", "disk_bytes")), off
    result = run_cli(*args)
    text = " ".join(result.stdout.split())
    assert "from_pretrained cannot run this map" in text, text
    assert "moved to the GPU" not in text and "/token" not in text, text
    assert "verdict: does not fit (from_pretrained cannot run this map: see the error above)" in text, text
    if wte == "cpu":
        assert "offload: 16.38 KB in CPU RAM, 0 B on disk in the map: nothing is streamed, since from_pretrained " \
               "cannot run this map (see the error)" in text, text


def test_maps_that_run_keep_their_traffic_figures(tmp_path: Path) -> None:
    """Both twins on disk (each hook reads the table: 32,768 B a token, measured in tests/test_plan87), and a tied
    split between the GPU and the CPU (an error finding, but from_pretrained runs it): their figures are kept."""
    from tests.test_plan87 import _gpt2_map

    for wte, lm_head, per_token in (("disk", "disk", 2 * TIED), (0, "cpu", 0)):
        folder, _, mapping = _gpt2_map(tmp_path / f"{wte}-{lm_head}", wte, lm_head)
        _, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--disk", "--map",
                           str(mapping))
        assert data["offload"]["bytes_per_token"] == per_token, data["offload"]
        assert data["verdict"] != "does-not-fit", data["verdict"]


# --- 3. modules called in a loop, inherited forwards ------------------------------------------------------------------


def _hrm(folder: Path) -> Path:
    """A tiny seeded HRM text model: its model's forward calls L_module H_cycles x L_cycles (6) times a step and
    H_module H_cycles (2) times."""
    import transformers

    torch.manual_seed(0)
    config = transformers.HrmTextConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64, H_cycles=2, L_cycles=3,
                                        bos_token_id=1, eos_token_id=63, pad_token_id=0,
                                        architectures=["HrmTextForCausalLM"])
    transformers.HrmTextForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("offloaded", ["model.L_module", "model.H_module"])
def test_a_module_its_model_calls_in_a_config_loop_is_loaded_at_each_call(tmp_path: Path, offloaded: str) -> None:
    """HRM's HrmTextModel runs `for h in range(self.config.H_cycles): for l in range(self.config.L_cycles):
    self.L_module(...)` (in a `with` block), then `self.H_module(...)`: accelerate's hooks load the offloaded stack
    at each call (6 and 2 times a token, measured). The loops were left out, counted once: 942,080 B too little per
    token with L_module offloaded."""
    from tests.test_plan84 import _bytes_loaded
    from weightdoctor.units import format_bytes

    folder = _hrm(tmp_path / "hrm")
    placed: dict[str, Any] = {"model.z_L_init": 0, "model.embed_tokens": 0, "model.rotary_emb": 0,
                              "model.L_module": 0, "model.H_module": 0, "lm_head": 0}
    placed[offloaded] = "cpu"
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    three = _bytes_loaded(folder, placed, 3, tmp_path, causal=True)
    six = _bytes_loaded(folder, placed, 6, tmp_path, causal=True)
    per_token = (six - three) // 3
    args = ["plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping)]
    _, data = run_json(*args)
    off = data["offload"]
    stack = off["cpu_bytes"]
    calls = 6 if offloaded == "model.L_module" else 2
    assert per_token == calls * stack and three == 3 * per_token, (per_token, three, stack)
    assert (off["bytes_per_token"], off["repeated_calls_per_token_bytes"]) == (per_token, (calls - 1) * stack), off
    text = " ".join(run_cli(*args).stdout.split())
    assert f"of that, {format_bytes((calls - 1) * stack)} is modules their layer calls more than once" in text, text


def _forward_bytes_loaded(folder: Path, device_map: dict[str, int | str], tmp_path: Path) -> int:
    """The bytes accelerate's hooks copy to the execution device in one forward pass of the model dispatched on the
    map (tests/test_plan84's `_dispatched`: "cpu" entries served from RAM as on a GPU machine)."""
    from tests.test_plan84 import _dispatched

    model = _dispatched(folder, device_map, tmp_path)
    return bytes_loaded_by_forward(model, torch.tensor([[5, 6, 7, 8, 2]]))


@pytest.mark.parametrize("groups", [1, 2])
def test_albert_s_shared_layer_groups_are_loaded_once_per_layer(tmp_path: Path, groups: int) -> None:
    """ALBERT's encoder runs `for i in range(self.config.num_hidden_layers)` over its layer groups, each layer using
    group `int(i / (num_hidden_layers / num_hidden_groups))`: with 4 layers and 1 group, the one group is called 4
    times a forward pass, with 2 groups each twice, and the offloaded groups are loaded at each call (measured). The
    loop was left out: the report said one load of each."""
    import transformers

    torch.manual_seed(0)
    config = transformers.AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                                       num_hidden_groups=groups, num_attention_heads=2, intermediate_size=64,
                                       max_position_embeddings=32, architectures=["AlbertForMaskedLM"])
    folder = tmp_path / "albert"
    transformers.AlbertForMaskedLM(config).save_pretrained(folder)
    placed: dict[str, Any] = {"albert.embeddings": 0, "albert.encoder.embedding_hidden_mapping_in": 0,
                              "albert.encoder.albert_layer_groups": "cpu", "predictions": 0}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(placed))
    measured = _forward_bytes_loaded(folder, placed, tmp_path)
    _, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--cpu", "1GB", "--map", str(mapping))
    off = data["offload"]
    assert measured == 4 // groups * off["cpu_bytes"], (measured, off)
    assert (off["bytes_per_token"], off["repeated_calls_per_token_bytes"]) == (measured, measured - off["cpu_bytes"])


_HAND_WRITTEN = '''
import torch
from torch import nn


class Config:
    loops = 3
    steps = 2


class Looping(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = Config()
        self.block = nn.Linear(4, 4)
        self.proj = nn.Linear(4, 4)
        self.gate = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.steps = self.config.steps

    def forward(self, x):
        for _ in range(self.config.loops):
            x = self.block(x)
        step = 0
        while step < self.steps:
            x = self.proj(x)
            step += 1
        for _ in range(x.shape[0]):  # a tensor's length: not known, counted once by the caller
            x = self.gate(x)
        for _ in range(2):
            if x.sum() > 0:  # a branch in the loop: left out
                x = self.gate(x)
            for index, layer in enumerate(self.layers[1:]):
                x = layer(x)
        with torch.no_grad():
            x = self._finish(x)
        return x

    def _finish(self, x):
        for _ in range(self.config.loops):
            if x.mean() > 1:
                break  # the loop's count is not known
            x = self.gate(x)
        return self.norm(x)


class Inheriting(Looping):
    pass


class Extending(Looping):
    def forward(self, x):
        return self.norm(super().forward(x))
'''


def _hand_written(tmp_path: Path) -> Any:
    path = tmp_path / "modeling_looping.py"
    path.write_text(_HAND_WRITTEN)
    spec = importlib.util.spec_from_file_location("modeling_looping", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_looping"] = module
    spec.loader.exec_module(module)
    return module


def test_loops_and_inherited_forwards_of_a_hand_written_modeling_file(tmp_path: Path) -> None:
    """A forward's loops over a config value, a `while` over an attribute, enumerate over a ModuleList slice, a
    `with` block and a method it calls are counted as they run; a loop over a tensor's length, a branch and a loop
    that may break are left out. A class that inherits the forward is counted as its parent (it was {}), and one
    whose forward calls super().forward() adds its own calls to the parent's."""
    from weightdoctor.forward_calls import calls_per_forward

    module = _hand_written(tmp_path)
    looped = {"block": 3, "proj": 2, "layers.1": 2, "layers.2": 2, "norm": 1}
    assert calls_per_forward(module.Looping()) == looped
    assert calls_per_forward(module.Inheriting()) == looped
    assert calls_per_forward(module.Extending()) == {**looped, "norm": 2}
    # what the walk counts is what a forward calls: each call of a submodule counted by a forward hook
    counted: dict[str, int] = {}
    model = module.Looping()
    for name, child in model.named_modules():
        if name:
            child.register_forward_hook(lambda *_, name=name: counted.__setitem__(name, counted.get(name, 0) + 1))
    with torch.no_grad():
        model(torch.ones(1, 4))  # the gate's calls follow the input; the counted ones do not
    assert {name: counted[name] for name in looped} == looped, counted


def _dory() -> Any:
    import transformers

    return transformers.DoryForCausalLM(transformers.DoryConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=4,
        vocab_size=64, head_dim=16)), "model"


def _funnel() -> Any:
    import transformers

    return transformers.FunnelForMaskedLM(transformers.FunnelConfig(
        vocab_size=64, d_model=32, n_head=2, d_head=16, d_inner=64, block_sizes=[1, 1], block_repeats=[2, 1])), \
        "funnel.encoder"


def _hrm_model() -> Any:
    import transformers

    return transformers.HrmTextForCausalLM(transformers.HrmTextConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, H_cycles=2, L_cycles=3)), "model"


@pytest.mark.parametrize("build, expected", [
    (_dory, {"layers.0": 2, "layers.1": 2, "layers.2": 2, "layers.3": 2, "norm": 4}),
    (_funnel, {"blocks.0.0": 2, "blocks.1.0": 1}),
    (_hrm_model, {"rotary_emb": 1, "L_module": 6, "H_module": 2}),
], ids=["dory", "funnel", "hrm"])
def test_the_calls_read_from_transformers_code_are_the_calls_a_forward_makes(build: Any, expected: dict[str, int]
                                                                            ) -> None:
    """Dory's recurrent loop (`for loop_idx in range(n_loops)` over `self.layers[recurrent_start:recurrent_end]`,
    its bounds local names read from the config, and `self.norm` before and in it), Funnel's block_repeats
    (`for repeat_index in range(repeat_time)` over `enumerate(block)`) and HRM's cycles: the counts read from the
    code are those forward hooks count in a real forward pass."""
    from weightdoctor.forward_calls import calls_per_forward

    torch.manual_seed(0)
    model, path = build()
    model.eval()
    walked = model.get_submodule(path)
    counted: dict[str, int] = {}
    for name, child in walked.named_modules():
        if name:
            child.register_forward_hook(lambda *_, name=name: counted.__setitem__(name, counted.get(name, 0) + 1))
    with torch.no_grad():
        model(torch.tensor([[5, 6, 7, 8, 2, 3, 4, 9]]))
    said = calls_per_forward(walked)
    assert said == expected, said
    assert {name: counted.get(name) for name in said} == said, counted
