"""Where alerts go: a webhook (JSON POST) and e-mail (SMTP with STARTTLS)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from roomsystem.appliance.alerts import (
    AlertEvent,
    AlertsService,
    Channel,
    ChannelWorker,
    DeliveryFailed,
)
from roomsystem.bus import StateBus
from roomsystem.config import AlertsSettings
from roomsystem.errors import ConfigError
from roomsystem.lifecycle import Backoff


def read_secret(path: Path | None, what: str) -> str:
    """The first line of a secret file; '' without a file."""
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc}") from None


class WebhookChannel:
    """POSTs each event as JSON; 5xx, 408, 429 and network errors are worth a retry."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float, token: str = "") -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, event: AlertEvent) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        body = event.model_dump(mode="json")
        try:
            async with self._session.post(self.url, json=body) as response:
                if response.status < 300:
                    return
                retry = response.status >= 500 or response.status in (408, 429)
                raise DeliveryFailed(f"{self.url} answered {response.status}", retry=retry)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"{self.url}: {exc or type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class MailChannel:
    """Sends each event as a short plain-text e-mail over SMTP, upgraded with STARTTLS.

    smtplib blocks, so it runs in one named worker thread owned by the channel.
    """

    name = "mail"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: tuple[str, ...],
        timeout_s: float,
        starttls: bool = True,
        username: str = "",
        password: str = "",
        ca_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = recipients
        self.timeout_s = timeout_s
        self.starttls = starttls
        self.username = username
        self._password = password
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._executor: ThreadPoolExecutor | None = None

    async def deliver(self, event: AlertEvent) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="alerts-smtp")
        message = self.message(event)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._send, message)
        except smtplib.SMTPResponseException as exc:
            # 4xx is temporary by definition (RFC 5321); 5xx will not change by retrying.
            raise DeliveryFailed(
                f"{self.host}:{self.port} answered {exc.smtp_code}", retry=exc.smtp_code < 500
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{self.host}:{self.port}: {exc}") from None

    def message(self, event: AlertEvent) -> EmailMessage:
        alert = event.alert
        message = EmailMessage()
        state = "PROBLEM" if event.event == "raised" else "RESOLVED"
        message["Subject"] = f"[{event.room}] {state}: {alert.message}"[:200]
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(
            f"Room: {event.room} ({event.location or 'no location'}), id {event.room_id}\n"
            f"Alert: {alert.id} ({alert.severity})\n"
            f"State: {state}\n"
            f"Since: {alert.since.isoformat()}\n\n"
            f"{alert.message}\n"
        )
        return message

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=self._tls)
            if self.username:
                smtp.login(self.username, self._password)
            smtp.send_message(message)

    async def close(self) -> None:
        if self._executor is not None:
            # A send in progress ends within its timeout; nothing waits for it here.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def build_alerts_service(settings: AlertsSettings, bus: StateBus) -> AlertsService:
    """The alerts service with a worker for each channel the settings configure."""
    channels: list[Channel] = []
    if settings.webhook_url:
        token = read_secret(settings.webhook_token_file, "webhook token")
        channels.append(WebhookChannel(settings.webhook_url, settings.webhook_timeout_s, token))
    if settings.smtp_host:
        channels.append(
            MailChannel(
                settings.smtp_host,
                settings.smtp_port,
                settings.mail_from,
                settings.mail_to,
                settings.smtp_timeout_s,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=read_secret(settings.smtp_password_file, "SMTP password"),
                ca_file=settings.smtp_ca_file,
            )
        )
    workers = [
        ChannelWorker(
            channel, settings.attempts, Backoff(settings.retry_initial_s, settings.retry_max_s)
        )
        for channel in channels
    ]
    return AlertsService(bus, settings.grace_s, workers)
