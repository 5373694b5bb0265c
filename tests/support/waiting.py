"""Polling helpers: wait until other tasks (nodes, messengers, API servers) reach a state.

`until` polls a plain predicate, `eventually` an async check, `when` an API call (404 = not yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from p2pmarket.client import ApiError

T = TypeVar("T")


async def until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Return once `predicate()` is truthy; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls other tasks' state
            await asyncio.sleep(0.02)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Await `check()` until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.1)


async def when(fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool],
               timeout: float = 40.0) -> T:
    """Poll `fetch()` (404s count as not yet) until `ok` holds for its answer."""
    async def check() -> T | None:
        try:
            value = await fetch()
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None
        return value if ok(value) else None

    return await eventually(check, timeout)  # type: ignore[no-any-return]
