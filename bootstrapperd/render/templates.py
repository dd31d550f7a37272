"""The Jinja2 environment: the shipped templates in ``config/templates/``, each overridable per
site by a file of the same name in ``bsroot/config/templates/``. ``StrictUndefined``: a missing
value is an error, never an empty string."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import jinja2

from ..runtime.resources import config_dir

__all__ = ["TemplateError", "Templates"]


class TemplateError(Exception):
    """A template could not be loaded or rendered (names the template and the reason)."""


def _shquote(value: object) -> str:
    return shlex.quote(str(value))


def _tojson(value: object) -> str:
    """JSON without HTML escaping: these are not web pages, and a JSON string is valid YAML."""
    return json.dumps(value, ensure_ascii=False)


def _yaml_text(value: object, indent: int) -> str:
    """A string as a YAML literal block (``|``) indented by ``indent`` spaces, readable for
    multi-line files; as a JSON-quoted scalar when a block could not hold it exactly."""
    text = str(value)
    lines = text.split("\n")
    plain = (
        text.endswith("\n")
        and not text.endswith("\n\n")
        and "\r" not in text
        and "\t" not in text
        and not text.startswith((" ", "\n"))
        and all(line == line.rstrip() for line in lines)
    )
    if not plain:
        return _tojson(text)
    pad = " " * indent
    return "|\n" + "\n".join(pad + line if line else "" for line in lines[:-1])


class Templates:
    def __init__(self, site: Path | None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if site is not None:
            loaders.append(jinja2.FileSystemLoader(site))
        loaders.append(jinja2.FileSystemLoader(config_dir() / "templates"))
        self.site = site
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 (shell, YAML, iPXE and JSON: no HTML is rendered)
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=True,  # a site's edited template is used at the next request
        )
        self._env.filters["shquote"] = _shquote
        self._env.filters["tojson"] = _tojson
        self._env.filters["yaml_text"] = _yaml_text

    def render(self, name: str, **context: Any) -> str:
        try:
            return self._env.get_template(name).render(**context)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"template {name}: not found") from None
        except jinja2.TemplateSyntaxError as exc:
            where = exc.filename or name
            raise TemplateError(f"template {where}, line {exc.lineno}: {exc.message}") from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {name}: {exc.message}") from None

    def source_of(self, name: str) -> str:
        """Where ``name`` comes from: the site's override or the shipped file."""
        if self.site is not None and (self.site / name).is_file():
            return str(self.site / name)
        return str(config_dir() / "templates" / name)
