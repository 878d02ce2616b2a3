"""Message templates per locale (notify_svc.templates and notify_svc/locales)."""

from __future__ import annotations

from pathlib import Path

import pytest

from notify_svc.templates import LOCALES_DIR, Templates

TEMPLATES = Templates.load()
WALLET = {"currency": "EUR", "wallet_id": "w1", "state": "FROZEN"}


def test_every_locale_has_every_template_with_the_same_placeholders() -> None:
    assert TEMPLATES.locales == {"en", "de"}
    for name in TEMPLATES.names():
        values = dict.fromkeys(TEMPLATES.placeholders(name), "x")
        for locale in TEMPLATES.locales:
            message = TEMPLATES.render(name, locale, values, with_html=True)
            assert message.subject
            assert message.text
            assert message.sms
            assert message.html
            assert "${" not in message.text + message.subject + message.html


def test_a_line_whose_values_are_all_empty_is_left_out() -> None:
    with_reason = TEMPLATES.render("wallet_frozen", "en", {**WALLET, "reason": "fraud review"})
    without = TEMPLATES.render("wallet_frozen", "en", WALLET)
    assert "Reason: fraud review" in with_reason.text
    assert "Reason" not in without.text


def test_values_are_escaped_in_html_and_kept_as_they_are_in_text() -> None:
    message = TEMPLATES.render(
        "payment_received", "en", {"amount": "1 USD", "payment_id": "<b>x&y</b>"}, with_html=True
    )
    assert "<b>x&y</b>" in message.text
    assert message.html is not None
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in message.html
    assert message.html.startswith('<!doctype html><html lang="en">')


def test_the_recipients_locale_is_used_and_an_unknown_one_falls_back_to_english() -> None:
    assert TEMPLATES.render("welcome", "de", {"name": "Ann"}).subject == "Willkommen bei paymesh"
    assert TEMPLATES.render("welcome", "xx", {"name": "Ann"}).subject == "Welcome to paymesh"


def test_sms_is_the_subject_and_push_the_first_paragraph_of_the_text() -> None:
    message = TEMPLATES.render("welcome", "en", {"name": "Ann", "email": "ann@example.com"})
    assert message.sms == "Welcome to paymesh"
    assert message.push_body == "Hello Ann,"
    assert message.html is None  # only rendered for email


def test_a_translation_with_other_placeholders_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "en.toml").write_text((LOCALES_DIR / "en.toml").read_text())
    broken = (LOCALES_DIR / "de.toml").read_text().replace("${amount} erhalten", "${betrag} erhalten")
    (tmp_path / "de.toml").write_text(broken)
    with pytest.raises(ValueError, match="payment_received"):
        Templates.load(tmp_path)


def test_a_translation_missing_a_template_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "en.toml").write_text((LOCALES_DIR / "en.toml").read_text())
    (tmp_path / "fr.toml").write_text('[welcome]\nsubject = "Bienvenue"\ntext = "Bonjour ${name}"\nhtml = "<p>x</p>"\n')
    with pytest.raises(ValueError, match=r"fr\.toml"):
        Templates.load(tmp_path)
