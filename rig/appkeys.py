"""Typed keys for everything rig keeps on its aiohttp application."""

import asyncpg
from aiohttp import web

from rig.passwords import PasswordWork
from rig.ratelimit import RateLimits
from rig.settings import Settings
from rig.tokens import TokenIssuer

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", TokenIssuer)
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
# argon2 work: log-ins and sign-ups share one allowance, password changes have their own
# (smaller) one, so a flood of either never takes every slot from the other.
LOGIN_HASHING = web.AppKey("login_hashing", PasswordWork)
PASSWORD_CHANGE_HASHING = web.AppKey("password_change_hashing", PasswordWork)
