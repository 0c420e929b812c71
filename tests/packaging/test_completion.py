"""Shell completion: the committed scripts are what click generates today, and they complete."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.conftest import PACKAGING

COMPLETION = PACKAGING / "completion"
BIN = Path(sys.executable).parent


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("ft_completion_generate", COMPLETION / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_scripts_match_what_click_generates() -> None:
    generated = _generator().scripts()  # type: ignore[attr-defined]
    assert len(generated) == 9
    stale = [name for name, text in generated.items()
             if not (COMPLETION / name).is_file() or (COMPLETION / name).read_text() != text]
    assert stale == [], f"run: python packaging/completion/generate.py ({stale})"


def _bash_complete(prog: str, words: list[str]) -> list[str]:
    """What bash offers after sourcing the committed script, with the cursor on the last word."""
    script = f"""
source {COMPLETION / (prog + '.bash')}
COMP_WORDS=({' '.join(words)})
COMP_CWORD={len(words) - 1}
_{prog}_completion {prog}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


@pytest.mark.parametrize(("prog", "words", "expected"), [
    ("ftagent", ["ftagent", "he"], ["heartbeat"]),
    ("ftagent", ["ftagent", "register", "--auto"], ["--auto-attach"]),
    ("ftreport", ["ftreport", "--one"], ["--oneshot", "--one-shot"]),
    ("ftreport", ["ftreport", "pass"], ["password"]),
    ("ftmock", ["ftmock", "pool", "create", "--qu"], ["--quantity"]),
])
def test_bash_completes_commands_and_options(prog: str, words: list[str], expected: list[str]) -> None:
    assert _bash_complete(prog, words) == expected
