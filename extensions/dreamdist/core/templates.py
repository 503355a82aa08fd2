"""Prompt templates: where the learned vectors sit inside a text prompt ("a photo of {} at night")."""

from __future__ import annotations

from dataclasses import dataclass

from dreamdist.utils.errors import TemplateError

PLACEHOLDER = "{}"


@dataclass(frozen=True)
class Template:
    """A prompt split around its single placeholder; text-guided editing re-encodes the same learned
    vectors with another prefix/suffix."""

    prefix: str = ""
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> "Template":
        count = text.count(PLACEHOLDER)
        if count != 1:
            raise TemplateError(
                f"template {text!r} must contain exactly one '{{}}' placeholder where the learned "
                f"vectors go (found {count}); e.g. 'a photo of {{}} at night'"
            )
        prefix, suffix = text.split(PLACEHOLDER)
        return cls(prefix.strip(), suffix.strip())

    def __str__(self) -> str:
        return " ".join(part for part in (self.prefix, PLACEHOLDER, self.suffix) if part)
