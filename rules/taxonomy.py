"""The AI-specific harm taxonomy that every rule is filed under (extendable by config)."""

from __future__ import annotations

DEFAULT_CATEGORIES: tuple[str, ...] = (
    "dangerous_instructions",
    "hate_harassment",
    "sexual_content",
    "self_harm",
    "violent_extremism",
    "model_manipulation",
    "training_data_exposure",
    "sensitive_data",
    "nl_misuse",
    "other",
)
