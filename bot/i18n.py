"""Text catalogues: one JSON file per language in `bot/locales/`, looked up by key.

Handlers never hold user-facing text; they ask `Texts.get(lang, key, **params)`. English is the
reference catalogue: every key must exist there, and a test checks that every other catalogue has
exactly the same keys and placeholders.

A text is either a format string or, when it counts something, an object of plural forms keyed
by CLDR plural category, chosen by the `count` parameter with that language's CLDR rules (Babel)::

    "usage.total": {"one": "All time: {count} picture.", "other": "All time: {count} pictures."}

Each counted text has exactly the categories its language uses (`plural_categories`), always
including `other`; a text counts one thing, `{count}`, and other numbers in it govern no words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import TypeAlias

from babel import Locale

DEFAULT_LANGUAGE = "en"

Text: TypeAlias = str | Mapping[str, str]


def plural_categories(lang: str) -> frozenset[str]:
    """Return the CLDR plural categories a language's counted texts must have."""
    return Locale.parse(lang).plural_form.tags | {"other"}


class Texts:
    """Look up localized texts; unknown languages fall back to English."""

    def __init__(
        self, catalogs: Mapping[str, Mapping[str, Text]], *, default: str = DEFAULT_LANGUAGE
    ) -> None:
        if default not in catalogs:
            raise ValueError(f"default language {default!r} has no catalogue")
        self._catalogs = MappingProxyType(
            {
                lang: {
                    key: value if isinstance(value, str) else MappingProxyType(dict(value))
                    for key, value in catalog.items()
                }
                for lang, catalog in catalogs.items()
            }
        )
        self._plurals = {lang: Locale.parse(lang).plural_form for lang in catalogs}
        self.default = default

    @classmethod
    def load(cls) -> Texts:
        """Read every catalogue shipped in `bot/locales`."""
        catalogs: dict[str, dict[str, Text]] = {}
        for entry in resources.files("bot.locales").iterdir():
            if entry.name.endswith(".json"):
                catalogs[entry.name.removesuffix(".json")] = json.loads(
                    entry.read_text(encoding="utf-8")
                )
        return cls(catalogs)

    @property
    def languages(self) -> tuple[str, ...]:
        """Return the available language codes, the default first."""
        rest = sorted(k for k in self._catalogs if k != self.default)
        return (self.default, *rest)

    def catalog(self, lang: str) -> Mapping[str, Text]:
        """Return one language's catalogue (read-only)."""
        return MappingProxyType(self._catalogs[lang])

    def has(self, key: str) -> bool:
        """Tell whether the default catalogue has `key`."""
        return key in self._catalogs[self.default]

    def pick(self, language_code: str | None) -> str:
        """Return the catalogue language for a Telegram `language_code` (`pt-br` -> `pt`)."""
        if language_code:
            base = language_code.replace("_", "-").split("-")[0].strip().lower()
            if base in self._catalogs:
                return base
        return self.default

    def get(self, lang: str, key: str, /, **params: object) -> str:
        """Return the text for `key` in `lang`, formatted with `params` (plural by `count`)."""
        if lang not in self._catalogs:
            lang = self.default
        template = self._catalogs[lang].get(key)
        if template is None:
            lang = self.default
            template = self._catalogs[lang][key]
        if not isinstance(template, str):
            count = params.get("count")
            if not isinstance(count, int | float):
                raise TypeError(f"{key!r} counts something: pass count=<number>")
            form = self._plurals[lang](abs(count))
            template = template.get(form) or template["other"]
        return template.format(**params) if params else template
