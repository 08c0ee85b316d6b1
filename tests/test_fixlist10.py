"""Fix list 10: small gaps (a --reserve past a --gpu with no numbers, "never downloaded" said of a repo that may have
no weights, path suggestions that hung on listing order, dtype "auto" and --dtype on a pre-quantized checkpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, copy_example, run_cli

EXAMPLE = REPO_ROOT / "fixtures" / "example"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


@pytest.mark.parametrize(("reserve", "gpus", "sizes"), [
    ("30GiB", ["24GiB"], "--reserve 30.00 GiB is larger than a GPU budget (--gpu 24.00 GiB)"),
    ("20GB", ["80GB", "16GB", "12GB"], "--reserve 20.00 GB is larger than a GPU budget (--gpu 12.00 GB)"),
    ("8GB", ["8GB"], "--reserve 8.00 GB is as large as a GPU budget (--gpu 8.00 GB)"),
])
def test_a_reserve_past_a_gpu_names_both_sizes(model: Path, reserve: str, gpus: list[str], sizes: str) -> None:
    """The message said only "--reserve is as large as a GPU budget": which GPU, and by how much, was left out."""
    args = [arg for size in gpus for arg in ("--gpu", size)]
    result = run_cli("plan-devices", model, *args, "--reserve", reserve)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {sizes}: nothing would be left to place; give a --reserve smaller "
                                     "than every --gpu")


def _cache_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> None:
    from fixtures.hub_cache import commit_of, write_snapshot

    cache = tmp_path / "hub"
    write_snapshot(cache, "acme/thing", commit_of("only"), files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("files", [
    {"tokenizer.json": b"{}", "tokenizer_config.json": b"{}", "special_tokens_map.json": b"{}"},
    {"README.md": b"# a dataset-like repo\n", ".gitattributes": b""},
])
def test_a_cached_repo_with_no_model_config_does_not_claim_the_weights_were_never_downloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> None:
    """A tokenizer-only or README-only repo has no weights to download: "the weights were never downloaded" was a
    false claim; the line says what the cache holds and that the repo may have none."""
    _cache_with(tmp_path, monkeypatch, files)
    held = ", ".join(sorted(files))
    for command in ("inspect", "check-dtype"):
        result = run_cli(command, "acme/thing")
        assert result.exit_code == 2
        line = result.stderr.strip()
        assert "\n" not in line and "never downloaded" not in line
        assert line.startswith("error: acme/thing: folder holds no weight file")
        assert (f"; the snapshot holds {held} only, neither a model config nor weights: the repo may have no "
                "weights (a tokenizer-only or dataset-like repo?); if it has some, fetch them with "
                "`hf download acme/thing`") \
            in line


def test_a_cached_repo_with_its_config_still_says_the_weights_were_never_downloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_with(tmp_path, monkeypatch, {"config.json": (EXAMPLE / "config.json").read_bytes(),
                                        "tokenizer.json": b"{}"})
    line = run_cli("inspect", "acme/thing").stderr.strip()
    assert ("; the snapshot holds config.json, tokenizer.json only: the weights were never downloaded; fetch them "
            "with `hf download acme/thing`") in line


def test_a_path_suggestion_does_not_depend_on_listing_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first 10,000 names in listing order were compared: with the close name listed 10,001st there was no
    suggestion, listed first there was one. Every name is looked at now, the same in any order."""
    import time

    from weightdoctor.checkpoint.hub import close_local_paths

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "bert-base-uncased").mkdir()
    names = [f"img_{i:06d}.png" for i in range(12_000)] + ["bert-base-uncased"]
    import contextlib
    import os
    from types import SimpleNamespace

    real_scandir = os.scandir

    def listed(order: list[str]) -> None:
        # close_local_paths lists with os.scandir (streamed, so the cap bounds what is read): fake its order.
        def scandir(path: str | os.PathLike[str] = ".") -> contextlib.AbstractContextManager[Iterator[object]]:
            if Path(path) == folder:
                return contextlib.nullcontext(SimpleNamespace(name=name) for name in order)
            return real_scandir(path)
        monkeypatch.setattr(os, "scandir", scandir)

    typed = str(folder / "bert-base-uncsed")
    for order in (names, names[::-1]):
        listed(order)
        assert close_local_paths(typed) == [str(folder / "bert-base-uncased")]
    listed(names)
    result = run_cli("inspect", typed)
    assert result.exit_code == 2 and f"did you mean {folder / 'bert-base-uncased'}?" in result.stderr

    # Still quick on a large folder: 100,000 names whose lengths are all within difflib's reach.
    crowded = [f"bert-base-{i:06d}" for i in range(100_000)] + ["bert-base-uncased"]
    listed(crowded)
    start = time.perf_counter()
    close = close_local_paths(typed)
    assert time.perf_counter() - start < 1.0
    assert close[0] == str(folder / "bert-base-uncased")
    listed(crowded[::-1])
    assert close_local_paths(typed) == close


@pytest.mark.parametrize("field", ["dtype", "torch_dtype"])
def test_a_config_dtype_of_auto_is_planned_with_a_warning_naming_the_field(model: Path, field: str) -> None:
    """`"dtype": "auto"` in config.json: transformers' config reads it as getattr(torch, "auto") and from_pretrained
    raises AttributeError; the plan went on at the weights' dtype and said nothing. It still plans (what loads once
    the field is fixed) and the warning names the field, what from_pretrained does, and the fix."""
    import json

    from tests.helpers import run_json

    config = json.loads((model / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    config[field] = "auto"
    (model / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", model, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp32"  # the example's weights are float32
    auto = [line for line in data["warnings"] if '"auto"' in line]
    assert len(auto) == 1
    assert auto[0].startswith(f'config.json sets "{field}": "auto", which transformers ')
    assert auto[0].endswith(": AutoConfig.from_pretrained and from_pretrained raise AttributeError (module 'torch' "
                            "has no attribute 'auto') unless they are given a real dtype "
                            "(dtype=torch.float32 replaces the field); planned at fp32; set "
                            f'"{field}" to "float32" in config.json (or remove it) to load it')
    # The claim, checked against the installed transformers.
    import transformers

    with pytest.raises(AttributeError, match="has no attribute 'auto'"):
        transformers.AutoConfig.from_pretrained(model)
    # A real dtype is not warned about.
    config[field] = "float32"
    (model / "config.json").write_text(json.dumps(config))
    assert not [line for line in run_json("plan-devices", model, "--gpu", "1GB")[1]["warnings"] if "auto" in line]


def test_a_float_dtype_on_a_pre_quantized_checkpoint_warns_that_it_sizes_the_dense_weights(tmp_path: Path) -> None:
    """--dtype bf16 on a 4-bit GPTQ checkpoint planned the dense model with no word that from_pretrained keeps the
    packed weights packed (dtype sets only the unquantized rest)."""
    from tests.helpers import run_json
    from tests.test_plan_devices_prequantized import write_gptq_llama

    folder = tmp_path / "gptq"
    tensors = write_gptq_llama(folder)
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    from weightdoctor.units import format_bytes

    code, dense = run_json("plan-devices", folder, "--gpu", "1GB", "--dtype", "bf16")
    assert code == 0 and dense["dtype"] == "bf16"
    assert (f"--dtype bf16 on a pre-quantized checkpoint (gptq, 4-bit) sizes the dense weights, every Linear at "
            f"bf16: from_pretrained keeps them packed (int4; dtype sets only the unquantized rest), so this "
            f"over-sizes them; the checkpoint stores {format_bytes(stored)}; without --dtype it is planned as int4, "
            "as it loads") in dense["warnings"]
    code, default = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and default["dtype"] == "int4"
    assert not [line for line in default["warnings"] if line.startswith("--dtype")]
    assert default["weights_bytes"] < dense["weights_bytes"]  # the over-sizing the warning speaks of


def test_a_config_alone_with_dtype_auto_names_no_dtype_it_did_not_read(model: Path, tmp_path: Path) -> None:
    """A config.json planned alone (no weights read): the fix cannot name the weights' dtype, and "config.json
    names no dtype ... from_pretrained(dtype="auto") loads at the first weight file's dtype" was not true of it."""
    import json

    from tests.helpers import run_json

    config = json.loads((model / "config.json").read_text())
    config["dtype"] = "auto"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", alone / "config.json", "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp32"
    assert not [line for line in data["warnings"] if "names no dtype" in line]
    assert [line for line in data["warnings"] if '"auto"' in line][0].endswith(
        "unless they are given a real dtype, which replaces the field; planned at fp32 (no weights were "
        "read; --dtype plans another); set \"dtype\" "
        "to the weights' dtype in config.json (or remove it) to load it")
