"""The hostile corpus: each file detected, the right globals named, nothing run; benign files pass."""

from __future__ import annotations

import _compat_pickle
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fixtures.hostile import HostileCase, build_hostile
from tests.helpers import REPO_ROOT, run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.errors import UnsafePickle
from weightdoctor.security import scan_file


def _named(report_globals: list) -> set[str]:  # type: ignore[type-arg]
    """Flagged globals, with Python 2 names (`__builtin__`, `commands`) mapped as pickle maps them."""
    names = set()
    for g in report_globals:
        if g.safety != "safe":
            module, name = _compat_pickle.NAME_MAPPING.get((g.module, g.name), (g.module, g.name))
            names.add(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
    return names


def test_corpus_is_large_and_varied(hostile: list[HostileCase]) -> None:
    assert len(hostile) >= 40
    protocols = {name.split("-p")[-1][0] for name in (c.name for c in hostile) if "-p" in name}
    assert protocols >= set("012345")


def test_every_hostile_file_is_detected_with_its_globals(hostile: list[HostileCase], sentinel: Path) -> None:
    failures = []
    for case in hostile:
        report = scan_file(case.path)
        named = _named(report.globals)
        if report.verdict != case.verdict or not case.expected <= named:
            want = sorted(case.expected)
            failures.append(f"{case.name}: verdict {report.verdict}, named {sorted(named)}, want {want}")
        if case.verdict == "dangerous":
            assert all(g.member and g.offset >= 0 for g in report.globals if g.safety != "safe")
    assert not failures, "\n".join(failures)
    assert not sentinel.exists(), "a payload ran while scanning"


def test_reader_refuses_every_hostile_file(hostile: list[HostileCase], sentinel: Path) -> None:
    for case in hostile:
        with pytest.raises(UnsafePickle) as caught:
            open_checkpoint(case.path)
        message = caught.value.one_line()
        assert message.count("\n") == 0
        assert message.split(": ", 2)[1].startswith(case.verdict) or f": {case.verdict}:" in message, message
        assert "nothing was unpickled" in message
        for name in case.expected:
            assert name.rpartition(".")[2] in message, (case.name, message)
    assert not sentinel.exists(), "a payload ran while reading"


def test_cli_exits_2_with_one_line_naming_the_verdict(hostile: list[HostileCase], sentinel: Path) -> None:
    for case in hostile:
        for args in (("inspect", case.path), ("inspect", case.path, "--json")):
            result = run_cli(*args)
            assert result.exit_code == 2, (case.name, result.stdout, result.stderr)
            assert result.stdout == ""
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, (case.name, result.stderr)
            assert case.verdict in lines[0] and case.path.name in lines[0]
            assert "Traceback" not in result.stderr
    assert not sentinel.exists(), "a payload ran under the CLI"


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """The control that makes the sentinel meaningful: unpickled for real, the payloads do run."""
    live = tmp_path / "LIVE"
    cases = {c.name: c for c in build_hostile(tmp_path / "corpus", live)}
    chosen = [c for c in cases.values() if c.name.endswith(("-p0.pkl", "-p0.pt", "-p0.bin", "-p0.pth", "-p0.ckpt"))]
    chosen += [cases[n] for n in ("memo-binput.pkl", "memo-long-binput.pkl", "memo-memoize-frame.pkl",
                                  "memo-text-put-get.pkl", "inst-opcode.pkl", "obj-opcode.pkl", "eval-p5.ckpt")]
    torch_loaded = [cases[n] for n in ("zip-os-system.pt", "legacy-eval.bin", "zip-odd-bad-crc.pt",
                                       "zip-odd-renamed-local-header.pt", "zip-odd-central-directory-version.pt",
                                       "pickle-before-zip.pt", "zip-differential-central-directory.pt",
                                       "legacy-tar-format.tar.pt", "legacy-payload-in-sys-info.bin")]
    script = textwrap.dedent(
        """
        import os, pickle, sys, time, torch
        live, mode, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
        ran = []
        for path in paths:
            try:
                if mode == "pickle":
                    with open(path, "rb") as handle:
                        pickle.load(handle)
                else:
                    torch.load(path, weights_only=False)
            except Exception:
                pass
            for _ in range(100):
                if os.path.exists(live):
                    break
                time.sleep(0.02)
            ran.append(os.path.exists(live))
            if os.path.exists(live):
                os.remove(live)
        print(" ".join("1" if r else "0" for r in ran))
        """
    )
    for mode, group in (("pickle", chosen), ("torch", torch_loaded)):
        proc = subprocess.run([sys.executable, "-c", script, str(live), mode, *(str(c.path) for c in group)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        ran = proc.stdout.split()
        assert ran == ["1"] * len(group), (mode, [c.name for c in group], proc.stdout, proc.stderr[-2000:])


def test_differential_zip_fools_zipfile_not_the_scanner(hostile: list[HostileCase]) -> None:
    import zipfile

    case = next(c for c in hostile if c.name == "zip-differential-central-directory.pt")
    with zipfile.ZipFile(case.path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        assert len(pickles) == 1 and b"system" not in archive.read(pickles[0])  # zipfile sees the decoy only
    report = scan_file(case.path)
    assert report.verdict == "dangerous"
    assert any("different contents to different readers" in p.message for p in report.problems)


def test_benign_fixtures_are_safe(fx: dict[str, Path], benign: list[Path]) -> None:
    files = sorted(p for key in ("bert-bin", "gpt2-bin", "roberta-bin", "bert-sharded-bin", "files")
                   for p in fx[key].iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    assert len(files) >= 9
    for path in files + benign:
        report = scan_file(path)
        assert report.verdict == "safe", (path.name, report.summary())
        assert report.globals and all(g.safety == "safe" for g in report.globals)
        assert "torch._utils._rebuild_tensor_v2" in {g.qualified for g in report.globals}


def test_benign_numpy_checkpoint_opens(benign: list[Path]) -> None:
    for path in (p for p in benign if p.name in ("numpy-p2.pt", "numpy-legacy.pt")):
        checkpoint = open_checkpoint(path)
        assert checkpoint.nested_key == "model_state_dict"
        assert checkpoint.security is not None and checkpoint.security.verdict == "safe"
        assert any(g.module.startswith("numpy") for g in checkpoint.security.globals)


def test_protocol_above_2_loads_through_the_restricted_fallback(benign: list[Path]) -> None:
    """torch's weights_only loader implements protocol 2 only; a file the scan vouches for still opens,
    through an unpickler restricted to the same safe globals (see tests/test_pickle_protocols.py)."""
    path = next(p for p in benign if p.name == "numpy-p4.pt")
    assert scan_file(path).verdict == "safe"
    result = run_cli("inspect", path, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["security"]["verdict"] == "safe"


def test_inspect_json_security(fx: dict[str, Path]) -> None:
    code, data = run_json("inspect", fx["files"] / "bert.bin")
    security = data["security"]
    assert code == 0 and security["format"] == "pickle" and security["verdict"] == "safe"
    assert any(g["module"] == "collections" and g["name"] == "OrderedDict" and g["safety"] == "safe"
               for g in security["globals"])
    assert all(set(g) >= {"module", "name", "safety", "member", "offset"} for g in security["globals"])
    code, data = run_json("inspect", fx["bert"])
    assert data["security"]["format"] == "safetensors" and data["security"]["verdict"] == "safe"
    assert data["security"]["globals"] == []
    code, data = run_json("inspect", fx["bert-sharded-bin"])
    assert data["security"]["verdict"] == "safe" and len(data["security"]["files"]) >= 2


def test_inspect_rich_shows_security_line(fx: dict[str, Path]) -> None:
    result = run_cli("inspect", fx["files"] / "bert-legacy.bin")
    line = next(line for line in result.stdout.splitlines() if "security" in line)
    assert "safe" in line and "static pickle scan" in line
    result = run_cli("inspect", fx["bert"])
    assert "no pickle, no code" in result.stdout


def test_shard_with_payload_is_refused(fx: dict[str, Path], tmp_path: Path, hostile: list[HostileCase]) -> None:
    import shutil

    folder = tmp_path / "sharded"
    shutil.copytree(fx["bert-sharded-bin"], folder)
    shards = sorted(folder.glob("pytorch_model-*.bin"))
    payload = next(c for c in hostile if c.name == "zip-os-system.pt")
    shutil.copyfile(payload.path, shards[-1])
    result = run_cli("inspect", folder)
    assert result.exit_code == 2
    assert "dangerous" in result.stderr and shards[-1].name in result.stderr and "posix.system" in result.stderr


def test_subprocess_cli_on_a_payload(hostile: list[HostileCase], sentinel: Path) -> None:
    case = next(c for c in hostile if c.name == "legacy-eval.bin")
    proc = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(case.path)], capture_output=True,
                          text=True, cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "dangerous" in proc.stderr and "eval" in proc.stderr
    assert not sentinel.exists()
