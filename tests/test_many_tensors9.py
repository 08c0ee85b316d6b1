"""A DeepSeek-V3-class many-tensor checkpoint, scaled down (5 layers, 8 experts, 279 tensors over 6 sparse shards):
every structure command's counts and verdicts, and the per-tensor work that must not grow with the tree's depth
or the number of tensors per converter or shard (counted, not timed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.deepseek_synth import deepseek_v3_specs, write_deepseek_v3, write_sparse_shard
from tests.helpers import run_cli
from weightdoctor import structure
from weightdoctor.checkpoint import open_checkpoint

LAYERS, EXPERTS, SHARDS = 5, 8, 6
TENSORS = 279  # 3 dense layers of 20, 2 MoE layers of 70, the MTP layer (70 + 6), embed, norm, lm_head


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deepseek") / "deepseek-v3"
    assert write_deepseek_v3(folder, LAYERS, EXPERTS, SHARDS) == TENSORS
    return folder


def _json(*args: str) -> tuple[int, Any]:
    result = run_cli(*args, "--json")
    assert result.stderr.count("Traceback") == 0, result.stderr
    return result.exit_code, json.loads(result.stdout)


def _node(nodes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(n for n in nodes if n["name"] == name)


def test_synthetic_checkpoint_is_deepseek_shaped(deepseek: Path) -> None:
    index = json.loads((deepseek / "model.safetensors.index.json").read_text())
    assert len(index["weight_map"]) == TENSORS
    assert len(set(index["weight_map"].values())) == SHARDS
    with open_checkpoint(deepseek) as checkpoint:
        infos = {t.name: t for t in checkpoint.tensors}
    o_proj = "model.layers.3.self_attn.o_proj."
    assert (infos[o_proj + "weight"].dtype, infos[o_proj + "weight"].shape) == ("float8_e4m3fn", (7168, 16384))
    scale = infos[o_proj + "weight_scale_inv"]
    assert (scale.dtype, scale.shape) == ("float32", (56, 128))  # 128x128 blocks
    assert infos["model.layers.4.mlp.experts.7.down_proj.weight"].shape == (7168, 2048)
    assert "model.layers.5.shared_head.head.weight" in infos  # the multi-token-prediction layer


def test_inspect_collapses_layers_and_experts(deepseek: Path) -> None:
    code, report = _json("inspect", str(deepseek))
    assert code == 0
    assert report["num_tensors"] == TENSORS and len(report["tensors"]) == TENSORS
    assert [f["role"] for f in report["files"]].count("index") == 1
    layers = _node(_node(report["module_tree"], "model")["children"], "layers")["children"]
    assert [(n["name"], n["repeat"], n["num_tensors"]) for n in layers] == [
        ("{0..2}", 3, 60), ("{3..4}", 2, 140), ("5", 1, 76)]
    experts = _node(_node(layers[1]["children"], "mlp")["children"], "experts.{0..7}")
    assert (experts["repeat"], experts["num_tensors"]) == (8, 48)


def test_inspect_keeps_apart_layers_that_differ_deep_down(tmp_path: Path) -> None:
    # Layer 4 differs from layer 3 in one expert's scale shape only, layer 6 from layer 5 in one name only: each
    # pair stays two nodes (the signature compares the whole subtree, however deep).
    specs = deepseek_v3_specs(layers=7, experts=4, dense_layers=3, mtp=False)
    odd_shape = "model.layers.4.mlp.experts.3.up_proj.weight_scale_inv"
    odd_name = "model.layers.6.mlp.experts.2.gate_proj.weight"
    specs = [(name, (17, 56) if name == odd_shape else shape, dtype) for name, shape, dtype in specs]
    specs = [(name.replace("gate_proj", "w1") if name == odd_name else name, shape, dtype)
             for name, shape, dtype in specs]
    write_sparse_shard(tmp_path / "model.safetensors", specs)
    with open_checkpoint(tmp_path / "model.safetensors") as checkpoint:
        tree = structure.build_module_tree(checkpoint.tensors)
    layers = next(c for c in tree[0].children if c.name == "layers").children
    assert [(n.name, n.repeat) for n in layers] == [("{0..2}", 3), ("3", 1), ("4", 1), ("5", 1), ("6", 1)]


def test_module_tree_visits_each_tensor_once(deepseek: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Totals and signatures were recomputed at every level of the tree (and per sibling in a run of repeated
    # blocks): DeepSeek-V3's 92k tensors were each counted about six times over.
    calls = {"params": 0, "trie": 0}
    params, init = structure._Trie.params, structure._Trie.__init__

    def counting_params(self: structure._Trie, info: Any) -> int:
        calls["params"] += 1
        return params(self, info)

    def counting_init(self: structure._Trie, *args: Any, **kwargs: Any) -> None:
        calls["trie"] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(structure._Trie, "params", counting_params)
    monkeypatch.setattr(structure._Trie, "__init__", counting_init)
    with open_checkpoint(deepseek) as checkpoint:
        tree = structure.build_module_tree(checkpoint.tensors)
    assert sum(node.num_tensors for node in tree) == TENSORS
    assert calls["params"] == TENSORS
    names = json.loads((deepseek / "model.safetensors.index.json").read_text())["weight_map"]
    distinct_modules = {tuple(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 1)}
    assert calls["trie"] == len(distinct_modules) + 1  # one node per module, plus the root


def test_module_tree_and_rows_built_with_the_collector_paused(deepseek: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # 62k nodes and 92k rows that all stay alive: with the cyclic GC running, its collections walked them again
    # and again (more than half of the tree's time at full scale).
    import gc

    seen: set[bool] = set()
    init = structure._Trie.__init__

    def noting_init(self: structure._Trie, *args: Any, **kwargs: Any) -> None:
        seen.add(gc.isenabled())
        init(self, *args, **kwargs)

    monkeypatch.setattr(structure._Trie, "__init__", noting_init)
    assert gc.isenabled()
    with open_checkpoint(deepseek) as checkpoint:
        report = structure.inspect_checkpoint(checkpoint)
    assert seen == {False} and gc.isenabled()  # paused while building, running again after
    assert len(report.tensors) == TENSORS and report.module_tree[0].num_tensors == TENSORS - 1


def test_convert_dry_run_names_each_shard_once(deepseek: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor import convert

    named: list[str] = []
    real = convert.default_output_name

    def counting(source_file: str, fmt: str, dtype: str | None = None) -> str:
        named.append(source_file)
        return real(source_file, fmt, dtype)

    monkeypatch.setattr(convert, "default_output_name", counting)
    code, report = _json("convert", str(deepseek), "--dry-run", "--output", str(tmp_path / "out"))
    assert code == 0
    files = report["plan"]["files"]
    assert [f["filename"] for f in files] == [f"model-{k:05d}-of-{SHARDS:06d}.safetensors" for k in range(1, 7)]
    assert sum(f["num_tensors"] for f in files) == TENSORS
    assert sorted(named) == sorted(set(named)) and len(named) == SHARDS
    assert not (tmp_path / "out").exists()


def test_shard_dry_run_counts(deepseek: Path, tmp_path: Path) -> None:
    code, report = _json("shard", str(deepseek), "--dry-run", "--max", "5GB", "--output", str(tmp_path / "out"))
    assert code == 0
    shards = report["plan"]["shards"]
    assert [(s["filename"], s["num_tensors"]) for s in shards] == [
        ("model-00001-of-00003.safetensors", 188), ("model-00002-of-00003.safetensors", 89),
        ("model-00003-of-00003.safetensors", 2)]
    assert shards[0]["first"] == "model.embed_tokens.weight" and report["plan"]["num_tensors"] == TENSORS
    assert not (tmp_path / "out").exists()


def test_diff_keys_self_and_model_class(deepseek: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, same = _json("diff-keys", str(deepseek), str(deepseek))
    assert (code, same["matched"], same["missing"], same["unexpected"], same["worst_severity"]) == (
        0, TENSORS, [], [], None)

    pytest.importorskip("transformers")
    from transformers.core_model_loading import WeightConverter

    import weightdoctor.load_simulation as load_simulation

    # One converter copy per target the experts are stacked into, not one per expert weight (44k at full scale).
    copies = {"n": 0}
    real = load_simulation.copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        copies["n"] += isinstance(value, WeightConverter)
        return real(value, memo)

    monkeypatch.setattr(load_simulation.copy, "deepcopy", counting)
    code, report = _json("diff-keys", str(deepseek), "--model-class", "DeepseekV3ForCausalLM")
    assert code == 1  # scaled down, the MTP layer is model.layers.5, which transformers does not drop
    unexpected = report["unexpected"]
    import copy

    import torch
    import transformers
    from transformers.quantizers.auto import get_hf_quantizer

    # What this machine's transformers does with the fp8 weights: its quantizer's environment check (run by
    # get_hf_quantizer) keeps them on a GPU of compute capability 8.9 or above, and dequantizes them elsewhere.
    config = transformers.AutoConfig.from_pretrained(str(deepseek))
    quantizer, _, device_map = get_hf_quantizer(copy.deepcopy(config), None, None, True, {})
    kept = not quantizer.quantization_config.dequantize
    if kept:
        # Kept, its FP8Linear and FP8Experts hold each scale as a parameter of their own: every key of the model
        # it so prepares loads (the H100 run found the 71 matched and 120 unexpected scales this once said: the
        # model unprepared), and the MTP layer's tensors are the only unexpected ones.
        with torch.device("meta"):
            model = transformers.DeepseekV3ForCausalLM(copy.deepcopy(config))
            quantizer.preprocess_model(model=model, dtype=torch.bfloat16, device_map=device_map,
                                       checkpoint_files=None)
        assert (report["total_a"], report["matched"], report["missing"], report["mismatched"]) == (
            TENSORS, len(model.state_dict()), [], [])
        assert {u["name"].split(".")[2] for u in unexpected} == {str(LAYERS)}
        scales = [u for u in unexpected if u["name"].endswith("weight_scale_inv")]
        assert scales and {u["reason"] for u in scales} == {"quantization"}
    else:
        # Without one, from_pretrained dequantizes, merging each scale into its weight; DeepSeek-V3's
        # kv_a_proj_with_mqa (576 rows, 5 scale rows of 128) is not divisible by its scale grid, so transformers'
        # Fp8Dequantize raises for it and from_pretrained raises after its load report (transformers 5.x).
        assert (report["total_a"], report["matched"], report["mismatched"]) == (TENSORS, 66, [])
        missing = report["missing"]
        assert [m["name"] for m in missing] == [
            f"model.layers.{i}.self_attn.kv_a_proj_with_mqa.weight" for i in range(LAYERS)]
        assert all(m["severity"] == "error" and "not divisible by scale grid" in m["detail"] for m in missing)
        assert not [u for u in unexpected if u["name"].endswith("weight_scale_inv")]
        assert {u["name"].split(".")[2] for u in unexpected} == {str(LAYERS)}  # the MTP layer's tensors only
    if kept:
        # gate_up_proj and down_proj, and their scales (FP8Experts' gate_up_proj_scale_inv and down_proj_scale_inv),
        # stacked, for each of the 2 MoE layers the model has (not one per expert weight: 2 x 8 x 3 x 2 here)
        assert copies["n"] == 8
        assert any(note.startswith("8 keys are built by transformers' WeightConverters") for note in report["notes"])
    else:
        # Dequantizing, every fp8 weight is a converter's target (69 here), and the rename search for the MTP
        # layer's keys re-runs the load on fresh models (5 runs in all): one copy per target and run, where one
        # per source key would be 279 per run.
        assert copies["n"] < 2 * TENSORS


def test_plan_devices_eight_80gb_gpus(deepseek: Path) -> None:
    pytest.importorskip("transformers")
    code, report = _json("plan-devices", str(deepseek), *["--gpu", "80GB"] * 8)
    assert (code, report["verdict"], report["dtype"]) == (0, "fits-on-gpus", "bf16")
    assert report["model_class"] == "DeepseekV3ForCausalLM" and len(report["devices"]) == 8


def test_check_dtype_norms(deepseek: Path) -> None:
    code, report = _json("check-dtype", str(deepseek), "--sample", "64", "--filter", "norm")
    assert code == 0
    assert {name: t["verdict"] for name, t in report["targets"].items()} == {
        "fp16": "safe", "bf16": "safe", "fp32": "safe"}
    assert report["targets"]["fp16"]["tensors_checked"] == 6 * 4 + 4  # 4 per layer; norm, enorm, hnorm, head's
