"""fixlist13: small known gaps (verify's two kinds of mismatch, format choices, Lightning's consolidation folder,
mmcv EMA buffers, --config's revision, a mistyped @revision, a size with a space)."""
from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import run_cli


def _refusal(*args: str) -> str:
    result = run_cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return " ".join(result.stderr.split())


def test_verify_shows_sha256_mismatches_beside_crc_mismatches() -> None:
    """Human output showed only the CRC mismatches when both kinds were found; --json had both."""
    from weightdoctor.render.inspect import verify_line

    verify = SimpleNamespace(mismatches=[SimpleNamespace(file="a.bin", member="archive/data/0")],
                             hash_mismatches=["model.safetensors: sha256 abc, the index says def"],
                             members_checked=3, notes=[])
    line = verify_line(verify)
    assert "1 CRC mismatch[/]: a.bin:archive/data/0" in line, line
    assert "1 sha256 mismatch[/]: model.safetensors: sha256 abc, the index says def" in line, line
    only_hash = verify_line(SimpleNamespace(mismatches=[], hash_mismatches=["x: y"], members_checked=1, notes=[]))
    assert only_hash == "[bold red]1 sha256 mismatch[/]: x: y"


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(4, 4)}, str(path))
    return path


@pytest.mark.parametrize(("command", "option"), [("convert", "--to"), ("shard", "--format")])
def test_an_unknown_output_format_is_refused_as_every_other_choice(small_model: Path, tmp_path: Path,
                                                                   command: str, option: str) -> None:
    """Said "choose safetensors or bin" where --fail-on, --strategy... say "choose one of ...; did you mean"."""
    extra = ["--single"] if command == "shard" else []
    message = _refusal(command, str(small_model), "-o", str(tmp_path / "out"), *extra, option, "safetensorz")
    assert message == f"error: {option} 'safetensorz': choose one of safetensors, bin; did you mean 'safetensors'?"
    assert not (tmp_path / "out").exists()


def test_lightning_sharded_checkpoints_name_the_real_folder_to_consolidate(tmp_path: Path) -> None:
    """Both the Fabric and the Trainer message said `consolidate_checkpoint FOLDER` and `FOLDER.consolidated`."""
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "epoch=0 step=10.ckpt"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {"l1.weight": torch.randn(4, 2)}}, checkpoint_id=str(folder), no_dist=True)
    torch.save({"iter": 10}, folder / "meta.pt")
    quoted, out = shlex.quote(str(folder)), shlex.quote(str(folder) + ".consolidated")
    message = _refusal("inspect", str(folder))
    assert f"python -m lightning.fabric.utilities.consolidate_checkpoint {quoted} writes them as one {out} file" \
        in message, message
    assert "FOLDER" not in message, message
    torch.save({"epoch": 0, "global_step": 10, "pytorch-lightning_version": "2.4.0", "loops": {}}, folder / "meta.pt")
    message = _refusal("inspect", str(folder))
    assert f"python -m lightning.pytorch.utilities.consolidate_checkpoint {quoted} writes them as one {out} file" \
        in message, message
    assert "FOLDER" not in message, message


def _cache_repo(tmp_path: Path, refs: list[str]) -> None:
    """`acme/tiny` in a Hub cache under tmp_path (one safetensors file), one snapshot named by each of `refs`."""
    from safetensors.torch import save_file

    commit = "1" * 40
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(0)
    save_file({"w": torch.randn(4, 4)}, str(repo / "snapshots" / commit / "model.safetensors"))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.mark.parametrize("address", ["hf://acme/tiny@mian", "acme/tiny@mian"])
def test_a_mistyped_revision_in_an_address_is_corrected_in_the_address(tmp_path: Path, address: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf://acme/tiny@mian` suggested `--revision main`, which beside @mian is refused as two revisions."""
    _cache_repo(tmp_path, ["main"])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meant = address.replace("@mian", "@main")
    message = _refusal("inspect", address)
    assert message.endswith(f"; did you mean {meant} (cached)?"), message
    assert "--revision main" not in message, message
    # Given as --revision, the hint stays --revision.
    message = _refusal("inspect", "acme/tiny", "--revision", "mian")
    assert message.endswith("; did you mean --revision main (cached)?"), message


@pytest.mark.parametrize(("unit", "meant"), [("Gb", "24GB"), ("gb", "24GB"), ("GiB", "24GiB"), ("gib", "24gib")])
def test_a_size_split_in_two_is_joined_as_a_size_that_parses(small_model: Path, unit: str, meant: str) -> None:
    """`--gpu 24 Gb` suggested `--gpu 24Gb`, which parse_size then refuses as bits."""
    from weightdoctor.units import parse_size

    message = _refusal("plan-devices", str(small_model), "--gpu", "24", unit)
    assert f"--gpu 24 {unit}: a size is one word, --gpu {meant} (the shell split it in two)" in message, message
    assert parse_size(meant) in (24 * 10**9, 24 * 2**30)


def test_config_naming_a_revision_and_another_revision_flag_is_refused(small_model: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config hf://org/m@v1 --revision main` read v1 without a word, where SOURCE refuses the same conflict."""
    monkeypatch.setenv("HF_HUB_CACHE", str(small_model.parent / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _refusal("diff-keys", str(small_model), "--model-class", "BertModel", "--config", "hf://acme/tiny@v1",
                       "--revision", "main")
    assert message == "error: --config hf://acme/tiny@v1 names revision 'v1' and --revision 'main': give one", message
    # The same revision twice is no conflict: it goes on to look for the config (not cached here).
    message = _refusal("diff-keys", str(small_model), "--model-class", "BertModel", "--config", "hf://acme/tiny@v1",
                       "--revision", "v1")
    assert "give one" not in message and "'acme/tiny'" in message, message


def _quantized_model(folder: Path, quantization: dict[str, object], names: list[str], dtype: torch.dtype) -> Path:
    import json

    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": quantization}))
    save_file({name: torch.zeros(8, 4, dtype=dtype) for name in names}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("method", ["compressed-tensors", "gptq"])
def test_a_pattern_time_limit_reached_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """When the time limit for matching the config's patterns ran out (a slow CI box), the output said only "bits
    per value unknown": now a warning says the limit was reached and how many patterns / layers were left."""
    import json

    import weightdoctor.quantized as quantized

    if method == "gptq":
        quantization = {"quant_method": "gptq", "bits": 4, "group_size": 128,
                        "dynamic": {r"+:.*mlp.*": {"bits": 8}, r"+:.*attn.*": {"bits": 2}}}
        names = ["model.layers.0.mlp.up_proj.qweight", "model.layers.0.self_attn.q_proj.qweight"]
        dtype, what = torch.int32, "quantization_config.dynamic's patterns"
    else:
        quantization = {"quant_method": "compressed-tensors", "config_groups": {
            "g0": {"weights": {"num_bits": 4}, "targets": ["re:.*mlp.*"]},
            "g1": {"weights": {"num_bits": 8}, "targets": ["re:.*attn.*"]}}}
        names = ["model.layers.0.mlp.up_proj.weight_packed", "model.layers.0.self_attn.q_proj.weight_packed"]
        dtype, what = torch.uint8, "quantization_config.config_groups' `re:` targets"
    folder = _quantized_model(tmp_path / "q", quantization, names, dtype)
    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    assert not any("time limit" in w for w in json.loads(result.stdout)["warnings"])  # in time: nothing said
    monkeypatch.setattr(quantized, "_PATTERN_SECONDS", -1.0)  # the limit reached before the first pattern
    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["quantized"]["parameters"] is None and "warnings" not in data["quantized"]  # no new key
    patterns = "2 of 2 patterns not compiled, "  # none compiled before the limit: every layer left
    [warning] = [w for w in data["warnings"] if "time limit" in w]
    assert warning == (f"{what}: the -1 s time limit for matching them was reached; {patterns}2 of 2 packed "
                       "layers left unmatched, their bits per value unknown (a slower machine reaches the limit "
                       "sooner, so it may answer differently)")
    human = run_cli("inspect", str(folder))
    assert "time limit for matching them was reached" in " ".join(human.stdout.split() + human.stderr.split())


def test_mmcv_ema_buffers_missing_from_a_plain_checkpoint_are_buffers(tmp_path: Path) -> None:
    """B trained with mmcv's EMAHook (`ema_backbone_conv1_weight` beside `backbone.conv1.weight`), A plain: the
    ema_* keys were `unknown` errors, though the hook re-creates them from the parameters A has."""
    import json

    torch.manual_seed(0)
    plain = {"backbone.conv1.weight": torch.randn(4, 3, 3, 3), "backbone.bn1.running_mean": torch.zeros(4),
             "head.fc.weight": torch.randn(2, 4)}
    ema = {**plain, **{"ema_" + name.replace(".", "_"): value.clone() for name, value in plain.items()
                       if not name.endswith("running_mean")}, "ema_stray_weight": torch.randn(2)}
    torch.save({"state_dict": plain}, tmp_path / "a.pth")
    torch.save({"state_dict": ema}, tmp_path / "b.pth")
    result = run_cli("diff-keys", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--json")
    data = json.loads(result.stdout)
    missing = {item["name"]: item for item in data["missing"]}
    for buffer, param in [("ema_backbone_conv1_weight", "backbone.conv1.weight"), ("ema_head_fc_weight",
                                                                                   "head.fc.weight")]:
        assert (missing[buffer]["reason"], missing[buffer]["severity"]) == ("buffer", "info"), missing[buffer]
        assert f"mmcv EMAHook's copy of {param}, which A has" in missing[buffer]["detail"], missing[buffer]
    # An ema_ name that copies no parameter is no EMAHook buffer: still unknown.
    assert missing["ema_stray_weight"]["reason"] == "unknown", missing["ema_stray_weight"]
