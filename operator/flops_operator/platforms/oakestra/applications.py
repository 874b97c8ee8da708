"""The user's Oakestra applications, one per project: found through one shared listing, created once.

Oakestra's listing of a user's applications is the only way to find one (its name is ours, its id is
Oakestra's). A cold start lists once for every project waiting, not once per project; a create whose answer
was lost is settled by a fresh listing, never by creating again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...models import ProjectRef
from ..base import TransientPlatformError
from . import names, sla
from .client import OakestraClient, TokenRefused, WriteOutcomeUnknown
from .shared import Shared

if TYPE_CHECKING:
    from .views import Views


class NotListed(TransientPlatformError):
    """An application just created is not in the listing yet: observe again and decide again."""


def key_of(project: ProjectRef) -> tuple[str, str]:
    return names.app_name(project), names.app_namespace(project)


def entry(app: dict) -> tuple[tuple[str, str], str] | None:
    """(name, namespace) and id of one listed application; None for an entry Oakestra half-filled."""
    key, app_id = (app.get("application_name"), app.get("application_namespace")), app.get("applicationID")
    if isinstance(app_id, str) and all(isinstance(k, str) for k in key):
        return key, app_id
    return None


def app_id_in(apps: list[dict], key: tuple[str, str]) -> str | None:
    return next((found[1] for found in map(entry, apps) if found is not None and found[0] == key), None)


class Applications:
    def __init__(self, client: OakestraClient, customer: str, views: "Views") -> None:
        self.client, self.customer, self.views = client, customer, views
        self._user_id: str | None = None
        self._ids: dict[tuple[str, str], str] = {}
        """(application_name, application_namespace) -> applicationID."""
        self._listing: Shared[None] | None = None

    def cancel(self) -> None:
        if self._listing is not None and not self._listing.done():
            self._listing.cancel()

    def forget(self, project: ProjectRef) -> None:
        self._ids.pop(key_of(project), None)

    def _index(self, apps: list[dict]) -> None:
        """The app listing is the user's complete list of apps."""
        self._ids = dict(found for found in map(entry, apps) if found is not None)

    async def _list(self) -> None:
        """List the user's apps once for everyone waiting."""
        if self._listing is None or self._listing.done():
            async def listing() -> None:
                for last in (False, True):
                    logins = self.client.logins
                    if self._user_id is None:
                        self._user_id = await self.client.user_id()
                    try:
                        apps = await self.client.list_apps(self._user_id)
                    except TokenRefused:
                        if last or self.client.logins == logins:
                            raise
                        # Logged in anew: Oakestra may have restarted with a new record (and id) of
                        # this user, which the listing's path names. Read it again, once.
                        self._user_id = None
                        continue
                    self._index(apps)
                    return
            self._listing = Shared(listing())
        await self._listing.result()

    async def find(self, project: ProjectRef, *, refresh: bool = False) -> str | None:
        key = key_of(project)
        if refresh or key not in self._ids:
            await self._list()
        return self._ids.get(key)

    async def ensure(self, project: ProjectRef) -> str:
        state = self.views.of(project)
        async with state.lock:
            app_id = await self.find(project)
            if app_id is not None:
                return app_id
            try:
                apps = await self.client.create_app(sla.application(project, self.customer))
            except WriteOutcomeUnknown:
                # Created or not: only a fresh listing tells.
                found = await self.find(project, refresh=True)
                if found is None:
                    raise
                return found
            if apps is None:
                # 409: it exists after all (created by an earlier attempt whose answer was lost).
                found = await self.find(project, refresh=True)
            else:
                # The answer lists every app of the user; re-indexing them all at each create made
                # creating n projects cost n^2. Only this project's entry is news.
                found = app_id_in(apps, key_of(project))
                if found is not None:
                    self._ids[key_of(project)] = found
                    # A new app has no services: nothing to read before its first create.
                    self.views.known_empty(project)
            if found is None:
                raise NotListed(f"application {names.app_name(project)} is not listed after its create")
            return found
