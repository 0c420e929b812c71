"""Shell completion: the committed scripts are what click generates today, and they complete."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftagent.clickcompat import CLICK7
from tests.packaging.conftest import PACKAGING

COMPLETION = PACKAGING / "completion"
BIN = Path(sys.executable).parent


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("ft_completion_generate", COMPLETION / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(CLICK7, reason="the committed scripts are click 8's; click 7 (minimum leg) cannot generate them: "
                                   "the newest leg checks them, and the completion tests below run them on both")
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


def _answer(prog: str, instruction: str, words: str, cword: str) -> str:
    """The program's own answer to a completion request, as the committed scripts send it."""
    env = dict(os.environ, **{f"_{prog.upper()}_COMPLETE": instruction, "COMP_WORDS": words, "COMP_CWORD": cword})
    proc = subprocess.run([str(BIN / prog)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("prog", "instruction", "words", "cword", "expected"), [
    # ftreport without a subcommand runs its daemon: a completion request must not.
    ("ftreport", "bash_complete", "ftreport pass", "1", ["plain,password"]),
    ("ftagent", "bash_complete", "ftagent register --auto", "2", ["plain,--auto-attach"]),
    # A click.Path value: the shell is told to complete directory names itself.
    ("ftmock", "bash_complete", "ftmock --data-dir ", "2", ["dir,"]),
    ("ftagent", "zsh_complete", "ftagent he", "1", ["plain", "heartbeat"]),
    ("ftmock", "fish_complete", "ftmock pool create --qu", "--qu", ["plain,--quantity"]),
])
def test_programs_answer_click8_completion_requests(prog: str, instruction: str, words: str, cword: str,
                                                    expected: list[str]) -> None:
    """The scripts speak click 8's protocol; the programs answer it on click 7 (RHEL 9) as well."""
    answer = _answer(prog, instruction, words, cword).splitlines()
    if instruction == "fish_complete":
        answer = [line.split("\t", 1)[0] for line in answer]
    assert answer[:len(expected)] == expected and (instruction == "zsh_complete" or len(answer) == len(expected))
