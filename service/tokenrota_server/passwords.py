"""argon2id password hashing, off the event loop, with capacity kept for logins.

Checks and new secrets share a pool of threads, new secrets at most half of it; past a queue's
limit one more is refused at once (`Overloaded`). `reserve_then_count` takes a place before a
throttle counts. Why, in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Self, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from tokenrota_server.config import Settings
from tokenrota_server.errors import InvalidInput, Overloaded, WeakPassword

T = TypeVar("T")
R = TypeVar("R", bound="Reservation")

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


class Reservation:
    """A place in one of the argon2 queues, held until released (at the end of a `with`).

    Taken before a throttle counts the request, it guarantees that the work it is for is not
    refused for overload once counted. Releasing twice releases once.
    """

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    @property
    def held(self) -> bool:
        return self._release is not None

    def hand_over(self) -> Self:
        """The same place under a new owner (the run shared by several requests), which
        releases it; releasing this one does nothing any more."""
        release, self._release = self._release, None
        if release is None:
            raise RuntimeError("the reservation was already released")
        return type(self)(release)

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class CheckReservation(Reservation):
    """A place among the password checks (ARGON2_MAX_QUEUED_CHECKS)."""


class HashReservation(Reservation):
    """A place among the new secrets waiting for their share (ARGON2_MAX_QUEUED_HASHES)."""


async def reserve_then_count(
    held: contextlib.ExitStack,
    reserve: Callable[[], R | None],
    count: Callable[[], Awaitable[T]],
    refused: Callable[[T], bool],
) -> tuple[R | None, T]:
    """Take a place in an argon2 queue into `held`, then count the attempt; return both.

    `reserve` raises `Overloaded` (a 503 that counts nothing) or returns the place (None: this
    request needs none). When `refused` says the count refused the attempt, every place in
    `held` goes back at once. Call it with a pool connection already acquired, in one step on
    the event loop: a burst queued for the pool then holds no places, none is taken twice, and
    a refused flood holds at most one place per connection. See docs/architecture.md.
    """
    place = reserve()
    if place is not None:
        held.enter_context(place)
    counted = await count()
    if refused(counted):
        held.close()
    return place, counted


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
        share = max(1, threads // 2)
        self._hashing_share = asyncio.Semaphore(share)
        # Checks reserved and not finished; past this many, the newest would wait behind
        # ARGON2_MAX_QUEUED_CHECKS others (more if hashes hold their share of the threads).
        self._checks = 0
        self._max_checks = threads + settings.argon2_max_queued_checks
        # New secrets reserved and not hashed: their share hashing, the rest waiting for it.
        self._hashes = 0
        self._max_hashes = share + settings.argon2_max_queued_hashes
        # A real hash under the current parameters, so that an unknown email costs one full
        # verification, just as a known one does.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    def reserve_check(self) -> CheckReservation:
        """A place among the password checks; raise `Overloaded` when ARGON2_MAX_QUEUED_CHECKS
        checks already wait. Synchronous: nothing can take the place between the test and
        the taking (one event loop)."""
        if self._checks >= self._max_checks:
            raise Overloaded()
        self._checks += 1
        return CheckReservation(self._release_check)

    def reserve_hash(self) -> HashReservation:
        """A place among the new secrets to hash; raise `Overloaded` when
        ARGON2_MAX_QUEUED_HASHES already wait for the hashing share."""
        if self._hashes >= self._max_hashes:
            raise Overloaded()
        self._hashes += 1
        return HashReservation(self._release_hash)

    async def hash(self, password: str, *, reservation: HashReservation | None = None) -> str:
        """The argon2id hash of a new secret, within the hashing share of the threads.

        With no `reservation` (the caller's, released by the caller), one is taken here:
        raises `Overloaded` when ARGON2_MAX_QUEUED_HASHES new secrets already wait.
        """
        if reservation is None:
            with self.reserve_hash() as own:
                return await self._hash_reserved(password, own)
        return await self._hash_reserved(password, reservation)

    async def rehash(self, password: str) -> str:
        """The hash of a password a check has just matched, under the current parameters.

        Part of that login, so outside the hashing share (a login must not wait behind new
        secrets) and never refused: the password was right.
        """
        return await self._run(self._hash_sync, password)

    async def verify(
        self,
        password_hash: str | None,
        password: str,
        *,
        reservation: CheckReservation | None = None,
    ) -> bool:
        """Whether `password` matches; with no hash, verify against the dummy and answer False.

        With no `reservation` (the caller's, released by the caller), one is taken here:
        raises `Overloaded` when ARGON2_MAX_QUEUED_CHECKS checks already wait, before any
        work and whether or not there is a hash: the same for a known and an unknown account.
        """
        if reservation is None:
            with self.reserve_check() as own:
                return await self._verify_reserved(password_hash, password, own)
        return await self._verify_reserved(password_hash, password, reservation)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _hash_reserved(self, password: str, reservation: HashReservation) -> str:
        if not reservation.held:
            raise RuntimeError("hashing under a released reservation")
        async with self._hashing_share:
            return await self._run(self._hash_sync, password)

    async def _verify_reserved(
        self, password_hash: str | None, password: str, reservation: CheckReservation
    ) -> bool:
        if not reservation.held:
            raise RuntimeError("checking under a released reservation")
        target = password_hash if password_hash is not None else self._dummy_hash
        matched = await self._run(self._verify_sync, target, password)
        return matched and password_hash is not None

    def _release_check(self) -> None:
        self._checks -= 1

    def _release_hash(self) -> None:
        self._hashes -= 1

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
