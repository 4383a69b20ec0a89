"""The node's container monitor: one asyncio process per state dir that owns container stdio.

Why one process: a Python interpreter costs ~10 MB, and the per-container budget is a quarter of
containerd's ~11 MB Go shim, so all containers share one single-threaded monitor.

- Started by `runtime.containers.ensure_monitor` as `python -m runtime.monitor`; the launcher
  forks once and exits when the monitor serves, so the monitor is never a fork of berthd and
  survives berthd's SIGKILL. `<state_dir>/monitor.lock` (flock) keeps it unique per state dir.
- It is a child subreaper: it reaps container inits, execs and any orphan that reparents to it.
- It listens on the path socket `<run_dir>/monitor.sock`, mode 0600, never an abstract socket
  (CVE-2020-15257). Protocol: `runtime.monitor.proto` (JSON lines; attach and exec_stream
  switch their connection to length-prefixed frames).
- It forks containers and execs through the spawner module (`runtime.init`: `spawn`,
  `spawn_exec`); being single-threaded makes that fork safe. Container init and exec processes
  get PR_SET_PDEATHSIG=SIGKILL from the spawner, so they die with the monitor.
- Durable state is `<state_dir>/containers/<id>/state.json` (atomic rename). On start the
  monitor SIGKILLs any process a previous monitor left (pid + start time must match) and records
  every container that was not stopped as exited 255, reason MonitorLost.
- Output goes to the CRI log (`runtime.logs`) and to attached clients; a client more than 1 MiB
  behind is dropped, so a slow client never grows the monitor. Exec output reaches its one client
  with back-pressure. ExecSync keeps at most 16 MiB per stream and drains the rest.
- A streamed exec ends with an EXIT frame; one whose session ends first (its client left) is
  killed. Its exit stays known under the client's `exec_id` (the last 1024), so a client whose
  session broke before EXIT asks `exec_status` rather than guessing.
- Ownership: the monitor creates and removes the container's cgroup and its state dir. An
  `overlay` given to create is mounted inside the container's mount namespace and needs no
  teardown; otherwise berthd mounts and unmounts the rootfs. berthd owns the log file (kubelet
  rotates and deletes it).
"""
