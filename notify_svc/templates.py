"""Message templates per template name and locale (notify_svc/locales/<locale>.toml), rendered per channel.

Each template has a `subject` (one line; the push title), a plain `text` (the
email's text part, the SMS text unless an `sms` line is given, the push
body's first paragraph) and `html` (the HTML email's content, placed in one
layout). Placeholders are `${name}`; values are inserted as they are in text
and HTML-escaped in HTML. A line whose placeholders are all empty is left
out (e.g. "Reason: ${reason}" when there is no reason).

`Templates.load()` reads and checks every locale once at start: each has
exactly the templates and fields of "en" (the fallback for a locale without
a file), with the same placeholders, so a broken translation fails the start
rather than a message. Rendering is string substitution on precompiled lines.
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LOCALE = "en"
_FIELDS = ("subject", "text", "html")
_OPTIONAL_FIELDS = ("sms",)
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")
_LAYOUT = (
    '<!doctype html><html lang="{lang}"><head><meta charset="utf-8"></head>'
    '<body style="font-family:sans-serif;line-height:1.4">{content}'
    '<p style="color:#888;font-size:small">paymesh</p></body></html>'
)


@dataclass(frozen=True)
class Message:
    """One notice rendered in one locale."""

    subject: str
    text: str
    html: str | None  # None unless asked for (email only)
    sms: str

    @property
    def push_body(self) -> str:
        return self.text.split("\n\n", 1)[0].strip()


class _Lines:
    """A template text as lines, each a str.format pattern with the placeholders that decide whether it is shown.

    (str.format_map on precompiled patterns: a notice is rendered per recipient and channel in the
    consumer's hot loop, where string.Template's regex per line cost several times as much.)
    """

    def __init__(self, source: str) -> None:
        self.lines: list[tuple[str, tuple[str, ...]]] = []
        for line in source.strip("\n").split("\n"):
            if "$" in _PLACEHOLDER.sub("", line):
                raise ValueError(f"a stray $ in template line {line!r}; placeholders are ${{name}}")
            # Split at the placeholders: literal parts get their braces doubled, placeholders become {name}.
            pieces = _PLACEHOLDER.split(line)
            pattern = "".join(
                "{" + piece + "}" if index % 2 else piece.replace("{", "{{").replace("}", "}}")
                for index, piece in enumerate(pieces)
            )
            self.lines.append((pattern, tuple(_PLACEHOLDER.findall(line))))
        self.identifiers = frozenset(name for _, names in self.lines for name in names)

    def render(self, values: Mapping[str, str]) -> str:
        shown = [
            pattern.format_map(values) if names else pattern
            for pattern, names in self.lines
            if not names or any(values[name] for name in names)
        ]
        return "\n".join(shown)


@dataclass(frozen=True)
class _Compiled:
    fields: Mapping[str, _Lines]
    placeholders: frozenset[str]


class Templates:
    """Every locale's templates, checked; renders a notice in a locale."""

    def __init__(self, catalog: Mapping[str, Mapping[str, _Compiled]]) -> None:
        self._catalog = catalog

    @classmethod
    def load(cls, directory: Path = LOCALES_DIR) -> Templates:
        raw = {path.stem: tomllib.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.toml"))}
        if DEFAULT_LOCALE not in raw:
            raise ValueError(f"no {DEFAULT_LOCALE}.toml in {directory}")
        catalog = {locale: _compile(locale, tables) for locale, tables in raw.items()}
        reference = catalog[DEFAULT_LOCALE]
        for locale, compiled in catalog.items():
            _check_like(locale, compiled, reference)
        return cls(catalog)

    @property
    def locales(self) -> frozenset[str]:
        return frozenset(self._catalog)

    def names(self) -> frozenset[str]:
        return frozenset(self._catalog[DEFAULT_LOCALE])

    def placeholders(self, name: str) -> frozenset[str]:
        return self._catalog[DEFAULT_LOCALE][name].placeholders

    def render(self, name: str, locale: str, params: Mapping[str, str], *, with_html: bool = False) -> Message:
        """The notice in `locale` (the default locale if there is none such); KeyError for an unknown template."""
        templates = self._catalog.get(locale) or self._catalog[DEFAULT_LOCALE]
        template = templates[name]
        fields = template.fields
        values = {key: params.get(key, "") for key in template.placeholders}
        subject = fields["subject"].render(values)
        text = fields["text"].render(values)
        sms = fields["sms"].render(values) if "sms" in fields else subject
        page = None
        if with_html:
            content = fields["html"].render({key: html.escape(value) for key, value in values.items()})
            page = _LAYOUT.format(lang=locale, content=content)
        return Message(subject, text, page, sms)


def _compile(locale: str, tables: Mapping[str, object]) -> dict[str, _Compiled]:
    compiled = {}
    for name, table in tables.items():
        if not isinstance(table, dict) or not all(isinstance(value, str) for value in table.values()):
            raise ValueError(f"{locale}.toml: [{name}] must be a table of strings")
        missing = [field for field in _FIELDS if field not in table]
        unknown = [field for field in table if field not in _FIELDS + _OPTIONAL_FIELDS]
        if missing or unknown:
            raise ValueError(f"{locale}.toml: [{name}] lacks {missing} or has unknown fields {unknown}")
        fields = {field: _Lines(value) for field, value in table.items()}
        if len(fields["subject"].lines) != 1:
            raise ValueError(f"{locale}.toml: [{name}] subject must be one line")
        compiled[name] = _Compiled(fields, frozenset(n for lines in fields.values() for n in lines.identifiers))
    return compiled


def _check_like(locale: str, compiled: Mapping[str, _Compiled], reference: Mapping[str, _Compiled]) -> None:
    if set(compiled) != set(reference):
        raise ValueError(
            f"{locale}.toml: templates differ from {DEFAULT_LOCALE}.toml: {set(compiled) ^ set(reference)}"
        )
    for name, template in compiled.items():
        for field, lines in template.fields.items():
            expected = reference[name].fields.get(field)
            if expected is not None and lines.identifiers != expected.identifiers:
                raise ValueError(f"{locale}.toml: [{name}] {field} uses other placeholders than {DEFAULT_LOCALE}.toml")
