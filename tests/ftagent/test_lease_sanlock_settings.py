"""``[lease] backend = sanlock`` settings and timing: no daemon needed, so these run on every leg."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftagent.config import load_config
from ftagent.errors import ConfigError
from ftagent.lease import parse_lease_settings
from ftagent.lease.backends.sanlock import SanlockSettings, SanlockTiming, margin_warnings

ROOT = Path(__file__).resolve().parents[2]
BASE = "backend = sanlock\nsanlock_path = group.lease\nsanlock_host_id = 2\n"


def write_conf(tmp_path: Path, lease: str) -> Path:
    path = tmp_path / "ftagent.conf"
    path.write_text(f"[lease]\n{lease}\n")
    return path


def test_sanlock_settings_and_sanlock_timing_replace_ttl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = parse_lease_settings(load_config(write_conf(tmp_path, BASE + "sanlock_io_timeout = 1\nttl = 20")))
    assert s.backend == "sanlock" and isinstance(s.backend_options, SanlockSettings)
    assert s.backend_options.sanlock_host_id == 2 and s.backend_options.sanlock_lockspace == "ftagent"
    assert s.backend_options.sanlock_path == tmp_path.resolve() / "group.lease"
    assert s.ttl == 68.0  # 8 x 1 + 60: sanlock's host_dead, not the configured ttl
    assert (s.renew_interval, s.margin) == (17.0, 17.0)  # derived from it in the usual ratios
    assert "[lease] ttl is ignored by the sanlock backend" in caplog.text
    assert parse_lease_settings(load_config(write_conf(tmp_path, BASE))).ttl == 140.0  # io_timeout 10


@pytest.mark.parametrize(("lease", "key"), [
    ("backend = sanlock\nsanlock_host_id = 1", "sanlock_path"),
    ("backend = sanlock\nsanlock_path = /x", "sanlock_host_id"),
    (BASE.replace("= 2", "= 2001"), "sanlock_host_id"),
    (BASE.replace("= 2", "= 0"), "sanlock_host_id"),
    (BASE.replace("= 2", "= two"), "sanlock_host_id"),
    (BASE + "sanlock_io_timeout = 0", "sanlock_io_timeout"),
    (BASE + "sanlock_io_timeout = 1.5", "sanlock_io_timeout"),
    (BASE + "sanlock_lockspace = a:b", "sanlock_lockspace"),
    (BASE + "sanlock_lockspace = " + "x" * 49, "sanlock_lockspace"),
    (BASE + "sanlock_io_timeout = 1\nmargin = 70", "margin"),
])
def test_bad_sanlock_settings_name_the_key(tmp_path: Path, lease: str, key: str) -> None:
    path = write_conf(tmp_path, lease)
    with pytest.raises(ConfigError) as err:
        parse_lease_settings(load_config(path))
    assert (err.value.section, err.value.key) == ("lease", key)


def test_margin_warnings_say_when_the_fencing_margin_cannot_be_met(tmp_path: Path) -> None:
    ok = parse_lease_settings(load_config(write_conf(tmp_path, BASE + "sanlock_io_timeout = 1\nfence_command = true")))
    assert margin_warnings(ok, SanlockTiming(1)) == []
    slow = parse_lease_settings(load_config(write_conf(
        tmp_path, BASE + "sanlock_io_timeout = 1\nmargin = 5\nfence_command = true\nfence_units = db\nfence_timeout = 4")))
    (warning,) = margin_warnings(slow, SanlockTiming(1))
    assert "more than margin 5 s" in warning
    # The daemon runs the lockspace with io_timeout 1 although 10 was configured: margin 100 no longer fits.
    wide = parse_lease_settings(load_config(write_conf(tmp_path, BASE + "margin = 100\nrenew_interval = 5")))
    assert any("no renewal can land" in w for w in margin_warnings(wide, SanlockTiming(1)))


def test_sanlock_init_without_path_is_a_config_error(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "backend = server")
    r = subprocess.run([sys.executable, "-m", "ftagent", "--config", str(path), "sanlock-init"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert r.returncode == 78, r.stderr
    assert "sanlock_path" in r.stderr
