"""A fake Exchange Web Services endpoint that answers in Microsoft's documented SOAP format.

It holds a room mailbox's calendar folder and answers the operations a room needs:
GetFolder, FindItem with a CalendarView (recurring series come expanded), GetItem,
SyncFolderItems (incremental sync with a SyncState), CreateItem (new items and
DeclineItem responses), UpdateItem and DeleteItem, and streaming notifications (Subscribe
with a StreamingSubscriptionRequest, GetStreamingEvents as one chunked response carrying a
SOAP envelope per notification or ConnectionStatus, Unsubscribe). It checks Basic credentials, and can be
told to answer ErrorServerBusy (throttling) or a SOAP fault. exchangelib talks to it
unchanged, over HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS = {"s": S, "m": M, "t": T}
OAUTH_TENANT = "contoso-tenant"
OAUTH_CLIENT = "99999999-2222-3333-4444-555555555555"
OAUTH_SECRET = "ews-app-s3cret"
OAUTH_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJyb2xlcyI6WyJmdWxsX2FjY2Vzc19hc19hcHAiXX0."
CALENDAR_ID = "AAMkAGCalendar"
ROOT_ID = "AAMkAGRoot"


@dataclass
class Item:
    """A calendar item as the mailbox stores it (a series master keeps its occurrences)."""

    id: str
    uid: str
    subject: str
    start: datetime
    end: datetime
    organizer: str = "Kari Nordmann"
    organizer_email: str = "kari@example.org"
    location: str = ""
    body: str = ""
    sensitivity: str = "Normal"
    all_day: bool = False
    cancelled: bool = False
    kind: str = "Single"  # Single or RecurringMaster
    # For a master: occurrence start -> (start, end, subject) overrides, and deleted ones.
    every: timedelta | None = None
    count: int = 0
    exceptions: dict[datetime, tuple[datetime, datetime, str]] = field(default_factory=dict)
    deleted: set[datetime] = field(default_factory=set)
    changekey: int = 1
    declined: str | None = None


@dataclass
class Change:
    version: int
    kind: str  # Create, Update, Delete
    item_id: str


class FakeEws:
    """The mailbox, the request log and the switches a test flips."""

    def __init__(
        self, username: str = "svc-room", password: str = "s3cret", oauth: bool = False
    ) -> None:
        self.items: dict[str, Item] = {}
        self.changes: list[Change] = []
        self.version = 0
        self.requests: list[str] = []
        self.busy_for = 0  # answer this many requests with ErrorServerBusy
        self.fault_for = 0  # answer this many requests with a SOAP fault
        self.garbage_for = 0  # answer this many requests with a web page, not SOAP
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._ids = itertools.count(1)
        # Streaming notifications: each subscription's queue of events for its open stream;
        # None closes the stream in order, "break" drops the connection.
        self.subscriptions: dict[str, asyncio.Queue[Change | str | None]] = {}
        # OAuth (client credentials at /{tenant}/oauth2/v2.0/token) instead of Basic.
        self.oauth = oauth
        self.tokens_issued = 0
        self.token_lifetime_s = 3599
        self.token_expiry: dict[str, float] = {}
        self.refuse_subscribe = 0  # answer this many Subscribe requests with an error
        self.keepalive_s = 0.5  # ConnectionStatus OK messages while nothing happens

    # -- the mailbox, as the organizer's Outlook would change it

    def add(self, **fields: object) -> Item:
        item_id = f"AAMkItem{next(self._ids):06d}"
        item = Item(id=item_id, uid=str(fields.pop("uid", f"{item_id}@example.org")), **fields)  # type: ignore[arg-type]
        self.items[item.id] = item
        self._log("Create", item.id)
        return item

    def update(self, item_id: str, **fields: object) -> None:
        item = replace(self.items[item_id], **fields)  # type: ignore[arg-type]
        item.changekey += 1
        self.items[item_id] = item
        self._log("Update", item_id)

    def delete(self, item_id: str) -> None:
        del self.items[item_id]
        self._log("Delete", item_id)

    def _log(self, kind: str, item_id: str) -> None:
        self.version += 1
        change = Change(self.version, kind, item_id)
        self.changes.append(change)
        for queue in self.subscriptions.values():
            queue.put_nowait(change)

    def break_streams(self) -> None:
        """Drop every open streaming connection, as a proxy or a server restart would."""
        for queue in self.subscriptions.values():
            queue.put_nowait("break")

    def occurrences(self, item: Item) -> list[tuple[str, datetime, datetime, datetime, str, str]]:
        """(id, original start, start, end, subject, type) of each occurrence of a master."""
        assert item.every is not None
        found = []
        for index in range(item.count):
            original = item.start + item.every * index
            if original in item.deleted:
                continue
            start, end, subject = item.exceptions.get(
                original, (original, original + (item.end - item.start), item.subject)
            )
            kind = "Exception" if original in item.exceptions else "Occurrence"
            found.append((f"{item.id}_{index}", original, start, end, subject, kind))
        return found

    # -- HTTP

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/EWS/Exchange.asmx", self._handle)
        app.router.add_post(f"/{OAUTH_TENANT}/oauth2/v2.0/token", self._token)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        """The identity platform's client-credentials grant, as Microsoft documents it."""
        form = dict(await request.post())
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):  # client_secret_basic (RFC 6749 2.3.1)
            client, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            form.update(client_id=unquote_plus(client), client_secret=unquote_plus(secret))
        if form.get("client_id") != OAUTH_CLIENT or form.get("client_secret") != OAUTH_SECRET:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        if "https://outlook.office365.com/.default" not in str(form.get("scope", "")).split():
            return web.json_response({"error": "invalid_scope"}, status=400)
        self.tokens_issued += 1
        token = f"{OAUTH_TOKEN}{self.tokens_issued}"
        self.token_expiry[token] = time.monotonic() + self.token_lifetime_s
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.token_lifetime_s, "access_token": token}
        )

    def _authorized(self, header: str) -> bool:
        if not self.oauth:
            return header == self._auth
        expiry = self.token_expiry.get(header.removeprefix("Bearer "))
        return expiry is not None and time.monotonic() < expiry

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request.headers.get("Authorization", "")):
            challenge = "Bearer" if self.oauth else 'Basic realm="ews"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        body = await request.read()
        try:
            root = etree.fromstring(body)
        except etree.XMLSyntaxError:
            return soap_fault("a:ErrorSchemaValidation", "The request failed schema validation")
        operation = root.find("s:Body", NS)[0]
        name = etree.QName(operation).localname
        self.requests.append(name)
        if self.garbage_for:
            self.garbage_for -= 1
            return web.Response(text="<html><body>Proxy error</body>", content_type="text/xml")
        if self.fault_for:
            self.fault_for -= 1
            return soap_fault("a:ErrorInternalServerError", "An internal server error occurred.")
        if self.busy_for:
            self.busy_for -= 1
            return busy_fault()
        if name == "GetStreamingEvents":
            return await self._stream(request, operation)
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            return soap_fault("a:ErrorInvalidRequest", f"{name} is not supported here")
        return envelope(handler(operation))

    # -- operations

    def _Subscribe(self, operation: etree._Element) -> str:
        request = operation.find("m:StreamingSubscriptionRequest", NS)
        if request is None:
            return error_response(
                "Subscribe", "ErrorInvalidSubscriptionRequest", "Only streaming is offered here."
            )
        if self.refuse_subscribe:
            self.refuse_subscribe -= 1
            return error_response(
                "Subscribe",
                "ErrorInvalidSubscriptionRequest",
                "Streaming notifications are turned off on this server.",
            )
        subscription = base64.b64encode(f"stream-{next(self._ids)}".encode()).decode()
        self.subscriptions[subscription] = asyncio.Queue()
        return (
            "<m:SubscribeResponse><m:ResponseMessages>"
            '<m:SubscribeResponseMessage ResponseClass="Success">'
            f"<m:ResponseCode>NoError</m:ResponseCode><m:SubscriptionId>{subscription}"
            "</m:SubscriptionId></m:SubscribeResponseMessage></m:ResponseMessages>"
            "</m:SubscribeResponse>"
        )

    def _Unsubscribe(self, operation: etree._Element) -> str:
        subscription = operation.findtext("m:SubscriptionId", namespaces=NS)
        queue = self.subscriptions.pop(subscription or "", None)
        if queue is None:
            return error_response(
                "Unsubscribe", "ErrorSubscriptionNotFound", "The subscription was not found."
            )
        queue.put_nowait(None)  # its open stream ends with ConnectionStatus Closed
        return (
            "<m:UnsubscribeResponse><m:ResponseMessages>"
            '<m:UnsubscribeResponseMessage ResponseClass="Success">'
            "<m:ResponseCode>NoError</m:ResponseCode></m:UnsubscribeResponseMessage>"
            "</m:ResponseMessages></m:UnsubscribeResponse>"
        )

    async def _stream(self, request: web.Request, operation: etree._Element) -> web.StreamResponse:
        """GetStreamingEvents: one chunked response, a SOAP envelope per message."""
        ids = [e.text or "" for e in operation.iterfind("m:SubscriptionIds/t:SubscriptionId", NS)]
        queue = self.subscriptions.get(ids[0]) if len(ids) == 1 else None
        if queue is None:
            return envelope(
                error_response(
                    "GetStreamingEvents",
                    "ErrorInvalidSubscription",
                    "The subscription is not valid.",
                )
            )
        response = web.StreamResponse(headers={"Content-Type": "text/xml; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:
            try:
                async with asyncio.timeout(self.keepalive_s):
                    event = await queue.get()
            except TimeoutError:
                await response.write(stream_message(connection_status="OK"))
                continue
            if event == "break":
                assert request.transport is not None
                request.transport.close()
                return response
            if event is None or isinstance(event, str):
                await response.write(stream_message(connection_status="Closed"))
                await response.write_eof()
                return response
            await response.write(stream_message(notification=notification_xml(ids[0], event)))

    def _GetFolder(self, operation: etree._Element) -> str:
        messages = []
        for folder_id in operation.find("m:FolderIds", NS):
            distinguished = folder_id.get("Id")
            if distinguished == "root":
                folder = f'<t:Folder><t:FolderId Id="{ROOT_ID}" ChangeKey="1"/><t:DisplayName>Root</t:DisplayName><t:ChildFolderCount>1</t:ChildFolderCount></t:Folder>'
            else:
                folder = (
                    f'<t:CalendarFolder><t:FolderId Id="{CALENDAR_ID}" ChangeKey="1"/>'
                    f'<t:ParentFolderId Id="{ROOT_ID}" ChangeKey="1"/>'
                    "<t:FolderClass>IPF.Appointment</t:FolderClass>"
                    "<t:DisplayName>Calendar</t:DisplayName>"
                    f"<t:TotalCount>{len(self.items)}</t:TotalCount>"
                    "<t:ChildFolderCount>0</t:ChildFolderCount></t:CalendarFolder>"
                )
            messages.append(
                '<m:GetFolderResponseMessage ResponseClass="Success">'
                f"<m:ResponseCode>NoError</m:ResponseCode><m:Folders>{folder}</m:Folders>"
                "</m:GetFolderResponseMessage>"
            )
        return f"<m:GetFolderResponse><m:ResponseMessages>{''.join(messages)}</m:ResponseMessages></m:GetFolderResponse>"

    def _FindItem(self, operation: etree._Element) -> str:
        view = operation.find("m:CalendarView", NS)
        if view is None:
            return error_response(
                "FindItem", "ErrorInvalidRequest", "Only a CalendarView is supported"
            )
        start, end = parse_time(view.get("StartDate")), parse_time(view.get("EndDate"))
        limit = int(view.get("MaxEntriesReturned") or 1000)
        found = [xml for when, xml in sorted(self._view(start, end), key=lambda pair: pair[0])]
        if len(found) > limit:
            return error_response(
                "FindItem",
                "ErrorCalendarViewRangeTooBig",
                "The count of calendar entries exceeds the maximum entries returned",
            )
        return (
            "<m:FindItemResponse><m:ResponseMessages>"
            '<m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
            f'<m:RootFolder TotalItemsInView="{len(found)}" IncludesLastItemInRange="true">'
            f"<t:Items>{''.join(found)}</t:Items></m:RootFolder>"
            "</m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse>"
        )

    def _view(self, start: datetime, end: datetime) -> list[tuple[datetime, str]]:
        found = []
        for item in self.items.values():
            if item.kind == "Single":
                if item.start < end and start < item.end:
                    found.append((item.start, item_xml(item)))
                continue
            for occurrence_id, original, o_start, o_end, subject, kind in self.occurrences(item):
                if o_start < end and start < o_end:
                    occurrence = replace(
                        item, id=occurrence_id, start=o_start, end=o_end, subject=subject, kind=kind
                    )
                    found.append((o_start, item_xml(occurrence, recurrence_id=original)))
        return found

    def _GetItem(self, operation: etree._Element) -> str:
        messages = []
        for item_id in operation.find("m:ItemIds", NS):
            if etree.QName(item_id).localname == "RecurringMasterItemId":
                found = self.items.get(item_id.get("OccurrenceId").split("_")[0])
                xml = item_xml(found) if found else None
            else:
                xml = self._item_or_occurrence(item_id.get("Id"))
            if xml is None:
                messages.append(
                    error_message(
                        "GetItem",
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                )
                continue
            messages.append(
                '<m:GetItemResponseMessage ResponseClass="Success">'
                "<m:ResponseCode>NoError</m:ResponseCode>"
                f"<m:Items>{xml}</m:Items></m:GetItemResponseMessage>"
            )
        return (
            "<m:GetItemResponse><m:ResponseMessages>"
            f"{''.join(messages)}</m:ResponseMessages></m:GetItemResponse>"
        )

    def _item_or_occurrence(self, item_id: str) -> str | None:
        master_id, _, index = item_id.partition("_")
        item = self.items.get(master_id)
        if item is None:
            return None
        if not index:
            return item_xml(item)
        for occurrence_id, original, start, end, subject, kind in self.occurrences(item):
            if occurrence_id == item_id:
                occurrence = replace(
                    item, id=occurrence_id, start=start, end=end, subject=subject, kind=kind
                )
                return item_xml(occurrence, recurrence_id=original)
        return None

    def _SyncFolderItems(self, operation: etree._Element) -> str:
        # SyncState: "v<version>" once in step, "i<offset>:<version>" during a first sync.
        state = operation.findtext("m:SyncState", namespaces=NS) or "i0:0"
        limit = int(operation.findtext("m:MaxChangesReturned", namespaces=NS) or 512)
        if state.startswith("i"):
            offset_text, _, version_text = state[1:].partition(":")
            offset = int(offset_text)
            version = int(version_text) if offset else self.version
            ids = list(self.items)[offset : offset + limit]
            page = [Change(version, "Create", item_id) for item_id in ids]
            done = offset + limit >= len(self.items)
            new_state = f"v{version}" if done else f"i{offset + limit}:{version}"
        else:
            since = int(state[1:])
            latest: dict[str, Change] = {}
            for change in self.changes:
                if change.version > since:
                    latest[change.item_id] = change
            pending = sorted(latest.values(), key=lambda c: c.version)
            pending = [c for c in pending if c.kind == "Delete" or c.item_id in self.items]
            page = pending[:limit]
            done = len(pending) <= limit
            new_state = f"v{self.version if done else page[-1].version}"
        xml = []
        for change in page:
            if change.kind == "Delete":
                xml.append(f'<t:Delete><t:ItemId Id="{change.item_id}" ChangeKey="0"/></t:Delete>')
            else:
                kind = change.kind
                xml.append(f"<t:{kind}>{item_xml(self.items[change.item_id])}</t:{kind}>")
        return (
            "<m:SyncFolderItemsResponse><m:ResponseMessages>"
            '<m:SyncFolderItemsResponseMessage ResponseClass="Success">'
            "<m:ResponseCode>NoError</m:ResponseCode>"
            f"<m:SyncState>{new_state}</m:SyncState>"
            f"<m:IncludesLastItemInRange>{str(done).lower()}</m:IncludesLastItemInRange>"
            f"<m:Changes>{''.join(xml)}</m:Changes>"
            "</m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>"
        )

    def _CreateItem(self, operation: etree._Element) -> str:
        messages = []
        for element in operation.find("m:Items", NS):
            tag = etree.QName(element).localname
            if tag == "DeclineItem":
                reference = element.find("t:ReferenceItemId", NS).get("Id")
                self._decline(reference, element.findtext("t:Body", namespaces=NS) or "")
                messages.append(
                    '<m:CreateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                    "<m:Items/></m:CreateItemResponseMessage>"
                )
            elif tag == "CalendarItem":
                item = self.add(
                    subject=element.findtext("t:Subject", namespaces=NS) or "",
                    start=parse_time(element.findtext("t:Start", namespaces=NS)),
                    end=parse_time(element.findtext("t:End", namespaces=NS)),
                    organizer="Room 4.12",
                    organizer_email="room@example.org",
                )
                messages.append(
                    '<m:CreateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                    f'<m:Items><t:CalendarItem><t:ItemId Id="{item.id}" ChangeKey="{item.changekey}"/></t:CalendarItem></m:Items>'
                    "</m:CreateItemResponseMessage>"
                )
            else:
                messages.append(
                    error_message(
                        "CreateItem", "ErrorInvalidRequest", f"{tag} is not supported here"
                    )
                )
        return f"<m:CreateItemResponse><m:ResponseMessages>{''.join(messages)}</m:ResponseMessages></m:CreateItemResponse>"

    def _decline(self, reference: str, message: str) -> None:
        master_id, _, index = reference.partition("_")
        item = self.items[master_id]
        if index:
            assert item.every is not None
            self.update(master_id, deleted=item.deleted | {item.start + item.every * int(index)})
            self.items[master_id].declined = message
        else:
            self.update(master_id, cancelled=True, declined=message)

    def _UpdateItem(self, operation: etree._Element) -> str:
        messages = []
        for change in operation.find("m:ItemChanges", NS):
            item_id = change.find("t:ItemId", NS)
            occurrence = change.find("t:OccurrenceItemId", NS)
            reference = item_id.get("Id") if item_id is not None else None
            fields: dict[str, object] = {}
            for update in change.find("t:Updates", NS):
                uri = update.find("t:FieldURI", NS).get("FieldURI")
                value = update.find("t:CalendarItem", NS)
                if uri == "calendar:End":
                    fields["end"] = parse_time(value.findtext("t:End", namespaces=NS))
                elif uri == "calendar:Start":
                    fields["start"] = parse_time(value.findtext("t:Start", namespaces=NS))
                elif uri == "item:Subject":
                    fields["subject"] = value.findtext("t:Subject", namespaces=NS)
            if reference is None and occurrence is not None:
                reference = f"{occurrence.get('RecurringMasterId')}_{int(occurrence.get('InstanceIndex')) - 1}"
            master_id, _, index = str(reference).partition("_")
            item = self.items.get(master_id)
            if item is None:
                messages.append(
                    error_message(
                        "UpdateItem",
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                )
                continue
            if index:
                assert item.every is not None
                original = item.start + item.every * int(index)
                start, end, subject = item.exceptions.get(
                    original, (original, original + (item.end - item.start), item.subject)
                )
                exception = (
                    fields.get("start", start),
                    fields.get("end", end),
                    fields.get("subject", subject),
                )
                self.update(master_id, exceptions={**item.exceptions, original: exception})
            else:
                self.update(master_id, **fields)
            messages.append(
                '<m:UpdateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                f'<m:Items><t:CalendarItem><t:ItemId Id="{reference}" ChangeKey="{self.items[master_id].changekey}"/></t:CalendarItem></m:Items>'
                "<m:ConflictResults><t:Count>0</t:Count></m:ConflictResults></m:UpdateItemResponseMessage>"
            )
        return f"<m:UpdateItemResponse><m:ResponseMessages>{''.join(messages)}</m:ResponseMessages></m:UpdateItemResponse>"


def parse_time(text: str | None) -> datetime:
    if not text:
        raise ValueError("missing time")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def ews_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def item_xml(item: Item, recurrence_id: datetime | None = None) -> str:
    """A t:CalendarItem as EWS returns it (elements in the schema's order)."""
    recurrence = (
        f"<t:RecurrenceId>{ews_time(recurrence_id)}</t:RecurrenceId>" if recurrence_id else ""
    )
    return (
        "<t:CalendarItem>"
        f'<t:ItemId Id="{item.id}" ChangeKey="{item.changekey}"/>'
        f"<t:Subject>{escape(item.subject)}</t:Subject>"
        f"<t:Sensitivity>{item.sensitivity}</t:Sensitivity>"
        f'<t:Body BodyType="Text">{escape(item.body)}</t:Body>'
        f"<t:UID>{escape(item.uid)}</t:UID>"
        f"{recurrence}"
        f"<t:Start>{ews_time(item.start)}</t:Start>"
        f"<t:End>{ews_time(item.end)}</t:End>"
        f"<t:IsAllDayEvent>{str(item.all_day).lower()}</t:IsAllDayEvent>"
        "<t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus>"
        f"<t:Location>{escape(item.location)}</t:Location>"
        f"<t:IsCancelled>{str(item.cancelled).lower()}</t:IsCancelled>"
        f"<t:IsRecurring>{str(item.kind != 'Single').lower()}</t:IsRecurring>"
        f"<t:CalendarItemType>{item.kind}</t:CalendarItemType>"
        f"<t:Organizer><t:Mailbox><t:Name>{escape(item.organizer)}</t:Name>"
        f"<t:EmailAddress>{escape(item.organizer_email)}</t:EmailAddress>"
        "<t:RoutingType>SMTP</t:RoutingType></t:Mailbox></t:Organizer>"
        "</t:CalendarItem>"
    )


def notification_xml(subscription: str, change: Change) -> str:
    kind = {"Create": "CreatedEvent", "Update": "ModifiedEvent", "Delete": "DeletedEvent"}
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"<m:Notification><t:SubscriptionId>{subscription}</t:SubscriptionId>"
        f"<t:{kind[change.kind]}><t:TimeStamp>{stamp}</t:TimeStamp>"
        f'<t:ItemId Id="{change.item_id}" ChangeKey="CQAAAA=="/>'
        '<t:ParentFolderId Id="calendar" ChangeKey="AQAAAA=="/>'
        f"</t:{kind[change.kind]}></m:Notification>"
    )


def stream_message(notification: str = "", connection_status: str = "") -> bytes:
    """One GetStreamingEvents message: notifications, or the connection's status."""
    inner = f"<m:Notifications>{notification}</m:Notifications>" if notification else ""
    if connection_status:
        inner += f"<m:ConnectionStatus>{connection_status}</m:ConnectionStatus>"
    body = (
        "<m:GetStreamingEventsResponse><m:ResponseMessages>"
        '<m:GetStreamingEventsResponseMessage ResponseClass="Success">'
        f"<m:ResponseCode>NoError</m:ResponseCode>{inner}"
        "</m:GetStreamingEventsResponseMessage></m:ResponseMessages>"
        "</m:GetStreamingEventsResponse>"
    )
    return envelope_text(body).encode()


def envelope(body: str) -> web.Response:
    return web.Response(text=envelope_text(body), content_type="text/xml", charset="utf-8")


def envelope_text(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{S}"><s:Header>'
        f'<h:ServerVersionInfo xmlns:h="{T}" MajorVersion="15" MinorVersion="1" '
        'MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11"/>'
        f'</s:Header><s:Body xmlns:m="{M}" xmlns:t="{T}">{body}</s:Body></s:Envelope>'
    )


def error_message(operation: str, code: str, text: str, extra: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(text)}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{extra}</m:{operation}ResponseMessage>"
    )


def error_response(operation: str, code: str, text: str, extra: str = "") -> str:
    return (
        f"<m:{operation}Response><m:ResponseMessages>"
        f"{error_message(operation, code, text, extra)}"
        f"</m:ResponseMessages></m:{operation}Response>"
    )


def busy_fault() -> web.Response:
    """Throttling as Exchange answers it: a SOAP fault with ErrorServerBusy and the
    back-off it asks the client to wait, in MessageXml (BackOffMilliseconds)."""
    back_off = (
        f'<t:MessageXml xmlns:t="{T}">'
        '<t:Value Name="BackOffMilliseconds">2500</t:Value></t:MessageXml>'
    )
    return soap_fault(
        "a:ErrorServerBusy", "The server cannot service this request right now.", back_off
    )


def soap_fault(code: str, text: str, extra: str = "") -> web.Response:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T}">{code}</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(text)}</faultstring>'
        f'<detail><e:ResponseCode xmlns:e="{T.replace("types", "errors")}">{code.split(":")[-1]}</e:ResponseCode>'
        f'<e:Message xmlns:e="{T.replace("types", "errors")}">{escape(text)}</e:Message>'
        f"{extra}</detail>"
        "</s:Fault></s:Body></s:Envelope>"
    )
    return web.Response(status=500, text=body, content_type="text/xml", charset="utf-8")
