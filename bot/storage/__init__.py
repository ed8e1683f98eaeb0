"""Storage: users, settings, conversations, memory, exercises and the admins' model overrides.

Two backends behind the protocols of `bot.storage.repositories`: SQLite (`bot.storage.sqlite`,
the default) and InsForge (`bot.storage.insforge`). Build one with
`bot.storage.factory.create_storage(settings)`, then `await storage.connect()`.
"""
