from __future__ import annotations

import pytest

from rules.pii import redact_pii


@pytest.mark.parametrize(
    "text,expected",
    [
        ("write to jane.doe+x@example.co.uk today", "write to [EMAIL] today"),
        ("call +1 (555) 123-4567 or 020 7946 0958", "call [PHONE] or [PHONE]"),
        ("card 4111 1111 1111 1111", "card [CARD]"),
        ("card 4111-1111-1111-1112", "card [NUMBER]"),
        ("key sk-proj-AbCdEfGhIjKlMnOpQrSt and AKIAABCDEFGHIJKLMNOP", "key [SECRET] and [SECRET]"),
        ("token ghp_" + "a" * 36, "token [SECRET]"),
        ("password=hunter2hunter2", "password=[SECRET]"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----", "[SECRET]"),
        ("in 2024, 365 days, order 12345, 10-15 people", "in 2024, 365 days, order 12345, 10-15 people"),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    assert redact_pii(text) == expected
