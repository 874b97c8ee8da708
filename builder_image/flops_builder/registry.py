"""A registry client for the builder: manifests and blobs through the Docker Registry HTTP API v2 (python-dxf),
with logins, retries and errors a person can act on.

- TLS: verified unless the build says tlsVerify false (a registry explicitly marked insecure); then HTTPS
  without verification is tried first and plain HTTP used if the registry does not speak TLS (as podman's
  --tls-verify=false does). A private CA: REQUESTS_CA_BUNDLE, or the file `ca_bundle` names (certifi's bundle
  plus that CA; __main__ makes it from FLOPS_REGISTRY_CA).
- Logins: Basic, or a Bearer token from the realm the registry names (the scopes it asks for, so a cross-
  repository mount gets its pull scope on the source too). dxf's own `authenticate` insists on HTTPS for the
  token realm and Basic; ours keeps the registry's scheme.
- Errors: a connection failure, a timeout, HTTP 429 or 5xx is transient and retried (tenacity, exponential
  back-off); 401/403 (a refused login or push), 404 and any other answer fail at once as BuildError, step
  "registry" for a read and "push" for a write.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
import tenacity
import www_authenticate
from dxf import DXF
from dxf import exceptions as dxf_errors
from urllib3.exceptions import InsecureRequestWarning

from .errors import BuildError

log = logging.getLogger("flops_builder.registry")

SCHEMA2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA2_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFESTS = (SCHEMA2_MANIFEST, OCI_MANIFEST)
INDEXES = (SCHEMA2_LIST, OCI_INDEX)

_REFERENCE = re.compile(r"(?P<name>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?")
T = TypeVar("T")


@dataclass(frozen=True)
class Reference:
    """<host>/<repository>[:tag][@digest]; the host always named (the builder never guesses docker.io)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        match = _REFERENCE.fullmatch(text.strip())
        host, _, repository = (match["name"] if match else "").partition("/")
        if not match or not repository or not ("." in host or ":" in host or host == "localhost"):
            raise ValueError(f"not an image reference with its registry: {text!r}")
        return cls(host, repository, match["tag"], match["digest"])

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifest endpoint takes: the digest if there is one, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        return json.loads(self.raw)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the network or the registry's own trouble, not an answer about us."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False  # a certificate problem does not go away by itself
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        return True
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return False


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, dxf_errors.DXFUnauthorizedError):
        return 401
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


class Client:
    """One registry host: its scheme, login, TLS verification, timeouts and retry policy."""

    def __init__(self, host: str, *, username: str | None = None, password: str | None = None,
                 tls_verify: bool = True, ca_bundle: str | None = None, timeout: float = 60,
                 attempts: int = 5, wait_max: float = 8.0):
        self.host = host
        self.username, self.password = username, password
        self.tls_verify = tls_verify
        self.verify: bool | str = (ca_bundle or True) if tls_verify else False
        self.timeout = timeout
        self.attempts, self.wait_max = attempts, wait_max
        self._scheme: str | None = None
        self._session = requests.Session()

    # -- plumbing ---------------------------------------------------------------------------------------------
    def retrying(self, step: str, what: str, call: Callable[[], T]) -> T:
        """`call()` with transient failures retried; every failure left becomes a BuildError of `step`."""
        retry = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=self.wait_max),
            retry=tenacity.retry_if_exception(is_transient), reraise=True,
            before_sleep=lambda state: log.warning("%s: %s; trying again (attempt %d of %d)", what,
                                                   _short(state.outcome.exception()), state.attempt_number + 1,
                                                   self.attempts))
        try:
            return retry(call)
        except BuildError:
            raise
        except Exception as exc:  # noqa: BLE001 - every registry failure ends here, named
            raise self.error(step, what, exc) from exc

    def error(self, step: str, what: str, exc: BaseException) -> BuildError:
        status = status_of(exc)
        where = f"registry {self.host}"
        if status == 401:
            who = f"the login of user {self.username!r}" if self.username else "access without a login"
            return BuildError(step, None, f"{where} refused {who} ({what}): check the registry credentials")
        if status == 403:
            return BuildError(step, None, f"{where} denied {what} to user {self.username!r} (HTTP 403)")
        if status == 404:
            return BuildError(step, None, f"{where}: {what}: not found")
        if isinstance(exc, requests.exceptions.SSLError):
            return BuildError(step, None, f"{where}: TLS failed ({_short(exc)}); trust its CA "
                                          "(FLOPS_REGISTRY_CA) or mark the registry insecure (tlsVerify: false)")
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return BuildError(step, None, f"{where} unreachable ({what}) after {self.attempts} attempts: {_short(exc)}")
        return BuildError(step, None, f"{where}: {what} failed: {_short(exc)}")

    @property
    def scheme(self) -> str:
        if self._scheme is None:
            self._scheme = "https" if self.tls_verify else self.retrying("registry", "connecting", self._probe)
        return self._scheme

    def _probe(self) -> str:
        """https or http, for a registry marked insecure: a plain-HTTP server answers a TLS hello with garbage."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                self._session.get(f"https://{self.host}/v2/", verify=False, timeout=self.timeout)
            return "https"
        except requests.exceptions.SSLError:
            return "http"

    def authenticate(self, dxf: DXF, response: requests.Response) -> None:
        """dxf's auth callback: answer the registry's challenge (Basic, or a Bearer token for its scopes)."""
        challenge = www_authenticate.parse(response.headers.get("www-authenticate", ""))
        basic = None
        if self.username is not None and self.password is not None:
            basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if "bearer" in challenge:
            info = challenge["bearer"]
            query = [("service", info["service"])] if "service" in info else []
            query += [("scope", scope) for scope in info.get("scope", "").split()]
            parts = urlsplit(info["realm"])
            url = urlunsplit(parts._replace(query="&".join(p for p in (parts.query, urlencode(query)) if p)))
            headers = {"Authorization": basic} if basic else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                answer = self._session.get(url, headers=headers, verify=self.verify, timeout=self.timeout)
            if answer.status_code == 401:
                raise dxf_errors.DXFUnauthorizedError()
            answer.raise_for_status()
            body = answer.json()
            dxf.token = body.get("access_token") or body["token"]
        elif "basic" in challenge and basic:
            dxf._headers = {"Authorization": basic}  # dxf sends these with every request; it has no public setter

    def repository(self, name: str) -> Repository:
        return Repository(self, name)


class Repository:
    """One repository of a registry: the reads and writes the builder needs."""

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name
        self._dxf: DXF | None = None

    @property
    def dxf(self) -> DXF:
        if self._dxf is None:
            self._dxf = DXF(self.client.host, self.name, auth=self.client.authenticate,
                            insecure=self.client.scheme == "http", tlsverify=self.client.verify,
                            timeout=self.client.timeout)
            self._dxf.__enter__()  # one keep-alive session per repository
        return self._dxf

    def _read(self, what: str, call: Callable[[], T]) -> T:
        return self.client.retrying("registry", f"{what} in {self.name}", call)

    def _write(self, what: str, call: Callable[[], T]) -> T:
        return self.client.retrying("push", f"{what} to {self.name}", call)

    # -- reads ------------------------------------------------------------------------------------------------
    def manifest(self, reference: str) -> Manifest | None:
        """The manifest (or index) `reference` names, or None if there is none."""
        def get() -> Manifest | None:
            try:
                text, response = self.dxf.get_manifest_and_response(reference)
            except requests.exceptions.HTTPError as exc:
                if status_of(exc) == 404:
                    return None
                raise
            raw = response.content
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip() \
                or json.loads(raw).get("mediaType", "")
            return Manifest(raw, media_type, sha256(raw))
        return self._read(f"reading manifest {reference}", get)

    def manifest_digest(self, reference: str) -> str | None:
        """The digest of the manifest `reference` names (one HEAD request), or None if there is none."""
        def head() -> str | None:
            try:
                digest, _ = self.dxf.head_manifest_and_response(reference)
            except requests.exceptions.HTTPError as exc:
                if status_of(exc) == 404:
                    return None
                raise
            return digest
        return self._read(f"looking up {reference}", head)

    def has_blob(self, digest: str) -> bool:
        def head() -> bool:
            try:
                self.dxf.blob_size(digest)
                return True
            except requests.exceptions.HTTPError as exc:
                if status_of(exc) == 404:
                    return False
                raise
        return self._read(f"looking up blob {digest[:19]}", head)

    def blob(self, digest: str) -> bytes:
        """A small blob (an image config) whole, its digest checked (dxf does that)."""
        return self._read(f"reading blob {digest[:19]}", lambda: b"".join(self.dxf.pull_blob(digest)))

    def blob_chunks(self, digest: str) -> Iterator[bytes]:
        """A blob as it arrives (a base layer may be gigabytes). Not retried here: the copy that consumes it is."""
        return iter(self.dxf.pull_blob(digest, chunk_size=1 << 20))

    # -- writes -----------------------------------------------------------------------------------------------
    def mount(self, digest: str, source: str) -> bool:
        """Cross-repository mount of a blob the registry already holds in `source`: no bytes travel. False when
        the registry declined (it then opened an upload, which is left to expire)."""
        def post() -> bool:
            try:
                self.dxf.mount_blob(source, digest)
                return True
            except dxf_errors.DXFMountFailed:
                return False
        return self._write(f"mounting blob {digest[:19]} from {source}", post)

    def push_file(self, path: str, digest: str) -> None:
        self._write(f"uploading blob {digest[:19]}",
                    lambda: self.dxf.push_blob(filename=path, digest=digest, check_exists=False))

    def push_bytes(self, data: bytes, digest: str) -> None:
        self._write(f"uploading blob {digest[:19]}",
                    lambda: self.dxf.push_blob(data=data, digest=digest, check_exists=False))  # type: ignore[arg-type]

    def copy_blob(self, digest: str, source: Repository) -> None:
        """Stream a blob from another repository (another registry, or one that declined a mount) into this one."""
        self._write(f"copying blob {digest[:19]} from {source.client.host}/{source.name}",
                    lambda: self.dxf.push_blob(data=source.blob_chunks(digest), digest=digest,
                                               check_exists=False))

    def put_manifest(self, tag: str, manifest: dict) -> str:
        """Push `manifest` (its mediaType inside) as `tag`; returns its digest."""
        text = json.dumps(manifest, separators=(",", ":"))  # ASCII: the bytes hashed are the bytes sent
        digest = sha256(text.encode())

        def put() -> None:
            self.dxf.set_manifest(tag, text)
        self._write(f"pushing manifest {tag}", put)
        return digest


def _short(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # requests wraps the TLS reason three deep in pool and URL words: the reason is what a person needs.
    ssl = re.search(r"\[SSL: [A-Z_]+\] ([^('\"]+)", text) or re.search(r"(certificate verify failed[^('\"]*)", text)
    if isinstance(exc, requests.exceptions.SSLError) and ssl:
        text = ssl[1].strip()
    return text if len(text) <= 200 else text[:199] + "…"
