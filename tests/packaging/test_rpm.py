"""The RPM: built from a source tarball of this tree with rpmbuild, then inspected as an operator's
rpm would see it (files, modes, %config flags, requirements, scriptlets), run from its payload, and
checked by rpmlint.

The spec has two paths: Fedora's macros (%pyproject_*, %systemd_*) where they exist, and its own
fallbacks where they do not (Debian's rpm, here). Both are built: the fallback as the machine is,
the Fedora path with tests/packaging/data/fedora.macros loaded, which defines those macros with
Fedora's names, arguments and effects."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.conftest import PACKAGING, ROOT

SPEC = PACKAGING / "rpm" / "ftagent.spec"
RPMLINT_CONFIG = PACKAGING / "rpm" / "rpmlint.toml"
FEDORA_MACROS = Path(__file__).parent / "data" / "fedora.macros"
_PYPROJECT = (ROOT / "pyproject.toml").read_text()
VERSION = re.search(r'^version = "([^"]+)"', _PYPROJECT, re.M).group(1)  # type: ignore[union-attr]
LICENSE = re.search(r'^license = "([^"]+)"', _PYPROJECT, re.M).group(1)  # type: ignore[union-attr]
SITE = f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
PACKAGES = ("python3-ftagent", "ftagent", "ftreport", "ftmock")


@dataclass(frozen=True)
class Built:
    path: str  # "fallback" or "fedora"
    rpms: dict[str, Path]  # package name -> file
    log: str


def _source_files() -> list[str]:
    """The tree as a developer has it: tracked and new files, without ignored ones."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True, timeout=60).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


# Debian's brp-compress uses bash's "read -d" under #!/bin/sh (dash): run it with bash, as the
# /bin/sh of Fedora is.
COMPRESS = "__brp_compress /bin/bash %{_rpmconfigdir}/brp-compress %{?_prefix}"


def _rpmbuild(top: Path, *extra: str) -> list[str]:
    return ["rpmbuild", "--define", f"_topdir {top}", "--define", f"__python3 {sys.executable}",
            "--define", "_tmppath %{_topdir}/tmp", "--define", COMPRESS, *extra]


def _build(top: Path, path: str) -> Built:
    (top / "SOURCES").mkdir(parents=True)
    prefix = f"ftagent-{VERSION}"
    with tarfile.open(top / "SOURCES" / f"{prefix}.tar.gz", "w:gz") as tar:
        for name in _source_files():
            tar.add(ROOT / name, arcname=f"{prefix}/{name}", recursive=False)
    extra = ["--load", str(FEDORA_MACROS), "--define", "ft_test_interpreter /usr/bin/python3"] if path == "fedora" else []
    proc = subprocess.run([*_rpmbuild(top, *extra), "--nodeps", "-bb", str(SPEC)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rpms = {}
    for rpm in (top / "RPMS" / "noarch").glob("*.rpm"):
        rpms[_q(rpm, "%{NAME}")] = rpm
    return Built(path, rpms, proc.stdout + proc.stderr)


@pytest.fixture(scope="module", params=["fallback", "fedora"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The packages, built once per path."""
    return _build(tmp_path_factory.mktemp(f"rpmbuild-{request.param}"), request.param)


def _q(rpm: Path, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--qf", fmt, str(rpm)], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def _rpm(rpm: Path, *args: str) -> list[str]:
    out = subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _files(rpm: Path) -> dict[str, tuple[str, str, str]]:
    """path -> (permissions, file flags, owner) from rpm's own headers."""
    out = _q(rpm, "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEFLAGS:fflags}\t%{FILEUSERNAME}\n]")
    files = {}
    for line in out.splitlines():
        path, perms, flags, owner = line.split("\t")
        files[path] = (perms, flags, owner)
    return files


def test_four_packages_with_the_project_version(built: Built) -> None:
    assert sorted(built.rpms) == sorted(PACKAGES)
    for name, path in built.rpms.items():
        assert _q(path, "%{VERSION} %{ARCH}") == f"{VERSION} noarch", name


def test_spec_version_is_the_project_version() -> None:
    assert re.search(rf"^Version:\s+{re.escape(VERSION)}$", SPEC.read_text(), re.M)


def test_files_are_split_by_role_and_owned_once(built: Built) -> None:
    lists = {name: set(_rpm(path, "-l")) for name, path in built.rpms.items()}
    lib, agent, report, mock = (lists[n] for n in PACKAGES)
    for module in ("ftagent/__init__.py", "ftagent/lease/__init__.py", "ftagent/cli.py", "ftreport/sources/esx.py", "ftmock/server.py"):
        assert f"{SITE}/{module}" in lib, module
    assert f"{SITE}/ftagent-{VERSION}.dist-info/METADATA" in lib
    assert f"{SITE}/sos/report/plugins/ftagent.py" in lib, "the sos report plugin, where sos 4 loads plugins"
    for name in ("ftagent", "ftreport", "ftmock"):
        assert not any(f.startswith(SITE) for f in lists[name]), f"{name} must not ship Python modules"
    assert {"/usr/bin/ftagent", "/usr/lib/systemd/system/ftagent-heartbeat.service",
            "/usr/lib/systemd/system/ftagent-checkin.service", "/usr/lib/systemd/system/ftagent-checkin.timer",
            "/etc/cron.d/ftagent", "/etc/ftagent/ftagent.conf", "/etc/logrotate.d/ftagent",
            "/usr/share/bash-completion/completions/ftagent", "/usr/share/zsh/site-functions/_ftagent",
            "/usr/share/fish/vendor_completions.d/ftagent.fish"} <= agent
    assert {"/etc/cron.d", "/etc/logrotate.d"} <= agent, "directories of files it ships, not required from others"
    assert {"/usr/bin/ftreport", "/usr/bin/ftreport-password", "/usr/lib/systemd/system/ftreport.service",
            "/etc/ftreport.conf", "/etc/ftreport.d"} <= report
    assert {"/usr/bin/ftmock", "/usr/lib/systemd/system/ftmock.service", "/etc/sysconfig/ftmock"} <= mock
    for page, owner in [("man8/ftagent.8", agent), ("man5/ftagent.conf.5", agent), ("man8/ftreport.8", report),
                        ("man5/ftreport.conf.5", report), ("man8/ftmock.8", mock)]:
        assert any(f.startswith(f"/usr/share/man/{page}") for f in owner), page
    names = list(PACKAGES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = {f for f in lists[a] & lists[b] if not f.endswith("/site-packages")}
            assert shared == set(), f"{a} and {b} both own {sorted(shared)[:5]}"
    assert f"{SITE}/ftagent/__pycache__/cli.{sys.implementation.cache_tag}.pyc" in lib
    assert not any(f.endswith("RECORD") or f.endswith("direct_url.json") for f in lib)


def test_readme_of_ftreport_d_is_documentation_not_configuration(built: Built) -> None:
    report = _files(built.rpms["ftreport"])
    assert not any(p.startswith("/etc/ftreport.d/") for p in report), "only the operator's files belong there"
    readme = [p for p in report if p.startswith("/usr/share/doc/") and p.endswith("/README")]
    assert readme and "d" in report[readme[0]][1], "shipped as %doc"


def test_entry_points_name_modules_of_the_package_that_ships_the_dist_info(built: Built, tmp_path: Path) -> None:
    """The one dist-info (python3-ftagent) declares four console scripts: each names a module that
    python3-ftagent ships, and each command is in a package that requires python3-ftagent."""
    root = _extract(built, tmp_path)
    info = root / SITE.lstrip("/") / f"ftagent-{VERSION}.dist-info"
    scripts = {}
    section = None
    for line in (info / "entry_points.txt").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "console_scripts" and "=" in line:
            name, target = (x.strip() for x in line.split("=", 1))
            scripts[name] = target.split(":")[0]
    assert sorted(scripts) == ["ftagent", "ftmock", "ftreport", "ftreport-password"]
    lib = set(_rpm(built.rpms["python3-ftagent"], "-l"))
    release = _q(built.rpms["ftagent"], "%{RELEASE}")
    for name, module in scripts.items():
        assert f"{SITE}/{module.replace('.', '/')}.py" in lib, module
        owners = [pkg for pkg, path in built.rpms.items() if f"/usr/bin/{name}" in _rpm(path, "-l")]
        assert len(owners) == 1, (name, owners)
        assert f"python3-ftagent = {VERSION}-{release}" in _requires(built.rpms[owners[0]]), owners[0]


def test_license_text_and_metadata_agree(built: Built) -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    assert "How to Apply These Terms to Your New Programs" in text, "the full text, not a notice"
    assert LICENSE == "GPL-2.0-or-later"
    assert re.search(rf"^License:\s+{re.escape(LICENSE)}$", SPEC.read_text(), re.M)
    lib = _files(built.rpms["python3-ftagent"])
    licensed = [p for p, (_perms, flags, _owner) in lib.items() if "l" in flags]
    assert any(p.startswith("/usr/share/licenses/") and p.endswith("/LICENSE") for p in licensed), licensed
    assert f"{SITE}/ftagent-{VERSION}.dist-info/licenses/LICENSE" in licensed
    for name, path in built.rpms.items():
        assert _q(path, "%{LICENSE}") == LICENSE, name


def test_no_made_up_addresses_in_the_spec() -> None:
    spec = SPEC.read_text()
    assert "example.invalid" not in spec
    source = re.search(r"^Source0:\s+(\S+)$", spec, re.M)
    assert source and source.group(1) == "%{name}-%{version}.tar.gz"
    assert not re.search(r"^URL:", spec, re.M) or "no public home" not in spec


def _requires(path: Path) -> set[str]:
    return {re.sub(r"\s+", " ", r) for r in _rpm(path, "--requires")}


def test_requirements_only_where_needed(built: Built) -> None:
    lib, agent, report, mock = (_requires(built.rpms[n]) for n in PACKAGES)
    release = _q(built.rpms["ftagent"], "%{RELEASE}")
    # generated from the wheel's Requires-Dist (rpm's pythondistdeps), with the bounds of pyproject.toml
    for dist in ("requests", "urllib3", "cryptography", "click"):
        bound = re.search(rf'"{dist}(>=[^"]+)"', _PYPROJECT)
        assert bound, dist
        want = re.compile(rf"python3(\.\d+)?dist\({dist}\) >= {re.escape(bound.group(1)[2:])}$")
        assert any(want.match(r) for r in lib), (dist, sorted(lib))
    for name, reqs in [("ftagent", agent), ("ftreport", report), ("ftmock", mock)]:
        assert f"python3-ftagent = {VERSION}-{release}" in reqs, name
    bounds = {name: re.search(rf'"{dist}>=([^"]+)"', _PYPROJECT) for name, dist in
              (("python3-libvirt", "libvirt-python"), ("python3-pyvmomi", "pyvmomi"))}
    assert sorted(_rpm(built.rpms["ftreport"], "--recommends")) == [
        f"{name} >= {m.group(1)}" for name, m in sorted(bounds.items()) if m]
    for name in PACKAGES:
        reqs = _requires(built.rpms[name])
        assert not any("pyvmomi" in r or "libvirt" in r for r in reqs), f"{name}: both bindings are weak deps"
        assert not any(".venv" in r or "/work/" in r for r in reqs), f"{name} requires a path of the build machine"


def test_config_files_are_noreplace_and_secrets_private(built: Built) -> None:
    for name in PACKAGES:
        for path, (_perms, flags, _owner) in _files(built.rpms[name]).items():
            if path.startswith("/etc/") and _perms[0] == "-":
                assert "c" in flags and "n" in flags, f"{path} is not %config(noreplace)"
    report = _files(built.rpms["ftreport"])
    assert report["/etc/ftreport.conf"][0] == "-rw-------"
    assert report["/etc/ftreport.d"][0] == "drwx------"
    assert _files(built.rpms["ftmock"])["/etc/sysconfig/ftmock"][0] == "-rw-------"
    assert report["/etc/sysconfig/ftreport"][0] == "-rw-------"
    assert _files(built.rpms["ftagent"])["/etc/ftagent/ftagent.conf"][0] == "-rw-r--r--"


def test_key_and_state_directories_are_private(built: Built) -> None:
    agent = _files(built.rpms["ftagent"])
    for d in ("/var/lib/ftagent", "/var/lib/ftagent/identity", "/var/lib/ftagent/entitlement"):
        assert agent[d] == ("drwx------", "", "root"), d
    assert agent["/var/log/ftagent"][0] == "drwxr-x---"
    assert _files(built.rpms["ftreport"])["/var/lib/ftreport"][0] == "drwx------"
    # ftmock's data directory is systemd's (StateDirectory= of a DynamicUser= unit), not the package's
    assert not any(p.startswith("/var/lib/ftmock") for p in _files(built.rpms["ftmock"]))


UNITS = {"ftagent": ["ftagent-heartbeat.service", "ftagent-checkin.service", "ftagent-checkin.timer"],
         "ftreport": ["ftreport.service"], "ftmock": ["ftmock.service"]}


def _scriptlets(rpm: Path) -> dict[str, str]:
    """Scriptlet name (PREIN, POSTIN, PREUN, POSTUN) -> body."""
    out = {}
    for tag in ("PREIN", "POSTIN", "PREUN", "POSTUN"):
        body = _q(rpm, f"%{{{tag}}}")
        out[tag] = "" if body == "(none)" else body
    return out


def _run_scriptlet(body: str, arg: int, tmp_path: Path) -> list[str]:
    """Run a scriptlet as rpm would (sh, $1 = count after the transaction) with a systemctl and a
    systemd-update-helper that record their arguments instead of acting."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    log.write_text("")
    for tool in ("systemctl", "systemd-update-helper"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        (bin_dir / tool).chmod(0o755)
    body = body.replace("/usr/lib/systemd/systemd-update-helper", str(bin_dir / "systemd-update-helper"))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    subprocess.run(["sh", "-e", "-c", body, "scriptlet", str(arg)], env=env, check=True, timeout=60)
    return log.read_text().splitlines()


def test_scriptlets_follow_presets_and_never_restart_the_heartbeat(built: Built, tmp_path: Path) -> None:
    """First install: the distribution's presets (systemctl preset, directly or through
    systemd-update-helper); upgrade: nothing enabled, the heartbeat never restarted; erase: its own
    units stopped and disabled. Run with recording stand-ins for systemctl."""
    for name, units in UNITS.items():
        scripts = _scriptlets(built.rpms[name])
        assert "restart" not in scripts["POSTIN"] and "start" not in scripts["POSTIN"].replace("preset", "")
        installed = _run_scriptlet(scripts["POSTIN"], 1, tmp_path)
        if built.path == "fedora":
            assert installed == [f"systemd-update-helper install-system-units {' '.join(units)}"], name
        else:
            assert installed == [f"systemctl --no-reload preset {' '.join(units)}"], name
        assert _run_scriptlet(scripts["POSTIN"], 2, tmp_path) == [], f"{name}: an upgrade presets nothing"
        erased = _run_scriptlet(scripts["PREUN"], 0, tmp_path)
        assert len(erased) == 1 and erased[0].endswith(" ".join(units)), erased
        assert "disable" in erased[0] or "remove-system-units" in erased[0]
        assert _run_scriptlet(scripts["PREUN"], 1, tmp_path) == [], f"{name}: an upgrade stops nothing"
    agent = _scriptlets(built.rpms["ftagent"])["POSTUN"]
    restarts = [line for line in agent.splitlines() if "try-restart" in line or "mark-restart" in line]
    assert restarts and all("ftagent-heartbeat" not in line for line in restarts), \
        "an upgrade must not restart the heartbeat (it would release the lease)"
    assert any("ftagent-checkin.timer" in line for line in restarts)
    report = _scriptlets(built.rpms["ftreport"])["POSTUN"]
    assert re.search(r"(try-restart|mark-restart-system-units) ftreport\.service", report)
    if built.path == "fedora":
        for name in UNITS:
            assert "systemctl" not in "".join(_scriptlets(built.rpms[name]).values()), \
                f"{name}: Fedora path uses systemd-rpm-macros, not the fallbacks"


def _extract(built: Built, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    if root.exists():
        return root
    for name in PACKAGES:
        data = subprocess.run(["rpm2archive", "-"], input=built.rpms[name].read_bytes(), capture_output=True,
                              check=True, timeout=60).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(root, filter="tar")
    return root


def test_payload_runs_the_packaged_code(built: Built, tmp_path: Path) -> None:
    root = _extract(built, tmp_path)
    for prog in ("ftagent", "ftreport", "ftmock"):
        script = root / "usr" / "bin" / prog
        assert script.read_text().startswith("#!/usr/bin/python3\n")
        assert os.access(script, os.X_OK)
    site = root / SITE.lstrip("/")
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    which = subprocess.run([sys.executable, "-c", "import ftagent, ftreport, ftmock; "
                            "print(ftagent.__file__, ftreport.__file__, ftmock.__file__)"],
                           capture_output=True, text=True, env=env, check=True, timeout=60).stdout
    assert which.count(str(site)) == 3, which
    for prog in ("ftagent", "ftreport"):
        out = subprocess.run([sys.executable, str(root / "usr" / "bin" / prog), "--version"], capture_output=True,
                             text=True, env=env, timeout=60)
        assert out.returncode == 0 and VERSION in out.stdout, out
    out = subprocess.run([sys.executable, str(root / "usr" / "bin" / "ftmock"), "--help"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout
    # byte-compiled for the installed location, not the build root
    pyc = next((site / "ftagent" / "__pycache__").glob("cli.*.pyc"))
    assert str(tmp_path) not in pyc.read_bytes().decode("latin-1")
    assert f"{SITE}/ftagent/cli.py" in pyc.read_bytes().decode("latin-1")


def test_check_section_imported_every_module(built: Built) -> None:
    """%check ran and imported the modules from the buildroot (the build log shows the command)."""
    check = built.log[built.log.index("Executing(%check)"):]
    if built.path == "fedora":
        for top in ("ftagent", "ftreport", "ftmock"):
            assert f"check-import: {top}" in check
    else:
        assert "pkgutil.walk_packages" in check


def test_rpmlint_finds_no_errors_and_only_the_explained_warnings(built: Built) -> None:
    proc = subprocess.run(["rpmlint", "-c", str(RPMLINT_CONFIG), *map(str, built.rpms.values())],
                          capture_output=True, text=True, timeout=120)
    findings = [ln for ln in proc.stdout.splitlines() if re.match(r"\S+\.noarch: [EW]: ", ln)]
    assert not [f for f in findings if ": E: " in f], proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = SPEC.read_text()
    for finding in findings:
        check = finding.split(": W: ", 1)[1].split()[0]
        assert re.search(rf"^#  - .*\b{re.escape(check)}\b", spec, re.M), f"unexplained in the spec: {finding}"


def _rpmspec(*extra: str) -> str:
    proc = subprocess.run(["rpmspec", "-P", "--define", f"__python3 {sys.executable}", *extra, str(SPEC)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_fedora_path_expands_to_the_fedora_macros_and_leaves_the_fallbacks_out() -> None:
    fedora = _rpmspec("--load", str(FEDORA_MACROS), "--define", "ft_test_interpreter /usr/bin/python3")
    plain = _rpmspec()
    # the wheel is built and installed by the %pyproject_* macros, not by the fallbacks
    assert "--wheel-dir" in fedora and ".pyproject-wheeldir" in fedora
    assert "--target" not in fedora and "--target" in plain
    assert "echo 'python3dist(setuptools) >= 77'" in fedora, "%generate_buildrequires runs %pyproject_buildrequires"
    assert "python3dist(" not in plain.split("%build")[0].split("%prep")[1]
    assert "BuildRequires:  python3-pip" not in fedora and "BuildRequires:  python3-pip" in plain
    # the %files list is %pyproject_save_files's, with the license
    assert "sys.argv[3] == \"1\"" in fedora and " 1 ftagent ftreport ftmock > " in fedora
    # systemd-rpm-macros' scriptlets
    assert "systemd-update-helper install-system-units ftagent-heartbeat.service" in fedora
    assert "mark-reload-system-units ftagent-heartbeat.service ftagent-checkin.service" in fedora
    assert "mark-restart-system-units ftreport.service" in fedora
    assert "mark-restart-system-units ftagent-heartbeat" not in fedora
    assert "systemctl" not in fedora.split("%post\n", 1)[1].split("%files")[0]


def test_rpm_eval_of_the_test_macros_matches_the_fedora_contract() -> None:
    """The stand-in macros expand like Fedora's for the calls the spec makes."""
    def ev(expr: str) -> str:
        return subprocess.run(["rpm", "--load", str(FEDORA_MACROS), "--define", f"__python3 {sys.executable}",
                               "--eval", expr], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "install-system-units a.service b.timer" in ev("%systemd_post a.service b.timer")
    assert "[ $1 -eq 1 ]" in ev("%systemd_post a.service"), "first install only"
    assert "[ $1 -eq 0 ]" in ev("%systemd_preun a.service"), "erase only"
    assert "mark-reload-system-units a.service" in ev("%systemd_postun a.service")
    assert "restart" not in ev("%systemd_postun a.service")
    assert "mark-restart-system-units a.service" in ev("%systemd_postun_with_restart a.service")
    assert ev("%{python3_sitelib}").strip() == SITE
