"""argon2id password hashing, off the event loop.

argon2-cffi releases the GIL while it hashes, so running it in a small pool of worker threads lets
a burst of logins proceed without stalling the loop that serves /refresh and /profile. The pool is
bounded: each hash holds `memory_cost` KiB, and unbounded threads would trade latency for memory.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from tokenrota_server.config import Settings
from tokenrota_server.errors import InvalidInput, WeakPassword

T = TypeVar("T")

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128


def check_password_policy(password: str) -> None:
    """Raise `WeakPassword` unless the password is 8 to 128 characters.

    Checked before hashing, so a 1 MB password costs nothing, and never truncated.
    """
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise WeakPassword()
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (the CLI's stdin, or a JSON escape): argon2 could not hash it.
        raise InvalidInput("The password is not valid Unicode text.") from None


class Passwords:
    """Hashes and verifies passwords with argon2id in worker threads."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="argon2"
        )
        # A real hash under the current parameters, so that an unknown email costs one full
        # verification, just as a known one does.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        """The argon2id hash of `password`."""
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash, verify against the dummy and answer False."""
        target = password_hash if password_hash is not None else self._dummy_hash
        matched = await self._run(self._verify_sync, target, password)
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)
