"""The documentation stands on its own: every relative link in a Markdown file resolves inside the
repository, nothing points outside it, and the README's by-hand block runs as written."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT

LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<a\s+href=\"([^\"]+)\"")


def _markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*.md"],
                         cwd=ROOT, capture_output=True, check=True, timeout=60).stdout.decode()
    return sorted(ROOT / f for f in out.split("\0") if f and (ROOT / f).is_file())


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            title = re.sub(r"[`*_]", "", m.group(1).strip()).lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks are not links
    return [a or b for a, b in LINK.findall(text)]


def test_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _markdown_files()}
    assert {"README.md", "CONTRIBUTING.md", "docs/design.md", "docs/heartbeat.md"} <= names


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    for link in _links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto: ... are not files
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path == ROOT or ROOT in path.parents, f"{doc.name}: {link} points outside the repository"
        assert path.exists(), f"{doc.name}: {link} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path.read_text()), f"{doc.name}: no heading for #{anchor} in {target}"


def test_nothing_points_at_the_shared_directory_outside_the_repository() -> None:
    """Not in links only: prose and code comments must not send a reader to files they do not have."""
    out = subprocess.run(["git", "grep", "-n", "-I", "-E", r"\.\./shared|DESIGN\.md|seeds/0",
                          "--", ".", ":!tests/packaging/test_docs.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout == "", out.stdout


def _by_hand_block() -> str:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- by-hand:begin -->\n```sh\n(.*?)```\n<!-- by-hand:end -->", readme, re.S)
    assert m, "README.md lost its by-hand block markers"
    return m.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_by_hand_block_runs_as_written(tmp_path: Path) -> None:
    """The block, unchanged, from a directory laid out like the repository's top (its .venv is this
    test's environment), against a server on a free port: the guest ends up as the FT group's
    primary consumer, entitled, holding the lease."""
    block = _by_hand_block()
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = dict(os.environ, FTMOCK_PORT=str(_free_port()))
    env.pop("FTAGENT_CONFIG", None)
    proc = subprocess.Popen(["bash", "-e", "-c", block], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            try:  # the server, should the block have failed before stopping it
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    registered = re.search(r"^Registered as (\S+)", out, re.M)
    assert registered, out
    uuid = registered.group(1)
    # the server returned the consumer the report had created for the primary instance
    assert re.search(rf"registration of FT group .* returns primary consumer {uuid}", err), err[-3000:]
    assert re.search(r"pool \S+\s+RHEL for Virtual Datacenters", out), "entitled through a virt pool"
    assert re.search(r"^lease HELD \(generation 1", out, re.M), out
    assert f"Checked in as {uuid}" in out
    guest = tmp_path / "guest"
    assert (guest / "entitlement").is_dir(), "entitlement_dir as the README names it"
    assert (guest / "ca.pem").read_bytes() == (tmp_path / "ftmock-data" / "ca.pem").read_bytes()


def test_make_venv_installs_the_extras_the_readme_needs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    m = re.search(r"^venv: .*\n((?:\t.*\n)+)", makefile, re.M)
    assert m, "no venv target"
    assert "'.[vmware,libvirt]'" in m.group(1)
