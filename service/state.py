"""The typed application state the lifespan yields; handlers read it as `request.state`."""

from __future__ import annotations

from typing import TypedDict

import asyncpg

from service.accounts import Accounts
from service.auth import Authenticator
from service.authorization_server import AuthorizationServer
from service.clock import Clock
from service.config import Settings
from service.tokens import TokenCodec


class AppState(TypedDict):
    settings: Settings
    pool: asyncpg.Pool
    auth: Authenticator
    codec: TokenCodec
    clock: Clock
    oauth: AuthorizationServer
    accounts: Accounts
