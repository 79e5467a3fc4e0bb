"""Metrics (Prometheus, on their own port) and structured JSON logs, with one interceptor.

Series (all prefixed `bank_`):

    rpc_requests_total{method,code}        counter: calls by method and final status code
    rpc_latency_seconds{method}            histogram: handler time, by method
    batch_items{method}                    histogram: items per CreateTransfers/CreateAccounts
    command_retries_total{method}          counter: transactions retried after a conflict
    db_pool_connections_in_use             gauge: database connections checked out
    audit_tree_size                        gauge: audit leaves (read at scrape time)
    audit_last_checkpoint_age_seconds      gauge: age of the newest signed checkpoint

Every call also writes one JSON log line (`bank.access`): method, code, duration, request id,
principal subject and role. Request bodies, personal data and secrets are never logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bank.app import unit

log = logging.getLogger("bank.access")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
principal_var: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default="")

BATCH_FIELDS = {"CreateTransfers": "transfers", "CreateAccounts": "accounts"}
# `json.dumps(body, ensure_ascii=False)` without building a new encoder for every line.
_encode = json.JSONEncoder(ensure_ascii=False).encode


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("bank_rpc_requests_total", "RPCs by method and status code",
                                ["method", "code"], registry=self.registry)
        self.latency = Histogram("bank_rpc_latency_seconds", "RPC handler time", ["method"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                          5, 10))
        self.batch = Histogram("bank_batch_items", "items per batch request", ["method"],
                               registry=self.registry,
                               buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 8000))
        self.retries = Counter("bank_command_retries_total", "transactions retried after a "
                               "concurrency conflict", ["method"], registry=self.registry)
        self.group = Histogram("bank_group_commit_requests", "CreateTransfers requests "
                               "committed together in one transaction (group commit)",
                               registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self._observer = self._count_retry
        unit.RETRY_OBSERVERS.append(self._observer)

    def _count_retry(self, method: str) -> None:
        self.retries.labels(method).inc()

    def observe_group(self, requests: int, _transfers: int) -> None:
        self.group.observe(requests)

    def close(self) -> None:
        """Stop counting retries into this registry (when its server stops)."""
        if self._observer in unit.RETRY_OBSERVERS:
            unit.RETRY_OBSERVERS.remove(self._observer)

    def serve(self, host: str, port: int) -> Any:
        """Expose /metrics over HTTP on its own port; returns the server (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


class LedgerCollector(Collector):
    """Gauges read at scrape time: pool use, audit tree size, last checkpoint age."""

    def __init__(self, uow: Any, engine: Any, now_ns: Callable[[], int]) -> None:
        self._uow, self._engine, self._now_ns = uow, engine, now_ns

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = GaugeMetricFamily("bank_db_pool_connections_in_use",
                                 "database connections checked out")
        checked_out = getattr(self._engine.pool, "checkedout", None)
        pool.add_metric([], float(checked_out() if checked_out else 0))
        yield pool
        try:
            with self._uow.read(timeout_s=2.0) as r:
                size = r.head().audit_size
                checkpoints = r.checkpoints()
        except Exception:  # the database is down: health says so; metrics stay scrapeable
            return
        tree = GaugeMetricFamily("bank_audit_tree_size", "audit leaves in the log")
        tree.add_metric([], float(size))
        yield tree
        age = GaugeMetricFamily("bank_audit_last_checkpoint_age_seconds",
                                "seconds since the newest signed checkpoint (-1: none)")
        age.add_metric([], (self._now_ns() - checkpoints[-1].created_ns) / 1e9
                       if checkpoints else -1.0)
        yield age


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id and principal of the call in flight."""

    _second = -1
    _stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        # strftime once per second, not once per line (the access log writes one per call).
        # Handlers format under their lock, so the cache is not raced.
        second = int(record.created)
        if second != self._second:
            self._stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        request_id = getattr(record, "request_id", "") or request_id_var.get()
        principal = getattr(record, "principal", "") or principal_var.get()
        if request_id:
            body["request_id"] = request_id
        if principal:
            body["principal"] = principal
        for key in ("rpc", "code", "duration_ms"):
            if hasattr(record, key):
                body[key] = getattr(record, key)
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return _encode(body)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _request_id(request: Any, context: grpc.ServicerContext) -> str:
    value = getattr(request, "request_id", "")
    if isinstance(value, str) and value:
        return value[:64]
    for key, item in context.invocation_metadata():
        if key == "x-request-id":
            return str(item)[:64]
    return f"srv-{uuid.uuid4().hex[:16]}"


class ObservabilityInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts, times and logs every call; outermost, so refusals are counted too."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, Any] = {}  # method -> its wrapped handler, built once

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        # grpc asks on every call; the wrapper depends on the method only (everything per
        # call happens inside it), so it is built once per registered method.
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            wrapped = self._wrap(continuation(details), details)
            if wrapped is not None:
                self._wrapped[details.method] = wrapped
        return wrapped

    def _wrap(self, handler: Any, details: Any) -> Any:
        if handler is None or details.method.startswith("/grpc."):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        metrics = self._metrics
        # The metrics' children for this method, looked up once (`.labels()` per call costs a
        # lock and a dict lookup of a built tuple each time); by status code as codes occur.
        field = BATCH_FIELDS.get(method, "")
        batch = metrics.batch.labels(method) if field else None
        latency = metrics.latency.labels(method)
        requests: dict[Any, tuple[str, Any]] = {}

        def begin(request: Any, context: grpc.ServicerContext) -> float:
            request_id_var.set(_request_id(request, context))
            principal_var.set("")  # set by the auth interceptor once it has resolved the caller
            if batch is not None and hasattr(request, field):
                batch.observe(len(getattr(request, field)))
            return time.perf_counter()

        def end(context: grpc.ServicerContext, started: float) -> None:
            elapsed = time.perf_counter() - started
            code = context.code() or grpc.StatusCode.OK
            counted = requests.get(code)
            if counted is None:
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                counted = requests[code] = (name, metrics.requests.labels(method, name))
            name, counter = counted
            counter.inc()
            latency.observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                # What `log.info` does, less its walk up the stack for the caller's file and
                # line (no formatter of ours shows them).
                log.handle(log.makeRecord(
                    log.name, logging.INFO, "(unknown file)", 0, "rpc", (), None,
                    "(unknown function)",
                    {"rpc": method, "code": name, "duration_ms": round(elapsed * 1000, 3),
                     "request_id": request_id_var.get(), "principal": principal_var.get()}))

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started = begin(request, context)
                try:
                    return inner(request, context)
                finally:
                    end(context, started)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started = begin(request, context)
                try:
                    yield from inner_stream(request, context)
                finally:
                    end(context, started)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler
