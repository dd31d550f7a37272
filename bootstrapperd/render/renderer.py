"""Everything rendered for a machine, from the model, the templates and the cluster's PKI: the
boot scripts (iPXE, pxelinux), ``install.sh``, the node set-up as cloud-config and as Ignition.

``bootstrapperd render`` and the servers (HTTP, TFTP) call the same methods, so what the command
prints is exactly what a machine is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from ..bsroot.layout import Bsroot
from ..bsroot.mirror import Mirror
from ..bsroot.pki import NODE_CERTIFICATES, ClusterPKI
from ..machines.boot import WAIT_SECONDS, BootAction, BootSpec, default_spec
from ..machines.resolver import machine_view
from ..model import ClusterModel
from ..routes import TFTP_STATIC_DIR, URLs
from . import facts
from .ignition import dumps, to_ignition
from .templates import TemplateError, Templates

__all__ = ["PRIVATE_KINDS", "Kind", "Rendered", "Renderer", "TemplateError"]

OS_TITLES = {"flatcar": "Flatcar Container Linux", "coreos": "CoreOS Container Linux"}
UPDATE_CONF = {"flatcar": "/etc/flatcar/update.conf", "coreos": "/etc/coreos/update.conf"}


class Kind(StrEnum):
    CLOUD_CONFIG = "cloud-config"
    IGNITION = "ignition"
    IPXE = "ipxe"
    INSTALL = "install"


# Kinds that carry secrets when asked with ``secrets=True`` (only against an install token).
PRIVATE_KINDS = frozenset({Kind.CLOUD_CONFIG, Kind.IGNITION})


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    content_type: str
    private: bool  # carries a secret or a token: only for the machine it belongs to


class Renderer:
    def __init__(self, bsroot: Bsroot, pki: ClusterPKI) -> None:
        self.bsroot = bsroot
        self.pki = pki
        self.templates = Templates(bsroot.templates)
        self.mirror = Mirror(bsroot.html_static)

    # --- boot scripts ---------------------------------------------------------------------------

    def ipxe(
        self,
        model: ClusterModel,
        mac: str,
        server: str,
        token: str | None = None,
        action: BootAction = BootAction.INSTALL,
    ) -> str | None:
        """The machine's iPXE script for ``action`` (its state decides: lifecycle.py), with its
        install ``token`` in the kernel arguments when one was issued for this boot."""
        spec = machine_view(model, mac).boot(server, token, action)
        if spec is None:
            return None
        return self.templates.render(
            "ipxe.j2", boot=spec, server=server, urls=URLs(server), wait_seconds=WAIT_SECONDS
        )

    def chain(self, server: str) -> str:
        return self.templates.render("chain.ipxe.j2", server=server, urls=URLs(server))

    def pxelinux(
        self,
        model: ClusterModel,
        mac: str,
        server: str,
        token: str | None = None,
        action: BootAction = BootAction.INSTALL,
    ) -> str | None:
        spec = machine_view(model, mac).boot(server, token, action)
        if spec is None:
            return None
        about = f"{spec.hostname} ({spec.mac})"
        return self._pxelinux(spec, about, sysappend=False)

    def pxelinux_default(self, model: ClusterModel, server: str) -> str:
        spec = default_spec(model, server)
        about = "machines without their own pxelinux.cfg/01-<mac>"
        return self._pxelinux(spec, about, sysappend=True)

    def _pxelinux(self, spec: BootSpec, about: str, sysappend: bool) -> str:
        return self.templates.render(
            "pxelinux.cfg.j2", boot=spec, about=about, sysappend=sysappend, static=TFTP_STATIC_DIR
        )

    # --- install.sh and the node set-up ---------------------------------------------------------

    def _os(self, model: ClusterModel) -> dict[str, Any]:
        name = model.os.name
        return {
            "name": name,
            "title": OS_TITLES[name],
            "channel": model.os.channel,
            "version": self.mirror.version_for(model.os),
            "installer": f"{name}-install",
        }

    def install_sh(self, model: ClusterModel, server: str) -> str:
        os = self._os(model)
        # The script's own URLs: $SERVER and $MAC are its shell variables.
        script = URLs("$SERVER")
        if os["name"] == "flatcar":
            config = {
                "title": "Ignition config",
                "format": "ignition",
                "url": script.ignition("$MAC"),
                "path": "ignition",  # url's parts, for sites' own templates of older releases
                "suffix": ".json",
                "flag": "-i",
                "file": "ignition.json",
            }
        else:
            config = {
                "title": "cloud-config",
                "format": "cloud-config",
                "url": script.cloud_config("$MAC"),
                "path": "cloud-config",
                "suffix": ".yml",
                "flag": "-c",
                "file": "cloud-config.yml",
            }
        return self.templates.render(
            "install.sh.j2",
            server=server,
            report_url=script.report("$MAC"),
            csr_url=script.csr("$MAC", ""),
            certificates=NODE_CERTIFICATES,
            mirror=URLs(server).static(f"{os['name']}/{os['channel']}"),
            os=os,
            config=config,
            bootstrapper=str(model.bootstrapper),
        )

    def _node_context(
        self, model: ClusterModel, mac: str, server: str, secrets: bool
    ) -> dict[str, Any] | None:
        view = machine_view(model, mac)
        if not view.served:
            return None  # an unknown machine, and unknown machines are ignored
        node = facts.node_facts(view)
        urls = URLs(server)
        # No private key of the machine's own: it makes its keys and has their certificates
        # signed (install.sh). What it cannot make is given only with its install token.
        tls: dict[str, str] = {"ca": self.pki.ca_pem().decode()}
        if secrets and node["is_master"]:
            tls["service_account_key"] = self.pki.service_account_key().decode()
        os = self._os(model)
        policy = model.update_policy
        install = None
        if os["name"] == "flatcar":
            install = {"url": urls.install_sh(), "os_title": os["title"]}
        return {
            "mac": node["mac"],
            "node": node,
            "cluster": facts.cluster_facts(model, server),
            **facts.images_facts(model),
            "kubernetes": {
                "version": model.kubernetes_version,
                "kubelet_url": urls.static(f"kubernetes/{model.kubernetes_version}/kubelet"),
            },
            "ssh_authorized_keys": list(model.ssh_authorized_keys),
            "update": {
                "strategy": policy.reboot_strategy,
                "window_start": policy.start_time,
                "window_length": policy.time_length,
                "conf_path": UPDATE_CONF[os["name"]],
            },
            "tls": tls,
            "os": os,
            "install": install,
            "server": server,
        }

    def node_setup(
        self, model: ClusterModel, mac: str, server: str, secrets: bool = False
    ) -> dict[str, Any] | None:
        """The machine's set-up (hostname, SSH keys, files, units), as ``node.yaml.j2`` gives it."""
        context = self._node_context(model, mac, server, secrets)
        if context is None:
            return None
        return self._setup(context)

    def _setup(self, context: dict[str, Any]) -> dict[str, Any]:
        text = self.templates.render("node.yaml.j2", **context)
        try:
            setup = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = self.templates.source_of("node.yaml.j2")
            raise TemplateError(f"template {where} did not give YAML: {exc}") from None
        if not isinstance(setup, dict) or not isinstance(setup.get("hostname"), str):
            raise TemplateError("template node.yaml.j2 must give a mapping with a hostname")
        setup.setdefault("files", [])
        setup.setdefault("units", [])
        setup.setdefault("ssh_authorized_keys", [])
        return setup

    def cloud_config(
        self, model: ClusterModel, mac: str, server: str, secrets: bool = False
    ) -> str | None:
        context = self._node_context(model, mac, server, secrets)
        if context is None:
            return None
        setup = self._setup(context)
        return self.templates.render(
            "cloud-config.yaml.j2",
            setup=setup,
            mac=context["mac"],
            roles=context["node"]["roles"],
            update=context["update"],
        )

    def ignition(
        self, model: ClusterModel, mac: str, server: str, secrets: bool = False
    ) -> str | None:
        setup = self.node_setup(model, mac, server, secrets)
        return dumps(to_ignition(setup)) if setup is not None else None

    def render(
        self,
        kind: Kind,
        model: ClusterModel,
        mac: str,
        server: str,
        *,
        secrets: bool = False,
        token: str | None = None,
        action: BootAction = BootAction.INSTALL,
    ) -> Rendered | None:
        """What the server serves for ``kind`` to machine ``mac`` (canonical); None when the
        machine gets nothing (unknown, and unknown machines are ignored). ``secrets``: the
        configuration carries what a machine cannot make itself (only against its install
        token); ``token``: the install token a boot script hands to the machine."""
        if kind is Kind.INSTALL:
            return Rendered(self.install_sh(model, server), "text/x-shellscript", False)
        if kind is Kind.IPXE:
            text = self.ipxe(model, mac, server, token, action)
            return Rendered(text, "text/plain", token is not None) if text is not None else None
        if kind is Kind.IGNITION:
            text = self.ignition(model, mac, server, secrets)
            return Rendered(text, "application/json", secrets) if text is not None else None
        text = self.cloud_config(model, mac, server, secrets)
        return Rendered(text, "text/cloud-config", secrets) if text is not None else None
