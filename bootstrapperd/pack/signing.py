"""Detached OpenPGP signatures on OS images, checked against one pinned signing key.

Flatcar (and CoreOS before it) publish ``<file>.sig`` beside every release file, made by their
image signing key. Pack accepts a downloaded file only when ``gpgv`` says the signature is
valid *and* was made by the key whose primary fingerprint is pinned (the OS's published one,
or the description's ``downloads.signing_key_fingerprint``). The key itself comes from a URL
or a file; its fingerprint is computed here from the key packet, so a key swapped on the web
server is refused before it is ever used. ``gpgv`` (in every Debian/Ubuntu base system) does
the cryptography; no keyring of the user's is read or written.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KNOWN_KEYS", "SignatureError", "SigningKey"]


@dataclass(frozen=True)
class PublishedKey:
    url: str
    fingerprint: str


# The OS vendors' image signing keys: where they are published and their primary fingerprints.
KNOWN_KEYS = {
    "flatcar": PublishedKey(
        "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc",
        "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A",
    ),
    "coreos": PublishedKey(
        "https://coreos.com/security/image-signing-key/CoreOS_Image_Signing_Key.asc",
        "04127D0BFABEC8871FFB2CCE50E0885593D2DCB4",
    ),
}


class SignatureError(Exception):
    """A key or signature that does not check out; the message says which and why."""


def dearmor(data: bytes) -> bytes:
    """The binary packets of an ASCII-armored OpenPGP block (binary input is returned as is)."""
    text = data.decode("ascii", errors="replace")
    if "-----BEGIN PGP" not in text:
        return data
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP"))
        end = next(i for i, line in enumerate(lines) if line.startswith("-----END PGP"))
    except StopIteration:
        raise SignatureError("the key's armor has no END line") from None
    body = lines[start + 1 : end]
    # Armor headers (``Comment: …``) end at the first blank line.
    if "" in body:
        body = body[body.index("") + 1 :]
    payload = "".join(line.strip() for line in body if not line.startswith("="))
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise SignatureError(f"the key's armor is not valid base64: {exc}") from None


def primary_fingerprint(packets: bytes) -> str:
    """The v4 fingerprint of the first (primary) public-key packet: SHA-1 over 0x99, the
    two-byte body length and the body (RFC 4880 section 12.2)."""
    if not packets:
        raise SignatureError("the key is empty")
    tag_byte = packets[0]
    if not tag_byte & 0x80:
        raise SignatureError("the key does not start with an OpenPGP packet")
    if tag_byte & 0x40:  # new format
        tag = tag_byte & 0x3F
        first = packets[1]
        if first < 192:
            length, offset = first, 2
        elif first < 224:
            length, offset = ((first - 192) << 8) + packets[2] + 192, 3
        elif first == 255:
            length, offset = int.from_bytes(packets[2:6], "big"), 6
        else:
            raise SignatureError("the key's first packet has a partial length")
    else:  # old format
        tag = (tag_byte >> 2) & 0x0F
        length_type = tag_byte & 0x03
        size = {0: 1, 1: 2, 2: 4}.get(length_type)
        if size is None:
            raise SignatureError("the key's first packet has an indeterminate length")
        length, offset = int.from_bytes(packets[1 : 1 + size], "big"), 1 + size
    if tag != 6:
        raise SignatureError(f"the key's first packet is not a public key (tag {tag})")
    body = packets[offset : offset + length]
    if len(body) != length or not body or body[0] != 4:
        raise SignatureError("the key is truncated or not a version 4 key")
    digest = hashlib.sha1(b"\x99" + length.to_bytes(2, "big") + body, usedforsecurity=False)
    return digest.hexdigest().upper()


class SigningKey:
    """One pinned OpenPGP public key (binary packets), ready to check detached signatures."""

    def __init__(self, data: bytes, fingerprint: str, source: str) -> None:
        self.packets = dearmor(data)
        self.fingerprint = primary_fingerprint(self.packets)
        self.source = source
        pinned = fingerprint.replace(" ", "").upper()
        if self.fingerprint != pinned:
            raise SignatureError(
                f"signing key from {source} has fingerprint {self.fingerprint}, "
                f"not the pinned {pinned}: refusing it"
            )

    def verify(self, path: Path, signature: bytes, name: str | None = None) -> None:
        """Raise SignatureError unless ``signature`` is a good signature of ``path`` by this key."""
        with tempfile.TemporaryDirectory(prefix="bootstrapperd-gpgv-") as tmp:
            keyring = Path(tmp) / "key.gpg"
            keyring.write_bytes(self.packets)
            sig = Path(tmp) / "file.sig"
            sig.write_bytes(signature)
            try:
                result = subprocess.run(
                    ["gpgv", "--status-fd", "1", "--keyring", str(keyring), str(sig), str(path)],
                    capture_output=True,
                    text=True,
                    env={"GNUPGHOME": tmp, "LC_ALL": "C", "PATH": "/usr/bin:/bin"},
                    check=False,
                )
            except FileNotFoundError:
                raise SignatureError(
                    "gpgv is not installed (Debian/Ubuntu: apt install gpgv)"
                ) from None
        status = [line.split() for line in result.stdout.splitlines()]
        valid = [f for f in status if len(f) >= 3 and f[:2] == ["[GNUPG:]", "VALIDSIG"]]
        revoked = any(len(f) >= 2 and f[1] == "REVKEYSIG" for f in status)
        # VALIDSIG's last field is the primary key's fingerprint (a subkey may have signed).
        signer = valid[0][-1].upper() if valid else None
        if result.returncode == 0 and signer == self.fingerprint and not revoked:
            return
        reason = _reason(status, result.stderr)
        raise SignatureError(f"{name or path.name}: bad signature ({reason})")


def _reason(status: list[list[str]], stderr: str) -> str:
    codes = {fields[1]: fields[2:] for fields in status if len(fields) >= 2}
    if "BADSIG" in codes:
        return "the file does not match its signature"
    if "REVKEYSIG" in codes:
        return "made by a revoked key"
    if "NO_PUBKEY" in codes:
        made_by = codes["NO_PUBKEY"][0] if codes["NO_PUBKEY"] else "?"
        return f"made by key {made_by}, not the pinned key"
    if "NODATA" in codes:
        return "the .sig file holds no signature"
    if "ERRSIG" in codes:
        return "the signature cannot be checked"
    if "VALIDSIG" in codes:
        return "made by another key than the pinned one"
    last = stderr.strip().splitlines()[-1:] or ["gpgv failed"]
    return last[0]
