"""Real content for real dnf: an RPM built once per session, its yum repository, ftmock serving it.

The RPM is built with Debian's ``rpmbuild`` and indexed with ``createrepo_c`` under a content
directory laid out as the CDN is (``content/dist/ftagent-test/<release>/<arch>/os``, with the
``listing`` of its releases beside the release directories); an ftmock
started with ``--content-dir`` serves it to certificates that grant
``/content/dist/ftagent-test/$releasever/$basearch/os``. :func:`dnf` runs Debian's dnf against a
guest's repository file with everything that would make it slow or touch the machine turned off:
an empty install root, caches under the test's directory, no plugins, no weak dependencies, and
``skip_if_unavailable=0`` so that a refused repository is an error, not a warning.

The fixtures are the whole run's (``tests/conftest.py`` makes them visible everywhere): the RPM is
built once, one server serves it.
"""

from __future__ import annotations

import platform
import subprocess
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit.ftmock import FtmockServer, start_ftmock

PACKAGE = "ftagent-hello"
RELEASE = "9"
RELEASES = (RELEASE, "9.4")  # the content's listing
CONTENT_LABEL = "ftagent-test-rpms"
CONTENT_PATH = "/content/dist/ftagent-test/$releasever/$basearch/os"
DNF = "/usr/bin/dnf"

_SPEC = textwrap.dedent(f"""\
    Name:           {PACKAGE}
    Version:        1.0
    Release:        1
    Summary:        A package ftmock's content server hands out in ftagent's tests
    License:        GPL-2.0-or-later
    BuildArch:      noarch

    %description
    One file, to prove that dnf reads and downloads through the repository file ftagent wrote.

    %install
    mkdir -p %{{buildroot}}/usr/share/{PACKAGE}
    echo hello > %{{buildroot}}/usr/share/{PACKAGE}/hello.txt

    %files
    /usr/share/{PACKAGE}/hello.txt
    """)


def basearch() -> str:
    """dnf's $basearch on this machine (the architectures CI runs on map to themselves)."""
    machine = platform.machine()
    return {"i686": "i386", "armv7l": "armhfp", "amd64": "x86_64"}.get(machine, machine)


@dataclass(frozen=True)
class RpmRepo:
    """The content directory (for ``--content-dir``) and what is in it."""

    content_dir: Path
    rpm: Path


@pytest.fixture(scope="session")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory) -> RpmRepo:
    """Build the RPM and its repository once for the whole run."""
    top = tmp_path_factory.mktemp("rpmbuild")
    (top / "SPECS").mkdir()
    spec = top / "SPECS" / f"{PACKAGE}.spec"
    spec.write_text(_SPEC)
    subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(spec)], check=True,
                   capture_output=True, text=True, timeout=120)
    [rpm] = (top / "RPMS" / "noarch").glob("*.rpm")
    content = tmp_path_factory.mktemp("cdn-content")
    repo = content / CONTENT_PATH.lstrip("/").replace("$releasever", RELEASE).replace("$basearch", basearch())
    (repo / "Packages").mkdir(parents=True)
    (repo / "Packages" / rpm.name).write_bytes(rpm.read_bytes())
    subprocess.run(["createrepo_c", "--no-database", "-q", str(repo)], check=True, capture_output=True, text=True,
                   timeout=120)
    # The CDN's list of the releases beside $releasever (what `release --list` reads): RELEASE, and a
    # minor release that is the same repository.
    listing = content / CONTENT_PATH.lstrip("/").split("$releasever", 1)[0] / "listing"
    listing.write_text("".join(f"{r}\n" for r in RELEASES))
    (listing.parent / RELEASES[1]).symlink_to(RELEASE)
    return RpmRepo(content, repo / "Packages" / rpm.name)


@pytest.fixture(scope="session")
def cdn_server(tmp_path_factory: pytest.TempPathFactory, rpm_repo: RpmRepo) -> Iterator[FtmockServer]:
    """A shared ftmock that is also the content server for the test repository."""
    server = start_ftmock(tmp_path_factory.mktemp("ftmock-cdn"), extra_args=["--content-dir", str(rpm_repo.content_dir)])
    yield server
    server.stop()


def cdn_url(server: FtmockServer) -> str:
    return (server.data_dir / "cdn-url").read_text().strip()


def add_test_product(server: FtmockServer, org: str, pid: str = "ftagent-test", *extra: str) -> None:
    """The product whose content set is the test repository (``extra``: more LABEL=PATH), and a pool of it."""
    server.admin("product", "create", "--org", org, "--id", pid, "--name", "ftagent test content",
                 "--content", f"{CONTENT_LABEL}={CONTENT_PATH}", *[a for c in extra for a in ("--content", c)])
    server.admin("pool", "create", "--org", org, "--product", pid)


def dnf(work: Path, reposdir: Path, *args: str, timeout: float = 120,
        inside: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Debian's dnf on the repositories of ``reposdir``, in an empty root under ``work``; ``inside``: the
    command that runs it elsewhere (a mount namespace's ``nsenter ... --``)."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "dnf.conf"
    if not conf.exists():
        conf.write_text("[main]\ngpgcheck=0\ninstall_weak_deps=0\n")
    # As root dnf keeps metadata in system_cachedir (the machine's /var/cache/dnf, install root or not):
    # both caches go under ``work``, so no run sees another's metadata and the machine is left alone.
    cache = work / "cache"
    cmd = [*inside, DNF, "-c", str(conf), f"--installroot={work / 'root'}", f"--setopt=reposdir={reposdir}",
           f"--setopt=cachedir={cache}", f"--setopt=system_cachedir={cache}", f"--releasever={RELEASE}", "--noplugins",
           "--setopt=skip_if_unavailable=0", "--setopt=metadata_expire=0", "-y", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def borrow(repo_file: Path, cert: Path, key: Path, into: Path) -> Path:
    """A copy of a repository file whose repositories use another certificate and key: a reposdir."""
    text = repo_file.read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("sslclientcert = "):
            line = f"sslclientcert = {cert}"
        elif line.startswith("sslclientkey = "):
            line = f"sslclientkey = {key}"
        lines.append(line)
    into.mkdir(parents=True, exist_ok=True)
    (into / repo_file.name).write_text("\n".join(lines) + "\n")
    return into


def dnf_lists(work: Path, reposdir: Path, inside: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return dnf(work, reposdir, "list", "--available", PACKAGE, inside=inside)


def dnf_download(work: Path, reposdir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    dest = work / "downloads"
    return dnf(work, reposdir, "install", "--downloadonly", f"--downloaddir={dest}", PACKAGE), dest / \
        f"{PACKAGE}-1.0-1.noarch.rpm"
