"""pid 1 of a pod-wide pid namespace: reap orphans, exit on SIGTERM (see runtime.podpid).

pid 1 ignores signals it has no handler for, so it waits for them explicitly; SIGCHLD stays
blocked, so no exit is missed between a reaping pass and the wait. Runs as `python -S FILE`:
it imports nothing beyond the interpreter's builtins.
"""

import os
import signal

STOP = {signal.SIGTERM, signal.SIGINT}
READY = b"ready\n"


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP | {signal.SIGCHLD})
    os.write(2, READY)  # runtime.podpid.start waits for this line in the init's log
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if signal.sigwaitinfo(STOP | {signal.SIGCHLD}).si_signo != signal.SIGCHLD:
            return


if __name__ == "__main__":
    main()
