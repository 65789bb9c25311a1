"""Personal data and secrets removed from text before it is stored (samples, reports): e-mail addresses,
phone numbers, card and account numbers (13-19 digits; `[CARD]` when Luhn-valid), and API keys, tokens,
JWTs, private keys and `password=`-style values."""

from __future__ import annotations

import regex

_SECRETS = regex.compile(
    r"""
      \b(?:sk|pk|rk)-(?:proj-|live-|test-)?[A-Za-z0-9_-]{16,}     # OpenAI/Stripe-style keys
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                               # AWS access key ids
    | \bgh[pousr]_[A-Za-z0-9]{30,}\b                              # GitHub tokens
    | \bxox[abprs]-[A-Za-z0-9-]{10,}                              # Slack tokens
    | \bAIza[0-9A-Za-z_-]{35}\b                                   # Google API keys
    | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}  # JWTs
    | -----BEGIN[ A-Z]*PRIVATE\ KEY-----[\s\S]*?(?:-----END[ A-Z]*PRIVATE\ KEY-----|$)
    | (?P<label>(?i:\b(?:bearer|token|api[_-]?key|secret|password|passwd|pwd)\b["']?\s*[:=]\s*["']?))[^\s"',;]{6,}
    """,
    regex.VERBOSE,
)
_EMAIL = regex.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = regex.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = regex.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}\b")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(found: regex.Match[str]) -> str:
    digits = "".join(c for c in found.group() if c.isdigit())
    return "[CARD]" if _luhn(digits) else "[NUMBER]"  # 13-19 digits: an account or card number either way


def _secret(found: regex.Match[str]) -> str:
    return (found.group("label") or "") + "[SECRET]"


def redact_pii(text: str) -> str:
    """`text` with secrets, card numbers, e-mail addresses and phone numbers replaced by placeholders."""
    text = _SECRETS.sub(_secret, text)
    text = _CARD.sub(_card, text)
    text = _EMAIL.sub("[EMAIL]", text)
    result: str = _PHONE.sub("[PHONE]", text)
    return result
