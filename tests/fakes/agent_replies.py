"""A loopback model that answers every agent sensibly, for end-to-end tests and benchmarks.

`agent_reply(request)` looks at the request the way a real model would see it: a JSON-schema
`response_format` (OpenAI-compatible) or schema instructions in the system prompt (Anthropic,
local) get a valid object of that schema; a streamed request gets prose; anything else (the
summarizer) gets a one-line summary. The model's name is in every prose reply, so a test can tell
from the chat which model answered.

    llm.default.text = agent_reply
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.llm_server import RecordedRequest

SCHEMA_REPLIES: dict[str, dict[str, Any]] = {
    "ExtractedFacts": {"facts": ["Works night shifts."]},
    "ReplyPlan": {"intent": "sleep advice", "key_points": ["keep a fixed wind-down"]},
    "ExerciseSpec": {"question": "Name two habits that improve sleep."},
    "Grade": {"score": 0.8, "feedback": "Good answer; add one more habit."},
}


def schema_title(request: RecordedRequest) -> str | None:
    fmt = request.body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        title = fmt.get("json_schema", {}).get("schema", {}).get("title")
        return str(title) if title else None
    prompt = json.dumps(request.body.get("system") or request.body.get("messages") or "")
    for title in SCHEMA_REPLIES:
        if f'\\"title\\": \\"{title}\\"' in prompt or f'"title": "{title}"' in prompt:
            return title
    return None


def agent_reply(request: RecordedRequest) -> str:
    title = schema_title(request)
    if title in SCHEMA_REPLIES:
        return json.dumps(SCHEMA_REPLIES[title])
    if request.stream:
        return f"Try a fixed wind-down routine ({request.model})."
    return f"The user works night shifts ({request.model})."
