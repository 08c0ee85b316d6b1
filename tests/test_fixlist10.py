"""Fix list 10: small gaps (a --reserve past a --gpu with no numbers, "never downloaded" said of a repo that may have
no weights, path suggestions that hung on listing order, dtype "auto" and --dtype on a pre-quantized checkpoint)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli

EXAMPLE = REPO_ROOT / "fixtures" / "example"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A copy of the tiny BERT model folder (config.json + model.safetensors)."""
    folder = tmp_path / "bert"
    shutil.copytree(EXAMPLE, folder)
    return folder


@pytest.mark.parametrize(("reserve", "gpus", "sizes"), [
    ("30GiB", ["24GiB"], "--reserve 30.00 GiB is as large as a GPU budget (--gpu 24.00 GiB)"),
    ("20GB", ["80GB", "16GB", "12GB"], "--reserve 20.00 GB is as large as a GPU budget (--gpu 12.00 GB)"),
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
        assert (f"; the snapshot holds {held} only, no model config nor weights: the repo may have no weights (a "
                "tokenizer-only or dataset-like repo?); if it has some, fetch them with `hf download acme/thing`") \
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
    real_iterdir = Path.iterdir

    def listed(order: list[str]) -> None:
        def iterdir(self: Path) -> Iterator[Path]:
            if self == folder:
                return (self / name for name in order)
            return real_iterdir(self)
        monkeypatch.setattr(Path, "iterdir", iterdir)

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
