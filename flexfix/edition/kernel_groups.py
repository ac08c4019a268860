"""The notebook kernels running now, by process group, so that an interrupt kills them at once.

A kernel shut down politely in the middle of a cell prints tracebacks into the executed notebook; killed, it prints
nothing.  The kernels are launched by :class:`TrackedProvisioner`, jupyter_client's local kernel provisioner (the
public extension point for launching kernels, registered as the ``jupyter_client.kernel_provisioners`` entry point
``flexfix-tracked-provisioner``) that remembers each kernel's process group from its launch to its cleanup.
:func:`tracked_kernel_manager` is the kernel manager papermill is given: it asks for that provisioner in the
kernelspec it uses (falling back to the plain one where flexfix's entry points are not installed).
:func:`kernels_die_first` makes SIGINT, SIGTERM and SIGHUP kill the tracked groups before their usual effect; the
watchdog of :mod:`flexfix.measure.children` kills them if this process dies without a word (SIGKILL).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from jupyter_client import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from flexfix.measure import children

__all__ = [
    "PROVISIONER",
    "TrackedProvisioner",
    "tracked_kernel_manager",
    "kill_kernels",
    "kernels_die_first",
    "running_groups",
]

PROVISIONER = "flexfix-tracked-provisioner"
_kernel_groups: set[int] = set()  # process groups of the kernels running now (each kernel leads its own)


def running_groups() -> set[int]:
    """The process groups of the kernels launched by :class:`TrackedProvisioner` and not yet cleaned up."""
    return set(_kernel_groups)


class TrackedProvisioner(LocalProvisioner):
    """The local provisioner, remembering each kernel's process group while it runs."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        connection_info = await super().launch_kernel(cmd, **kwargs)
        if self.pgid:
            _kernel_groups.add(self.pgid)
            children.watch_group(self.pgid)  # killed by the watchdog if this process dies first, however
        return connection_info

    async def cleanup(self, restart: bool = False) -> None:
        _kernel_groups.discard(self.pgid)
        if self.pgid:
            children.forget_group(self.pgid)
        await super().cleanup(restart=restart)


def _provisioner_installed() -> bool:
    return bool(metadata.entry_points(group="jupyter_client.kernel_provisioners", name=PROVISIONER))


class TrackedKernelManager(AsyncKernelManager):
    """jupyter_client's AsyncKernelManager, its kernels launched by :class:`TrackedProvisioner`."""

    @property
    def kernel_spec(self) -> Any:
        spec = super().kernel_spec
        if spec is not None and _provisioner_installed():
            spec.metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER}
        return spec


def tracked_kernel_manager() -> type:
    """The kernel manager class to give papermill."""
    return TrackedKernelManager


def kill_kernels() -> None:
    """SIGKILL every tracked kernel's process group."""
    for pgid in list(_kernel_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _kernel_groups.discard(pgid)


@contextmanager
def kernels_die_first() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP kill the running kernels before their usual effect: a kernel shut down
    politely in the middle of a cell prints tracebacks; killed, it prints nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        kill_kernels()
        previous = old[signum]
        if previous is signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        elif callable(previous):
            previous(signum, frame)

    for signum in children.INTERRUPTS:
        previous = signal.getsignal(signum)
        if previous is not None and previous is not signal.SIG_IGN:
            old[signum] = previous
            signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)
