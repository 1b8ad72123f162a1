"""The processes of a run meet before `jax.distributed.initialize`, so that every failure to meet is a one-line
error on every process within the timeout.

XLA's coordination client does not report a coordinator that never answers, a peer that never starts or two
processes with one id: it aborts the process (SIGABRT, a C++ check failure) once its own timeout runs out.
So before handing over to it, process 0 listens on the coordinator's address and every other process connects
there and says which process it is; process 0 answers `go` once each of the others has said so exactly once,
or an error naming what is wrong. Only then do they start JAX's service and clients, on the same port. This
is a check in front of JAX's engine, not a replacement: no array or collective ever travels through it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time

from cnndsl.lang.settings import TrainingError

#: How long process 0 waits for a process that was told `go` to close its side, so that the port is free of
#: the meeting's connections when XLA's service binds it (a local round trip takes microseconds).
CLOSE_WAIT_S = 5.0


class DistributedError(TrainingError):
    """A multi-process start that failed: the coordinator, the processes' agreement."""


def address(text: str) -> tuple[str, int]:
    """(host, port) of `--coordinator HOST:PORT`, the host resolved; a DistributedError naming the flag."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DistributedError(f"--coordinator {text}: expected HOST:PORT with a port from 1 to 65535, e.g. "
                               "10.0.0.1:1234")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as err:
        raise DistributedError(f"--coordinator {text}: the host {host!r} is unknown ({err.strerror or err}); give "
                               "process 0's address") from None
    return host, int(port)


def meet(coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    """Return once all `num_processes` processes have met at `coordinator` (process 0 listens there); a
    DistributedError naming the flag to fix otherwise, within about `timeout` seconds."""
    host, port = address(coordinator)
    if process_id == 0:
        _host(host, port, coordinator, num_processes, timeout)
    else:
        _join(host, port, coordinator, num_processes, process_id, timeout)


def _host(host: str, port: int, coordinator: str, num_processes: int, timeout: float) -> None:
    try:
        listener = socket.create_server((host, port))  # SO_REUSEADDR: XLA's service binds the port next
    except OSError as err:
        why = ("it is in use: another process was started with --process-id 0, or another program listens there"
               if err.errno == errno.EADDRINUSE else
               f"{os.strerror(err.errno) if err.errno else err}: run process 0 on the host --coordinator names")
        raise DistributedError(f"--coordinator {coordinator}: process 0 cannot listen there ({why})") from None
    print(f"process 0 of {num_processes}: coordinating at {coordinator}; waiting up to {timeout:g} s for the others",
          file=sys.stderr, flush=True)
    joined: dict[int, socket.socket] = {}
    refused: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(joined) < num_processes - 1 and time.monotonic() < deadline:
            listener.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                peer, _ = listener.accept()
            except TimeoutError:
                break
            problem, pid = _introduction(peer, num_processes, joined, deadline)
            if problem:
                if pid >= 0:  # a cnndsl process refused (a port scanner's connection is not worth a word)
                    refused.append(problem)
                _send(peer, {"error": problem})
                peer.close()
            else:
                joined[pid] = peer
        missing = [i for i in range(1, num_processes) if i not in joined]
        if missing:
            names = ", ".join(map(str, missing))
            message = (f"process{'es' * (len(missing) > 1)} {names} of {num_processes} did not join the coordinator "
                       f"{coordinator} within {timeout:g} s")
            for peer in joined.values():
                _send(peer, {"error": f"{message} (process 0 gave up)"})
            seen = f"; refused: {refused[0]}" if refused else ""
            raise DistributedError(f"{message}{seen}; start each with --coordinator {coordinator} --num-processes "
                                   f"{num_processes} --process-id I (CNNDSL_DISTRIBUTED_TIMEOUT sets the wait)")
        for peer in joined.values():
            _send(peer, {"go": True})
        for peer in joined.values():  # they close first, so that no connection lingers on the port
            peer.settimeout(CLOSE_WAIT_S)
            try:
                peer.recv(1)
            except OSError:
                pass
    finally:
        for peer in joined.values():
            peer.close()
        listener.close()


def _introduction(peer: socket.socket, num_processes: int, joined: dict[int, socket.socket],
                  deadline: float) -> tuple[str | None, int]:
    """(what is wrong or None, the process id) of a process that connected to process 0."""
    peer.settimeout(max(0.05, min(5.0, deadline - time.monotonic())))
    try:
        said = json.loads(_line(peer))
        pid, count = int(said["process_id"]), int(said["num_processes"])
    except (OSError, ValueError, KeyError, TypeError):
        return "a connection that is not a cnndsl process (check the coordinator's port)", -1
    if count != num_processes:
        return (f"process {pid} was started with --num-processes {count}, process 0 with {num_processes}; give every "
                "process the same"), pid
    if pid in joined:
        return f"--process-id {pid} was given to two processes; give each process its own id", pid
    return None, pid


def _join(host: str, port: int, coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            peer = socket.create_connection((host, port), timeout=1.0)
            break
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedError(f"the coordinator {coordinator} did not answer within {timeout:g} s (process "
                                       f"{process_id} of {num_processes}): {err.strerror or err}; start process 0 "
                                       "first, or check the address and port") from None
            time.sleep(0.2)
    with peer:
        peer.settimeout(timeout + 1.0)  # process 0 answers within its own timeout, which began before we met
        try:
            _send(peer, {"process_id": process_id, "num_processes": num_processes})
            answer = json.loads(_line(peer))
        except (OSError, ValueError) as err:
            raise DistributedError(f"the coordinator {coordinator} stopped answering (process {process_id} of "
                                   f"{num_processes}): {getattr(err, 'strerror', None) or err}; is process 0 a "
                                   "cnndsl train with the same command?") from None
    if not isinstance(answer, dict) or not answer.get("go"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise DistributedError(f"process {process_id} of {num_processes} was refused by the coordinator "
                               f"{coordinator}: {error or 'an answer that is not a cnndsl process'}")


def _send(peer: socket.socket, message: dict[str, object]) -> None:
    try:
        peer.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the other side is gone: it learns nothing more, and this side's error says why


def _line(peer: socket.socket, limit: int = 4096) -> bytes:
    """One newline-terminated message (at most `limit` bytes)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = peer.recv(limit - len(data))
        if not chunk:
            raise ConnectionError("the connection closed")
        data += chunk
        if len(data) >= limit:
            raise ValueError("a message too long")
    return data
