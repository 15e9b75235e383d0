"""cube.hardening (umask, private data dirs, fd limit) and the hardening DockerRuntime asks for."""
from __future__ import annotations

import os
import resource
import socket
import stat

import pytest

from cube import hardening
from cube.runtime.base import ContainerSpec, RuntimeFailure
from cube.runtime.docker import DEFAULT_PIDS_LIMIT, DockerRuntime, bind_ip


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---- umask / private directories -------------------------------------------------------------

def test_secure_umask_makes_new_files_private(tmp_path):
    old = hardening.secure_umask()
    try:
        (tmp_path / "f").write_text("x")
        (tmp_path / "d").mkdir()
        assert mode(tmp_path / "f") == 0o600 and mode(tmp_path / "d") == 0o700
    finally:
        os.umask(old)


def test_ensure_private_dir_creates_and_tightens(tmp_path):
    new = tmp_path / "a" / "b"
    assert hardening.ensure_private_dir(str(new)) == str(new)
    assert mode(new) == 0o700
    old = tmp_path / "old"
    old.mkdir()
    old.chmod(0o755)
    hardening.ensure_private_dir(str(old))
    assert mode(old) == 0o700


def test_tighten_walks_dirs_and_files_but_not_sockets_or_links(tmp_path):
    data = tmp_path / "data"
    (data / "db" / "deep").mkdir(parents=True)
    (data / "db" / "CURRENT").write_text("x")
    (data / "db" / "deep" / "000001.log").write_text("x")
    (data / "run.sh").write_text("x")
    for p, m in ((data, 0o755), (data / "db", 0o777), (data / "db" / "deep", 0o750),
                 (data / "db" / "CURRENT", 0o644), (data / "db" / "deep" / "000001.log", 0o666),
                 (data / "run.sh", 0o755)):
        p.chmod(m)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data / "link").symlink_to(outside)
    sock_path = data / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        sock_path.chmod(0o777)
        assert hardening.tighten(str(data)) == 6
        assert mode(sock_path) == 0o777  # an endpoint keeps the mode its owner chose
    finally:
        sock.close()
    assert mode(data) == mode(data / "db") == mode(data / "db" / "deep") == 0o700
    assert mode(data / "db" / "CURRENT") == mode(data / "db" / "deep" / "000001.log") == 0o600
    assert mode(data / "run.sh") == 0o600
    assert mode(outside) == 0o644  # a symlink is not followed out of the data dir
    assert hardening.tighten(str(data)) == 0  # nothing left to change


def test_tighten_skips_what_vanished_and_a_missing_dir(tmp_path, monkeypatch):
    assert hardening.tighten(str(tmp_path / "missing")) == 0
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0o644)
    real_chmod = os.chmod

    def vanished(path, *a, **kw):
        if str(path).endswith("f"):
            raise FileNotFoundError(path)
        return real_chmod(path, *a, **kw)
    monkeypatch.setattr(os, "chmod", vanished)
    hardening.tighten(str(tmp_path))  # no exception


def test_tighten_warns_and_goes_on_when_a_chmod_is_refused(tmp_path, monkeypatch, caplog):
    for name in ("a", "b"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o644)
    real_chmod = os.chmod

    def refuse_a(path, *a, **kw):
        if str(path).endswith("/a"):
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_chmod(path, *a, **kw)
    monkeypatch.setattr(os, "chmod", refuse_a)
    hardening.tighten(str(tmp_path))
    assert mode(tmp_path / "b") == 0o600 and mode(tmp_path / "a") == 0o644
    assert "cannot make" in caplog.text


# ---- open files limit ------------------------------------------------------------------------

def test_raise_fd_limit_reaches_the_hard_limit():
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, before[1]), before[1]))
        got = hardening.raise_fd_limit()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert got == soft and hard == before[1]
        if hard != resource.RLIM_INFINITY:
            assert soft == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_raise_fd_limit_never_raises(monkeypatch):
    def refuse(*a):
        raise ValueError("not allowed")
    monkeypatch.setattr(resource, "setrlimit", refuse)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    assert hardening.raise_fd_limit() == 256  # the limit still in effect
    monkeypatch.setattr(resource, "getrlimit", refuse)
    assert hardening.raise_fd_limit() == -1


def test_raise_fd_limit_with_an_infinite_hard_limit_picks_a_finite_one(monkeypatch):
    calls = []

    def setrlimit(_, limits):
        calls.append(limits)
        if limits[0] > 10240:
            raise ValueError("above OPEN_MAX")
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    monkeypatch.setattr(hardening, "_nr_open", lambda: None)
    assert hardening.raise_fd_limit() == 10240
    assert calls[-1] == (10240, resource.RLIM_INFINITY)


# ---- the container hardening DockerRuntime asks for -------------------------------------------

def kwargs(runtime: DockerRuntime, **spec) -> dict:
    return runtime._create_kwargs(ContainerSpec(task_id="t", attempt=1, name="n", image="img", **spec))


def test_every_container_is_hardened_by_default():
    kw = kwargs(DockerRuntime(client=object()), ports=["8080/tcp", "53/udp"])
    assert kw["security_opt"] == ["no-new-privileges"]
    assert kw["cap_drop"] == ["NET_RAW"]
    assert kw["pids_limit"] == DEFAULT_PIDS_LIMIT == 1024
    assert kw["ports"] == {"8080/tcp": None, "53/udp": None}  # 0.0.0.0: Docker's default binding


def test_ports_bind_to_the_bind_address_and_the_task_may_set_its_pids_limit():
    runtime = DockerRuntime(client=object(), bind_address="127.0.0.1", pids_limit=300)
    kw = kwargs(runtime, ports=["8080/tcp"])
    assert kw["ports"] == {"8080/tcp": ("127.0.0.1",)} and kw["pids_limit"] == 300
    assert kwargs(runtime, pids_limit=50)["pids_limit"] == 50


@pytest.mark.parametrize("address,ip", [
    ("", "0.0.0.0"), ("0.0.0.0", "0.0.0.0"), ("*", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"),
    ("localhost", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1"), (" 10.1.2.3 ", "10.1.2.3"),
])
def test_bind_ip(address, ip):
    assert bind_ip(address) == ip


def test_an_unresolvable_bind_address_is_a_runtime_failure():
    with pytest.raises(RuntimeFailure, match="no-such-host.invalid"):
        DockerRuntime(client=object(), bind_address="no-such-host.invalid")


def test_a_bind_address_of_another_host_only_warns(caplog):
    runtime = DockerRuntime(client=object(), bind_address="203.0.113.7")  # TEST-NET-3
    assert runtime.bind_address == "203.0.113.7"
    assert "not an address of this host" in caplog.text


@pytest.mark.parametrize("bad", [0, -5, True, 1.5])
def test_a_bad_default_pids_limit_is_refused(bad):
    with pytest.raises(ValueError, match="pids_limit"):
        DockerRuntime(client=object(), pids_limit=bad)
