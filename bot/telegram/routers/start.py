"""`/start` and `/help`: what the bot does and which commands it knows (admins see theirs)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from bot.app import Services

USER_HELP = """\
I'm your coach: tell me what you're working on and I'll help you keep going.

/learn <topic> - a short lesson on a topic
/train [topic] - an exercise; your next message is graded, then the next one comes (/stop ends it)
/archives - your notes, which I search and cite; to add one, send me a document here \
(PDF, text, Markdown or HTML, up to 20 MB)
/model - choose the model I use for you
/prefer local|online|any - local: your messages never leave this bot's own machines; \
online: never a local model
/usage - what you've spent today and this month, and your limits
/setkey <provider> <key> - use your own API key (send it in a private chat)
/forget - forget this chat's history (in private, also the facts I noted about you)
/deleteme - erase everything I hold about you (asks first)
/usage - what your messages cost today and this month
/help - this list

In groups, mention me or reply to my message."""

ADMIN_HELP = """\

Admin (target: an agent, pipeline:<name>, role:<chat|plan|post> or default; model: a catalog \
alias, provider:model or an OpenRouter id):
/setmodel <target> <model> - run a target on a model
/resetmodel <target> - back to the configured model
/rollback <target> - undo the target's latest change
/models [user id] - each pipeline's agents: model, level, who set it (for that user)
/agents - the agents and their roles
/modelhistory [target] - who changed what, when
/catalog - the named models; /catalog show|add|edit|remove ...
/stats [agent] [1h|24h|7d|30d] - per agent and model: calls, latency, cost, errors, \
fallbacks, 👍 (an agent also gets a chart)
/trial - the running trials, each arm side by side; /trial <agent> <model> [share=10] \
[min=100] starts one (a worse candidate stops itself); /trial stop|promote <agent>
/replay <agent> <model> [n=20] - the agent's last n real inputs run again on a model, side by \
side with what it answered (shows the estimated cost and asks first)
/task add <name> <model> [on=<pipeline>] [sample=<percent>] [kind=note|score] <task text> - a \
background step after replies (kind=score: a 0-1 judge score); /task list|show <name>|remove <name>
/trace - the link to this chat's latest trace
/users - who may use the bot; /users allow <id>, /users block <id>
/budget - the spending limits; /budget bot|user [<id>]|agent <name> <usd>/day|month or off
/usage <user id>|bot - someone's spend, or the bot's"""


def help_text(services: Services, user_id: int | None) -> str:
    admin = user_id is not None and user_id in services.settings.admin_ids
    return USER_HELP + (ADMIN_HELP if admin else "")


async def on_start(message: Message, services: Services) -> None:
    name = message.from_user.first_name if message.from_user else ""
    user_id = message.from_user.id if message.from_user else None
    greeting = f"Hi {name}!" if name else "Hi!"
    await message.answer(f"{greeting} {help_text(services, user_id)}")


async def on_help(message: Message, services: Services) -> None:
    user_id = message.from_user.id if message.from_user else None
    await message.answer(help_text(services, user_id))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    return router
