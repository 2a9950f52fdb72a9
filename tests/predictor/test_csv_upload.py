"""A CSV upload parsed while it arrives (predictor/tables.py BodyStream, predictor/csv_upload.py): the
same table and the same refusals as the body read whole, fed in small chunks from another thread."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pandas as pd
import pytest

from nasdb.errors import InvalidTaskError
from predictor.tables import CSV_BLOCK_BYTES, BodyStream, table_from_csv


def _streamed(data: bytes, chunk: int = 1000, error: BaseException | None = None):
    """table_from_csv of ``data`` fed as it would arrive: ``chunk`` bytes at a time, from another thread."""
    stream = BodyStream()

    def feed() -> None:
        for i in range(0, len(data), chunk):
            stream.feed(data[i:i + chunk])
            if i == 0:
                time.sleep(0.01)  # the reader waits for the rest
        stream.end(error)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        return table_from_csv(stream, where="table")
    finally:
        feeder.join()


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n)
    x[::9] = np.nan
    return pd.DataFrame({"x": x, "colour": rng.choice(["red", "blue", None], n), "y": np.arange(n) % 3})


@pytest.mark.parametrize("rows", [60, 3 * CSV_BLOCK_BYTES // 40])  # one block; several
def test_a_streamed_body_reads_the_table_of_the_whole_body(rows):
    data = _frame(rows).to_csv(index=False).encode()
    assert _streamed(data, chunk=1000 if rows < 100 else 250_000).equals(table_from_csv(data, where="table"))


BAD = {"empty": b"", "whitespace": b" \n\r\n  ", "a short row": b"a,b,y\n1,2,0\n3,1\n",
       "a quote left open": b'a,b\n1,"2\n'}


def _outcome(read) -> tuple[str, object]:
    try:
        return "read", read()
    except InvalidTaskError as e:
        return "refused", str(e)


@pytest.mark.parametrize("name", list(BAD))
def test_a_streamed_body_is_read_or_refused_as_the_whole_body(name):
    """(A column's non-UTF-8 text reads as binary and is refused later, by the table checks:
    test_serve_tables.py sends it through the streamed path.)"""
    whole = _outcome(lambda: table_from_csv(BAD[name], where="table"))
    streamed = _outcome(lambda: _streamed(BAD[name], chunk=7))
    same = whole[1] == streamed[1] if whole[0] == "refused" else whole[1].equals(streamed[1])
    assert whole[0] == streamed[0] and same
    assert name == "a quote left open" or whole[0] == "refused"


def test_a_body_that_fails_while_arriving_stops_the_parse():
    data = _frame(500).to_csv(index=False).encode()
    with pytest.raises(InvalidTaskError, match="the body was not read: body: not complete within"):
        _streamed(data, error=TimeoutError("body: not complete within 30 s"))


def test_uploads_beyond_the_streamed_ones_wait_for_their_body_and_read_the_same():
    """Three uploads at once: STREAMED_UPLOADS (2) parse while their bodies arrive, the third is read
    whole first (a slow client must not hold every thread); each gets its table and label, and an
    upload without a label is refused once its body is in."""
    from starlette.requests import Request

    from predictor.csv_upload import STREAMED_UPLOADS, read_csv_upload

    data = _frame(300).to_csv(index=False).encode()
    released = asyncio.Event()

    def request() -> Request:
        chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]

        async def receive() -> dict:
            if len(chunks) == 1:
                await released.wait()  # the last chunk waits until every upload has started
            body = chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}
        return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)

    def check(label, size):
        if not label:
            raise ValueError("label: a CSV upload needs the query parameter ?label=COLUMN")
        assert size == len(data)
        return label

    async def main():
        uploads = [asyncio.ensure_future(read_csv_upload(request(), label, check)) for label in ("y", "y", "y", None)]
        await asyncio.sleep(0.05)
        released.set()
        return await asyncio.gather(*uploads, return_exceptions=True)

    assert STREAMED_UPLOADS == 2
    *read, refused = asyncio.run(main())
    want = table_from_csv(data, where="table")
    assert all(table.equals(want) and label == "y" for table, label in read)
    assert isinstance(refused, ValueError) and str(refused).startswith("label:")
