"""A CSV upload parsed while it arrives (POST /v1/suggest and /v1/predict with Content-Type text/csv).

A 145 MB body takes 0.3-0.5 s to come through Ray Serve's proxy in ~600 chunks, and parsing it
takes longer still; read first and parsed after, the two add up. Here the chunks are fed, as they
arrive, to a worker thread whose CSV reader reads them (predictor/tables.py ``BodyStream``), so
the parse runs during the upload and the body is never joined into one copy. What is refused, and
in which order, is as when the body was read whole first: a body over the limit or too slow (413,
408, from the request guard while it arrives), then no label or too many bytes, then the CSV's own
refusals. Only ``STREAMED_UPLOADS`` uploads of a replica are parsed while they arrive: each holds a
thread until its body is in, and a slow client must not hold every thread (issue 15); the others
wait for their whole body and are parsed then, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from predictor.tables import BodyStream, table_from_csv

#: Uploads of one replica parsed while they arrive (each holds a worker thread until its body is in).
STREAMED_UPLOADS = 2
_streaming = 0  # uploads being streamed now, in this replica's event loop (no lock: no await between check and count)


async def read_csv_upload(request: Request, label: str | None, check: Callable[[str | None, int], str]
                          ) -> tuple[Any, str]:
    """The table and label of a CSV upload. ``check(label, size)`` refuses a missing label or an
    oversized body once the body is in (SuggestionService.check_csv), before any parse error is raised."""
    global _streaming
    if _streaming >= STREAMED_UPLOADS:
        data = await request.body()
        label = check(label, len(data))
        return await run_in_threadpool(table_from_csv, data, "table"), label
    _streaming += 1
    stream = BodyStream()
    parse = asyncio.ensure_future(run_in_threadpool(table_from_csv, stream, "table"))
    parse.add_done_callback(_release)
    try:
        async for chunk in request.stream():
            stream.feed(chunk)
        label = check(label, stream.size)
    except BaseException as e:  # the reader stops at its next read; nobody waits for it
        stream.end(e)
        raise
    stream.end()
    return await parse, label


def _release(parse: asyncio.Future) -> None:
    """The parse is over: its thread is free (and an error nobody awaits is not logged as lost)."""
    global _streaming
    _streaming -= 1
    if not parse.cancelled():
        parse.exception()


__all__ = ["STREAMED_UPLOADS", "read_csv_upload"]
