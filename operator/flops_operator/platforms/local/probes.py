"""Readiness probes: a service is running once it answers, not once its process exists."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import pymysql

Probe = Callable[[], Awaitable[bool]]


async def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def http_answers(url: str, timeout: float = 2.0) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as response:
                return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


def _mysql_login(host: str, port: int, user: str, password: str, database: str) -> bool:
    try:
        pymysql.connect(host=host, port=port, user=user, password=password, database=database,
                        connect_timeout=2).close()
    except pymysql.MySQLError:
        return False
    return True


async def mysql_answers(host: str, port: int, user: str, password: str, database: str) -> bool:
    """The database is usable by its application user (the first-start SQL has run)."""
    return await asyncio.to_thread(_mysql_login, host, port, user, password, database)


@dataclass(frozen=True)
class TcpProbe:
    host: str
    port: int

    async def __call__(self) -> bool:
        return await tcp_answers(self.host, self.port)


@dataclass(frozen=True)
class HttpProbe:
    url: str

    async def __call__(self) -> bool:
        return await http_answers(self.url)


@dataclass(frozen=True)
class MysqlProbe:
    host: str
    port: int
    user: str
    password: str = ""
    database: str = ""

    def __repr__(self) -> str:  # the password stays out of logs and reprs
        return f"MysqlProbe({self.user}@{self.host}:{self.port}/{self.database})"

    async def __call__(self) -> bool:
        return await mysql_answers(self.host, self.port, self.user, self.password, self.database)
