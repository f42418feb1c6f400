"""Typed keys for everything rig keeps on its aiohttp application."""

import asyncpg
from aiohttp import web

from rig.settings import Settings
from rig.tokens import TokenIssuer

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", TokenIssuer)
