"""Rendering: templates (Jinja2) and the facts they are given, for every file a machine fetches."""

from .renderer import Kind, Rendered, Renderer, TemplateError

__all__ = ["Kind", "Rendered", "Renderer", "TemplateError"]
