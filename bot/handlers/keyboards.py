"""Inline keyboards and their callback data (always within Telegram's 64-byte limit).

Callback data is `<action>:<argument>`, with short ids that point into the store, so buttons keep
working after a restart and never carry user text.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import Texts

MAX_CALLBACK_BYTES = 64

AGAIN = "again"
ORIGINAL = "orig"
EDIT_HINT = "edithint"
RERUN = "rerun"
SETTINGS = "set"


def callback(action: str, *parts: str) -> str:
    """Join an action and its arguments into callback data, checking the 64-byte limit."""
    data = ":".join((action, *parts))
    if len(data.encode("utf-8")) > MAX_CALLBACK_BYTES:
        raise ValueError(f"callback data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
    return data


def split_callback(data: str) -> tuple[str, list[str]]:
    """Split callback data into its action and arguments."""
    action, *parts = data.split(":")
    return action, parts


def result_keyboard(texts: Texts, lang: str, result_id: str) -> InlineKeyboardMarkup:
    """Return the buttons shown under every result."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.get(lang, "button.again"), callback_data=callback(AGAIN, result_id)
                ),
                InlineKeyboardButton(
                    texts.get(lang, "button.original"),
                    callback_data=callback(ORIGINAL, result_id),
                ),
                InlineKeyboardButton(
                    texts.get(lang, "button.edit"), callback_data=callback(EDIT_HINT, result_id)
                ),
            ]
        ]
    )


CANCEL = "cancel"


def cancel_keyboard(texts: Texts, lang: str, request_id: str) -> InlineKeyboardMarkup:
    """Return the ❌ Cancel button of a request in flight (on its status or preview message)."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.get(lang, "button.cancel"), callback_data=callback(CANCEL, request_id)
                )
            ]
        ]
    )
