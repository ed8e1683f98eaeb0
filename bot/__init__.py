"""A Telegram bot whose agents each run on the model an admin picks."""

__version__ = "0.1.0"
