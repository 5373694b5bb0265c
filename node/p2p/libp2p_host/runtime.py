"""The trio guest run that libp2p lives in, on the node's asyncio loop, and the calls across.

trio allows one run per thread ("Attempted to call run() from inside a run()"), so every libp2p
host on a loop shares one guest run: it starts with the first host and ends when the last stops.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import outcome
import trio

from node.p2p.transport import P2PError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RuntimeStopped(P2PError):
    """The trio guest run is not running (the host was stopped or never started)."""


def _set_result(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _cancel(fut: asyncio.Future[Any]) -> None:
    fut.cancel()


def in_trio_task() -> bool:
    """True inside a trio task (in guest mode that is on the asyncio loop's own thread)."""
    # trio >= 0.26 has it; the trio-typing stubs mypy reads predate it
    return bool(trio.lowlevel.in_trio_task())  # type: ignore[attr-defined]


def unwrap_group(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def wait_bridged(fut: asyncio.Future[T]) -> T:
    """Await a future the trio side settles; one cancelled by a stopping host is `RuntimeStopped`.

    A `CancelledError` means the caller itself was cancelled only when its task is cancelling.
    """
    try:
        return await fut
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if fut.cancelled() and task is not None and task.cancelling() == 0:
            raise RuntimeStopped("the host stopped before the call finished") from None
        raise


class TrioRuntime:
    """One trio guest run per asyncio loop; `acquire()`/`release()` count the hosts using it."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TrioRuntime]] = (
        weakref.WeakKeyDictionary())

    @classmethod
    def for_running_loop(cls) -> TrioRuntime:
        loop = asyncio.get_running_loop()
        runtime = cls._by_loop.get(loop)
        if runtime is None:
            runtime = cls._by_loop[loop] = cls(loop)
        return runtime

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = asyncio.Lock()
        self._users = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._done: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._token is not None

    @property
    def nursery(self) -> trio.Nursery:
        """The root nursery (trio side only)."""
        if self._nursery is None:
            raise RuntimeStopped("the trio runtime is not running")
        return self._nursery

    # -- lifecycle (asyncio side) ---------------------------------------------------------------

    async def acquire(self) -> None:
        async with self._lock:
            if self._token is None:  # first user, or the run crashed under the others
                await self._start()
            self._users += 1

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0:
                await self._stop()

    async def _start(self) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()
        done: asyncio.Future[None] = self.loop.create_future()
        self._done = done

        def on_done(result: outcome.Outcome[None]) -> None:
            self.post(self._finished, result, done)

        def run_sync_soon_threadsafe(fn: Callable[[], object]) -> None:
            self.loop.call_soon_threadsafe(fn)

        def run_sync_soon_not_threadsafe(fn: Callable[[], object]) -> None:
            self.loop.call_soon(fn)  # trio's next tick, from its own tick: no self-pipe write

        try:
            trio.lowlevel.start_guest_run(
                self._main, ready,
                run_sync_soon_threadsafe=run_sync_soon_threadsafe,
                run_sync_soon_not_threadsafe=run_sync_soon_not_threadsafe,
                done_callback=on_done,
                host_uses_signal_set_wakeup_fd=True,
            )
        except RuntimeError as exc:  # a trio run left over on this thread (another loop's)
            self._done = None
            raise RuntimeStopped(f"cannot start the trio guest run: {exc}") from exc
        try:
            await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # let the run come up (milliseconds), then take it down again
            await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
            await self._stop()
            raise
        if not ready.done():
            raise RuntimeStopped("the trio guest run ended while starting")

    async def _stop(self) -> None:
        """Cancel the root nursery through the trio token and wait for the done callback."""
        token, nursery, done = self._token, self._nursery, self._done
        if done is None:
            return
        if token is not None and nursery is not None:
            try:
                token.run_sync_soon(nursery.cancel_scope.cancel)
            except trio.RunFinishedError:
                pass
        await done

    async def _main(self, ready: asyncio.Future[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self.post(_set_result, ready, None)
            await trio.sleep_forever()

    def _finished(self, result: outcome.Outcome[None], done: asyncio.Future[None]) -> None:
        self._token = self._nursery = None
        self._done = None
        if isinstance(result, outcome.Error):
            log.error("the trio guest run crashed", exc_info=result.error)
        _set_result(done, None)

    # -- crossing over --------------------------------------------------------------------------

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` soon on the asyncio side (from trio or from anywhere)."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            log.debug("asyncio loop closed; dropped %r", fn)

    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` soon inside the trio run (from the asyncio side)."""
        token = self._token
        if token is None:
            raise RuntimeStopped("the trio runtime is not running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError as exc:
            raise RuntimeStopped("the trio runtime is not running") from exc

    def run_sync_soon_quiet(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self.run_sync_soon(fn, *args)
        except RuntimeStopped:
            pass

    async def call(self, nursery: trio.Nursery, fn: Callable[..., Awaitable[T]], *args: Any,
                   pending: set[asyncio.Future[Any]]) -> T:
        """Await `fn(*args)` run as a trio task in `nursery`; cancelling the caller cancels it.

        The future is kept in `pending` until it is settled, so its owner can cancel it on stop.
        Exceptions other than `P2PError`s arrive as `P2PError`s (chained to the original).
        """
        fut: asyncio.Future[T] = self.loop.create_future()
        pending.add(fut)
        fut.add_done_callback(pending.discard)
        scope = trio.CancelScope()
        try:
            self.run_sync_soon(self._spawn_call, nursery, scope, fut, fn, args)
        except RuntimeStopped:
            fut.cancel()
            raise
        try:
            return await wait_bridged(fut)
        except asyncio.CancelledError:
            self.run_sync_soon_quiet(scope.cancel)
            raise

    def _spawn_call(self, nursery: trio.Nursery, scope: trio.CancelScope,
                    fut: asyncio.Future[T], fn: Callable[..., Awaitable[T]],
                    args: tuple[Any, ...]) -> None:
        try:
            nursery.start_soon(self._run_call, scope, fut, fn, args)
        except RuntimeError:  # the host's nursery is closing
            self.post(_set_exception, fut, RuntimeStopped("the host is stopping"))

    async def _run_call(self, scope: trio.CancelScope, fut: asyncio.Future[T],
                        fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        settled = False
        try:
            with scope:
                try:
                    result = await fn(*args)
                except trio.Cancelled:
                    raise
                except Exception as exc:  # handed over to the asyncio caller, never dropped
                    inner = unwrap_group(exc)
                    if not isinstance(inner, P2PError):
                        # engine calls translate libp2p's errors: anything else is a bug
                        log.error("unexpected error in %r", fn, exc_info=inner)
                        wrapped = P2PError(f"libp2p failure: {inner!r}")
                        wrapped.__cause__ = inner
                        inner = wrapped
                    self.post(_set_exception, fut, inner)
                else:
                    self.post(_set_result, fut, result)
                settled = True
        finally:
            if not settled:
                self.post(_cancel, fut)

    async def run_asyncio(self, fn: Callable[..., Awaitable[T]], *args: Any,
                          tasks: set[asyncio.Task[Any]]) -> T:
        """From trio: run `fn(*args)` as an asyncio task (kept in `tasks`) and await it."""
        token = trio.lowlevel.current_trio_token()
        finished = trio.Event()
        box: list[asyncio.Task[T]] = []

        def on_done(task: asyncio.Task[T]) -> None:
            tasks.discard(task)
            if not task.cancelled():
                task.exception()  # retrieved here: the trio side may be gone by now
            try:
                token.run_sync_soon(finished.set)
            except trio.RunFinishedError:
                pass

        async def invoke() -> T:
            return await fn(*args)

        def start() -> None:
            task = self.loop.create_task(invoke())
            tasks.add(task)
            box.append(task)
            task.add_done_callback(on_done)

        def cancel() -> None:
            if box:
                box[0].cancel()

        self.post(start)
        try:
            await finished.wait()
        except BaseException:
            self.post(cancel)
            raise
        task = box[0]
        if task.cancelled():
            raise RuntimeStopped("the asyncio handler was cancelled")
        return task.result()
