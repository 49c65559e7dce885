"""``/api/v1/streams``: append request records to a topic of the events slot and read a topic back.

What a producer and a reader of the deployments' stream consumers need when the service owns the
events store (the lite DuckDB file has one writer: the service). Topic names are the tenant's own
(:func:`matih_lite.serving.streams.tenant_stream`); ``matih.*`` topics are the platform's and
cannot be named here.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from matih_lite.errors import InvalidInput
from matih_lite.host import Host
from matih_lite.service.auth import Principal
from matih_lite.service.deployments import DEPENDENCIES

MAX_RECORDS = 10_000


class AppendRecords(msgspec.Struct, forbid_unknown_fields=True):
    records: list[dict[str, Any]]


class Appended(msgspec.Struct):
    stream: str
    first_offset: int
    count: int


class RecordOut(msgspec.Struct):
    offset: int
    timestamp: int
    data: dict[str, Any]


class RecordPage(msgspec.Struct):
    stream: str
    records: list[RecordOut]
    next_offset: int
    end_offset: int


class StreamController(Controller):
    path = "/api/v1/streams"
    tags = ["streams"]
    dependencies = DEPENDENCIES

    @post("/{stream:str}/records", sync_to_thread=True, status_code=201,
          summary="Append JSON records to a topic (at most 10,000 per call; timestamp defaults to now)")
    def append(self, stream: FromPath[str], data: JSONBody[AppendRecords], principal: NamedDependency[Principal],
               host: NamedDependency[Host]) -> Appended:
        from matih_lite.serving.streams import tenant_stream

        name = tenant_stream(principal.tenant, stream)
        if not data.records:
            raise InvalidInput("records is empty: give at least one JSON object", detail={"field": "records"})
        if len(data.records) > MAX_RECORDS:
            raise InvalidInput(f"at most {MAX_RECORDS:,} records per call, got {len(data.records):,}",
                               detail={"field": "records"})
        now = int(time.time() * 1000)
        records = [r if "timestamp" in r else {"timestamp": now, **r} for r in data.records]
        first = host.backend("events").append(name, records)
        return Appended(stream, first, len(data.records))

    @get("/{stream:str}/records", sync_to_thread=True, summary="Read a topic from an offset")
    def read(self, stream: FromPath[str], principal: NamedDependency[Principal], host: NamedDependency[Host],
             from_offset: Annotated[int, Parameter(ge=0)] = 0,
             max_results: Annotated[int, Parameter(ge=1, le=MAX_RECORDS)] = 1000) -> RecordPage:
        from matih_lite.serving.streams import tenant_stream

        name = tenant_stream(principal.tenant, stream)
        events = host.backend("events")
        records = events.read_from(name, from_offset, max_results)
        next_offset = records[-1].offset + 1 if records else from_offset
        return RecordPage(stream, [RecordOut(r.offset, r.timestamp, r.data) for r in records], next_offset,
                          events.end_offset(name))


CONTROLLERS = [StreamController]
