"""Our own kubelet-style streaming client, for critest and bench.

- `remotecommand.run(url, "spdy"|"ws", stdin_data=None, protocols=None, tty=..)` -> `Outcome`
  (stdout, stderr, exit_code, error, protocol, status) for one whole exec/attach;
- `remotecommand.open_spdy(url, stdin=, stdout=, stderr=, tty=)` / `open_ws(url)` -> `Session`
  with `send`, `close_stdin`, `resize`, `read_until`, `wait`, `aclose` for interactive use;
- `portforward.SpdyPortForward.connect(url)`, `.wait_listening(port)` before any payload, then
  `.request(port, payload)` per connection,
  and `portforward.ws_request(url, port, payload)`.
The SPDY/3.1 session is `spdy3.py`, written from the spec apart from the server's framing in
`cri/streaming/` (one misreading must not pass both ways); containerd's Go server checks it.
"""
