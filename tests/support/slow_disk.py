"""A slow disk for a child process: every ``fsync``/``fdatasync`` takes ~100 ms longer.

An ``LD_PRELOAD`` shim compiled at test time with the system C compiler (``cc``, ``gcc`` or
``clang``) into the test's tmp directory. It wraps libc's ``fsync`` and ``fdatasync``: sleep
``CANARYWATCH_SLOW_SYNC_MS`` (default 100), then call the real function. SQLite (a shared
``libsqlite3``) and ``os.fsync`` both go through libc, so a daemon started with ``env()`` commits
its WAL as slowly as on a saturated network disk: the window between "written" and "durable"
grows from a millisecond to a tenth of a second, which is where a ``kill -9`` hurts.

With ``CANARYWATCH_SLOW_SYNC_LOG`` set the shim appends one byte per delayed call to that file,
so a test can prove the delay really applied inside the child (``syncs()``).

No compiler: the calling test is skipped with a one-line reason, or fails under ``CI=true``
(like ``tests.support.binaries.require_binary``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ns = -1;
static int log_fd = -2;

static void slow_down(void) {
    int saved = errno;
    if (delay_ns < 0) {
        const char *ms = getenv("CANARYWATCH_SLOW_SYNC_MS");
        delay_ns = (ms != NULL ? atol(ms) : 100L) * 1000000L;
    }
    if (log_fd == -2) {
        const char *path = getenv("CANARYWATCH_SLOW_SYNC_LOG");
        log_fd = path != NULL ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
    }
    struct timespec left = {delay_ns / 1000000000L, delay_ns % 1000000000L};
    while (nanosleep(&left, &left) == -1 && errno == EINTR) {
    }
    if (log_fd >= 0) {
        ssize_t ignored = write(log_fd, "s", 1);
        (void)ignored;
    }
    errno = saved;
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    slow_down();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    slow_down();
    return real(fd);
}
"""

COMPILERS = ("cc", "gcc", "clang")
DEFAULT_DELAY_MS = 100


def c_compiler() -> str:
    """The system C compiler; skips the calling test (fails under ``CI=true``) without one."""
    for name in COMPILERS:
        found = shutil.which(name)
        if found is not None:
            return found
    reason = "no C compiler (cc, gcc or clang) to build the slow-fsync LD_PRELOAD shim"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


class SlowDisk:
    """The compiled shim in ``directory``; ``env()`` is what a child process needs."""

    def __init__(self, directory: Path, *, delay_ms: int = DEFAULT_DELAY_MS) -> None:
        self.dir = directory
        self.delay_ms = delay_ms
        self.library = directory / "libslowsync.so"
        self.log = directory / "slow-syncs.log"

    def build(self) -> SlowDisk:
        """Compile the shim, then check in a child that an ``fsync`` really takes the delay."""
        self.dir.mkdir(parents=True, exist_ok=True)
        source = self.dir / "slowsync.c"
        source.write_text(SHIM_SOURCE, encoding="utf-8")
        done = subprocess.run(
            [c_compiler(), "-shared", "-fPIC", "-O2", "-o", str(self.library), str(source), "-ldl"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"building the slow-fsync shim failed:\n{done.stderr[-2000:]}")
        self._check()
        self.log.unlink(missing_ok=True)
        return self

    def env(self) -> dict[str, str]:
        preload = os.environ.get("LD_PRELOAD", "")
        return {
            "LD_PRELOAD": f"{self.library} {preload}".strip(),
            "CANARYWATCH_SLOW_SYNC_MS": str(self.delay_ms),
            "CANARYWATCH_SLOW_SYNC_LOG": str(self.log),
        }

    def syncs(self) -> int:
        """How many ``fsync``/``fdatasync`` calls were delayed so far (all children)."""
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def _check(self) -> None:
        probe = self.dir / "probe"
        code = (
            "import os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "start = time.monotonic()\n"
            "os.write(fd, b'x'); os.fsync(fd); os.fdatasync(fd)\n"
            "print(time.monotonic() - start)\n"
        )
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", code, str(probe)],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        probe.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"the slow-fsync shim breaks a child process:\n{done.stderr}")
        took = float(done.stdout.strip())
        if took < 2 * self.delay_ms / 1000 * 0.9:
            raise RuntimeError(
                f"the slow-fsync shim has no effect: two syncs took {took:.3f} s "
                f"(expected >= {2 * self.delay_ms} ms; {time.monotonic() - started:.1f} s in all)"
            )
