"""Baseline publishers for `make bench`: the plain pika ways of sending the same rows.

    python bench/baseline_publish.py MODE CSV --url URL --queue NAME --queue-type TYPE

MODE is one of:
  per-row-connection  (a) a new connection for every row, as the tutorial's new_task.py does
  confirm-each        (b) one connection; publish, then wait for that message's confirm
  no-confirm          (c) one connection, basic_publish without confirms: the unsafe ceiling

Every message is persistent (delivery_mode 2) with the body emit would send (the fields of
the row joined by a space). Prints one JSON line: rows sent and seconds from the first
connect to the last close.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Iterator

import pika

MODES = ("per-row-connection", "confirm-each", "no-confirm")


def bodies(path: str) -> Iterator[bytes]:
    """The body of every non-blank row, as emit builds it."""
    with open(path, encoding="utf-8", newline="") as f:
        for record in csv.reader(f):
            if record:
                yield " ".join(record).encode("utf-8")


def declare(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, kind: str
) -> None:
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": kind})


def per_row_connection(params: pika.URLParameters, path: str, queue: str, kind: str) -> int:
    """(a) The tutorial's new_task.py once per row: connect, declare, publish, close."""
    n = 0
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    for body in bodies(path):
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        declare(ch, queue, kind)
        ch.basic_publish("", queue, body, props)
        conn.close()
        n += 1
    return n


def one_connection(
    params: pika.URLParameters, path: str, queue: str, kind: str, confirm: bool
) -> int:
    """(b) or (c): one connection for every row, confirming each message or none."""
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    declare(ch, queue, kind)
    if confirm:
        # basic_publish now returns only once the broker has confirmed this message.
        ch.confirm_delivery()
    n = 0
    for body in bodies(path):
        ch.basic_publish("", queue, body, props)
        n += 1
    # The close handshake comes back only after the broker has read every frame before it.
    conn.close()
    return n


def main() -> None:
    """Run one baseline and print {"rows": N, "seconds": S}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("csv")
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--queue-type", default="quorum", choices=("quorum", "classic"))
    a = ap.parse_args()
    params = pika.URLParameters(a.url)
    began = time.perf_counter()
    if a.mode == "per-row-connection":
        n = per_row_connection(params, a.csv, a.queue, a.queue_type)
    else:
        n = one_connection(params, a.csv, a.queue, a.queue_type, a.mode == "confirm-each")
    print(json.dumps({"rows": n, "seconds": time.perf_counter() - began}))


if __name__ == "__main__":
    main()
