"""The README's first commands work as written on a fresh machine, and the CPU-only install list
matches the package's dependencies."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from metasr.runtime.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quickstart\n+```bash\n(.*?)```", text, re.S)
    assert block, "README has no Quickstart bash block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_runs_verbatim(tmp_path, monkeypatch):
    lines = _quickstart()
    assert lines[0].startswith("pip install") and lines[-1].startswith("metasr-run")
    monkeypatch.chdir(tmp_path)
    for line in lines[1:]:
        words = shlex.split(line)
        if words[0] == "python":
            subprocess.run([sys.executable, *words[1:]], check=True, cwd=tmp_path, timeout=60)
        else:
            assert words[0] == "metasr-run", line
            assert main([*words[1:], "-q"]) == 0
    out = pydicom.dcmread(tmp_path / "frame_sr1.8.dcm")
    assert out.Rows == 115 and "DERIVED" in out.ImageType


def _name(requirement: str) -> str:
    return re.split(r"[<>=;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_cpu_requirements_match_the_package_dependencies():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    cpu = [
        line.strip()
        for line in (ROOT / "requirements-cpu.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    wanted = {_name(d) for d in deps} - {"onnxruntime-gpu"}
    assert {_name(c) for c in cpu} == wanted
    assert not any("gpu" in c for c in cpu)
    for dep in deps:  # the same version floors
        if _name(dep) != "onnxruntime-gpu":
            assert dep.split(";")[0].strip() in cpu, dep
