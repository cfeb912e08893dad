"""scripts/eval_real.sh: the fourteen reports of the cards' protocol, in JOBS processes, failing if any fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_real.sh"
REPORTS = {
    "mr-bicubic",
    "mr-gauss",
    "mr-kspace",
    "mr-gauss-rician2",
    "mr-kspace-rician2",
    "ct-gauss",
    "ct-gauss-gaussian2",
    "nm-gauss",
    "nm-gauss-gaussian2",
    "mr-native-bicubic",
    "mr-native-gauss",
    "mr-native-kspace",
    "mr-native-gauss-rician2",
    "mr-native-kspace-rician2",
}
STUB = """#!/usr/bin/env bash
# stands in for metasr-eval: records its arguments, makes --out, fails where told
echo "$*" >> "$STUB_LOG"
prev=
for a in "$@"; do
  if [ "$prev" = --out ]; then
    mkdir -p "$a"
    if [ -n "${STUB_FAIL:-}" ] && [ "$(basename "$a")" = "$STUB_FAIL" ]; then exit 3; fi
  fi
  prev=$a
done
"""


def _run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    stub = tmp_path / "bin" / "metasr-eval"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    full = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "STUB_LOG": str(log), **env}
    r = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, cwd=tmp_path)
    return r, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("jobs", ["1", "2", "4", "20"])
def test_every_report_once_at_the_cards_scales(tmp_path: Path, jobs: str) -> None:
    r, calls = _run(tmp_path, "corpus", "out", "new.pt", JOBS=jobs)
    assert r.returncode == 0, r.stderr
    outs = [c.split("--out ")[1].split()[0] for c in calls]
    assert sorted(outs) == sorted(f"out/{name}" for name in REPORTS)
    assert all("--scales 1.5,2,3,4 " in c and "--ckpt new.pt " in c for c in calls)
    ct = [c for c in calls if "/ct-" in c]
    assert len(ct) == 2 and all("--window 0.45,0.5" in c for c in ct)
    assert sum("--noise rician:0.02" in c for c in calls) == 4 and sum("--noise gaussian:0.02" in c for c in calls) == 2
    native = [c for c in calls if "/mr-native-" in c]
    assert len(native) == 5
    # MR2's factor is read from its spectrum, the Siemens head's from its header: nothing is given
    assert all("--reference native" in c and "folder:corpus/test/mr " in c for c in native)
    assert not any("--native-factor" in c for c in calls)
    assert not any("--reference" in c for c in calls if c not in native)
    assert not any("--ensemble" in c or "--zero-fill" in c or "--data-consistency" in c for c in calls)


def test_ensemble_scores_every_report_with_it(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, "corpus", "out", "new.pt", ENSEMBLE="1", JOBS="2")
    assert r.returncode == 0, r.stderr
    assert len(calls) == len(REPORTS) and all(c.split().count("--ensemble") == 1 for c in calls)


def test_zero_fill_joins_the_k_space_reports_only(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, "corpus", "out", "new.pt", ZERO_FILL="1", JOBS="2")
    assert r.returncode == 0, r.stderr
    with_it = sorted(c.split("--out out/")[1].split()[0] for c in calls if "--zero-fill" in c)
    assert with_it == ["mr-kspace", "mr-kspace-rician2", "mr-native-kspace", "mr-native-kspace-rician2"]
    assert all("--degradation kspace" in c for c in calls if "--zero-fill" in c)


def test_data_consistency_scores_every_report_with_it(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, "corpus", "out", "new.pt", DATA_CONSISTENCY="1", ZERO_FILL="1", JOBS="3")
    assert r.returncode == 0, r.stderr
    assert len(calls) == len(REPORTS) and all(c.split().count("--data-consistency") == 1 for c in calls)
    assert sum("--zero-fill" in c for c in calls) == 4


def test_a_failed_report_fails_the_run(tmp_path: Path) -> None:
    r, calls = _run(tmp_path, "corpus", "out", "new.pt", JOBS="3", STUB_FAIL="mr-kspace")
    assert r.returncode != 0
    assert len(calls) >= 7  # the other processes ran their reports


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["corpus", "out"], {}, "usage: scripts/eval_real.sh CORPUS OUT CKPT"),
        (["corpus", "out", "new.pt"], {"JOBS": "0"}, "JOBS=0 is not a whole number >= 1"),
        (["corpus", "out", "new.pt"], {"JOBS": "two"}, "JOBS=two is not a whole number >= 1"),
        (["corpus", "out", "new.pt"], {"ENSEMBLE": "yes"}, "ENSEMBLE=yes is not 0 or 1"),
        (["corpus", "out", "new.pt"], {"ZERO_FILL": "2"}, "ZERO_FILL=2 is not 0 or 1"),
        (["corpus", "out", "new.pt"], {"DATA_CONSISTENCY": "on"}, "DATA_CONSISTENCY=on is not 0 or 1"),
    ],
)
def test_bad_use_is_one_line_exit_2(tmp_path: Path, args, env, message) -> None:
    r, calls = _run(tmp_path, *args, **env)
    assert r.returncode == 2 and calls == []
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
