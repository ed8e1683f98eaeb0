"""The direct export (decision 0026) sends exactly what the SDK path sends.

The same records go through both: `Replayer` into the Langfuse SDK (encoded by OpenTelemetry's
own OTLP encoder) and `DirectReplayer` (our protobuf). Every span must come out equal as a
protobuf message: ids, parent, name, times, kind, flags, status, and every attribute, in order.
The records come from the bot's own tracing (a pipeline with parallel, streamed, failing and
background steps) and, for what a pipeline rarely does, are written out here.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.version import __version__ as otel_sdk_version

import bot
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage
from bot.observability import export_child, trace_values
from bot.observability import otlp_wire as wire
from bot.observability.direct_replay import DirectReplayer
from bot.observability.export_process import SpanPipe
from bot.observability.exporter import LangfuseSpanExporter
from bot.observability.scrub import Scrubber
from bot.pipeline.context import PipelineContext
from bot.pipeline.runner import PipelineRunner
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.test_resilience import pipeline

SECRET = "sk-test-" + "q" * 24
T0 = 1_796_000_000_000_000_000


def sdk_spans(
    config: dict[str, Any], records: Sequence[Any], monkeypatch: pytest.MonkeyPatch
) -> dict[bytes, Span]:
    """The spans the SDK path sends for `records`, as OpenTelemetry's encoder writes them."""
    requests: list[ExportTraceServiceRequest] = []

    def capture(self: LangfuseSpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        requests.append(encode_spans(spans))
        return SpanExportResult.SUCCESS

    monkeypatch.setattr(LangfuseSpanExporter, "export", capture)
    scrubber = Scrubber(config["secrets"], redact_content=config["redact_content"])
    client, replayer = export_child.build_client(config, scrubber)
    for record in records:
        replayer.apply(record)
    client.flush()
    client.shutdown()
    return {
        span.span_id: span
        for request in requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }


def direct_spans(config: dict[str, Any], records: Sequence[Any]) -> dict[bytes, Span]:
    made: list[bytes] = []
    scrubber = Scrubber(config["secrets"], redact_content=config["redact_content"])
    replayer = DirectReplayer(scrubber, made.append, release=config["release"])
    for record in records:
        replayer.apply(record)
    body = wire.request([], wire.scope("langfuse-sdk", "0", []), made)
    request = ExportTraceServiceRequest.FromString(body)
    spans = request.resource_spans[0].scope_spans[0].spans if made else []
    assert len(spans) == len(made) == replayer.ended
    return {span.span_id: span for span in spans}


def assert_same_spans(
    config: dict[str, Any], records: Sequence[Any], monkeypatch: pytest.MonkeyPatch
) -> dict[bytes, Span]:
    expected = sdk_spans(config, records, monkeypatch)
    assert expected, "the SDK path sent nothing"
    got = direct_spans(config, records)
    assert_equal(expected, got, records)
    return got


def assert_equal(
    expected: dict[bytes, Span], got: dict[bytes, Span], records: Sequence[Any]
) -> None:
    assert got.keys() == expected.keys()
    for span_id, want in expected.items():
        have = got[span_id]
        if not want.parent_span_id and not any(
            r[0] == "run" and r[1] == int.from_bytes(span_id, "big") for r in records
        ):
            # A span with no known parent starts a trace of its own with a random id.
            have.trace_id = want.trace_id
        assert [(kv.key, kv.value) for kv in have.attributes] == [
            (kv.key, kv.value) for kv in want.attributes
        ], want.name
        assert have == want, want.name


def config_of(scrubber: Scrubber) -> dict[str, Any]:
    return {
        # Its own key: the SDK keeps one client per public key.
        "public_key": f"pk-lf-test-{uuid.uuid4().hex[:12]}",
        "secret_key": "sk-lf-direct",
        "base_url": "http://127.0.0.1:9",
        "export_timeout": 1.0,
        "flush_at": None,
        "flush_interval": None,
        "release": "1.2.3",
        "resource": {"service.name": "coach-bot"},
        "secrets": sorted(scrubber.secrets),
        "redact_content": scrubber.redact_content,
    }


def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    records: list[Any] = []
    send = SpanPipe.send

    def keep(self: SpanPipe, record: Any) -> None:
        records.append(record)
        send(self, record)

    monkeypatch.setattr(SpanPipe, "send", keep)
    return records


def answer(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    text = messages[0].content
    if "strategist" in text:
        raise RuntimeError(f"upstream refused the key {SECRET}")
    return f"fine ✓ «{text[-12:]}» " * 3


@pytest.mark.parametrize("redact", [False, True])
async def test_the_bots_records_make_the_same_spans_both_ways(
    redact: bool,
    receiver: OtlpReceiver,
    make_tracing: TracingFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = recorded(monkeypatch)
    tracing = make_tracing(
        make_settings(receiver.base_url, openai_api_key=SECRET, langfuse_redact_content=redact)
    )
    runner = PipelineRunner(tracing.observer)
    llm = tracing.wrap_provider(FunctionProvider(answer))
    for turn in range(3):
        text = f"hello {turn}: my key is {SECRET} — ünïcode"
        ctx = PipelineContext("support", llm, user_id=turn, chat_id=-100 - turn, input_text=text)
        await runner.run(pipeline(), ctx)
    await runner.wait_background()
    assert {r[0] for r in records} >= {"run", "step", "gen", "end", "upd"}
    assert any(r[0] == "end" and r[3] == "fail" for r in records)  # the strategist's call
    spans = assert_same_spans(config_of(tracing.scrubber), records, monkeypatch)
    assert len(spans) == 3 * 5  # root, extraction, strategist (fails: the run stops), calls
    for span in spans.values():
        for kv in span.attributes:
            assert SECRET not in str(kv.value)


STEP = {
    "agent": "coach",
    "kind": "step",
    "model": "openai:gpt-4o",
    "source": "agent",
    "set_by": "admin:7",
    "alias": "fast",
    "config_version": 12,
    "preference": "local",
}


def call(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o",
        "messages": [("system", "be brief"), ("user", 'say "hi" \\ ok')],
        "parameters": {"temperature": 0.5, "max_tokens": 100, "stop": ["\n"]},
        "streaming": False,
        "attempt": 0,
        "previous_error": None,
        "turn": 0,
    }
    values.update(changes)
    return values


def test_rare_records_make_the_same_spans_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallbacks, repairs, every way a call or step ends, tags added mid-run and after it,
    metadata the SDK's serializer must handle itself, a secret learned mid-run, a step and
    a call whose parent is gone."""
    run, trace = 101, 0xABC
    records: list[Any] = [
        (
            "run",
            run,
            trace,
            T0,
            "support",
            ["trial:coach", "x" * 250],
            42,
            -1001234567890,
            "the question",
            {
                "language": "de",
                "long": "y" * 180,
                "huge": 2**60,
                "ratio": math.inf,
                "nested": {"a": [1, 2, (3, 4)]},
                "none": None,
            },
        ),
        ("step", 201, run, T0 + 10, STEP, ["support", "override:coach"]),
        ("step", 202, 201, T0 + 11, {**STEP, "agent": "inner", "set_by": None}, ["nested"]),
        ("gen", 301, 202, T0 + 12, call()),
        ("upd", 301, "first_token", T0 + 1_234_567),
        ("end", 301, T0 + 20, "ok", ("hi", (10, 2, 12), 0.00042, 812.345, "stop", "gpt-4o-2024")),
        ("gen", 302, 202, T0 + 21, call(attempt=1, previous_error="429 slow down", turn=1)),
        ("end", 302, T0 + 22, "fail", (("exc", "RateLimitError 429", "slow"), "rate", 429, True)),
        ("gen", 303, 202, T0 + 23, call(streaming=True)),
        ("end", 303, T0 + 24, "abandon", "the user left"),
        ("gen", 304, 202, T0 + 25, call()),
        ("end", 304, T0 + 26, "superseded", ("a faster answer", (5, 0, 5), None, 12.0)),
        ("gen", 305, 202, T0 + 27, call()),
        ("end", 305, T0 + 28, "superseded", ("cancelled", None, 0.1, 3.0)),
        ("secret", "late-secret-value-123"),
        ("gen", 306, 202, T0 + 29, call(messages=[("user", "late-secret-value-123 here")])),
        ("end", 306, T0 + 30, "ok", ({"json": [1, 2]}, (1, 1, 2), None, 1.0, None, None)),
        ("end", 202, T0 + 31, "failed", ({"partial": "x" * 3000}, ("text", "bad json"))),
        ("end", 201, T0 + 32, "fail", ("WARNING", ("exc", "TimeoutError", ""))),
        ("upd", run, "output", {"reply": "done", "n": 3}),
        ("end", run, T0 + 40, "run", (["support", "trial:coach", "late", ""], ("ERROR", None))),
        # After the reply: a background step joins the ended run, with a new tag.
        ("step", 203, run, T0 + 50, {**STEP, "kind": "background"}, ["support", "bg"]),
        ("gen", 307, 203, T0 + 51, call()),
        ("end", 307, T0 + 52, "ok", ("bye", (1, 1, 2), 0.0, 1.0, "length", "gpt-4o")),
        ("end", 203, T0 + 53, "ok", None),
        # Parents that are gone: each starts a trace of its own.
        ("step", 204, 999, T0 + 60, STEP, None),
        ("end", 204, T0 + 61, "ok", "fine"),
        ("gen", 308, 998, T0 + 62, call()),
        ("end", 308, T0 + 63, "ok", ("x", (0, 0, 0), None, 0.0, None, None)),
        ("upd", run, "output", "too late"),
    ]
    spans = assert_same_spans(config_of(Scrubber([SECRET])), records, monkeypatch)
    assert len(spans) == 13  # the run, 4 steps, 8 calls
    root = spans[run.to_bytes(8, "big")]
    assert root.status.code == wire.STATUS_ERROR
    late = spans[(306).to_bytes(8, "big")]
    assert "late-secret-value-123" not in str(late)


@pytest.mark.parametrize("export", ["direct", "sdk"])
async def test_every_span_arrives_either_way(
    export: str, receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url, langfuse_export=export))
    runner = PipelineRunner(tracing.observer)
    llm = tracing.wrap_provider(FunctionProvider(lambda m, i: "ok"))
    for turn in range(20):
        ctx = PipelineContext("support", llm, user_id=turn, chat_id=turn, input_text="hi")
        await runner.run(pipeline(), ctx)
    await runner.wait_background()
    assert await tracing.flush(timeout=10)
    await asyncio.sleep(0)
    spans = receiver.spans()
    assert len(spans) == tracing.spans_made == 20 * 9
    # What Langfuse reads to group them: one resource, the SDK's scope, the same either way.
    assert {s.scope for s in spans} == {"langfuse-sdk"}
    resources = [{k: v for k, v in s.resource.items() if k != "service.instance.id"} for s in spans]
    assert all(resource == resources[0] for resource in resources)
    assert resources[0] == {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": otel_sdk_version,
        "service.name": "coach-bot",
        "langfuse.release": bot.__version__,
    }
    traces = [r for r in receiver.requests() if r.path.endswith("/otel/v1/traces")]
    assert traces
    for request in traces:
        encoding = {k.lower(): v for k, v in request.headers.items()}.get("content-encoding")
        assert encoding == "gzip"
        assert request.raw != request.body  # sent compressed


def test_open_calls_and_steps_whose_end_never_comes_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record the bot dropped under overload may be an end: what it would have closed must
    not stay in the export process for good."""
    monkeypatch.setattr(trace_values, "MAX_OPEN", 5)
    made: list[bytes] = []
    replayer = DirectReplayer(Scrubber(), made.append, release="1")
    replayer.apply(("run", 1, 0xABC, T0, "support", [], 1, 1, "hi", {}))
    for n in range(10):
        replayer.apply(("step", 100 + n, 1, T0 + n, STEP, None))
        replayer.apply(("gen", 200 + n, 100 + n, T0 + n, call()))
    assert len(replayer._generations) == 5
    assert len(replayer._scopes) == 5
    assert replayer.forgotten == 5 + 6  # five calls; the run and five steps
    replayer.apply(("end", 200, T0 + 50, "abandon", "gone"))  # forgotten: nothing to end
    replayer.apply(("end", 209, T0 + 50, "abandon", "gone"))  # kept: its span goes out
    assert len(made) == 1
