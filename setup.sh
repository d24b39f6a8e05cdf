#!/usr/bin/env bash
# Set up a development/CI machine (Debian 12, as root): system packages, a venv in .venv
# with kexecfw installed editable plus its viz, notebook (JupyterLab) and test extras, and the purgatory objects.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
PKGS="python3-venv python3-dev gcc make gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu device-tree-compiler xz-utils cpio qemu-user-static libc6-dev-arm64-cross qemu-system-arm"
# capture side: test oracles (vmcore-dmesg, makedumpfile) and liblzo2 for the optional python-lzo codec
PKGS="$PKGS makedumpfile kexec-tools liblzo2-dev"
# x86_64: EFI firmware for QEMU, to run the lab's x86_64 guest booted through EFI
PKGS="$PKGS ovmf"
# the notebooks' browser test (tests/test_notebooks_browser.py): headless Chromium driven by selenium
PKGS="$PKGS chromium chromium-driver"
# the kdump ssh target's tests start their own sshd on 127.0.0.1 (openssh-server provides the binary)
PKGS="$PKGS openssh-server openssh-client"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    # kexec-tools must never kexec this machine on reboot (its default is to)
    echo "kexec-tools kexec-tools/load_kexec boolean false" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    # The tests need sshd's binary, not a listening ssh service: when this installs openssh-server, its
    # service is neither started now (policy-rc.d says no) nor at the next boot.
    own_policy=""
    case " $missing " in *" openssh-server "*)
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
            $SUDO chmod 755 /usr/sbin/policy-rc.d; own_policy=1
        fi;;
    esac
    $SUDO apt-get install -y -qq $missing >/dev/null
    [ -z "$own_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
    case " $missing " in *" openssh-server "*)
        if command -v systemctl >/dev/null; then $SUDO systemctl disable -q ssh.service ssh.socket 2>/dev/null || true; fi;;
    esac
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# setuptools explains at length how an editable install with a package-dir mapping (plugins/ installs as
# kexecfw.plugins) finds its modules: a notice, not a problem; quiet it for the installs below
export PYTHONWARNINGS="ignore:Editable installation"
# viz: the plots; notebook: JupyterLab (`.venv/bin/jupyter lab notebooks/`); test: pytest and friends
.venv/bin/python -m pip install -q -e '.[viz,notebook,test]'
# optional: lzo pages (python-lzo) and drgn as an independent reader of our dumps in tests. A failure is
# shown, and fatal where every test oracle must be there (CI=true or KEXECFW_REQUIRE_ORACLES=1).
if ! .venv/bin/python -m pip install -q -e '.[capture,oracles]'; then
    echo "setup: WARNING: the optional extras capture,oracles (python-lzo, drgn) did not install (see pip's" \
         "error above): lzo-compressed dumps cannot be read or written, and the tests that need them skip" >&2
    if [ "${CI:-}" = true ] || [ "${KEXECFW_REQUIRE_ORACLES:-}" = 1 ]; then
        echo "setup: failed: CI and KEXECFW_REQUIRE_ORACLES=1 need every test oracle" >&2
        exit 1
    fi
fi
# Purgatory objects are shipped prebuilt as package data; rebuild them from source here.
if ls plugins/*/purgatory/*.S >/dev/null 2>&1; then make -s purgatory; fi
echo "setup done: use .venv/bin/python (notebooks: .venv/bin/jupyter lab notebooks/)"
