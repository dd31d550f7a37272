"""The daemon's one reference to the current model; a reload builds a new model and swaps it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .load import read_cluster_file
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
        model, digest = read_cluster_file(path)
        return cls(path, model, digest)

    def subscribe(self, listener: Listener) -> None:
        """``listener(old, new)`` runs after every successful reload."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the file. A bad file keeps the current model, logs every error, returns False."""
        try:
            model, digest = read_cluster_file(self.path)
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
