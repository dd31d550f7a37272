"""``bootstrapperd-pack``: validate a cluster description and lay out a bsroot for it.

This version writes the layout, the validated description, and the cluster CA and bootstrapper
certificate (created only when missing: a CA a running cluster trusts is never replaced);
downloading OS images, iPXE binaries, Kubernetes binaries and container images, and
``manifest.json`` are not done yet, and the tool says so rather than pretending.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .bsroot import Bsroot, write_atomically
from .certs import ClusterPKI, PKIError
from .model import ConfigError, load_cluster_file

NOT_YET = "OS images, iPXE binaries, Kubernetes binaries, container images"


def init_bsroot(description: Path, out: Path) -> Bsroot:
    """Validate ``description`` (raises ConfigError), create the layout, copy it into config/."""
    model = load_cluster_file(description)
    bsroot = Bsroot(out)
    for directory in bsroot.directories():
        directory.mkdir(parents=True, exist_ok=True)
    write_atomically(bsroot.cluster_desc, description.read_bytes())
    pki = ClusterPKI(bsroot.tls)
    pki.ca(model)
    pki.bootstrapper(model)
    return bsroot


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bootstrapperd-pack",
        description="Assemble the offline bsroot directory for a cluster description.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("file", type=Path, help="cluster-desc.yml")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("bsroot"),
        help="bsroot directory to write (default ./bsroot)",
    )
    args = parser.parse_args(argv)
    try:
        bsroot = init_bsroot(args.file, args.output)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    except (OSError, PKIError) as exc:
        print(f"bootstrapperd-pack: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {bsroot.cluster_desc}")
    print(f"not fetched by this version: {NOT_YET}")
    return 0
