"""Telegram image bot: /image prompts to pictures via an OpenAI-compatible images API."""

__version__ = "0.1.0"
