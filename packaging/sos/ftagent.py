# sos report plugin for ftagent and ftreport (part of the ftagent project, GPL-2.0-or-later).
#
# Installed into sos's plugin package (sos.report.plugins; on RHEL 9
# /usr/lib/python3.9/site-packages/sos/report/plugins/ftagent.py), where sos 4 loads every module;
# "sos report -o ftagent" runs it alone. It collects the configuration of both programs with every
# password masked, their status files, the journal of their units, and what "ftagent status --json"
# and "ftreport --print" say. Private keys, the lease holder id and ftreport's password key are
# never collected.
#
# With --sysroot, sos copies files from that tree; the two commands are then the tree's own
# (SYSROOT/usr/bin/...), run with the tree as their root (FTAGENT_ROOT, FTREPORT_ROOT), which each
# program honours for every system path: no chroot is needed, so an unpacked image or a test tree
# is summarised too. Without such commands in the tree, sos's usual way (chroot) applies.
"""sos report plugin: ftagent and ftreport configuration (passwords masked), status, journal, summaries."""

from __future__ import annotations

import os
import re

from sos.report.plugins import DebianPlugin, Plugin, RedHatPlugin, UbuntuPlugin

# A key whose name says it holds a secret, in ftagent.conf, ftreport.conf(.d) and sysconfig files:
# "rhsm_password = x", "encrypted_password=...", "VIRTWHO_ESX_PASSWORD=...", "etcd_password: x".
_SECRET_VALUE = re.compile(r"(?im)^(\s*[\w.-]*(?:password|passphrase|secret|token)[\w.-]*\s*[=:]\s*)\S.*$")
# Credentials inside a URL: "proxy = http://user:pass@proxy:3128".
_URL_CREDENTIALS = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")
_MASK = "********"

# ftagent's own files in /etc/ftagent, not the directory: a configuration may keep its identity
# (and its key) beside ftagent.conf.
_CONFIG = ("/etc/ftagent/ftagent.conf", "/etc/ftagent/facts.d/", "/etc/ftagent/products.d/", "/etc/ftreport.conf",
           "/etc/ftreport.d/", "/etc/sysconfig/ftreport")
_CONFIG_PATHS = r".*/etc/(ftagent/|ftreport\.conf|ftreport\.d/|sysconfig/ftreport)"
_STATUS = (
    "/var/lib/ftagent/lease.json",  # the heartbeat's status file
    "/var/lib/ftreport/sent-*.json",  # the last report each server accepted
    "/var/lib/prometheus/node-exporter/ftagent.prom",
    "/var/lib/prometheus/node-exporter/ftreport.prom",
)
_SECRETS = (
    "/var/lib/ftagent/identity",  # identity key (and certificate)
    "/var/lib/ftagent/*.holder",  # the lease holder id: a secret that a claim of the lease rests on
    "/var/lib/ftreport/key",  # the key ftreport's encrypted passwords open with
    "/etc/ftagent/*key*.pem",
    "/etc/ftreport.d/*key*",
)
_UNITS = ("ftagent-heartbeat", "ftagent-checkin", "ftreport")


class Ftagent(Plugin, RedHatPlugin, DebianPlugin, UbuntuPlugin):

    short_desc = "ftagent guest agent and ftreport hypervisor reporter"
    plugin_name = "ftagent"
    profiles = ("system", "sysmgmt", "virt")
    packages = ("ftagent", "ftreport", "python3-ftagent")
    files = ("/etc/ftagent/ftagent.conf", "/etc/ftreport.conf", "/etc/ftreport.d")

    def setup(self) -> None:
        self.add_forbidden_path(list(_SECRETS))
        self.add_copy_spec(list(_CONFIG) + list(_STATUS))
        self.add_journal(units=list(_UNITS))
        self._summary("ftagent", "status --json", "FTAGENT_ROOT")
        self._summary("ftreport", "--print", "FTREPORT_ROOT")

    def _summary(self, program: str, args: str, root_variable: str) -> None:
        """One program's own account, under the name "PROGRAM ARGS" in sos_commands/ftagent/."""
        name = f"{program} {args}"
        if self.use_sysroot():
            own = self.join_sysroot(f"/usr/bin/{program}")
            if os.access(own, os.X_OK):
                self.add_cmd_output(f"{own} {args}", suggest_filename=name, chroot=False,
                                    env={root_variable: self.sysroot}, timeout=120)
                return
        self.add_cmd_output(name, suggest_filename=name, timeout=120)

    def postproc(self) -> None:
        # Each collected configuration file by the path sos knows it under without the sysroot:
        # sos 4.0's do_path_regex_sub adds the sysroot a second time and masks nothing under one.
        configs = re.compile(_CONFIG_PATHS)
        for copied in list(self.copied_files):
            if configs.match(copied["srcpath"]):
                path = self.strip_sysroot(copied["srcpath"])
                self.do_file_sub(path, _SECRET_VALUE, r"\1" + _MASK)
                self.do_file_sub(path, _URL_CREDENTIALS, r"\1" + _MASK + "@")
