"""scripts/broker: a real node of our own that can be stopped and started again."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from pathlib import Path

import pika

from tests.helpers import NODE_DIR_PREFIX, RABBITMQ_VERSION, ROOT, drain, rabbitmq_version


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


def _pids_in_mount_namespace(ns: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "ns" / "mnt") == ns:
                    found.append(int(proc.name))
    return found


def test_our_node_runs_the_chosen_rabbitmq_and_stop_leaves_no_process_or_mount(make_node):
    node = make_node()
    found = rabbitmq_version(node.url)
    assert found[: len(RABBITMQ_VERSION)] == RABBITMQ_VERSION  # 4.3.x under BROKER_RABBITMQ=4.3

    pid = int(re.findall(r"\(pid (\d+)\)", node._run("status").stdout)[0])
    ns = os.readlink(f"/proc/{pid}/ns/mnt")
    if RABBITMQ_VERSION >= (4,):
        # It runs chrooted into the Debian 13 root, in a mount namespace of its own.
        root = os.readlink(f"/proc/{pid}/root")
        assert root != "/" and ns != os.readlink("/proc/self/ns/mnt")
    node.stop()
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    assert state.stdout.strip()[:1] in ("", "Z"), state.stdout  # gone, or a zombie nobody reaps
    if RABBITMQ_VERSION >= (4,):
        assert [p for p in _pids_in_mount_namespace(ns) if not _zombie(p)] == []
        assert root not in Path("/proc/self/mounts").read_text()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def test_a_node_that_cannot_start_says_why_and_leaves_no_process(make_node):
    node = make_node(extra_conf="no_such.setting = 1", port_offset=7, started=False)
    r = node.try_start()
    assert r.returncode == 1, r.stdout + r.stderr
    # The cause, from the node's first errors, not the crash report that follows it.
    assert "Conf file attempted to set unknown variable: no_such.setting" in r.stderr
    assert "scripts/broker stop' then 'scripts/broker start' retries" in r.stderr
    assert "Traceback" not in r.stderr
    assert node._run("status").returncode == 3  # nothing of ours answers there
    beams = subprocess.run(["pgrep", "-f", f"mc{node.port}@"], capture_output=True, text=True)
    assert beams.stdout == "", beams.stdout
    # Erlang's crash dump goes with the node's logs, not into the directory we ran from.
    assert (ROOT / ".broker" / f"{NODE_DIR_PREFIX}{node.port}" / "log" / "erl_crash.dump").exists()
    assert not (ROOT / "erl_crash.dump").exists()


def test_a_node_whose_port_another_program_holds_names_the_port_and_what_to_do(make_node):
    node = make_node(port_offset=8, started=False)
    with socket.socket() as holder:  # listens, and never answers AMQP
        holder.bind(("127.0.0.1", node.port))
        holder.listen()
        r = node.try_start()
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"port {node.port} is taken by another program ('ss -ltnp' names it)" in r.stderr
    assert "pick another BROKER_PORT" in r.stderr


def test_without_a_debian_mirror_to_build_from_the_script_says_to_set_one(tmp_path):
    """On a machine whose apt names no Debian mirror (Ubuntu, say), building the Debian 13
    root for RabbitMQ 4 stops at once and says what to set; no mirror is guessed."""
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "apt" / "sources.list").write_text(
        "deb http://archive.ubuntu.com/ubuntu noble main\n"
    )
    r = subprocess.run(
        [str(ROOT / "scripts" / "broker"), "install"],
        env={
            **{k: v for k, v in os.environ.items() if "MIRROR" not in k},
            "BROKER_RABBITMQ": "4",
            "BROKER_RABBITMQ4_ROOT": str(tmp_path / "root"),
            "BROKER_APT_SOURCES": str(tmp_path / "apt"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "apt names no Debian mirror on this machine" in r.stderr
    assert "set DEBIAN_MIRROR to a Debian mirror" in r.stderr
    assert not (tmp_path / "root").exists()
