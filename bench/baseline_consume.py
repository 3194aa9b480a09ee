"""Baseline consumer for `make bench`: the least a pika worker can do per message.

    python bench/baseline_consume.py COUNT --url URL --queue NAME [--prefetch N]

A BlockingConnection consumer with basic_qos(prefetch_count=N) that acks in its callback
and logs nothing, like the tutorial's worker.py without the sleep and the print. It stops
after COUNT messages and prints one JSON line: messages, and seconds from the first
delivery to the last ack (cpu: its process time over the same span).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pika


def main() -> None:
    """Consume COUNT messages and print {"messages": N, "seconds": S, "cpu": C}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("count", type=int)
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--prefetch", type=int, default=1)
    a = ap.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(a.url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=a.prefetch)
    seen = 0
    first = 0.0
    first_cpu = 0.0

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal seen, first, first_cpu
        if seen == 0:
            first = time.perf_counter()
            first_cpu = time.process_time()
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= a.count:
            channel.stop_consuming()

    ch.basic_consume(a.queue, on_message)
    ch.start_consuming()
    seconds = time.perf_counter() - first
    cpu = time.process_time() - first_cpu
    conn.close()
    print(json.dumps({"messages": seen, "seconds": seconds, "cpu": cpu}))


if __name__ == "__main__":
    main()
