"""Container image references: Docker's parsing and normalization, and the names images get on
the bootstrapper's own registry.

A reference is kept as written (``original``): Sextant, and the templates after it, name every
image on the bootstrapper's registry ``<dockerdomain>:5000/<reference as written>``, so the
written form, not the normalized one, decides where an image is pushed.

The grammar is distribution's (github.com/distribution/reference): a domain is recognised only
when the first path component contains ``.`` or ``:`` or is ``localhost``; otherwise the image is
on Docker Hub (``docker.io``) and a single name gets ``library/``. Only sha256 digests are
accepted: they are what every registry and Docker use, and what the archive stores blobs under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255  # distribution's limit on domain + path

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"

PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
DOMAIN_RE = re.compile(_DOMAIN)
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    ``path`` is the repository inside ``domain`` (``library/busybox`` on Docker Hub). ``tag`` is
    the written tag, or ``latest`` when neither a tag nor a digest was written (Docker's rule); a
    reference with only a digest has no tag.
    """

    original: str
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        return parse_reference(text)

    @property
    def name(self) -> str:
        """The full normalized repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The name as ``docker images`` shows it: Docker Hub's domain and ``library/`` dropped."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        return self.path.removeprefix(OFFICIAL_PREFIX)

    @property
    def pin(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if written, else the tag."""
        if self.digest is not None:
            return self.digest
        assert self.tag is not None  # noqa: S101 (invariant) — parse() sets one whenever there is no digest
        return self.tag

    @property
    def repo_tag(self) -> str | None:
        """``name:tag`` as Docker's ``RepoTags`` and ``docker images`` show it, if tagged."""
        return f"{self.familiar_name}:{self.tag}" if self.tag is not None else None

    def __str__(self) -> str:
        """The full normalized reference, e.g. ``docker.io/library/busybox:latest``."""
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse and normalize ``text`` as Docker does; ValueError says what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError("empty image reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"invalid image reference {text!r}: contains white space")
    name, tag, digest = _split(text)
    if _IDENTIFIER_RE.fullmatch(name):
        raise ValueError(
            f"invalid image reference {text!r}: a 64-character hexadecimal string is an image "
            "ID, not a repository name"
        )
    domain, path = _split_domain(name)
    if not DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"invalid image reference {text!r}: bad registry host {domain!r}")
    if not PATH_RE.fullmatch(path):
        if PATH_RE.fullmatch(path.lower()):
            raise ValueError(f"invalid image reference {text!r}: repository name must be lowercase")
        raise ValueError(
            f"invalid image reference {text!r}: bad repository name {path!r} (lowercase letters, "
            "digits and single '.', '_', '__' or '-' separators between '/' components)"
        )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(
            f"invalid image reference {text!r}: repository name longer than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(original=text, domain=domain, path=path, tag=tag, digest=digest)


def local_reference(registry: str, original: str) -> str:
    """The name of ``original`` on ``registry`` (``host:port``), Sextant's way:
    ``<registry>/<original as written>``; a ``:port`` in the original's host becomes ``-port``
    because a repository path cannot hold a colon. ValueError when the result is not a valid
    reference (e.g. upper case in the original's host)."""
    repository, tag, digest = _local_parts(registry, original)
    text = f"{registry}/{repository}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text


def local_push_target(registry: str, original: str) -> tuple[str, str]:
    """``(repository, tag or digest)`` to push ``original`` to on ``registry``: the repository
    inside the registry (``quay.io/coreos/etcd``) and the manifest reference to PUT (the tag;
    the digest only when no tag was written; ``latest`` when neither was)."""
    repository, tag, digest = _local_parts(registry, original)
    if tag is not None:
        return repository, tag
    if digest is not None:
        return repository, digest
    return repository, DEFAULT_TAG


def _local_parts(registry: str, original: str) -> tuple[str, str | None, str | None]:
    """Repository inside ``registry``, written tag and written digest of ``original``."""
    if not DOMAIN_RE.fullmatch(registry):
        raise ValueError(f"invalid registry {registry!r}: expected host[:port]")
    parse_reference(original)  # the original itself must be valid
    name, tag, digest = _split(original)
    first, slash, rest = name.partition("/")
    if slash and _is_domain(first) and ":" in first:
        host, _, port = first.rpartition(":")
        name = f"{host}-{port}/{rest}"
    # The local name is itself a reference with ``registry`` as its domain, so the written
    # name must be a valid repository path there: lowercase, no leftover colon.
    if not PATH_RE.fullmatch(name):
        raise ValueError(
            f"{original!r} cannot be named on {registry}: {name!r} is not a valid repository "
            "path (lowercase letters, digits, '.', '_', '-' and '/')"
        )
    if len(registry) + 1 + len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(
            f"{original!r} cannot be named on {registry}: name longer than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    return name, tag, digest


def _split(text: str) -> tuple[str, str | None, str | None]:
    """``name``, ``tag``, ``digest`` as written (tag and digest None when absent)."""
    name, at, digest_text = text.partition("@")
    digest: str | None = None
    if at:
        if "@" in digest_text:
            raise ValueError(f"invalid image reference {text!r}: more than one '@'")
        algorithm = digest_text.partition(":")[0]
        if DIGEST_RE.fullmatch(digest_text):
            digest = digest_text
        elif algorithm == "sha256":
            raise ValueError(
                f"invalid image reference {text!r}: a sha256 digest is 64 lowercase hex digits"
            )
        elif _ANY_DIGEST_RE.fullmatch(digest_text):
            raise ValueError(
                f"invalid image reference {text!r}: only sha256 digests are supported, "
                f"not {algorithm}"
            )
        else:
            raise ValueError(
                f"invalid image reference {text!r}: bad digest {digest_text!r} "
                "(expected sha256:<64 hex digits>)"
            )
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):  # a colon after the last slash separates the tag
        name, tag = name[:colon], name[colon + 1 :]
        if not TAG_RE.fullmatch(tag):
            raise ValueError(
                f"invalid image reference {text!r}: bad tag {tag!r} (letters, digits, '_', '.', "
                "'-', at most 128, not starting with '.' or '-')"
            )
    if not name:
        raise ValueError(f"invalid image reference {text!r}: no repository name")
    return name, tag, digest


def _is_domain(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and _is_domain(first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path
