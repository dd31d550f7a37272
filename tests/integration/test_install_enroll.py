"""install.sh as a live system runs it, against the daemon in namespaces: with the install token
its boot script gave it, it fetches its configuration, makes its keys on the machine, has their
certificates signed, and installs a configuration holding keys that match the certificates;
the bootstrapper never held those keys. A second run with the same token is refused."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import need_tools
from tests.ignition import ignition_files
from tests.integration.dhcp_lab import DHCPLab, events

MASTER = "52:54:00:77:00:10"  # master1, reservation 10.77.0.10
WORKER = "52:54:00:77:00:11"  # worker1
BASE = "http://10.77.0.1"

# Stands in for flatcar-install / coreos-install: keeps the configuration it was given.
INSTALLER = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -i|-c) cp "$2" "{out}"; shift;; esac
  shift
done
"""


def cloud_config_files(text: str) -> dict[str, str]:
    files = {}
    for entry in yaml.safe_load(text)["write_files"]:
        content = entry["content"]
        if entry.get("encoding") == "b64":
            content = base64.b64decode(content).decode()
        files[entry["path"]] = content
    return files


def install(lab: DHCPLab, mac: str, token: str, os_name: str) -> tuple[int, str, Path]:
    """Run the served install.sh in the client namespace as the live system would."""
    work = lab.scratch / f"install-{os_name}"
    (work / "bin").mkdir(parents=True, exist_ok=True)
    out = work / "installed.conf"
    installer = work / "bin" / f"{os_name}-install"
    installer.write_text(INSTALLER.format(out=out))
    installer.chmod(0o755)
    script = work / "install.sh"
    lab.cli.run(["curl", "-fsS", "-o", str(script), f"{BASE}/install.sh"], check=True)
    env = {
        "PATH": f"{work / 'bin'}:{os.environ['PATH']}",
        "BOOTSTRAPPERD_TOKEN": token,
        "NOREBOOT": "1",
        "DISK": "/dev/null",
    }
    result = lab.cli.run(["env", *(f"{k}={v}" for k, v in env.items()), "sh", str(script)])
    return result.returncode, result.stdout + result.stderr, out


def boot_script_token(lab: DHCPLab, mac: str) -> str:
    script = lab.cli.run(["curl", "-fsS", f"{BASE}/ipxe/{mac}"], check=True).stdout
    found = re.search(r"bootstrapperd\.token=(\S+)", script)
    assert found is not None, script
    return found.group(1)


def assert_pairs(files: dict[str, str], which: str, hostname: str | None) -> None:
    cert = x509.load_pem_x509_certificate(files[f"/etc/kubernetes/ssl/{which}.pem"].encode())
    key = serialization.load_pem_private_key(
        files[f"/etc/kubernetes/ssl/{which}-key.pem"].encode(), password=None
    )
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    if hostname is not None:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == hostname


@pytest.mark.parametrize("os_name", ["flatcar", "coreos"])
def test_install_makes_its_keys_and_installs_them(
    netlab: NetLab, bsroot: Path, os_name: str
) -> None:
    need_tools("dhclient", "curl", "openssl", "base64")
    if os_name == "coreos":
        desc = bsroot / "config" / "cluster-desc.yml"
        desc.write_text(desc.read_text().replace("name: flatcar", "name: coreos"))
    lab = DHCPLab.build(netlab, bsroot, MASTER)
    daemon = lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    token = boot_script_token(lab, MASTER)

    code, output, out = install(lab, MASTER, token, os_name)
    assert code == 0, output + daemon.output
    text = out.read_text()
    files = ignition_files(json.loads(text)) if os_name == "flatcar" else cloud_config_files(text)
    assert files["/etc/hostname" if os_name == "flatcar" else "/etc/hosts"]
    assert_pairs(files, "worker", "master1")
    assert_pairs(files, "apiserver", "kube-apiserver")
    assert_pairs(files, "admin", "admin")
    assert "BEGIN PRIVATE KEY" in files["/etc/kubernetes/ssl/service-account-key.pem"]
    # The keys were made on the machine: none of them was ever on the bootstrapper.
    for path in (bsroot / "tls").rglob("*"):
        if path.is_file():
            for which in ("worker", "apiserver", "admin"):
                key = files[f"/etc/kubernetes/ssl/{which}-key.pem"].strip()
                assert key not in path.read_text(errors="replace"), path

    # The same token again (someone who read it, or a replay): refused, and an alarm.
    code, output, _ = install(lab, MASTER, token, os_name)
    assert code != 0
    assert "install token refused" in daemon.output


def test_a_worker_gets_only_its_worker_certificate(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dhclient", "curl", "openssl", "base64")
    lab = DHCPLab.build(netlab, bsroot, WORKER)
    daemon = lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    code, output, out = install(lab, WORKER, boot_script_token(lab, WORKER), "flatcar")
    assert code == 0, output + daemon.output
    files = ignition_files(json.loads(out.read_text()))
    assert_pairs(files, "worker", "worker1")
    keys = sorted(path for path in files if path.endswith("-key.pem"))
    assert keys == ["/etc/kubernetes/ssl/worker-key.pem"]


def test_without_a_token_nothing_secret_and_no_certificate(netlab: NetLab, bsroot: Path) -> None:
    need_tools("dhclient", "curl", "openssl", "base64")
    lab = DHCPLab.build(netlab, bsroot, MASTER)
    lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    code, output, out = install(lab, MASTER, "", "flatcar")
    assert code != 0
    assert "refused to sign worker (HTTP 401)" in output
    assert not out.exists()
