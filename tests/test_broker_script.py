"""scripts/broker: a real node of our own that can be stopped and started again."""

from __future__ import annotations

import pika

from tests.helpers import drain


def test_persistent_tasks_survive_a_restart_of_our_node(make_node, tmp_path):
    node = make_node()
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    ch = conn.channel()
    ch.queue_declare("survivor", durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    ch.basic_publish("", "survivor", b"still here.", pika.BasicProperties(delivery_mode=2))
    conn.close()
    node.stop()
    node.start()
    assert [body for _, _, body in drain(node.url, "survivor")] == [b"still here."]
