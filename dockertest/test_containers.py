"""Container create, inspect and lifecycle endpoints through docker-py 7.x."""

from __future__ import annotations

import docker
import pytest

from dockertest.harness import Daemon, cgroup_file, wait_for


def test_create_fields_round_trip(dk: Daemon, tmp_path) -> None:
    """Every create option the issue lists comes back in inspect as given."""
    (tmp_path / "data.txt").write_text("from-host")
    hc = dk.api.create_host_config(
        port_bindings={8080: ("127.0.0.1", None)},
        binds={str(tmp_path): {"bind": "/host", "mode": "ro"}},
        mem_limit="48m", nano_cpus=250_000_000, cpu_shares=512, pids_limit=30,
        restart_policy={"Name": "no", "MaximumRetryCount": 0}, privileged=False,
        cap_add=["NET_ADMIN"], cap_drop=["MKNOD"], read_only=True, network_mode="bridge",
    )  # fmt: skip
    c = dk.api.create_container(
        dk.busybox, ["sleep", "300"], entrypoint=["/bin/busybox"], working_dir="/tmp",
        user="1000", environment={"A": "1", "B": "two"}, labels={"dt": "create"}, tty=False,
        stdin_open=True, ports=[8080], stop_signal="SIGUSR1", stop_timeout=3,
        healthcheck={"Test": ["CMD", "true"], "Interval": 1_000_000_000,
                     "Timeout": 2_000_000_000, "StartPeriod": 0, "Retries": 3},
        host_config=hc, name="dt-create",
    )  # fmt: skip
    info = dk.api.inspect_container(c["Id"])
    cfg, host = info["Config"], info["HostConfig"]
    assert info["Name"] == "/dt-create"
    assert cfg["Cmd"] == ["sleep", "300"] and cfg["Entrypoint"] == ["/bin/busybox"]
    assert cfg["WorkingDir"] == "/tmp" and cfg["User"] == "1000"
    assert {"A=1", "B=two"} <= set(cfg["Env"])
    assert cfg["Labels"] == {"dt": "create"}
    assert cfg["OpenStdin"] is True and cfg["Tty"] is False
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert cfg["StopSignal"] == "SIGUSR1" and cfg["StopTimeout"] == 3
    assert cfg["Healthcheck"]["Test"] == ["CMD", "true"] and cfg["Healthcheck"]["Retries"] == 3
    assert host["Memory"] == 48 * 1024 * 1024 and host["NanoCpus"] == 250_000_000
    assert host["CpuShares"] == 512 and host["PidsLimit"] == 30
    assert host["ReadonlyRootfs"] is True and host["NetworkMode"] == "bridge"
    assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["MKNOD"]
    assert host["Binds"] == [f"{tmp_path}:/host:ro"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert info["State"]["Status"] == "created"

    dk.api.start(c["Id"])
    info = dk.api.inspect_container(c["Id"])
    assert info["State"]["Running"] is True and info["State"]["StartedAt"] > "2000"
    mounts = [m for m in info["Mounts"] if m["Destination"] == "/host"]
    assert mounts and mounts[0]["Type"] == "bind" and mounts[0]["RW"] is False
    # root: pytest's tmp dirs are 0700, out of reach of the container's user 1000
    out = dk.api.exec_start(dk.api.exec_create(c["Id"], ["cat", "/host/data.txt"], user="0"))
    assert out == b"from-host"
    assert cgroup_file(dk, c["Id"], "cpu", "cpu.shares").strip() == "512"
    net = info["NetworkSettings"]
    assert net["IPAddress"] and net["Networks"]["bridge"]["IPAddress"] == net["IPAddress"]
    bound = net["Ports"]["8080/tcp"][0]
    assert bound["HostIp"] == "127.0.0.1" and int(bound["HostPort"]) > 0
    denied = dk.api.exec_start(dk.api.exec_create(c["Id"], ["sh", "-c", "touch /x 2>&1"]))
    assert b"Read-only file system" in denied


def test_mounts_api_bind(dk: Daemon, tmp_path) -> None:
    (tmp_path / "f").write_text("via-mounts")
    mount = docker.types.Mount("/m", str(tmp_path), type="bind", read_only=False)
    out = dk.output(["sh", "-c", "cat /m/f; echo w > /m/g"], mounts=[mount])
    assert out == b"via-mounts"
    assert (tmp_path / "g").read_text() == "w\n"


@pytest.mark.parametrize("mode", ["host", "none"])
def test_network_modes(dk: Daemon, mode: str) -> None:
    out = dk.output(["sh", "-c", "ls /sys/class/net | sort"], network_mode=mode).decode()
    if mode == "none":
        assert out.split() == ["lo"]
    else:
        assert "lo" in out.split() and len(out.split()) > 1


@pytest.mark.differs(
    "dockerd",
    reason="runc asks for every capability and this machine withholds CAP_SYS_RESOURCE, so "
    "runc fails 'unable to apply caps' (500)",
    berth="grants the capabilities berthd holds, and the host's devices",
)
def test_privileged_sees_devices(dk: Daemon) -> None:
    out = dk.output(["sh", "-c", "ls /dev | wc -l"], privileged=True)
    plain = dk.output(["sh", "-c", "ls /dev | wc -l"])
    assert int(out) > int(plain)


def test_stop_kill_restart_wait(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sh", "-c", "trap 'exit 5' USR1; echo ready; "
                                 "while true; do sleep 0.2; done"], detach=True)  # fmt: skip
    # pid 1 ignores a signal it has no handler for: kill only once the trap is in
    wait_for(lambda: b"ready" in c.logs(), 30, "the shell's trap")
    c.kill(signal="SIGUSR1")
    assert c.wait(timeout=60)["StatusCode"] == 5
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    c.stop(timeout=1)
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 137 and c.attrs["State"]["FinishedAt"] > "2000"


def test_wait_conditions(dk: Daemon) -> None:
    """wait(condition=next-exit) on a created container returns when it has run and exited."""
    c = dk.client.containers.create(dk.busybox, ["sh", "-c", "exit 4"])
    waiter = dk.api.wait(c.id, condition="not-running", timeout=30)  # created = not running
    assert waiter["StatusCode"] == 0
    c.start()
    assert dk.api.wait(c.id, condition="not-running", timeout=60)["StatusCode"] in (0, 4)
    assert c.wait(timeout=60)["StatusCode"] == 4
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        dk.api.wait(c.id, condition="removed", timeout=10)


def test_remove_force_and_volumes(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    with pytest.raises(docker.errors.APIError) as err:
        c.remove()
    assert err.value.status_code == 409
    c.remove(force=True, v=True)
    with pytest.raises(docker.errors.NotFound) as nf:
        dk.api.inspect_container(c.id)
    assert "No such container" in str(nf.value.explanation)


def test_rename_and_name_conflict(dk: Daemon) -> None:
    a = dk.client.containers.create(dk.busybox, ["true"], name="dt-ren-a")
    dk.client.containers.create(dk.busybox, ["true"], name="dt-ren-b")
    with pytest.raises(docker.errors.APIError) as err:
        dk.client.containers.create(dk.busybox, ["true"], name="dt-ren-b")
    assert err.value.status_code == 409 and "already in use" in str(err.value.explanation)
    with pytest.raises(docker.errors.APIError) as err:
        a.rename("dt-ren-b")
    assert err.value.status_code == 409
    a.rename("dt-ren-c")
    assert dk.api.inspect_container(a.id)["Name"] == "/dt-ren-c"
    assert dk.client.containers.get("dt-ren-c").id == a.id


def test_pause_unpause(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    c.pause()
    c.reload()
    assert c.status == "paused" and c.attrs["State"]["Paused"] is True
    assert cgroup_file(dk, c.id, "freezer", "freezer.state").strip() == "FROZEN"
    with pytest.raises(docker.errors.APIError) as again:
        c.pause()
    assert again.value.status_code == 409 and "already paused" in str(again.value)
    c.unpause()
    c.reload()
    assert c.status == "running"
    with pytest.raises(docker.errors.APIError) as running:
        c.unpause()
    # dockerd 20.10 answers a plain error (500); moby 23 made it errdefs.Conflict (409), as Berth
    assert running.value.status_code == (500 if dk.name == "dockerd" else 409)
    assert "is not paused" in str(running.value)


def test_list_all_limit_filters(dk: Daemon) -> None:
    run = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True,
                                   name="dt-ls-run", labels={"dt-ls": "1"})  # fmt: skip
    made = dk.client.containers.create(dk.busybox, ["true"], name="dt-ls-made",
                                       labels={"dt-ls": "2"})  # fmt: skip
    ids = lambda **kw: {c["Id"] for c in dk.api.containers(**kw)}  # noqa: E731
    assert run.id in ids() and made.id not in ids()
    assert {run.id, made.id} <= ids(all=True)
    assert len(dk.api.containers(all=True, limit=1)) == 1
    assert ids(all=True, filters={"status": "created"}) >= {made.id}
    assert run.id not in ids(all=True, filters={"status": "created"})
    assert ids(all=True, filters={"label": "dt-ls=2"}) == {made.id}
    assert ids(all=True, filters={"label": "dt-ls"}) == {run.id, made.id}
    assert ids(all=True, filters={"name": "dt-ls-made"}) == {made.id}
    assert ids(all=True, filters={"id": made.id[:10]}) == {made.id}
    assert {run.id, made.id} <= ids(all=True, filters={"ancestor": dk.busybox})
    listed = [c for c in dk.api.containers(all=True) if c["Id"] == run.id][0]
    assert listed["Names"] == ["/dt-ls-run"] and listed["State"] == "running"
    assert listed["HostConfig"] == {"NetworkMode": "default"}  # as docker-py created it


def test_list_row_follows_changes(dk: Daemon) -> None:
    """A listed row changes with the container: name, pause, exit (Berth keeps each row's
    text between writes of its record; this is what must invalidate it)."""
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True, name="dt-lsr-a")
    row = lambda: [r for r in dk.api.containers(all=True) if r["Id"] == c.id][0]  # noqa: E731
    first = row()
    assert first["Names"] == ["/dt-lsr-a"] and first["State"] == "running"
    assert first["Status"].startswith("Up ")
    c.rename("dt-lsr-b")
    assert row()["Names"] == ["/dt-lsr-b"]
    c.pause()
    paused = row()
    assert paused["State"] == "paused" and paused["Status"].endswith("(Paused)")
    c.unpause()
    assert row()["State"] == "running"
    c.kill()
    c.wait(timeout=30)
    gone = row()
    assert gone["State"] == "exited" and gone["Status"].startswith("Exited (137) ")
    assert c.id not in {r["Id"] for r in dk.api.containers()}
    c.remove()
    assert c.id not in {r["Id"] for r in dk.api.containers(all=True)}


def test_inspect_oom_killed(dk: Daemon) -> None:
    c = dk.client.containers.run(
        dk.busybox, ["sh", "-c", "x=a; while true; do x=$x$x; done"], mem_limit="16m",
        memswap_limit="16m", detach=True,
    )  # fmt: skip
    assert c.wait(timeout=120)["StatusCode"] == 137
    c.reload()
    assert c.attrs["State"]["OOMKilled"] is True


def test_auto_remove(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["true"], detach=True, auto_remove=True)

    def gone() -> bool:
        try:
            dk.api.inspect_container(c.id)
            return False
        except docker.errors.NotFound:
            return True

    wait_for(gone, 30, "AutoRemove to remove the container")


def test_top_and_resize(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True, tty=True)
    top = c.top()
    assert "PID" in top["Titles"] and any("sleep" in " ".join(p) for p in top["Processes"])
    c.resize(height=40, width=100)
    with pytest.raises(docker.errors.NotFound):
        dk.api.resize("no-such-container-dt", 10, 10)


def test_stats_one_shot_and_stream(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True, mem_limit="32m")
    one = c.stats(stream=False)
    assert one["memory_stats"]["limit"] == 32 * 1024 * 1024
    assert one["pids_stats"]["current"] >= 1
    assert "cpu_usage" in one["cpu_stats"] and "total_usage" in one["cpu_stats"]["cpu_usage"]
    stream = c.stats(stream=True, decode=True)
    first, second = next(stream), next(stream)
    assert second["read"] > first["read"]
    assert second["precpu_stats"]["cpu_usage"]["total_usage"] == \
        first["cpu_stats"]["cpu_usage"]["total_usage"]  # fmt: skip
