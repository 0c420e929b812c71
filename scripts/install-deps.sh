#!/usr/bin/env bash
# Install the Debian packages the project needs, only those that are missing.
#   install-deps.sh base   what the demo needs (a Python 3.11 that can make a virtualenv)
#   install-deps.sh all    everything the test suite needs (Go + govmomi for vcsim, libvirt, rpm, rpmlint, mandoc...)
# python3-packaging: rpm's python3dist() dependency generator runs with Debian's python3 and needs it.
# util-linux (unshare) and curl: the sandbox test of the heartbeat unit and the README's by-hand block.
# etcd-server: the etcd lease backend's tests start a 3-member cluster on loopback.
# dnf, createrepo-c (and rpm's rpmbuild): tests build an RPM, index it, and install it through ftmock.
set -euo pipefail
level=${1:-all}

base_pkgs=(ca-certificates)
# A Debian python3 needs these to build a venv and the C extensions; a pyenv/python.org build does not.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    base_pkgs+=(python3-venv python3-dev)
fi
all_pkgs=(gcc pkg-config libssl-dev libvirt-dev golang-go golang-github-vmware-govmomi-dev
          rpm rpm2cpio rpmlint python3-packaging mandoc man-db systemd iproute2 procps util-linux curl etcd-server
          sanlock python3-sanlock
          dnf createrepo-c  # the content tests: dnf reads ftmock's content server through ftagent's repo file
          sosreport  # the sos report plugin's test runs Debian's sos 4 with only that plugin
          patchelf)  # patchelf: scripts/find-python.sh stages the test matrix's interpreters

pkgs=("${base_pkgs[@]}")
[ "$level" = all ] && pkgs+=("${all_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
