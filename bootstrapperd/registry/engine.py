"""The Docker backend: the registry image run by a Docker engine with host networking, as
Sextant did (``docker load`` of ``bsroot/images/registry.tar``, then ``docker run --net=host``).

The container is named ``bootstrapperd-registry`` and labelled as ours; a container of that name
without our label belongs to someone else and is never touched. Mounted into it: the generated
config.yml, the storage directory, and the bootstrapper certificate and key only (not the whole
``tls/`` directory: it holds the CA's private key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiohttp
from aiodocker import Docker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from .config import CONTAINER_CERT_DIR, CONTAINER_CONFIG, CONTAINER_DATA, RegistryFiles
from .supervisor import LaunchError, RegistryOutput

__all__ = ["CONTAINER_NAME", "LABEL", "ContainerInstance", "EngineLauncher", "engine_answers"]

log = logging.getLogger("bootstrapperd.registry")

CONTAINER_NAME = "bootstrapperd-registry"
LABEL = "org.bootstrapperd.role"
LABEL_VALUE = "registry"
_CONNECT_ERRORS = (DockerError, aiohttp.ClientError, OSError, ValueError, TimeoutError)


async def engine_answers(endpoint: str | None, timeout: float = 3.0) -> bool:  # noqa: ASYNC109 (the probe's own limit, given to aiohttp's ClientTimeout)
    """Whether a Docker engine answers at ``endpoint``."""
    if endpoint is None:
        return False
    try:
        docker = Docker(url=endpoint)
    except _CONNECT_ERRORS:
        return False
    try:
        async with asyncio.timeout(timeout):
            return await _ping(docker)
    except _CONNECT_ERRORS:
        return False
    finally:
        await docker.close()


async def _ping(docker: Docker) -> bool:
    # GET /version: unversioned, like /_ping, and public in aiodocker.
    return "ApiVersion" in await docker.version()


class ContainerInstance:
    def __init__(self, container: DockerContainer, image: str) -> None:
        self.container = container
        self.image = image
        self.output = RegistryOutput("container")
        self._logs = asyncio.create_task(self._follow(), name="registry-container-logs")
        self._gone = False

    def describe(self) -> dict[str, object]:
        return {"container": self.container.id[:12], "image": self.image}

    async def _follow(self) -> None:
        with contextlib.suppress(*_CONNECT_ERRORS):
            async for chunk in self.container.log(stdout=True, stderr=True, follow=True):
                for line in str(chunk).splitlines():
                    self.output.feed(line)

    async def wait(self) -> str:
        try:
            result = await self.container.wait()
            code = result.get("StatusCode", "?")
        except _CONNECT_ERRORS as exc:
            code = f"unknown ({exc})"
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._logs), 2)
        last = list(self.output.tail)[-3:]
        return f"container exit status {code}" + (
            f"; last output: {' | '.join(last)}" if last else ""
        )

    async def terminate(self, grace: float) -> None:
        if self._gone:
            return
        try:
            await self.container.stop(t=max(1, round(grace)))
        except DockerError as exc:
            if exc.status not in (304, 404):  # already stopped / already gone
                log.warning("cannot stop the registry container: %s", exc.message)
        except _CONNECT_ERRORS as exc:
            log.warning("cannot stop the registry container: %s", exc)
        try:
            await self.container.delete(force=True)
        except DockerError as exc:
            if exc.status != 404:
                log.warning("cannot remove the registry container: %s", exc.message)
        except _CONNECT_ERRORS as exc:
            log.warning("cannot remove the registry container: %s", exc)
        self._gone = True
        # The log stream ends by itself once the container is gone; cancelling it mid-stream
        # would leave aiodocker's response (and its connection) unclosed.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._logs), 5)
        if not self._logs.done():
            self._logs.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._logs
        log.info("registry container removed", extra={"fields": self.describe()})


class EngineLauncher:
    name = "docker"

    def __init__(
        self,
        endpoint: str | None,
        image: str,
        archive: Path,
        files: RegistryFiles,
        cert: Path,
        key: Path,
        owner: str,
    ) -> None:
        self.endpoint = endpoint
        self.image = image
        self.archive = archive
        self.files = files
        self.cert = cert
        self.key = key
        self.owner = owner  # the bsroot, in a second label: which daemon made the container
        self._docker: Docker | None = None

    def container_config(self) -> dict[str, Any]:
        cert_dir = CONTAINER_CERT_DIR
        return {
            "Image": self.image,
            "Labels": {LABEL: LABEL_VALUE, "org.bootstrapperd.bsroot": self.owner},
            "HostConfig": {
                "NetworkMode": "host",
                "Binds": [
                    f"{self.files.config}:{CONTAINER_CONFIG}:ro",
                    f"{self.files.data}:{CONTAINER_DATA}",
                    f"{self.cert}:{cert_dir}/{self.cert.name}:ro",
                    f"{self.key}:{cert_dir}/{self.key.name}:ro",
                ],
                # Restarts are ours (with backoff and a log line), not the engine's.
                "RestartPolicy": {"Name": "no"},
            },
        }

    async def launch(self) -> ContainerInstance:
        if self.endpoint is None:
            raise LaunchError(
                "no Docker engine: DOCKER_HOST is not set and no /var/run/docker.sock is mounted"
            )
        if self._docker is None:
            try:
                self._docker = Docker(url=self.endpoint)
            except _CONNECT_ERRORS as exc:
                raise LaunchError(f"Docker engine {self.endpoint}: {exc}") from None
        docker = self._docker
        try:
            if not await _ping(docker):
                raise LaunchError(f"the Docker engine at {self.endpoint} does not answer")
            await self._ensure_image(docker)
            await self._remove_ours(docker)
            container = await docker.containers.create(self.container_config(), name=CONTAINER_NAME)
        except DockerError as exc:
            raise LaunchError(f"Docker engine {self.endpoint}: {exc.message}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LaunchError(f"Docker engine {self.endpoint}: {exc}") from None
        instance = ContainerInstance(container, self.image)
        try:
            await container.start()
        except _CONNECT_ERRORS as exc:
            await instance.terminate(1)
            message = exc.message if isinstance(exc, DockerError) else str(exc)
            raise LaunchError(f"cannot start the registry container: {message}") from None
        log.info(
            "registry container started",
            extra={"fields": {**instance.describe(), "network": "host"}},
        )
        return instance

    async def _ensure_image(self, docker: Docker) -> None:
        if await self._has_image(docker):
            return
        if not self.archive.is_file():
            raise LaunchError(
                f"the engine has no {self.image} and {self.archive} is missing "
                "(bootstrapperd-pack writes it)"
            )
        log.info(
            "loading the registry image into the engine",
            extra={"fields": {"image": self.image, "archive": str(self.archive)}},
        )
        with self.archive.open("rb") as data:
            await docker.images.import_image(data=data)
        if not await self._has_image(docker):
            raise LaunchError(f"{self.archive} was loaded but does not hold {self.image}")

    async def _has_image(self, docker: Docker) -> bool:
        try:
            await docker.images.inspect(self.image)
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _remove_ours(self, docker: Docker) -> None:
        """Replace a container of our name that we made (left by a crash); refuse any other."""
        try:
            old = await docker.containers.get(CONTAINER_NAME)
        except DockerError as exc:
            if exc.status == 404:
                return
            raise
        labels = (old["Config"] or {}).get("Labels") or {}
        if labels.get(LABEL) != LABEL_VALUE:
            raise LaunchError(
                f"a container named {CONTAINER_NAME} exists that bootstrapperd did not make; "
                "remove or rename it"
            )
        log.warning(
            "removing the registry container a previous run left behind",
            extra={"fields": {"container": old.id[:12]}},
        )
        await old.delete(force=True)

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None
