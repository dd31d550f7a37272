"""Rendering: templates (Jinja2) and the facts they are given, for every file a machine fetches."""

from .renderer import PRIVATE_KINDS, Kind, Rendered, Renderer, TemplateError

__all__ = ["PRIVATE_KINDS", "Kind", "Rendered", "Renderer", "TemplateError"]
