"""Issue 10, "Why" (Speed): `cube task ls` spent most of its time importing (fire 43 ms, the
message schemas, the model). A command now imports what it uses: help needs no third-party
module, and a listing neither fire, Docker, the chaos package, the model nor the schemas."""
from __future__ import annotations

import subprocess

from cube.cli import api
from cube.harness import free_ports
from cube.messages import node as node_msg
from cube.messages import service as service_msg
from cube.messages import task as task_msg
from tests.cli.conftest import PYTHON, ROOT

NEVER = ("fire", "docker", "cube.chaos", "cube.harness", "cube.manager", "cube.messages", "cube.model",
         "numpy", "psutil", "plyvel", "requests", "rich")


def imported_by(argv: list[str]) -> set[str]:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom cube.cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    return set(r.stderr.splitlines()[-1].split())


def test_importing_the_cli_imports_only_the_standard_library():
    loaded = imported_by(["--version"])
    assert not {m for m in loaded if m.split(".")[0] in ("fire", "zmq", "msgpack", "docker")}
    assert not {m for m in loaded for prefix in NEVER if m == prefix or m.startswith(prefix + ".")}


def test_a_listing_imports_what_it_uses_and_nothing_more():
    port = free_ports(1)[0]
    loaded = imported_by(["task", "ls", "--manager", f"127.0.0.1:{port}"])  # refused: the whole path ran
    assert "zmq" in loaded and "cube.wire.client" in loaded
    assert not {m for m in loaded for prefix in NEVER if m == prefix or m.startswith(prefix + ".")}


def test_help_and_a_service_listing_load_neither_rich_nor_the_model():
    assert not {m for m in imported_by(["--help"]) for prefix in NEVER if m == prefix or m.startswith(prefix + ".")}
    port = free_ports(1)[0]
    loaded = imported_by(["service", "ls", "--manager", f"127.0.0.1:{port}"])
    assert "cube.cli.services" in loaded and "cube.wire.client" in loaded
    assert not {m for m in loaded for prefix in NEVER if m == prefix or m.startswith(prefix + ".")}


def test_the_cli_names_the_messages_the_manager_knows():
    assert (api.TASK_START, api.TASK_STOP, api.TASK_LIST, api.TASK_INSPECT, api.TASK_LOGS, api.TASK_EVENT) == (
        task_msg.START, task_msg.STOP, task_msg.LIST, task_msg.INSPECT, task_msg.LOGS, task_msg.EVENT)
    assert api.TASK_RESTART == task_msg.RESTART
    assert (api.NODE_LIST, api.NODE_REMOVE, api.JOIN_TOKEN, api.CREDENTIALS) == (
        node_msg.LIST, node_msg.REMOVE, node_msg.JOIN_TOKEN, node_msg.CREDENTIALS)
    assert (api.NODE_DRAIN, api.NODE_ACTIVATE) == (node_msg.DRAIN, node_msg.ACTIVATE)
    assert (api.SERVICE_CREATE, api.SERVICE_LIST, api.SERVICE_INSPECT, api.SERVICE_PS, api.SERVICE_SCALE,
            api.SERVICE_UPDATE, api.SERVICE_ROLLBACK, api.SERVICE_REMOVE) == (
        service_msg.CREATE, service_msg.LIST, service_msg.INSPECT, service_msg.PS, service_msg.SCALE,
        service_msg.UPDATE, service_msg.ROLLBACK, service_msg.REMOVE)


def test_the_cli_knows_the_models_service_choices():
    from cube.cli import services
    from cube.model import service as model
    assert (services.FAILURE_ACTIONS, services.ORDERS, services.MAX_REPLICAS) == (
        model.FAILURE_ACTIONS, model.ORDERS, model.MAX_REPLICAS)
