"""Tests for bot.i18n and the shipped catalogues in bot/locales/."""

from __future__ import annotations

import ast
import json
import re
import string
import unicodedata
from pathlib import Path

import pytest

import bot
from bot.i18n import Text, Texts, plural_categories
from bot.prompt import MARKERS

BOT = Path(bot.__file__).parent
LOCALES = BOT / "locales"
SOURCES = [*sorted((BOT / "handlers").glob("*.py")), BOT / "app.py"]
OPTIONS = ("size", "count", "quality", "style", "background")
# Prefixes of the f-string keys the handlers build; each is expanded in `dynamic_keys`.
DYNAMIC_PREFIXES = {
    "error.images.",
    "menu.",
    "option.",
    "settings.field.",
    "admin.alert.",
    "stats.kind.",
}
TELEGRAM_DESCRIPTION_MAX = 256
LANGUAGES = {"en", "ru", "de", "es", "pt", "uk", "tr"}
COUNTS = (0, 1, 2, 3, 5, 11, 21, 22, 25, 101)


def read_catalog(path: Path) -> dict[str, Text]:
    """Read one catalogue, failing on duplicate keys (json.load would keep the last silently)."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [k for k, _ in pairs]
        dupes = {k for k in keys if keys.count(k) > 1}
        assert not dupes, f"{path.name}: duplicate keys {sorted(dupes)}"
        return dict(pairs)

    data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
    assert isinstance(data, dict)
    return data  # type: ignore[return-value]


def placeholders(template: Text) -> set[str]:
    """Return the field names used in a format string (in every form of a counted text)."""
    if not isinstance(template, str):
        return set().union(*(placeholders(form) for form in template.values()))
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def forms(template: Text) -> list[str]:
    """Return a text's strings: itself, or each of its plural forms."""
    return [template] if isinstance(template, str) else list(template.values())


@pytest.fixture(scope="module")
def texts() -> Texts:
    return Texts.load()


@pytest.fixture(scope="module")
def en() -> dict[str, Text]:
    return read_catalog(LOCALES / "en.json")


def all_catalogs() -> list[Path]:
    return sorted(LOCALES.glob("*.json"))


# --- loading and catalogue shape -------------------------------------------------------------


def test_load_finds_every_language(texts: Texts) -> None:
    assert texts.default == "en"
    assert texts.languages[0] == "en"
    assert set(texts.languages) == LANGUAGES


def test_language_names(texts: Texts) -> None:
    names = {lang: texts.get(lang, "language.name") for lang in texts.languages}
    assert names == {
        "en": "English",
        "ru": "Русский",
        "de": "Deutsch",
        "es": "Español",
        "pt": "Português",
        "uk": "Українська",
        "tr": "Türkçe",
    }


@pytest.mark.parametrize("path", all_catalogs(), ids=lambda p: p.stem)
def test_catalog_has_exactly_the_english_keys(path: Path, en: dict[str, Text]) -> None:
    catalog = read_catalog(path)
    assert set(catalog) - set(en) == set(), "keys missing from en.json"
    assert set(en) - set(catalog) == set(), "keys missing from this catalogue"


@pytest.mark.parametrize("path", all_catalogs(), ids=lambda p: p.stem)
def test_catalog_values_are_nonempty_strings_or_plural_forms(path: Path) -> None:
    categories = plural_categories(path.stem)
    for key, value in read_catalog(path).items():
        if isinstance(value, dict):
            assert set(value) == categories, f"{key}: forms must be exactly {sorted(categories)}"
        for form in forms(value):
            assert isinstance(form, str), key
            assert form.strip(), key


@pytest.mark.parametrize("path", all_catalogs(), ids=lambda p: p.stem)
def test_counted_texts_are_counted_in_every_language(path: Path, en: dict[str, Text]) -> None:
    catalog = read_catalog(path)
    for key, english in en.items():
        assert isinstance(catalog[key], dict) == isinstance(english, dict), key
        for form in forms(catalog[key]):
            # A counted text shows its count in every form; a plain text has no {count}.
            assert ("count" in placeholders(form)) == isinstance(english, dict), key


@pytest.mark.parametrize("path", all_catalogs(), ids=lambda p: p.stem)
def test_catalog_has_the_english_placeholders(path: Path, en: dict[str, Text]) -> None:
    catalog = read_catalog(path)
    for key, english in en.items():
        for form in forms(catalog[key]):
            assert placeholders(form) == placeholders(english), key


@pytest.mark.parametrize("path", all_catalogs(), ids=lambda p: p.stem)
def test_catalog_keeps_commands_and_emoji(path: Path, en: dict[str, Text]) -> None:
    """Commands are typed by users and emoji carry meaning: translations keep both."""
    catalog = read_catalog(path)
    for key, english_text in en.items():
        english = " ".join(forms(english_text))
        for form in forms(catalog[key]):
            commands = set(re.findall(r"/[a-z]+", form))
            assert commands == set(re.findall(r"/[a-z]+", english)), key
            emoji = {c for c in form if unicodedata.category(c) == "So"}
            assert emoji == {c for c in english if unicodedata.category(c) == "So"}, key


def test_every_text_formats_with_dummy_values(texts: Texts) -> None:
    for lang in texts.languages:
        for key, template in texts.catalog(lang).items():
            params = dict.fromkeys(placeholders(template), 7)
            text = texts.get(lang, key, **params)
            assert "{" not in text and "}" not in text, (lang, key)


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_counted_text_takes_the_cldr_form_for_each_count(texts: Texts, lang: str) -> None:
    from babel import Locale

    rule = Locale.parse(lang).plural_form
    counted = {k: v for k, v in texts.catalog(lang).items() if not isinstance(v, str)}
    assert len(counted) >= 10
    for key, template in counted.items():
        for count in COUNTS:
            params: dict[str, object] = dict.fromkeys(placeholders(template), 7)
            params["count"] = count
            text = texts.get(lang, key, **params)
            assert text == template[rule(count)].format(**params), (lang, key, count)
            assert re.search(rf"(?<![0-9]){count}(?![0-9])", text), (lang, key, count)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", {0: "0 pictures", 1: "1 picture", 2: "2 pictures", 21: "21 pictures"}),
        ("de", {0: "0 Bilder", 1: "1 Bild", 5: "5 Bilder", 101: "101 Bilder"}),
        ("es", {0: "0 imágenes", 1: "1 imagen", 22: "22 imágenes"}),
        ("pt", {0: "0 imagem", 1: "1 imagem", 2: "2 imagens", 101: "101 imagens"}),
        ("tr", {1: "1 resim", 5: "5 resim"}),
        (
            "ru",
            {
                0: "0 картинок",
                1: "1 картинка",
                2: "2 картинки",
                3: "3 картинки",
                5: "5 картинок",
                11: "11 картинок",
                21: "21 картинка",
                22: "22 картинки",
                25: "25 картинок",
                101: "101 картинка",
            },
        ),
        (
            "uk",
            {
                1: "1 картинка",
                2: "2 картинки",
                5: "5 картинок",
                11: "11 картинок",
                21: "21 картинка",
            },
        ),
    ],
)
def test_picture_counts_read_right(texts: Texts, lang: str, expected: dict[int, str]) -> None:
    for count, words in expected.items():
        assert texts.get(lang, "stats.pictures", count=count) == words


def test_the_one_picture_text_reads_right(texts: Texts) -> None:
    assert texts.get("en", "usage.total", count=1) == "All time: 1 picture."
    assert texts.get("ru", "usage.total", count=21) == "За всё время: 21 картинка."
    text = texts.get("en", "error.quota_user", count=1, remaining=0, resets_in="5 minutes")
    assert "your 1 picture for today" in text


def test_a_counted_text_needs_its_count() -> None:
    small = Texts({"en": {"n": {"one": "{count} cat", "other": "{count} cats"}}})
    assert small.get("en", "n", count=1) == "1 cat"
    assert small.get("en", "n", count=0) == "0 cats"
    with pytest.raises(TypeError, match="count"):
        small.get("en", "n")


def test_menu_descriptions_fit_telegram(texts: Texts) -> None:
    for lang in texts.languages:
        menu = {k: v for k, v in texts.catalog(lang).items() if k.startswith("menu.")}
        assert menu, lang
        for key, text in menu.items():
            assert isinstance(text, str), (lang, key)
            assert 1 <= len(text) <= TELEGRAM_DESCRIPTION_MAX, (lang, key)
            assert not placeholders(text), (lang, key)


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_help_shows_every_option_as_the_parser_understands_it(texts: Texts, lang: str) -> None:
    """The options are typed, not translated: every language shows the same tokens."""
    from bot.prompt import parse_image_args

    options = texts.get(lang, "help.options", max_count=10)
    flags = "square landscape portrait low medium high auto hd standard vivid natural transparent"
    tokens = [f"--{flag}" for flag in flags.split()]
    tokens += ["1024x1024", "16:9", "3:2", "1:1", "9:16", "x1", "x10", "--size", "--ar", "--n"]
    tokens += ["--quality high", "--style natural", "--background transparent"]
    for token in tokens:
        assert re.search(rf"(?<![\w-]){re.escape(token)}(?![\w])", options), token
    # Every example in /help parses into a prompt and the options it shows.
    examples = texts.get(lang, "help.examples").splitlines()[1:-1]
    assert len(examples) == 4
    for line in examples:
        parsed = parse_image_args(line.removeprefix("/image "))
        assert parsed.prompt and not any(m in parsed.prompt for m in MARKERS), line
    assert parse_image_args(examples[1].removeprefix("/image ")).options.count == 2


# --- Texts behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ru-RU", "ru"),
        ("ru", "ru"),
        ("RU", "ru"),
        ("en-GB", "en"),
        ("de", "de"),
        ("de-AT", "de"),
        ("pt-br", "pt"),
        ("pt_BR", "pt"),
        ("es-419", "es"),
        ("uk", "uk"),
        ("tr-TR", "tr"),
        ("fr", "en"),
        ("zz-ZZ", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_pick(texts: Texts, code: str | None, expected: str) -> None:
    assert texts.pick(code) == expected


def test_missing_key_falls_back_to_default() -> None:
    small = Texts({"en": {"a": "A {n}", "b": "B"}, "ru": {"a": "А {n}"}})
    assert small.get("ru", "a", n=1) == "А 1"
    assert small.get("ru", "b") == "B"
    assert small.get("xx", "a", n=2) == "A 2"
    assert small.languages == ("en", "ru")
    with pytest.raises(KeyError):
        small.get("ru", "nowhere")


def test_default_must_have_a_catalog() -> None:
    with pytest.raises(ValueError, match="default"):
        Texts({"ru": {"a": "А"}})


def test_text_without_params_is_returned_verbatim() -> None:
    small = Texts({"en": {"braces": "use {curly} braces"}})
    assert small.get("en", "braces") == "use {curly} braces"


def test_catalog_is_read_only() -> None:
    small = Texts({"en": {"a": "A"}})
    with pytest.raises(TypeError):
        small.catalog("en")["a"] = "changed"  # type: ignore[index]


# --- every key the handlers use exists --------------------------------------------------------


def _is_texts(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "texts") or (
        isinstance(node, ast.Attribute) and node.attr == "texts"
    )


def _strings(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> tuple[set[str], set[str]]:
    """Return (literal keys, f-string prefixes) that a key expression can take."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}, set()
    if isinstance(node, ast.IfExp):
        a, pa = _strings(node.body, assigned)
        b, pb = _strings(node.orelse, assigned)
        return a | b, pa | pb
    if isinstance(node, ast.JoinedStr):
        head = node.values[0] if node.values else None
        prefix = head.value if isinstance(head, ast.Constant) else ""
        return set(), {str(prefix)}
    if isinstance(node, ast.Name) and node.id in assigned:
        keys: set[str] = set()
        prefixes: set[str] = set()
        for value in assigned[node.id]:
            k, p = _strings(value, assigned)
            keys |= k
            prefixes |= p
        return keys, prefixes
    raise AssertionError(f"cannot resolve key expression {ast.unparse(node)!r}")


def scan_keys(path: Path) -> tuple[set[str], set[str]]:
    """Return the literal keys and f-string key prefixes passed to `texts.get` in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    keys: set[str] = set()
    prefixes: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and _is_texts(node.func.value)
        ):
            assert len(node.args) >= 2, f"{path.name}:{node.lineno}: texts.get without a key"
            k, p = _strings(node.args[1], assigned)
            keys |= k
            prefixes |= p
    return keys, prefixes


def dynamic_keys() -> dict[str, set[str]]:
    """Expand each f-string key prefix into the keys it can produce at run time."""
    from bot.app import MENU
    from bot.handlers.account import OUTCOMES
    from bot.handlers.jobs import ALERT_KINDS
    from bot.handlers.settings import FIELDS
    from bot.images import ImagesError

    kinds: set[str] = set()
    pending: list[type[ImagesError]] = [ImagesError]
    while pending:
        cls = pending.pop()
        kinds.add(cls.kind)
        pending.extend(cls.__subclasses__())
    assert len(kinds) > 1
    return {
        "error.images.": {f"error.images.{k}" for k in kinds},
        "menu.": {f"menu.{name}" for name in MENU},
        "option.": {f"option.{o}" for o in OPTIONS},
        "settings.field.": {f"settings.field.{f}" for f in FIELDS},
        "admin.alert.": {f"admin.alert.{k}" for k in ALERT_KINDS},
        "stats.kind.": {f"stats.kind.{k}" for k in kinds | OUTCOMES},
    }


def test_scanner_sees_the_handlers() -> None:
    found: set[str] = set()
    for path in SOURCES:
        found |= scan_keys(path)[0]
    # Guards the scan itself: calls split over lines, ternaries and named keys are all seen.
    assert {"usage.limited", "settings.on", "settings.off", "error.quota_user"} <= found
    assert "error.quota_chat" in found and "settings.title_chat" in found
    assert len(found) > 40


def test_every_key_used_in_code_exists_in_english(en: dict[str, Text]) -> None:
    literal: dict[str, set[str]] = {}
    prefixes: set[str] = set()
    for path in SOURCES:
        keys, found = scan_keys(path)
        for key in keys:
            literal.setdefault(key, set()).add(path.name)
        prefixes |= found
    missing = {key: sorted(files) for key, files in literal.items() if key not in en}
    assert missing == {}, "keys used in code but absent from en.json"
    assert prefixes <= DYNAMIC_PREFIXES, "new f-string key: add its expansion to this test"
    expansions = dynamic_keys()
    for prefix in prefixes:
        absent = sorted(expansions[prefix] - set(en))
        assert absent == [], f"{prefix}* keys absent from en.json"


# --- money texts count their nouns ------------------------------------------------------------

PLURAL_NOUNS = r"(?:free )?(?:pictures|credits|requests|users|hours|minutes|seconds|characters)"


def test_no_plain_english_text_puts_a_number_before_a_plural_noun(en: dict[str, Text]) -> None:
    """A number that governs a noun makes the text counted: "{n} pictures" reads "1 pictures"."""
    wrong = {
        k: v for k, v in en.items() if isinstance(v, str) and re.search(rf"}} {PLURAL_NOUNS}\b", v)
    }
    assert wrong == {}


def test_no_english_text_says_1_pictures(texts: Texts) -> None:
    for key, template in texts.catalog("en").items():
        params: dict[str, object] = dict.fromkeys(placeholders(template), 1)
        text = texts.get("en", key, **params)
        assert not re.search(rf"(?<![\d.])1 {PLURAL_NOUNS}\b", text), (key, text)


@pytest.mark.parametrize(
    ("key", "params", "expected"),
    [
        (
            "buy.pack",
            {"stars": 5},
            {
                1: "1 картинка за 5 ⭐",
                2: "2 картинки за 5 ⭐",
                5: "5 картинок за 5 ⭐",
                21: "21 картинка за 5 ⭐",
            },
        ),
        (
            "invoice.title",
            {},
            {1: "1 картинка", 3: "3 картинки", 11: "11 картинок", 22: "22 картинки"},
        ),
        (
            "credits.shortfall",
            {"credits": 0},
            {
                1: "нужен 1 кредит, а у вас 0",
                2: "нужно 2 кредита, а у вас 0",
                5: "нужно 5 кредитов, а у вас 0",
            },
        ),
        (
            "payment.balance",
            {},
            {
                1: "Теперь у вас 1 кредит.",
                4: "Теперь у вас 4 кредита.",
                12: "Теперь у вас 12 кредитов.",
            },
        ),
        (
            "payment.thanks",
            {},
            {
                1: "Спасибо! Добавлена 1 картинка.",
                2: "Спасибо! Добавлены 2 картинки.",
                5: "Спасибо! Добавлено 5 картинок.",
            },
        ),
    ],
)
def test_russian_money_texts_take_the_form_of_their_number(
    texts: Texts, key: str, params: dict[str, object], expected: dict[int, str]
) -> None:
    for count, text in expected.items():
        assert texts.get("ru", key, count=count, **params) == text
