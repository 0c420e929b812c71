"""The README's main command: the fault-tolerance design's use case, end to end, on this machine.

It starts `ftmock`, reports Report 1 with `ftreport` (fake source), registers the FT guest with
`ftagent`, takes the FT lease with the heartbeat agent, reports Report 2 (the failover), and shows
the guest's next `checkin` swapping to its new identity and entitlements. Every step runs the real
command line, as an operator would, and prints it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("DEMO_DIR", ROOT / "demo-data"))
ADMIN_PASSWORD = "demo-admin"  # noqa: S105 - a throwaway server's password, shown in the demo
VM1_UUID = "4c4c4544-0056-4d10-8031-b1c04f465631"  # the fake source's built-in FT VM
PRODUCT = "RH00001"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def run(*args: str, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,), quiet: bool = False) -> str:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"{DIM}${RESET} {shown}", flush=True)
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout.rstrip()
    if out and not quiet:
        print("  " + out.replace("\n", "\n  "), flush=True)
    if proc.returncode not in ok:
        print(proc.stderr.rstrip(), file=sys.stderr)
        raise SystemExit(f"demo: '{shown}' exited with {proc.returncode}")
    return proc.stdout


def admin(server_url: str, method: str, path: str, **kw: Any) -> Any:
    import requests

    r = requests.request(method, server_url + path, auth=("admin", ADMIN_PASSWORD), timeout=30,
                         verify=str(DATA / "ftmock" / "ca.pem"), **kw)
    r.raise_for_status()
    return r.json() if r.content else None


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    url_file = DATA / "ftmock" / "url"
    log = open(DATA / "ftmock.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(BIN / "ftmock"), "serve", "--listen", "127.0.0.1:0",
                             "--data-dir", str(DATA / "ftmock"), "--admin-password", ADMIN_PASSWORD,
                             # The use case entitles each FT instance from its own hypervisor: entitlement
                             # mode (with simple content access there would be nothing to attach).
                             "--content-access-mode", "entitlement"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (url_file.exists() and url_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"demo: ftmock did not start; see {DATA / 'ftmock.log'}")
        time.sleep(0.05)
    return proc, url_file.read_text().strip()


def write_configs(url: str) -> tuple[Path, Path]:
    guest = DATA / "guest"
    for sub in ("facts", "products"):
        (guest / sub).mkdir(parents=True, exist_ok=True)
    (guest / "facts" / "virt.facts").write_text(json.dumps({"virt.uuid": VM1_UUID, "virt.is_guest": "true"}))
    (guest / "products" / "rhel.json").write_text(json.dumps({"productId": PRODUCT, "productName": "RHEL"}))
    agent_conf = guest / "ftagent.conf"
    agent_conf.write_text(f"""[server]
url = {url}
ca_cert = {DATA / 'ftmock' / 'ca.pem'}

[agent]
identity_dir = {guest / 'identity'}
entitlement_dir = {guest / 'entitlements'}
facts_dir = {guest / 'facts'}
product_dir = {guest / 'products'}
lock_file = {guest / 'ftagent.lock'}
log_file = {guest / 'ftagent.log'}

[content]
repo_file = {guest / 'yum.repos.d' / 'redhat.repo'}

[lease]
renew_interval = 1
ttl = 6
margin = 2
status_file = {guest / 'lease.json'}
fence_command = /bin/echo fencing
""")
    report_conf = DATA / "ftreport.conf"
    report_conf.write_text(f"""[global]
reporter_id = demo-reporter
state_dir = {DATA / 'ftreport-state'}

[ft-vcenter]
type = fake
file = builtin:report1
owner = admin
rhsm_hostname = {url}
rhsm_username = admin
rhsm_password = {ADMIN_PASSWORD}
rhsm_ca_cert = {DATA / 'ftmock' / 'ca.pem'}
""")
    return agent_conf, report_conf


def entitle_hypervisors(url: str, pool: str) -> None:
    for hyp in admin(url, "GET", "/owners/admin/consumers?type=hypervisor"):
        if not admin(url, "GET", f"/consumers/{hyp['uuid']}/entitlements"):
            admin(url, "POST", f"/consumers/{hyp['uuid']}/entitlements?pool={pool}")
            print(f"  hypervisor {hyp['name']}: entitled to pool {pool} (derived virt pool for its guests)")


def show_entitlement_hosts(url: str, consumer: str) -> None:
    """Which hypervisor each of the guest's entitlements comes from (the design's point)."""
    for ent in admin(url, "GET", f"/consumers/{consumer}/entitlements"):
        host = ent["pool"].get("requiresHost")
        name = admin(url, "GET", f"/consumers/{host}")["name"] if host else "no hypervisor"
        print(f"  (server view) {consumer[:8]}... is entitled from the virt pool of {name}")


def main() -> None:
    started = time.monotonic()
    shutil.rmtree(DATA, ignore_errors=True)
    (DATA / "ftmock").mkdir(parents=True)
    step("1. Start the reference server (ftmock)")
    server, url = start_server()
    print(f"  ftmock is serving {url}")
    try:
        agent_conf, report_conf = write_configs(url)
        env = {"FTAGENT_CONFIG": str(agent_conf)}
        step("2. A virt-limited subscription (admin)")
        run("ftmock", "--data-dir", str(DATA / "ftmock"), "product", "create", "--org", "admin", "--id", PRODUCT,
            "--name", "RHEL for Virtual Datacenters", "--attribute", "virt_limit=unlimited", quiet=True)
        pool = json.loads(run("ftmock", "--data-dir", str(DATA / "ftmock"), "pool", "create", "--org", "admin",
                              "--product", PRODUCT, "--quantity", "10", quiet=True))["id"]
        print(f"  product {PRODUCT} (virt_limit=unlimited), pool {pool} of 10")

        step("3. Report 1: VM1 runs as primary on hypervisor A, backup on hypervisor B (ftreport, fake source)")
        run("ftreport", "-c", str(report_conf), "--oneshot")
        entitle_hypervisors(url, pool)

        step("4. Register the FT guest by its virt.uuid, attach subscriptions (ftagent)")
        run("ftagent", "register", "--org", "admin", "--username", "admin", "--auto-attach",
            env={**env, "FTAGENT_PASSWORD": ADMIN_PASSWORD})
        before = json.loads(run("ftagent", "identity", "--json", env=env))
        run("ftagent", "list", "--consumed", env=env)
        show_entitlement_hosts(url, before["uuid"])
        # Entitled, but no heartbeat agent holds the FT lease yet: status says so, with exit code 3.
        run("ftagent", "status", env=env, ok=(3,))

        step("5. The heartbeat agent takes the FT group's lease")
        run("ftagent", "heartbeat", "--once", env=env)

        step("6. Report 2: failover. B is primary, C is the new backup, A is gone")
        report_conf.write_text(report_conf.read_text().replace("builtin:report1", "builtin:report2"))
        run("ftreport", "-c", str(report_conf), "--oneshot")
        entitle_hypervisors(url, pool)

        step("7. The guest's next check-in (cron) gets 308 and swaps to its successor identity")
        run("ftagent", "checkin", env=env)
        after = json.loads(run("ftagent", "identity", "--json", env=env))
        run("ftagent", "list", "--consumed", env=env)
        show_entitlement_hosts(url, after["uuid"])
        run("ftagent", "status", env=env)
        run("ftagent", "heartbeat", "--once", env=env)

        step("Result")
        print(f"  identity before the failover: {before['uuid']}")
        print(f"  identity after the failover:  {after['uuid']} (failed over from {after.get('failed_over_from')})")
        if after["uuid"] == before["uuid"] or after.get("failed_over_from") != before["uuid"]:
            raise SystemExit("demo: the guest did not swap to its successor identity")
        print(f"  done in {time.monotonic() - started:.1f} s; files are in {DATA}")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
