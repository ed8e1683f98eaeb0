"""The export process's cheap export stage (decision 0022) sends Langfuse exactly what the SDK's
own stage sends: the same records applied through both give the same spans at the receiver, a
secret learnt after a span started is still scrubbed at export, and a batch that might hold media
goes through the SDK's media handling."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from bot.observability import export_stage
from bot.observability.export_child import build_client
from bot.observability.scrub import Scrubber
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan

LATE_SECRET = "late-user-key-0123456789"
T0 = 1_796_000_000_000_000_000
MS = 1_000_000


def _step(agent: str) -> dict[str, Any]:
    return {
        "agent": agent,
        "kind": "llm",
        "model": "openai:gpt-4o-mini",
        "source": "default",
        "set_by": None,
        "alias": None,
        "config_version": 3,
        "preference": "any",
    }


def _call(attempt: int = 0) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "messages": [("system", "You are a coach."), ("user", "How do I sleep better?")],
        "parameters": {"temperature": 0.2, "max_tokens": 64},
        "streaming": attempt == 0,
        "attempt": attempt,
        "turn": 0,
        "previous_error": None if attempt == 0 else "timeout",
    }


def records(run: int, *, media: bool = False, late_secret: bool = False) -> list[Any]:
    """One run as the bot records it: two steps, three model calls (one fails over), updates,
    ends of every kind."""
    base = run * 100
    root, step_a, step_b, gen_a, gen_b, gen_c = (base + k for k in range(1, 7))
    trace = (run << 64) | 0xABC
    image = "data:image/png;base64,iVBORw0KGgo="
    text = image if media else f"hello {run}"
    if late_secret:
        text = f"my key is {LATE_SECRET}"
    # Short metadata is propagated onto every span's attributes: the SDK's media scan at
    # creation never sees it, only its export stage does.
    metadata: dict[str, Any] = {"lang": "en", "n": run, **({"image": image} if media else {})}
    out: list[Any] = [
        ("run", root, trace, T0, "support", ["beta"], 7, 70, text, metadata),
        ("step", step_a, root, T0 + MS, _step("planner"), ["support", "beta"]),
        ("gen", gen_a, step_a, T0 + 2 * MS, _call()),
        ("upd", gen_a, "first_token", T0 + 3 * MS),
        ("end", gen_a, T0 + 4 * MS, "ok", ({"plan": text}, (12, 3, 15), 0.0001, 12.5, "stop", "x")),
        ("end", step_a, T0 + 5 * MS, "ok", {"plan": "rest"}),
        ("step", step_b, root, T0 + 6 * MS, _step("responder"), None),
        ("gen", gen_b, step_b, T0 + 7 * MS, _call()),
        (
            "end",
            gen_b,
            T0 + 8 * MS,
            "fail",
            (("exc", "TimeoutError", "slow"), "timeout", 504, True),
        ),
        ("gen", gen_c, step_b, T0 + 9 * MS, _call(attempt=1)),
        ("end", gen_c, T0 + 10 * MS, "superseded", ("a faster reply won", (5, 1, 6), None, 3.0)),
        ("end", step_b, T0 + 11 * MS, "failed", ("partial", ("text", "no answer"))),
        ("upd", root, "output", "Sleep at fixed hours."),
    ]
    if late_secret:
        out.append(("secret", LATE_SECRET))  # learnt after the root span started
    out.append(("end", root, T0 + 12 * MS, "run", (["beta", "late-tag"], ("ERROR", ("text", "x")))))
    return out


def export(all_records: list[Any], *, cheap: bool) -> tuple[list[ReceivedSpan], Any]:
    """Apply `all_records` in an export process's client; the spans the receiver got."""
    with OtlpReceiver() as receiver:
        config = {
            "public_key": f"pk-lf-test-{uuid.uuid4().hex[:12]}",
            "secret_key": f"sk-lf-{uuid.uuid4().hex}",
            "base_url": receiver.base_url,
            "export_timeout": 5,
            "flush_at": None,
            "flush_interval": 0.05,
            "release": "1.2.3",
            "resource": {"service.name": "coach-bot"},
        }
        client, replayer = build_client(config, Scrubber(["configured-secret-xyz"]))
        processor: Any = client._resources.tracer_provider._active_span_processor  # type: ignore[union-attr]
        stage = processor._span_processors[0]._batch_processor._exporter
        if not cheap:
            assert isinstance(stage, export_stage.CheapExportStage)
            processor._span_processors[0]._batch_processor._exporter = stage.sdk_stage
        for record in all_records:
            replayer.apply(record)
        client.flush()
        client.shutdown()
        made = sum(1 for r in all_records if r[0] in ("run", "step", "gen"))
        assert receiver.wait_until(lambda r: len(r.spans()) >= made)
        return receiver.spans(), stage


def comparable(spans: list[ReceivedSpan]) -> list[dict[str, Any]]:
    rows = [dataclasses.asdict(span) for span in spans]
    return sorted(rows, key=lambda row: row["span_id"])


def test_the_cheap_stage_sends_what_the_sdk_stage_sends() -> None:
    everything = [r for run in range(1, 6) for r in records(run)]
    sdk, _ = export(everything, cheap=False)
    cheap, stage = export(everything, cheap=True)
    assert len(cheap) == len(sdk) == 5 * 6
    assert comparable(cheap) == comparable(sdk)
    assert stage.passed >= 1
    assert stage.transformed == 0  # nothing here needed the SDK's stage


def test_a_secret_learnt_late_is_scrubbed_at_export_as_before() -> None:
    everything = records(1, late_secret=True)
    sdk, _ = export(everything, cheap=False)
    cheap, stage = export(everything, cheap=True)
    assert comparable(cheap) == comparable(sdk)
    assert stage.transformed >= 1
    root = next(span for span in cheap if span.parent_id is None)
    assert LATE_SECRET not in str(root.attributes)
    assert "[secret]" in root.attributes["langfuse.observation.input"]


def test_a_batch_that_may_hold_media_goes_through_the_sdk_stage() -> None:
    everything = records(1, media=True)
    sdk, _ = export(everything, cheap=False)
    cheap, stage = export(everything, cheap=True)
    assert comparable(cheap) == comparable(sdk)
    assert stage.transformed >= 1


def test_the_stage_is_installed_in_front_of_the_sdk_stage() -> None:
    _, stage = export(records(1), cheap=True)
    assert isinstance(stage, export_stage.CheapExportStage)
    assert type(stage.sdk_stage).__name__ == "LangfuseTransformingSpanExporter"
