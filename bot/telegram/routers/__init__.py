"""One router per feature; `bot.telegram.dispatcher.build_dispatcher` includes them in order.

Each module exposes `create_router()`: routers are built per dispatcher (aiogram attaches a router
to one parent only), so tests and restarts can build as many dispatchers as they like.
"""
