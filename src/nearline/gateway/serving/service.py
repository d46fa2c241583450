"""The one call every transport makes: a chat request, its tenant, its headers → an answer.

``ChatService.handle`` names the request (one id, everywhere), opens its root span, resolves
it through the catalogue, admits it past its key's and tenant's rate limits and budgets
(``gateway/limits``) and has the pipeline answer it, metered as it streams. The transports
(HTTP JSON and SSE, WebSocket) only parse, authenticate and render; what differs between
them is said by their ``Transport``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from nearline.core.errors import NearlineError
from nearline.core.http import internal_error
from nearline.core.request import ChatRequest
from nearline.gateway.cache import policy
from nearline.gateway.limits import NO_GRANT, Governor, Grant
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import Answer, ServingPipeline
from nearline.gateway.serving.sse import new_request_id
from nearline.gateway.telemetry.observe import AnswerObserver
from nearline.gateway.telemetry.tracing import TRACE_HEADER, incoming_context, trace_id_hex
from nearline.gateway.tenancy import Tenant

REQUEST_ID_HEADER = "x-request-id"
PROGRESSIVE_HEADER = "x-nearline-progressive"

Authenticate = Callable[[], Tenant]
ReadRequest = Callable[[], Awaitable[ChatRequest]]


@dataclass(frozen=True, slots=True)
class Transport:
    """How a transport's requests are traced and which of its headers speak for them."""

    span: str  # the root span's name
    cache_control: bool  # the Cache-Control header is the client's cache directive
    stream_span: bool  # a "stream" span covers the delivery of a streamed answer


HTTP = Transport("POST /v1/chat/completions", cache_control=True, stream_span=True)
# Browsers send Cache-Control: no-cache on every upgrade: it says nothing about the answers.
WEBSOCKET = Transport("WS /v1/ws chat", cache_control=False, stream_span=False)


def progressive_header(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class LimitedAnswer(Answer):
    """An answer metered by the governor, with the rate-limit headers of its admission."""

    limit_headers: Mapping[str, str] = field(default_factory=dict)


class ChatService:
    def __init__(
        self,
        catalogue: Catalogue,
        pipeline: ServingPipeline,
        observer: AnswerObserver,
        *,
        governor: Governor | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._pipeline = pipeline
        self._observer = observer
        self._governor = governor

    async def handle(
        self,
        request: ChatRequest | ReadRequest,
        tenant: Tenant | Authenticate,
        headers: Mapping[str, str],
        *,
        received_at: float,
        transport: Transport = HTTP,
        progressive: bool | None = None,
    ) -> Answer:
        """Answer one request; raise ``NearlineError`` if it fails before the first event.

        ``tenant`` and ``request`` may be given as the authentication and the parse still
        to do (in that order): they then run inside the request's root span (authentication
        in an "auth" span), so their failures are traced and carry the trace id too. Every
        error raised carries the ``x-nearline-trace-id`` and ``x-request-id`` headers; the
        answer's ``aclose`` ends the request's spans. ``progressive`` defaults to the
        ``X-Nearline-Progressive`` header.
        """
        request_id = new_request_id()
        root = self._observer.span(  # a child of the client's W3C traceparent, if it sent one
            transport.span,
            incoming_context(headers),
            kind=SpanKind.SERVER,
            attributes={"nearline.request_id": request_id},
        )
        parent = trace.set_span_in_context(root)
        grant = NO_GRANT
        try:
            if not isinstance(tenant, Tenant):
                with self._observer.span("auth", parent):
                    tenant = tenant()
            if not isinstance(request, ChatRequest):
                request = await request()
            root.set_attribute("gen_ai.request.model", request.model)
            call = await self._catalogue.resolve(request, tenant, headers)
            directive = (
                policy.from_header(headers.get("cache-control"))
                if transport.cache_control
                else None
            )
            if progressive is None:
                progressive = progressive_header(headers.get(PROGRESSIVE_HEADER))
            if self._governor is not None:
                grant = await self._governor.admit(tenant)
            answer = await self._pipeline.answer(
                call,
                tenant=tenant,
                request_id=request_id,
                client_directive=directive,
                received_at=received_at,
                trace_parent=parent,
                progressive=progressive,
            )
            if self._governor is not None:
                answer = await self._metered(answer, grant, tenant)
        except NearlineError as error:
            error.for_request(request_id)  # internals are logged here, with the id
            error.extra_headers.update(
                {**grant.headers, TRACE_HEADER: trace_id_hex(root), REQUEST_ID_HEADER: request_id}
            )
            self._observer.failed(root, error)
            root.end()
            raise
        except Exception as exc:  # a bug: a 500 that names the request, traceback logged
            self._observer.failed(root, exc)
            root.end()
            internal = internal_error(exc, request_id)
            internal.extra_headers[TRACE_HEADER] = trace_id_hex(root)
            raise internal from exc
        except BaseException:
            root.end()
            raise
        root.set_attribute("nearline.source", answer.source)
        spans: tuple[Span, ...] = (root,)
        if transport.stream_span and request.stream:
            spans = (self._observer.span("stream", parent), root)
        return replace(answer, trace_id=trace_id_hex(root), spans=spans)

    async def _metered(self, answer: Answer, grant: Grant, tenant: Tenant) -> LimitedAnswer:
        """``answer`` counted against ``grant`` as it streams, and priced at its end."""
        assert self._governor is not None
        self._governor.answered(grant, answer.source)
        model = answer.call.request.model
        events = self._governor.metered(
            answer.first,
            answer.rest,
            grant,
            tenant=tenant,
            model=model,
            source=answer.source,
            price=self._catalogue.route(model).price,
        )
        values: dict[str, Any] = {f.name: getattr(answer, f.name) for f in fields(answer)}
        values.update(first=await anext(events), rest=events, limit_headers=grant.headers)
        return LimitedAnswer(**values)


def traced_headers(answer: Answer) -> dict[str, str]:
    """The ids that join a response to its trace and its request-log row."""
    return {TRACE_HEADER: answer.trace_id, REQUEST_ID_HEADER: answer.request_id}


def answer_headers(answer: Answer) -> dict[str, str]:
    """What every rendering of ``answer`` says about it in headers."""
    headers = {"x-nearline-source": answer.source, **traced_headers(answer)}
    if isinstance(answer, LimitedAnswer):
        headers.update(answer.limit_headers)
    if answer.similarity is not None:
        headers["x-nearline-similarity"] = f"{answer.similarity:.4f}"
    return headers
