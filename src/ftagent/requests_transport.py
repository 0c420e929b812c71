"""The ``requests`` :class:`~ftagent.transport.Transport`: what every ftagent command and ftreport use.

One ``requests.Session`` (so TLS connections are reused) presents the client certificate for mutual
TLS, verifies the server against the configured CA (a PEM file or any directory of PEM files; always,
unless ``insecure=True`` is passed explicitly), goes through a proxy where configured, never follows
redirects, and reads every answer under the limits of :mod:`ftagent.answer_limits`.  Failures become
errors of :mod:`ftagent.errors` with messages that say what to fix.

Retries (done by urllib3's ``Retry``): connection failures before the request was sent are retried
for every method; read failures and 429/503 answers only for idempotent methods.  ``Retry-After``
(seconds or an HTTP date) is honoured up to ``max_retry_after`` seconds.  The answer the retries end
with is returned as it is: its status is :class:`~ftagent.connection.Connection`'s business.
"""

from __future__ import annotations

import calendar
import inspect
import ipaddress
import logging
import math
import os
import socket
import ssl
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from ftagent.answer_limits import CHUNK, AnswerTooLarge, DeadlineHTTPResponse, answer_deadline, read_body
from ftagent.errors import BadAnswer, ConfigError, ConnectionFailed, IdentityError, TLSError
from ftagent.transport import PEM_CERT, Answer, ca_directory_pem

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RequestsTransport"]

logger = logging.getLogger(__name__)

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_RETRY_STATUSES = frozenset({429, 503})


def _host_bypasses_proxy(host: str, no_proxy: str) -> bool:
    """True when ``host`` matches a ``no_proxy`` list (names, .suffixes, IPs, CIDRs, ``*``)."""
    host = host.strip("[]").lower()
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if addr is not None and "/" in entry:
            try:
                if addr in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if entry.count(":") == 1:
            entry = entry.split(":", 1)[0]
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _ca_dir_context(directory: Path) -> ssl.SSLContext:
    """A verifying SSL context trusting every PEM certificate in the regular files of ``directory``."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    try:
        context.load_verify_locations(cadata=ca_directory_pem(directory))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bad CA certificate in directory {directory}: {exc}") from exc
    return context


def _check_ca_file(path: Path, setting: str | None) -> None:
    """Refuse a CA file that is missing, unreadable or not PEM, naming the setting and the fix."""
    named = f" ({setting})" if setting else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"CA certificate {path}{named} does not exist; point it at the server's CA "
                          "(PEM file or directory)") from None
    except PermissionError:
        raise ConfigError(f"CA certificate {path}{named} is not readable by this user (uid {os.geteuid()}); "
                          "make it readable (for example chmod 644) or run as root") from None
    except OSError as exc:
        raise ConfigError(f"cannot read CA certificate {path}{named}: {exc.strerror or exc}") from None
    if not PEM_CERT.search(data):
        raise ConfigError(f"CA certificate {path}{named} holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
                          f"a DER file converts with: openssl x509 -inform der -in {path} -out {path}.pem")


def _expired_ca(path: str | None) -> str | None:
    """A description of the first expired certificate in a CA file, if any."""
    if path is None or not Path(path).is_file():
        return None
    # Only to explain a refused server certificate: cryptography costs a check-in about 30 ms
    # (python -X importtime) that it does not otherwise pay.
    from cryptography import x509

    try:
        blocks = PEM_CERT.findall(Path(path).read_bytes())
    except OSError:
        return None
    now = time.time()
    for block in blocks:
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        # not_valid_after_utc (aware) since cryptography 42; the naive UTC attribute before.
        not_after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
        if calendar.timegm(not_after.utctimetuple()) < now:
            return f"the CA certificate {cert.subject.rfc4514_string()} in {path} expired on {not_after:%Y-%m-%d}"
    return None


class _Session(requests.Session):
    """A session that never looks at redirect targets: requests would read a 3xx body in full
    (outside the answer limits) only to prepare a redirect that is never followed."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


class _HTTPConnection(urllib3.connection.HTTPConnection):
    response_class = DeadlineHTTPResponse


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    response_class = DeadlineHTTPResponse


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# Pools whose connections read answers under ftagent.answer_limits (deadline, size on the wire).
_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


_RETRY_ARGS = frozenset(inspect.signature(Retry.__init__).parameters)


class _Retry(Retry):
    """urllib3's ``Retry`` with a backoff cap and a ``Retry-After`` cap on every supported urllib3.

    urllib3 2 takes ``backoff_max`` and (since 2.x) ``retry_after_max``; RHEL 9's urllib3 1.26 takes
    neither (its backoff cap is a class-wide 120 s). Where an argument is missing, the cap is applied
    here instead, so the behaviour is the same on both.
    """

    def __init__(self, *args: Any, backoff_max: float = 120.0, retry_after_max: int = 21600, **kw: Any) -> None:
        for name, value in (("backoff_max", backoff_max), ("retry_after_max", retry_after_max)):
            if name in _RETRY_ARGS:
                kw[name] = value
        super().__init__(*args, **kw)
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max

    def new(self, **kw: Any) -> Self:
        kw.setdefault("backoff_max", self.backoff_max)
        kw.setdefault("retry_after_max", self.retry_after_max)
        return super().new(**kw)

    def get_backoff_time(self) -> float:
        return min(super().get_backoff_time(), self.backoff_max)

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_max)


class _Adapter(HTTPAdapter):
    """An HTTPAdapter that can verify with its own SSL context (CA directories) and whose
    connections read answers under the limits of :mod:`ftagent.answer_limits`."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        if self._ssl_context is not None:
            pool_kwargs["ssl_context"] = self._ssl_context
        # types-requests annotates these only in releases for Python 3.10+ (the lint runs on 3.9).
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if self._ssl_context is not None:
            # Trust only the directory's certificates, not requests' default bundle.
            conn.ca_certs = None
            conn.ca_cert_dir = None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Walk an exception, its causes, contexts, ``reason`` attributes and exception arguments."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    for cause in _causes(exc):
        if isinstance(cause, kind):
            return cause
    return None


class RequestsTransport:
    """HTTP(S) to the server at ``url`` through ``requests`` (a :class:`~ftagent.transport.Transport`).

    ``ca_cert`` is a PEM file or a directory of CA certificates (default: the system's trust
    store); ``cert_file``/``key_file`` the identity for mutual TLS; ``username``/``password`` HTTP
    Basic credentials.  ``proxy`` is a proxy URL (default: the ``https_proxy`` environment
    variable); hosts in ``no_proxy`` bypass it.  ``ca_cert_setting`` names where ``ca_cert`` was
    configured, for the messages.
    """

    def __init__(
        self,
        url: str,
        *,
        ca_cert: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        proxy: str | None = None,
        no_proxy: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 120.0,
        user_agent: str = "ftagent",
        ca_cert_setting: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.ca_cert = str(ca_cert) if ca_cert is not None else None
        self.cert_file = str(cert_file) if cert_file is not None else None
        self.key_file = str(key_file) if key_file is not None else None
        self.insecure = insecure
        self._closed_connections = 0
        self._host = parts.hostname
        self._scheme = parts.scheme

        session = _Session()
        # No .netrc, no REQUESTS_CA_BUNDLE surprises: everything comes from our arguments.
        session.trust_env = False
        context: ssl.SSLContext | None = None
        if insecure:
            logger.warning("TLS verification of %s is disabled (insecure)", self.url)
            session.verify = False
        elif self.ca_cert is not None and Path(self.ca_cert).is_dir():
            context = _ca_dir_context(Path(self.ca_cert))
            session.verify = True
        elif self.ca_cert is not None:
            _check_ca_file(Path(self.ca_cert), ca_cert_setting)
            session.verify = self.ca_cert
        else:
            session.verify = True
        if self.cert_file is not None:
            session.cert = (self.cert_file, self.key_file) if self.key_file else self.cert_file
        if username is not None:
            session.auth = (username, password or "")
        session.proxies = self._proxies(proxy, no_proxy)
        session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        retry = _Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=0,
            allowed_methods=_IDEMPOTENT,
            status_forcelist=_RETRY_STATUSES,
            backoff_factor=backoff,
            backoff_max=max(backoff, 30.0),
            retry_after_max=math.ceil(max_retry_after),
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        adapter = _Adapter(ssl_context=context, max_retries=retry, pool_connections=1, pool_maxsize=2)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._adapter = adapter
        self._session = session

    def __repr__(self) -> str:
        return f"<RequestsTransport {self.url} cert={self.cert_file!r}>"

    def close(self) -> None:
        """Close pooled connections."""
        self._closed_connections = self.connections_opened
        self._session.close()

    def reset(self) -> None:
        """Drop pooled TLS connections so the next request presents the (new) identity files."""
        self._closed_connections = self.connections_opened
        self._adapter.close()  # type: ignore[no-untyped-call,unused-ignore]  # as init_poolmanager

    @property
    def connections_opened(self) -> int:
        """How many TCP/TLS connections this transport has opened so far."""
        total = self._closed_connections
        pools = getattr(self._adapter.poolmanager, "pools", None)
        if pools is not None:
            for key in list(pools.keys()):
                pool = pools.get(key)
                if pool is not None:
                    total += int(getattr(pool, "num_connections", 0))
        return total

    def _proxies(self, proxy: str | None, no_proxy: str | None) -> dict[str, str]:
        host = self._host or ""
        if no_proxy and _host_bypasses_proxy(host, no_proxy):
            return {}
        if proxy:
            return {"http": proxy, "https": proxy}
        env = requests.utils.get_environ_proxies(self.url)
        chosen = env.get(self._scheme) or env.get("all")
        return {self._scheme: chosen} if chosen else {}

    def _describe_tls(self, exc: BaseException) -> str:
        where = f"{self._host}"
        verify = _find(exc, ssl.SSLCertVerificationError)
        if isinstance(verify, ssl.SSLCertVerificationError):
            # urllib3 1.26 matches hostnames itself and raises this error without verify_message.
            detail = getattr(verify, "verify_message", None) or str(verify)
            ca = self.ca_cert or "the system trust store"
            if "expired" in detail:
                expired = _expired_ca(self.ca_cert)
                if expired is not None:
                    return f"server certificate not trusted: {expired}; install the renewed CA (server {where})"
                return (f"server certificate not trusted: the server's own certificate (or an intermediate) "
                        f"has expired (server {where}, CA {ca}); renew it on the server")
            return f"server certificate not trusted: {detail} (server {where}, CA {ca})"
        tls = _find(exc, ssl.SSLError)
        if isinstance(tls, ssl.SSLError):
            detail = tls.reason or tls.strerror or str(tls)
            if "CERTIFICATE_REQUIRED" in str(detail).upper() or "BAD_CERTIFICATE" in str(detail).upper():
                return (
                    f"TLS handshake with {where} failed: "
                    f"the server rejected the client certificate ({detail})"
                )
            return f"TLS handshake with {where} failed: {detail}"
        return f"TLS error talking to {where}: {exc}"

    def _describe_connection(self, exc: BaseException) -> str:
        if _find(exc, ConnectionRefusedError) is not None:
            return f"cannot connect to {self.url}: connection refused"
        if isinstance(exc, requests.exceptions.ProxyError):
            return f"cannot connect to {self.url} through the proxy: {exc}"
        for cause in _causes(exc):
            if isinstance(cause, OSError) and cause.strerror:
                return f"cannot connect to {self.url}: {cause.strerror}"
        return f"cannot connect to {self.url}: {exc}"

    def send(self, method: str, target: str, *, body: bytes | None, headers: Mapping[str, str],
             timeout: float) -> Answer:
        url = f"{self.url}/{target.lstrip('/')}"
        what = f"{method} {target.split('?', 1)[0]}"
        try:
            # Each answer (status line, headers, body) must be complete within `timeout`, and its body
            # stay within the size and compression limits: a per-read timeout alone bounds nothing.
            with warnings.catch_warnings(), answer_deadline(timeout):
                if self.insecure:  # said once at construction, not on every request
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response = self._session.request(
                    method,
                    url,
                    data=body,
                    headers=dict(headers) if headers else None,
                    timeout=(timeout, timeout),
                    allow_redirects=False,
                    stream=True,
                )
                data = self._read_answer(what, response, timeout)
        except BadAnswer:
            raise
        except requests.exceptions.SSLError as exc:
            raise TLSError(self._describe_tls(exc)) from exc
        except requests.exceptions.Timeout as exc:
            raise ConnectionFailed(f"timed out after {timeout:g} s talking to {self.url}") from exc
        except requests.exceptions.ConnectionError as exc:
            if _find(exc, AnswerTooLarge) is not None:
                raise BadAnswer(f"{what}: {_find(exc, AnswerTooLarge)}; refused") from exc
            raise ConnectionFailed(self._describe_connection(exc)) from exc
        except requests.exceptions.RetryError as exc:
            raise ConnectionFailed(f"giving up on {self.url} after retries: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            if _find(exc, AnswerTooLarge) is not None:
                raise BadAnswer(f"{what}: {_find(exc, AnswerTooLarge)}; refused") from exc
            raise ConnectionFailed(f"request to {self.url} failed: {exc}") from exc
        except OSError as exc:
            # requests checks the CA and client certificate paths before connecting.
            text = str(exc)
            if "CA certificate" in text:
                raise ConfigError(f"cannot use CA certificate {self.ca_cert}: {text}") from exc
            raise IdentityError(f"cannot use identity certificate: {text}", path=self.cert_file) from exc
        return Answer(response.status_code, data, {name.lower(): value for name, value in response.headers.items()})

    def _read_answer(self, what: str, response: requests.Response, timeout: float) -> bytes:
        """Read a streamed answer's body under the limits."""
        raw = response.raw
        try:
            return read_body(raw.stream(CHUNK, decode_content=True), raw.tell, what=what)
        except BadAnswer:
            response.close()
            raise
        except AnswerTooLarge as exc:
            response.close()
            raise BadAnswer(f"{what}: {exc}; refused") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response.close()
            if _find(exc, AnswerTooLarge) is not None:
                raise BadAnswer(f"{what}: {_find(exc, AnswerTooLarge)}; refused") from exc
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError) or _find(exc, TimeoutError) is not None \
                    or _find(exc, socket.timeout) is not None:
                raise ConnectionFailed(f"timed out after {timeout:g} s reading the answer from {self.url}") from exc
            raise ConnectionFailed(f"the answer from {self.url} broke off: {exc}") from exc
