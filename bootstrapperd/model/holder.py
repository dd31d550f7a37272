"""The daemon's one reference to the current model; a reload builds a new model and swaps it."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .load import read_cluster_file
from .types import ClusterModel
from .yamlsrc import YAMLLimitError

log = logging.getLogger("bootstrapperd")

Listener = Callable[[ClusterModel, ClusterModel], None]


class ModelHolder:
    """The current model, the file it came from, and how its reloads went."""

    def __init__(self, path: Path, model: ClusterModel, digest: str) -> None:
        self.path = path
        self.model = model
        self.digest = digest
        self.generation = 1
        self.loaded_at = time.time()
        self._listeners: list[Listener] = []
        # Reloads that kept the old model: reload_failed (every one), refused_<bound> (the
        # file crossed a bound of the reader: size, depth, values, loop), reload_crashed (the
        # loader raised something else than ConfigError).
        self.counters: Counter[str] = Counter()

    @classmethod
    def load(cls, path: Path) -> ModelHolder:
        """First load; raises ConfigError (the daemon refuses to start on a bad file)."""
        model, digest = read_cluster_file(path)
        return cls(path, model, digest)

    def subscribe(self, listener: Listener) -> None:
        """``listener(old, new)`` runs after every successful reload."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the file. A bad file keeps the current model, logs every error, returns False.

        Never raises: whatever the loader raises (RecursionError, MemoryError, a bug) is logged
        with its reason and the current model keeps serving."""
        try:
            model, digest = read_cluster_file(self.path)
        except ConfigError as exc:
            self._refused(exc)
            return False
        except Exception as exc:  # a reload must always finish; the reason is logged
            self._crashed(exc)
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

    def _refused(self, exc: ConfigError) -> None:
        """Log every error of a file that does not load, and count the bound it crossed."""
        self.counters["reload_failed"] += 1
        if isinstance(exc.__cause__, YAMLLimitError):
            self.counters[f"refused_{exc.__cause__.kind}"] += 1
        log.error(
            "reload failed; keeping the model loaded at generation %d",
            self.generation,
            extra={"fields": {"file": str(self.path), "errors": len(exc.problems)}},
        )
        for problem in exc.problems:
            log.error("  %s", problem)

    def _crashed(self, exc: Exception) -> None:
        """Log why the loader broke (its traceback at debug level only) and count it."""
        self.counters["reload_failed"] += 1
        self.counters["reload_crashed"] += 1
        log.error(
            "reload failed: %s: %s; keeping the model loaded at generation %d",
            type(exc).__name__,
            exc,
            self.generation,
            extra={"fields": {"file": str(self.path)}},
        )
        log.debug("the loader's traceback", exc_info=exc)
