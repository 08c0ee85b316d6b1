"""One `--fail-on info|warn|error` every command takes, so that a CI script can pass the same flag to each.

`plan-devices` took only `offload|no-fit`, `check-dtype` only `unsafe|lossy`, `inspect --stats` only `warn|error`, and
`convert` / `shard` no `--fail-on` at all: `--fail-on warn` was exit 2 (usage) with an empty stdout from four of the
six commands, `--fail-on info` from five. Each command now weighs what it already reports against the three
severities (README, "`--fail-on`: one flag for every command"):

| command | info | warn | error |
|---------|------|------|-------|
| inspect --stats, diff-keys | findings / differences of that severity | | |
| plan-devices | fits-on-cpu | needs-cpu-offload, needs-disk-offload | does-not-fit, an error finding |
| check-dtype | (none) | lossy | unsafe |
| convert, shard | (none) | every warning printed | (none: a failed write is exit 2) |

Every case runs on real files (safetensors written here, the example BERT) in text and --json modes, and checks the
exit code and that what drives it is in the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import REPO_ROOT, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE = REPO_ROOT / "fixtures" / "example"
LEVELS = ("info", "warn", "error")
RANK = {None: -1, "info": 0, "warn": 1, "error": 2}


def _reaches(worst: str | None, level: str) -> bool:
    return RANK[worst] >= RANK[level]


def _trained_looking(generator: torch.Generator) -> dict[str, torch.Tensor]:
    # Cubed normals: heavy-tailed, no initializer's shape, so inspect --stats finds nothing to say about them.
    return {"layer.weight": (torch.randn(64, 64, generator=generator) ** 3 * 0.05).contiguous(),
            "layer.bias": torch.randn(64, generator=generator) * 0.01}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> a safetensors file (seeded) that gives one command a finding of one severity, or none."""
    tmp = tmp_path_factory.mktemp("fail_on")
    made: dict[str, Path] = {}

    def save(name: str, tensors: dict[str, torch.Tensor]) -> None:
        made[name] = tmp / f"{name}.safetensors"
        save_file(tensors, str(made[name]))

    generator = torch.Generator().manual_seed(0)
    clean = _trained_looking(generator)
    save("clean", clean)
    # inspect --stats: an additive attention mask's -inf (info), a constant matrix (warn), a NaN (error).
    mask = torch.zeros(8, 8).masked_fill(torch.triu(torch.ones(8, 8, dtype=torch.bool), 1), float("-inf"))
    save("mask", {**clean, "attn.mask": mask})
    save("constant", {**clean, "proj.weight": torch.full((16, 16), 0.5)})
    nan = {name: tensor.clone() for name, tensor in clean.items()}
    nan["layer.weight"][0, 0] = float("nan")
    save("nan", nan)
    # diff-keys, each loaded into `clean` (or `vocab_b`): the same keys (nothing), a key B does not have (info),
    # a grown vocabulary (warn), a key of B missing from A (error).
    save("same", {name: tensor.clone() for name, tensor in clean.items()})
    save("extra", {**clean, "extra.weight": torch.ones(4)})
    save("missing", {"layer.weight": clean["layer.weight"]})
    save("vocab_a", {"model.embed_tokens.weight": torch.randn(1010, 16, generator=generator),
                     "model.norm.weight": torch.ones(16)})
    save("vocab_b", {"model.embed_tokens.weight": torch.randn(1000, 16, generator=generator),
                     "model.norm.weight": torch.ones(16)})
    # check-dtype --target fp16: quarters up to 16 are exact (safe), normals round (lossy), 1e6 overflows (unsafe).
    quarters = torch.arange(64, dtype=torch.float32).reshape(8, 8) / 4
    save("dtype_safe", {"w": quarters})
    save("dtype_lossy", {"w": torch.randn(8, 8, generator=generator)})
    overflow = quarters.clone()
    overflow[0, 0] = 1e6
    save("dtype_unsafe", {"w": overflow})
    return made


def _run(args: list[Any], level: str, json_mode: bool) -> tuple[int, str, str, Any]:
    """(exit code, stdout, stderr, parsed JSON or None) of `weightdoctor ARGS --fail-on LEVEL [--json]`."""
    result = run_cli(*map(str, args), "--fail-on", level, *(["--json"] if json_mode else []))
    data = json.loads(result.stdout) if json_mode else None  # stdout stays one clean JSON object
    return result.exit_code, result.stdout, result.stderr, data


# --- inspect --stats ---------------------------------------------------------------------------------------------

INSPECT_CASES = {"clean": (None, None), "mask": ("info", "mask-inf"), "constant": ("warn", "constant"),
                 "nan": ("error", "nan-inf")}


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", list(INSPECT_CASES))
def test_inspect_stats_fails_on_each_severity(files: dict[str, Path], case: str, level: str, json_mode: bool) -> None:
    worst, code = INSPECT_CASES[case]
    exit_code, stdout, stderr, data = _run(["inspect", files[case]], level, json_mode)
    assert exit_code == int(_reaches(worst, level)), (case, level, stderr)
    if json_mode:
        assert [(f["severity"], f["code"]) for f in data["findings"]] == ([(worst, code)] if code else [])
    elif code:
        assert code in stdout, stdout
    else:
        assert not any(other in stdout for _, other in INSPECT_CASES.values() if other), stdout


# --- diff-keys -----------------------------------------------------------------------------------------------------

DIFF_CASES = {"same": ("clean", None, None), "extra": ("clean", "info", "extra.weight"),
              "vocab_a": ("vocab_b", "warn", "model.embed_tokens.weight"), "missing": ("clean", "error", "layer.bias")}


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", list(DIFF_CASES))
def test_diff_keys_fails_on_each_severity(files: dict[str, Path], case: str, level: str, json_mode: bool) -> None:
    b, worst, name = DIFF_CASES[case]
    exit_code, stdout, stderr, data = _run(["diff-keys", files[case], files[b]], level, json_mode)
    assert exit_code == int(_reaches(worst, level)), (case, level, stderr)
    if json_mode:
        assert data["worst_severity"] == worst
        if name:
            assert any(g["example"] == name and g["severity"] == worst for g in data["groups"]), data["groups"]
    elif name:
        assert name in stdout, stdout


# --- plan-devices --------------------------------------------------------------------------------------------------

# The example's 1.1 MB of weights under budgets that give each verdict, and the severity the verdict weighs.
PLAN_CASES = {
    "fits-on-gpus": (["--gpu", "2MB"], None, "fits on the GPUs"),
    "fits-on-cpu": (["--cpu", "2MB"], "info", "fits on the CPU"),
    "needs-cpu-offload": (["--gpu", "600KB", "--cpu", "2MB"], "warn", "needs CPU offload"),
    "does-not-fit": (["--gpu", "100KB", "--cpu", "100KB"], "error", "does not fit"),
}


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("verdict", list(PLAN_CASES))
def test_plan_devices_fails_on_each_severity(verdict: str, level: str, json_mode: bool) -> None:
    budget, worst, said = PLAN_CASES[verdict]
    exit_code, stdout, stderr, data = _run(["plan-devices", EXAMPLE, *budget], level, json_mode)
    assert exit_code == int(_reaches(worst, level)), (verdict, level, stderr)
    if json_mode:
        assert data["verdict"] == verdict and data["findings"] == []
    else:
        assert f"verdict: {said}" in stdout, stdout


@pytest.mark.parametrize("verdict", list(PLAN_CASES))
def test_plan_devices_old_levels_are_the_severities_they_always_were(verdict: str) -> None:
    """`offload` exits where `info` does, `no-fit` where `error` does: the verdict words keep working as before."""
    budget = PLAN_CASES[verdict][0]
    codes = {level: _run(["plan-devices", EXAMPLE, *budget], level, True)[0] for level in ("offload", "no-fit")}
    assert codes == {"offload": int(verdict != "fits-on-gpus"), "no-fit": int(verdict == "does-not-fit")}


def test_plan_devices_error_finding_fails_at_every_level(tmp_path: Path) -> None:
    """An invalid --map is exit 1 with or without --fail-on; its finding is an error, and stays exit 1 at each."""
    device_map = tmp_path / "map.json"
    device_map.write_text('{"bert": 0}')  # leaves the classifier out
    for level in LEVELS:
        exit_code, _, stderr, data = _run(["plan-devices", EXAMPLE, "--gpu", "1GB", "--map", device_map], level, True)
        assert exit_code == 1, (level, stderr)
        assert [(f["severity"], f["code"]) for f in data["findings"]] == [("error", "not-covered")]


# --- check-dtype ---------------------------------------------------------------------------------------------------

DTYPE_CASES = {"dtype_safe": ("safe", None), "dtype_lossy": ("lossy", "warn"), "dtype_unsafe": ("unsafe", "error")}


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("level", [*LEVELS, "lossy", "unsafe"])
@pytest.mark.parametrize("case", list(DTYPE_CASES))
def test_check_dtype_fails_on_each_severity(files: dict[str, Path], case: str, level: str, json_mode: bool) -> None:
    verdict, worst = DTYPE_CASES[case]
    exit_code, stdout, stderr, data = _run(["check-dtype", files[case], "--target", "fp16"], level, json_mode)
    # lossy is warn, unsafe error; no verdict is info, so `info` fails where `warn` does.
    wanted = {"info": worst is not None, "warn": worst is not None, "error": worst == "error",
              "lossy": verdict != "safe", "unsafe": verdict == "unsafe"}[level]
    assert exit_code == int(wanted), (case, level, stderr)
    if json_mode:
        assert data["targets"]["fp16"]["verdict"] == verdict
    else:
        assert verdict in stdout, stdout


# --- convert and shard ---------------------------------------------------------------------------------------------

WRITER_CASES = {
    "convert-clean": (["convert", "{clean}", "-o", "{out}/out.safetensors"], None),
    "convert-warns": (["convert", "{clean}", "-o", "{out}/out.bin", "--metadata", "a=b"],
                      "a .bin file holds no metadata: --metadata is ignored"),
    "shard-clean": (["shard", "{clean}", "-o", "{out}/shards", "--max", "1MB"], None),
    "shard-warns": (["shard", "{clean}", "-o", "{out}/shards", "--max", "10KB"],
                    "layer.weight (16.38 KB) is larger than --max 10KB: it gets a shard of its own"),
}


@pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", list(WRITER_CASES))
def test_writers_fail_on_their_warnings_once_written(files: dict[str, Path], tmp_path: Path, case: str, level: str,
                                                    json_mode: bool) -> None:
    template, warning = WRITER_CASES[case]
    args = [a.format(clean=files["clean"], out=tmp_path) for a in template]
    exit_code, stdout, stderr, data = _run(args, level, json_mode)
    # Every warning weighs `warn`; nothing is `error` (a write that fails is exit 2).
    assert exit_code == int(warning is not None and level in ("info", "warn")), (case, level, stderr)
    if warning is None:
        assert "warning:" not in stderr
    else:
        assert f"warning: {warning}" in stderr
    if json_mode:
        assert data["warnings"] == ([warning] if warning else [])
    # Written and verified all the same, at exit 1 as at 0: the exit code is the only thing --fail-on changes.
    written = Path(args[args.index("-o") + 1])
    reread: dict[str, torch.Tensor] = {}
    for weights in sorted(written.glob("*.safetensors")) if written.is_dir() else [written]:
        reread |= torch.load(weights, weights_only=True) if weights.suffix == ".bin" else load_file(str(weights))
    assert torch.equal(reread["layer.bias"], load_file(str(files["clean"]))["layer.bias"])


def test_writer_fail_on_is_checked_before_anything_is_written(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", str(files["clean"]), "-o", str(out), "--fail-on", "offload")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == "error: --fail-on 'offload': choose one of info, warn, error"
    assert not out.exists()


# --- the same flag everywhere: accepted, refused alike, documented -------------------------------------------------

ACCEPTED = {"inspect": "info, warn, error", "diff-keys": "info, warn, error",
            "plan-devices": "info, warn, error, offload, no-fit", "check-dtype": "info, warn, error, unsafe, lossy",
            "convert": "info, warn, error", "shard": "info, warn, error"}


def _args(command: str, files: dict[str, Path], out: Path) -> list[str]:
    clean = str(files["clean"])
    return {"inspect": ["inspect", clean], "diff-keys": ["diff-keys", clean, clean],
            "plan-devices": ["plan-devices", str(EXAMPLE), "--gpu", "2MB"],
            "check-dtype": ["check-dtype", str(files["dtype_safe"]), "--target", "fp16"],
            "convert": ["convert", clean, "-o", str(out / "c.safetensors")],
            "shard": ["shard", clean, "-o", str(out / "s"), "--max", "1MB"]}[command]


@pytest.mark.parametrize("command", list(ACCEPTED))
def test_every_command_accepts_warn_and_refuses_an_unknown_level_in_one_line(
    files: dict[str, Path], tmp_path: Path, command: str
) -> None:
    accepted = run_cli(*_args(command, files, tmp_path), "--fail-on", "WARN", "--json")  # case aside, as before
    assert accepted.exit_code == 0, accepted.stderr
    json.loads(accepted.stdout)
    refused = run_cli(*_args(command, files, tmp_path / "again"), "--fail-on", "bogus", "--json")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [f"error: --fail-on 'bogus': choose one of {ACCEPTED[command]}"]


@pytest.mark.parametrize("command", list(ACCEPTED))
def test_help_of_every_command_names_the_three_severities(command: str) -> None:
    import click
    import typer

    group = typer.main.get_command(__import__("weightdoctor.cli", fromlist=["app"]).app)
    with click.Context(group) as context:
        (option,) = [p for p in group.get_command(context, command).params if "--fail-on" in p.opts]
    assert all(level in option.help for level in LEVELS), option.help
    assert "--fail-on" in run_cli(command, "--help").stdout
