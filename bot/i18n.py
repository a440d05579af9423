"""Text catalogues: one JSON file per language in `bot/locales/`, looked up by key.

Handlers never hold user-facing text; they ask `Texts.get(lang, key, **params)`. English is the
reference catalogue: every key must exist there, and a test checks that every other catalogue has
exactly the same keys and placeholders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

DEFAULT_LANGUAGE = "en"


class Texts:
    """Look up localized texts; unknown languages fall back to English."""

    def __init__(
        self, catalogs: Mapping[str, Mapping[str, str]], *, default: str = DEFAULT_LANGUAGE
    ) -> None:
        if default not in catalogs:
            raise ValueError(f"default language {default!r} has no catalogue")
        self._catalogs = MappingProxyType({k: dict(v) for k, v in catalogs.items()})
        self.default = default

    @classmethod
    def load(cls) -> Texts:
        """Read every catalogue shipped in `bot/locales`."""
        catalogs: dict[str, dict[str, str]] = {}
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

    def catalog(self, lang: str) -> Mapping[str, str]:
        """Return one language's catalogue (read-only)."""
        return MappingProxyType(self._catalogs[lang])

    def pick(self, language_code: str | None) -> str:
        """Return the catalogue language for a Telegram `language_code` such as `ru-RU`."""
        if language_code:
            base = language_code.split("-")[0].lower()
            if base in self._catalogs:
                return base
        return self.default

    def get(self, lang: str, key: str, /, **params: object) -> str:
        """Return the text for `key` in `lang`, formatted with `params`."""
        catalog = self._catalogs.get(lang) or self._catalogs[self.default]
        template = catalog.get(key)
        if template is None:
            template = self._catalogs[self.default][key]
        return template.format(**params) if params else template
