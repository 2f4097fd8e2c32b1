"""A fake Microsoft identity platform and Graph calendar, speaking their documented JSON.

Token endpoint (client-credentials grant, with the OpenID configuration msal reads first),
``calendarView/delta`` with ``@odata.nextLink`` pages and an ``@odata.deltaLink`` that
returns only later changes (removed events as ``@removed``), and event create, update,
accept, decline and cancel (the answers Microsoft documents: 202 Accepted, no body; only
the organizer may cancel, and the organizer cannot respond to its own meeting). Served over HTTPS on loopback with a certificate made for the test, because msal
only accepts an https authority.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TENANT = "contoso-tenant"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "graph-s3cret"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJyb2xlcyI6WyJDYWxlbmRhcnMuUmVhZFdyaXRlIl19."


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "graph-cert.pem", directory / "graph-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def graph_time(moment: dt.datetime) -> dict[str, str]:
    return {
        "dateTime": moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }


@dataclass
class FakeGraph:
    mailbox: str = "room-412@contoso.com"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: list[tuple[int, str]] = field(default_factory=list)
    version: int = 0
    requests: list[str] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)
    throttle_for: int = 0
    garbage_for: int = 0
    tokens_issued: int = 0
    base: str = ""
    page_size: int = 50
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- the calendar, as Outlook on the web would change it

    def add(self, subject: str, start: dt.datetime, end: dt.datetime, **extra: Any) -> str:
        event_id = extra.pop("id", f"AAMkAD{next(self._ids):06d}=")
        self.events[event_id] = {
            "id": event_id,
            "subject": subject,
            "start": graph_time(start),
            "end": graph_time(end),
            "isAllDay": False,
            "isCancelled": False,
            "sensitivity": "normal",
            "showAs": "busy",
            "type": "singleInstance",
            "organizer": {"emailAddress": {"name": "Kari Nordmann", "address": "kari@contoso.com"}},
            "attendees": [],
            "location": {"displayName": ""},
            "body": {"contentType": "html", "content": ""},
            "responseStatus": {"response": "notResponded", "time": "0001-01-01T00:00:00Z"},
            **extra,
        }
        self._changed(event_id)
        return event_id

    def add_series(
        self, subject: str, start: dt.datetime, minutes: int, days: int, **extra: Any
    ) -> str:
        """A daily series as calendarView returns it: each occurrence its own event."""
        master = f"AAMkADmaster{next(self._ids):06d}="
        for day in range(days):
            occurrence = start + dt.timedelta(days=day)
            self.add(
                subject,
                occurrence,
                occurrence + dt.timedelta(minutes=minutes),
                id=f"{master}occ{day}",
                type="occurrence",
                seriesMasterId=master,
                originalStart=occurrence.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **extra,
            )
        return master

    def update(self, event_id: str, **fields: Any) -> None:
        self.events[event_id].update(fields)
        self._changed(event_id)

    def remove(self, event_id: str) -> None:
        del self.events[event_id]
        self._changed(event_id)

    def _changed(self, event_id: str) -> None:
        self.version += 1
        self.changes.append((self.version, event_id))

    # -- HTTP

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(f"/{TENANT}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_post(f"/{TENANT}/oauth2/v2.0/token", self._token)
        users = "/v1.0/users/{mailbox}"
        app.router.add_get(users + "/calendarView/delta", self._delta)
        app.router.add_post(users + "/events", self._create)
        app.router.add_patch(users + "/events/{id}", self._patch)
        app.router.add_post(users + "/events/{id}/decline", self._decline)
        app.router.add_post(users + "/events/{id}/accept", self._accept)
        app.router.add_post(users + "/events/{id}/cancel", self._cancel)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if request.path.startswith("/v1.0/"):
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return error(401, "InvalidAuthenticationToken", "Access token is empty.")
            if request.match_info.get("mailbox") != self.mailbox:
                return error(404, "ErrorInvalidUser", "The requested user is invalid.")
            if self.throttle_for:
                self.throttle_for -= 1
                response = error(429, "TooManyRequests", "Please retry again later.")
                response.headers["Retry-After"] = "3"
                return response
            if self.garbage_for:
                self.garbage_for -= 1
                return web.json_response({"value": [{"subject": "no id", "start": 5}]})
        return await handler(request)

    async def _openid(self, request: web.Request) -> web.Response:
        root = f"{self.base}/{TENANT}"
        return web.json_response(
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "issuer": f"{root}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "response_types_supported": ["code", "token"],
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != SECRET:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        self.tokens_issued += 1
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": TOKEN,
            }
        )

    async def _delta(self, request: web.Request) -> web.Response:
        query = request.query
        link = f"{self.base}{request.path}"
        if "$deltatoken" in query:
            since = int(query["$deltatoken"])
            changed = dict.fromkeys(i for version, i in self.changes if version > since)
            items = [
                self.events.get(i, {"id": i, "@removed": {"reason": "deleted"}}) for i in changed
            ]
            return web.json_response(
                {"value": items, "@odata.deltaLink": f"{link}?$deltatoken={self.version}"}
            )
        if "$skiptoken" in query:
            offset, _, version = query["$skiptoken"].partition("-")
            start, end = query["start"], query["end"]
        else:
            offset, version = "0", str(self.version)
            start, end = query["startDateTime"], query["endDateTime"]
        window = (parse(start), parse(end))
        inside = [
            e
            for e in self.events.values()
            if parse(e["start"]["dateTime"]) < window[1] and window[0] < parse(e["end"]["dateTime"])
        ]
        first = int(offset)
        page = inside[first : first + self.page_size]
        body: dict[str, Any] = {"value": page}
        if first + self.page_size < len(inside):
            skip = f"{first + self.page_size}-{version}"
            body["@odata.nextLink"] = f"{link}?$skiptoken={skip}&start={start}&end={end}"
        else:
            body["@odata.deltaLink"] = f"{link}?$deltatoken={version}"
        return web.json_response(body)

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        event_id = self.add(
            body["subject"],
            parse(body["start"]["dateTime"]),
            parse(body["end"]["dateTime"]),
            organizer={"emailAddress": {"name": "Room 4.12", "address": self.mailbox}},
            responseStatus={"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        )
        return web.json_response(self.events[event_id], status=201)

    async def _patch(self, request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        if event_id not in self.events:
            return error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        self.update(event_id, **await request.json())
        return web.json_response(self.events[event_id])

    def _organised_by_room(self, event_id: str) -> bool:
        event = self.events[event_id]
        return event["organizer"]["emailAddress"]["address"] == self.mailbox

    async def _accept(self, request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("sendResponse", True), bool):
            return error(400, "ErrorInvalidRequest", "The request body is not valid.")
        if event_id not in self.events:
            return error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        if self._organised_by_room(event_id):
            return error(
                400,
                "ErrorInvalidRequest",
                "Your request can't be completed. You are the organizer.",
            )
        self.accepted[event_id] = body.get("comment", "")
        self.update(event_id, responseStatus={"response": "accepted", "time": now_text()})
        return web.Response(status=202)

    async def _cancel(self, request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        body = await request.json()
        if not isinstance(body, dict) or "sendResponse" in body:
            return error(400, "ErrorInvalidRequest", "The request body is not valid.")
        if event_id not in self.events:
            return error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        if not self._organised_by_room(event_id):
            return error(
                400,
                "ErrorAccessDenied",
                "Your request can't be completed. You need to be an organizer to cancel a meeting.",
            )
        # The organizer's copy of a cancelled meeting leaves its calendar.
        self.remove(event_id)
        self.cancelled[event_id] = body.get("comment", "")
        return web.Response(status=202)

    async def _decline(self, request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        body = await request.json()
        if event_id in self.events and self._organised_by_room(event_id):
            return error(
                400,
                "ErrorInvalidRequest",
                "Your request can't be completed. You are the organizer.",
            )
        gone = [
            i
            for i, e in self.events.items()
            if i == event_id or e.get("seriesMasterId") == event_id
        ]
        if not gone:
            return error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        # A declined meeting leaves the room's calendar.
        for i in gone:
            self.remove(i)
        self.declined[event_id] = body.get("comment", "")
        return web.Response(status=202)


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def parse(text: str) -> dt.datetime:
    text = text.rstrip("Z")[:26]
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
