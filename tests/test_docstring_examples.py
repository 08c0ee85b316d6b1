"""Every docstring example in weightdoctor runs as written (or is marked `# doctest: +SKIP` where it needs a
checkpoint on disk): twelve had drifted from the code, and one wrote `out.bin` into the current directory."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import weightdoctor

MODULES = sorted(info.name for info in pkgutil.walk_packages(weightdoctor.__path__, "weightdoctor.")
                 if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, (name, result)
    assert not any(tmp_path.iterdir()), f"{name}'s examples wrote {sorted(p.name for p in tmp_path.iterdir())}"


def test_every_module_is_collected() -> None:
    assert "weightdoctor.diff_keys" in MODULES and "weightdoctor.checkpoint.reader" in MODULES
    assert len(MODULES) > 40
