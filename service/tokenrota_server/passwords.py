"""argon2id password hashing, off the event loop, with capacity kept for logins.

argon2-cffi releases the GIL while it hashes, so running it in a small pool of worker threads lets
a burst of logins proceed without stalling the loop that serves /refresh and /profile. The pool is
bounded: each hash holds `memory_cost` KiB, and unbounded threads would trade latency for memory.

Two kinds of work share the pool. *Hashing a new secret* (registration, password change and
reset, client creation and secret rotation) may hold at most half of its threads, so that a
registration flood, however many addresses it comes from, never sits in front of a login.
*Checking a password* (a login, a client authentication, a current password) may use every
thread; past ARGON2_MAX_QUEUED_CHECKS waiting checks, one more is refused at once (`Overloaded`)
rather than queued behind seconds of others.
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
from tokenrota_server.errors import InvalidInput, Overloaded, WeakPassword

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


def argon2_thread_count(settings: Settings) -> int:
    """ARGON2_THREADS, or with 0 one per core, at least 2 (one for logins, one for hashing)."""
    return settings.argon2_threads or max(2, os.cpu_count() or 2)


class Passwords:
    """Hashes and verifies passwords with argon2id in worker threads.

    One pool rather than one per kind of work: the threads never outnumber the cores (the
    default), and checks may use the threads hashing leaves idle. The share of new secrets is
    an `asyncio.Semaphore` in front of the pool, so the hashes beyond it wait on the event
    loop, not in the pool's queue where a login would have to wait behind them.
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        threads = argon2_thread_count(settings)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._hashing_share = asyncio.Semaphore(max(1, threads // 2))
        # Checks submitted and not finished; past this many, the newest would wait behind
        # ARGON2_MAX_QUEUED_CHECKS others (more if hashes hold their share of the threads).
        self._checks = 0
        self._max_checks = threads + settings.argon2_max_queued_checks
        # A real hash under the current parameters, so that an unknown email costs one full
        # verification, just as a known one does.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        """The argon2id hash of a new secret, within the hashing share of the threads."""
        async with self._hashing_share:
            return await self._run(self._hash_sync, password)

    async def rehash(self, password: str) -> str:
        """The hash of a password a check has just matched, under the current parameters.

        Part of that login, so outside the hashing share (a login must not wait behind new
        secrets) and never refused: the password was right.
        """
        return await self._run(self._hash_sync, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash, verify against the dummy and answer False.

        Raises `Overloaded` when ARGON2_MAX_QUEUED_CHECKS checks already wait, before any
        work and whether or not there is a hash: the same for a known and an unknown account.
        """
        if self._checks >= self._max_checks:
            raise Overloaded()
        target = password_hash if password_hash is not None else self._dummy_hash
        self._checks += 1
        try:
            matched = await self._run(self._verify_sync, target, password)
        finally:
            self._checks -= 1
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)
