"""The typed application state the lifespan yields; handlers read it as `request.state`."""

from __future__ import annotations

import asyncio
from typing import TypedDict

import asyncpg
from tokenrota.clock import Clock

from tokenrota_server.accounts import Accounts
from tokenrota_server.auth import Authenticator
from tokenrota_server.config import Settings
from tokenrota_server.dpop import ProofChecker
from tokenrota_server.mailer import MailboxBell
from tokenrota_server.mfa import SecondFactors
from tokenrota_server.oauth import AuthorizationServer
from tokenrota_server.passkeys import Passkeys
from tokenrota_server.passwords import Passwords
from tokenrota_server.recovery import Recovery
from tokenrota_server.revocations import FeedSignal
from tokenrota_server.tokens import TokenCodec


class AppState(TypedDict):
    settings: Settings
    pool: asyncpg.Pool
    auth: Authenticator
    codec: TokenCodec
    clock: Clock
    oauth: AuthorizationServer
    mfa: SecondFactors
    proofs: ProofChecker
    accounts: Accounts
    recovery: Recovery
    passkeys: Passkeys
    # argon2, for the use cases that hash a new secret outside the objects above.
    passwords: Passwords
    feed: FeedSignal
    mailbox: MailboxBell
    # Set once the server has begun to stop, before the requests in flight end (set by the
    # protocol, http_limits.py): what holds an answer back (a long poll) answers at once.
    stopping: asyncio.Event
