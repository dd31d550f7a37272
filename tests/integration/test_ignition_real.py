"""The Ignition config a machine installs, applied by the real Ignition (Debian's coreos/ignition
2.14, the binary Flatcar's initramfs runs): the served install.sh runs against the daemon in
namespaces, makes the machine's keys, merges them and hands the config to the (stand-in)
installer; that config then goes through ``ignition-validate`` and Ignition's ``fetch-offline``
and ``files`` stages into a root directory, as on the installed system's first boot. Files,
modes, units and their enablement, the user and its SSH key land where Ignition puts them.
(The files stage's last step, SELinux relabelling with ``setfiles`` and the policy's contexts,
needs a policy this root lacks: it is the one step allowed to fail.)

What this does not run: systemd starting those units, etcd, containerd, kubelet (see
docs/http.md, "What real tools execute")."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from bootstrapperd.lab.netlab import NetLab
from tests.conftest import EXAMPLE, need, need_tools
from tests.ignition import ignition_configs, ignition_files
from tests.integration.dhcp_lab import DHCPLab, events
from tests.integration.test_install_enroll import boot_script_token, install

IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")  # Debian's package `ignition`
MASTER = ("52:54:00:77:00:10", "master1")
WORKER = ("52:54:00:77:00:11", "worker1")

# Ignition runs its two stages in a private mount namespace: its own /run (where fetch-offline
# leaves the config for the later stages), nothing of the host's touched.
STAGES = """\
set -e
mount -t tmpfs ignition-run /run
for stage in fetch-offline files; do
  "$IGNITION" -platform file -stage "$stage" -root "$ROOT" -log-to-stdout
done
"""


def root_for_ignition(root: Path) -> None:
    """What Ignition's files stage needs of the system it writes into: the account files its
    useradd edits (this machine's, copied) and SELinux's config (as Flatcar's root has one)."""
    (root / "etc" / "selinux").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        shutil.copy2(Path("/etc") / name, root / "etc" / name)
    (root / "etc" / "selinux" / "config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")


@pytest.mark.parametrize(("mac", "hostname"), [MASTER, WORKER], ids=["master", "worker"])
def test_real_ignition_applies_the_config_a_machine_installs(
    netlab: NetLab, bsroot: Path, request: pytest.FixtureRequest, mac: str, hostname: str
) -> None:
    need_tools("dhclient", "curl", "openssl", "base64", "unshare", "ignition-validate")
    need(IGNITION.is_file(), f"{IGNITION} is missing (Debian package ignition)")
    lab = DHCPLab.build(netlab, bsroot, mac)
    daemon = lab.start_daemon()
    log, output = lab.dhclient()
    assert any(e.get("reason") == "BOUND" for e in events(log)), output
    code, output, installed = install(lab, mac, boot_script_token(lab, mac), "flatcar")
    assert code == 0, output + daemon.output
    config = json.loads(installed.read_text())

    valid = subprocess.run(["ignition-validate", str(installed)], capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout + valid.stderr

    # Ignition writes a user's files as that user: the root must be reachable by any user
    # (pytest's own temporary directory is root's alone).
    scratch = Path(tempfile.mkdtemp(prefix="bsd-ignition-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    scratch.chmod(0o755)
    root = scratch / "root"
    root_for_ignition(root)
    ran = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", STAGES],
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "IGNITION": str(IGNITION),
            "IGNITION_CONFIG_FILE": str(installed),
            "ROOT": str(root),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = "\n".join(  # Ignition's own lines (not the config it echoes, nor journald's absence)
        line
        for line in (ran.stdout + ran.stderr).splitlines()
        if line.startswith(("CRITICAL", "ERROR", "WARNING", "INFO", "sh:", "unshare:"))
        and "journal entry" not in line
    )
    # Debian builds Ignition for SELinux systems: the files stage ends by relabelling what it
    # wrote with setfiles and the policy's file contexts, which Flatcar's root has and this
    # root does not. That last step is the only one allowed to fail here.
    critical = [line for line in report.splitlines() if line.startswith("CRITICAL")]
    assert all("relabel" in line for line in critical), report[-4000:]
    assert ran.returncode in (0, 1), report[-4000:]
    assert report.count("fetch-offline passed") == 1, report[-4000:]
    assert "files: createResultFile" in report, report[-4000:]  # every operation before it

    configs = ignition_configs(config)
    # Every file of the config and of those it merges, with its contents and its mode.
    written = ignition_files(config)
    for entry in (f for c in configs for f in c.get("storage", {}).get("files", [])):
        path = root / entry["path"].lstrip("/")
        assert path.is_file(), entry["path"]
        assert path.read_text() == written[entry["path"]], entry["path"]
        if "mode" in entry:
            assert stat.S_IMODE(path.stat().st_mode) == entry["mode"], entry["path"]
    assert (root / "etc" / "hostname").read_text().strip() == hostname
    keys = root / "etc" / "kubernetes" / "ssl"
    assert stat.S_IMODE((keys / "worker-key.pem").stat().st_mode) == 0o600
    certificate = subprocess.run(
        ["openssl", "x509", "-noout", "-pubkey", "-in", str(keys / "worker.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = subprocess.run(
        ["openssl", "pkey", "-pubout", "-in", str(keys / "worker-key.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert certificate == key  # the key the machine made, under the certificate it was signed
    if hostname == "master1":
        assert (keys / "apiserver-key.pem").is_file()
        assert (root / "etc" / "kubernetes" / "manifests" / "kube-apiserver.yaml").is_file()
    else:
        assert not (keys / "apiserver-key.pem").exists()

    # Units: written, and enabled through Ignition's preset (systemd applies it at first boot).
    preset = (root / "etc" / "systemd" / "system-preset" / "20-ignition.preset").read_text()
    for unit in (u for c in configs for u in c.get("systemd", {}).get("units", [])):
        if "contents" in unit:
            text = (root / "etc" / "systemd" / "system" / unit["name"]).read_text()
            assert text == unit["contents"], unit["name"]
        if unit.get("enabled"):
            assert f"enable {unit['name']}" in preset.splitlines(), unit["name"]
        for dropin in unit.get("dropins", []):
            path = root / "etc" / "systemd" / "system" / f"{unit['name']}.d" / dropin["name"]
            assert path.read_text() == dropin["contents"]

    # The user, with the description's SSH key where Flatcar's sshd reads Ignition's keys.
    users = {line.split(":")[0] for line in (root / "etc" / "passwd").read_text().splitlines()}
    assert "core" in users
    authorized = root / "home" / "core" / ".ssh" / "authorized_keys.d" / "ignition"
    assert "operator@example" in authorized.read_text()
    assert EXAMPLE.read_text().count("ssh-ed25519") == authorized.read_text().count("ssh-ed25519")
