"""The /me page's catalogues: current with the code, wholly translated, and compiled as they read.

A stale catalogue cannot land: a new English text without its translation, a translation left
fuzzy, a placeholder lost in translation, or a .mo not compiled from the .po each fail here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from service.domain.explanations import OFF, ON, REASONS
from service.web.me.language import LANGUAGES, TRANSLATIONS
from service.web.me.wording import BY_STATUS, HISTORY, REFUSALS

REPO = Path(__file__).resolve().parents[2]
TRANSLATED = sorted(set(LANGUAGES) - {"en"})
# `{name}` (str.format, the domain's templates) and `%(name)s` (gettext's, the templates').
PLACEHOLDER = re.compile(r"\{[a-z_]+\}|%\([a-z_]+\)s")


def catalogue(language: str) -> Catalog:
    """The language's .po, as Babel reads it."""
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po)


def compiled(language: str) -> Catalog:
    """The language's .mo, as the page reads it."""
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.mo").open("rb") as mo:
        return read_mo(mo)


def translations(catalog: Catalog) -> dict[str, str]:
    """Each English text and its translation (the header left out)."""
    return {str(m.id): str(m.string) for m in catalog if m.id}


def extracted() -> set[str]:
    """Every text the code marks for translation, found as `make translations` finds it."""
    with (REPO / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)  # type: ignore[no-untyped-call]
    return {
        str(message)
        for _, _, message, _, _ in extract_from_dir(
            REPO, method_map, options_map, keywords=DEFAULT_KEYWORDS
        )
    }


def test_every_language_offered_but_english_has_a_catalogue() -> None:
    assert TRANSLATED == ["de"]
    on_disk = sorted(p.name for p in TRANSLATIONS.iterdir() if p.is_dir())
    assert on_disk == TRANSLATED


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_catalogue_holds_exactly_the_texts_the_code_marks(language: str) -> None:
    marked = extracted()
    held = set(translations(catalogue(language)))
    assert not marked - held, "run `make translations`, then translate the new texts"
    assert not held - marked, "run `make translations` to drop texts the code no longer has"
    assert not catalogue(language).obsolete


def test_the_page_s_module_level_texts_are_all_marked_for_extraction() -> None:
    marked = extracted()
    module_texts = {*REASONS.values(), ON, OFF, *HISTORY.values()}
    for words in (*REFUSALS.values(), *BY_STATUS.values()):
        module_texts |= {words.title, words.detail}
    assert module_texts <= marked


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_text_is_translated_and_none_is_fuzzy(language: str) -> None:
    catalog = catalogue(language)
    assert str(catalog.locale) == language
    untranslated = [m.id for m in catalog if m.id and not m.string]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert (untranslated, fuzzy) == ([], [])
    assert not catalog.fuzzy, "the header is still marked fuzzy"


@pytest.mark.parametrize("language", TRANSLATED)
def test_each_translation_keeps_the_placeholders_of_its_english_text(language: str) -> None:
    for english, translated in translations(catalogue(language)).items():
        assert sorted(PLACEHOLDER.findall(english)) == sorted(PLACEHOLDER.findall(translated)), (
            english
        )


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogue_is_the_po_compiled(language: str) -> None:
    assert translations(compiled(language)) == translations(catalogue(language)), (
        "run `make translations` (pybabel compile) and commit the .mo"
    )
