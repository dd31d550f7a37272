"""The daemon's one reference to the current model; a reload builds a new model and swaps it."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, Problem, Severity
from .load import load_cluster_text
from .types import ClusterModel

log = logging.getLogger("bootstrapperd")

Listener = Callable[[ClusterModel, ClusterModel], None]


class ModelHolder:
    def __init__(self, path: Path, model: ClusterModel, digest: str) -> None:
        self.path = path
        self.model = model
        self.digest = digest
        self.generation = 1
        self.loaded_at = time.time()
        self._listeners: list[Listener] = []

    @classmethod
    def load(cls, path: Path) -> ModelHolder:
        """First load; raises ConfigError (the daemon refuses to start on a bad file)."""
        model, digest = _read(path)
        return cls(path, model, digest)

    def subscribe(self, listener: Listener) -> None:
        """``listener(old, new)`` runs after every successful reload."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the file. A bad file keeps the current model, logs every error, returns False."""
        try:
            model, digest = _read(self.path)
        except ConfigError as exc:
            log.error(
                "reload failed; keeping the model loaded at generation %d",
                self.generation,
                extra={"fields": {"file": str(self.path), "errors": len(exc.problems)}},
            )
            for problem in exc.problems:
                log.error("  %s", problem)
            return False
        old, self.model = self.model, model
        changed = digest != self.digest
        self.digest = digest
        self.generation += 1
        self.loaded_at = time.time()
        for warning in model.warnings:
            log.warning("%s", warning)
        log.info(
            "reloaded cluster model",
            extra={
                "fields": {
                    "file": str(self.path),
                    "generation": self.generation,
                    "nodes": len(model.nodes),
                    "changed": changed,
                }
            },
        )
        for listener in self._listeners:
            try:
                listener(old, model)
            except Exception:  # a listener's bug must not undo a good reload
                log.exception("reload listener failed")
        return True


def _read(path: Path) -> tuple[ClusterModel, str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [Problem(Severity.ERROR, "", f"cannot read: {exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem(Severity.ERROR, "", f"not UTF-8: {exc}")]) from None
    return load_cluster_text(text, source=str(path)), hashlib.sha256(raw).hexdigest()
