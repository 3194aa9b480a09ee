"""TLS with certificates of our own making, and passwords that never leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import broker_script, events, no_traceback, run, stream_events


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-keyout",
            key,
            "-out",
            crt,
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


def make_server_cert(d: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.pem", d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key,
            "-out",
            csr,
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca[0],
            "-CAkey",
            ca[1],
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            crt,
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


def test_amqps_works_with_our_ca_and_fails_clearly_with_another(make_node, tmp_path, env, logs):
    ca = make_ca(tmp_path, "test-ca")
    other_ca = make_ca(tmp_path, "other-ca")
    crt, key = make_server_cert(tmp_path, ca)
    from tests.helpers import NODE_PORTS, node_port

    tls_port = node_port(NODE_PORTS - 1)  # this worker's last: clear of its other nodes
    node = make_node(
        extra_conf="\n".join(
            [
                f"listeners.ssl.default = 127.0.0.1:{tls_port}",
                f"ssl_options.cacertfile = {ca[0]}",
                f"ssl_options.certfile = {crt}",
                f"ssl_options.keyfile = {key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        )
    )
    url = f"amqps://guest:guest@localhost:{tls_port}/%2F"
    tls_env = {**env, "AMQP_URL": url}
    r = run("emit", "--message", "secret work.", "--ca-cert", str(ca[0]), env=tls_env)
    assert r.returncode == 0, r.stderr
    r = run(
        "work",
        "--max-tasks",
        "1",
        "--seconds-per-dot",
        "0",
        "--name",
        "tls",
        env={**tls_env, "TASK_CA_CERT": str(ca[0])},
    )
    assert r.returncode == 0, r.stderr
    assert "done" in (logs / "worker-tls.log").read_text()

    r = run("emit", "--message", "x", "--ca-cert", str(other_ca[0]), env=tls_env)
    assert r.returncode == 3
    assert "could not be verified" in r.stderr and "--ca-cert" in r.stderr
    assert no_traceback(r.stderr)
    assert node.url  # the plain listener stays as it was


def test_a_password_never_appears_in_output_or_logs(env, broker_url, logs, tmp_path):
    marker = "pw-MARKER-7f3a9c"
    good = broker_url.replace("guest:guest", f"mcuser:{marker}")
    bad = broker_url.replace("guest:guest", f"guest:{marker}")
    from tests.conftest import TEST_PORT

    # A user whose password is the marker, so that successful runs carry it too.
    for args in (["add_user", "mcuser", marker], ["set_permissions", "mcuser", ".*", ".*", ".*"]):
        r = broker_script("ctl", *args, BROKER_PORT=str(TEST_PORT))
        assert r.returncode == 0 or "already exists" in r.stdout + r.stderr, r.stderr
    outputs = []
    for url in (good, bad):
        e = {**env, "AMQP_URL": url}
        for args in (
            ["emit", "tasks.csv"],
            ["emit", "--message", "x."],
            ["emit", "--dry-run", "tasks.csv"],
            ["work", "--max-tasks", "2", "--seconds-per-dot", "0", "--name", "pw"],
            ["tasks", "report", str(logs)],
        ):
            r = run(*args, env=e)
            outputs.append(r.stdout + r.stderr)
        outputs.append(run("emit", "--url", url, "--message", "y", env=env).stderr)
    text = "\n".join(outputs) + "".join(p.read_text() for p in logs.glob("*.log*"))
    assert "***" in text  # URLs were printed, masked
    assert marker not in text


ENV_PRINTER = """\
import json, os, pathlib, sys
sys.stdin.read()
text = json.dumps(dict(os.environ), sort_keys=True)
pathlib.Path(sys.argv[1], "env-" + os.environ["TASK_ROW"]).write_text(text)
print("\\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
"""


def test_an_exec_command_gets_the_tasks_variables_and_the_users_but_none_of_our_secrets(
    env, broker_url, queue, logs, tmp_path
):
    marker = "pw-EXEC-4b1d2e"
    from tests.conftest import TEST_PORT

    for args in (["add_user", "mcexec", marker], ["set_permissions", "mcexec", ".*", ".*", ".*"]):
        r = broker_script("ctl", *args, BROKER_PORT=str(TEST_PORT))
        assert r.returncode == 0 or "already exists" in r.stdout + r.stderr, r.stderr
    url = broker_url.replace("guest:guest", f"mcexec:{marker}")
    printer = tmp_path / "printenv.py"
    printer.write_text(ENV_PRINTER)
    e = {
        **env,
        "AMQP_URL": url,
        "TASK_MANAGEMENT_URL": f"http://mcexec:{marker}@localhost:1/",
        "TASK_DASHBOARD_TOKEN": marker,
        "API_TOKEN": "the-jobs-own-token",
    }
    big = "b" * 140_000  # more than Linux takes for one environment variable
    rows = tmp_path / "rows.csv"
    rows.write_text(f"hello there\n{big}\n")
    assert run("emit", str(rows), env=e).returncode == 0
    r = run(
        "work",
        *("--name", "envp", "--exec", f"{sys.executable} {printer} {tmp_path}", "--max-tasks", "2"),
        env=e,
    )
    assert r.returncode == 0, r.stderr
    done = {d["row"]: d for d in events(logs / "worker-envp.log") if d["event"] == "done"}
    assert set(done) == {"1", "2"}, r.stderr
    child = json.loads((tmp_path / "env-1").read_text())
    assert child["TASK_BODY"] == "hello there" and child["TASK_ROW"] == "1"
    assert child["TASK_ATTEMPT"] == "1" and child["TASK_ID"]
    assert child["API_TOKEN"] == "the-jobs-own-token"
    assert not {"AMQP_URL", "TASK_MANAGEMENT_URL", "TASK_DASHBOARD_TOKEN", "TASK_QUEUE"} & set(
        child
    )
    # The body too long for the environment still ran: on stdin, its size in TASK_BODY_BYTES.
    assert json.loads((tmp_path / "env-2").read_text())["TASK_BODY_BYTES"] == "140000"
    stream = "\n".join(json.dumps(ev) for ev in stream_events(e))
    text = r.stdout + r.stderr + stream + "".join(p.read_text() for p in logs.glob("*.log*"))
    text += "".join(p.read_text() for p in tmp_path.glob("env-*"))
    assert "hello there" in stream  # the stream was read, with the task's events in it
    assert marker not in text
