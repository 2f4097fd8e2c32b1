"""A real browser joins the room's meeting: headless Chromium over HTTPS and WebRTC on loopback.

Each test starts a meeting through the local API, as the room's panel does, and drives the
browser client the way a person would: type the meeting ID, passcode and name, wait, be
admitted, turn the camera on. Frames decoded on both sides are counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Page, expect

from roomsystem.daemon import Daemon
from roomsystem.media.service import MediaService
from roomsystem.meeting.site import WebSite

from .conftest import Api, until

NewPage = Callable[[], Awaitable[Page]]


async def join(
    page: Page, site: WebSite, meeting: dict[str, Any], name: str, **override: str
) -> None:
    await page.goto(f"{site.url}/join")
    await page.fill("#meeting-id", override.get("meeting_id", meeting["id"]))
    await page.fill("#passcode", override.get("passcode", meeting["passcode"]))
    await page.fill("#name", name)
    await page.click("#join-button")


async def waiting_participant(api: Api, name: str) -> str:
    for _ in range(100):
        meeting = await api.meeting()
        for participant in meeting["participants"]:
            if participant["name"] == name and participant["waiting"]:
                return str(participant["id"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached the waiting room")


async def admitted(page: Page, site: WebSite, api: Api, name: str) -> str:
    """Wait in the waiting room, be admitted through the API, and be connected."""
    await expect(page.locator("#screen-waiting")).to_be_visible()
    participant = await waiting_participant(api, name)
    await api.command("meeting/admit", participant=participant)
    await expect(page.locator("#screen-meeting")).to_be_visible()
    return participant


# Generous: the machine's two cores are shared with Chromium, the encoders and other work.
MEDIA_TIMEOUT_S = 20


async def room_frames_in_browser(
    page: Page, at_least: int, timeout: float = MEDIA_TIMEOUT_S
) -> int:
    async with asyncio.timeout(timeout):
        while True:
            stats = await page.evaluate("window.roomsystemStats()")
            if stats["roomVideoFrames"] >= at_least and stats["framesShown"] > 0:
                return int(stats["roomVideoFrames"])
            await asyncio.sleep(0.1)


async def frames_in_room(site: WebSite, participant: str, channel: str, at_least: int) -> int:
    """Frames of ``channel`` that the room's media took from this participant."""
    peer = site.hub.peers[participant]
    try:
        await until(
            lambda: channel in peer.room_taps and peer.room_taps[channel].delivered >= at_least,
            f"{at_least} {channel} frames from {participant} in the room",
            MEDIA_TIMEOUT_S,
        )
    except AssertionError as exc:
        # Say where the frames stopped: not received, received but gated, or not consumed.
        fanout = peer.incoming.get(channel)
        tap = peer.room_taps.get(channel)
        raise AssertionError(
            f"{exc}; decoded from the browser: {fanout.frames if fanout else 'no track'}, "
            f"taken by the room's media: {tap.delivered if tap else 'no tap'}, "
            f"forwarding audio/video: {peer.audio_on}/{peer.video_on}"
        ) from None
    return peer.room_taps[channel].delivered


async def test_a_browser_joins_waits_is_admitted_and_media_flows_both_ways(
    meeting_room: Daemon, site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    page = await new_page()
    await join(page, site, meeting, "Ada")

    participant = await admitted(page, site, api, "Ada")
    # The room's camera reaches the browser and is decoded there.
    assert await room_frames_in_browser(page, at_least=15) >= 15
    # Video is off on entry: the room forwards nothing until the person turns it on.
    peer = site.hub.peers[participant]
    assert peer.room_taps["video"].delivered == 0
    await page.click("#toggle-camera")
    await expect(page.locator("#toggle-camera")).to_have_attribute("aria-pressed", "true")
    assert await frames_in_room(site, participant, "video", at_least=15) >= 15
    # ... and is seen on the room's display, with a name label.
    media = site.media
    assert isinstance(media, MediaService)

    def shown() -> bool:
        layout = media.display.layout()
        return layout is not None and any(
            tile.id == participant and tile.name == "Ada" and tile.has_video
            for tile in layout.tiles
        )

    await until(shown, "Ada's tile with video on the room display", MEDIA_TIMEOUT_S)
    # The microphone too, once unmuted.
    await page.click("#toggle-mic")
    await expect(page.locator("#toggle-mic")).to_have_text("Mute")
    assert await frames_in_room(site, participant, "audio", at_least=20) >= 20
    # The host mutes Ada: she is told, and her sound no longer reaches the room.
    await api.command("meeting/mute", participant=participant)
    await expect(page.locator("#notice")).to_have_text("The host muted you.")
    await expect(page.locator("#toggle-mic")).to_have_text("Unmute")
    heard = peer.room_taps["audio"].delivered
    await asyncio.sleep(0.5)
    assert peer.room_taps["audio"].delivered == heard
    assert peer.frames_received("audio") > heard
    await page.click("#leave")
    await expect(page.locator("#ended-message")).to_have_text("You left the meeting.")
    assert not (await api.meeting())["participants"]


async def test_a_wrong_passcode_is_refused_with_a_clear_message(
    site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    page = await new_page()
    await join(page, site, meeting, "Mallory", passcode="00000000")
    await expect(page.locator("#notice")).to_have_text("The passcode or link is not right.")
    await expect(page.locator("#screen-join")).to_be_visible()
    assert not (await api.meeting())["participants"]


async def test_a_removed_participant_cannot_rejoin(
    site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    page = await new_page()
    await join(page, site, meeting, "Eve")
    participant = await admitted(page, site, api, "Eve")
    await api.command("meeting/remove", participant=participant)
    await expect(page.locator("#ended-message")).to_have_text(
        "The host removed you from the meeting."
    )
    assert participant not in site.hub.peers

    await join(page, site, meeting, "Eve again")
    await expect(page.locator("#notice")).to_have_text(
        "You were removed from this meeting and cannot rejoin it."
    )
    assert not (await api.meeting())["participants"]


async def test_a_locked_meeting_refuses_a_newcomer_with_the_right_passcode(
    site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    await api.command("meeting/lock", on=True)
    page = await new_page()
    await join(page, site, meeting, "Late Larry")
    await expect(page.locator("#notice")).to_have_text(
        "The meeting is locked: nobody new can join."
    )
    await api.command("meeting/lock", on=False)
    await join(page, site, meeting, "Late Larry")
    await expect(page.locator("#screen-waiting")).to_be_visible()
    # Tired of waiting: leaving from the waiting room.
    await page.click("#waiting-leave")
    await expect(page.locator("#ended-message")).to_have_text("You left the meeting.")
    assert not (await api.meeting())["participants"]


async def test_a_participant_without_share_permission_cannot_share(
    site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    page = await new_page()
    await join(page, site, meeting, "Sam")
    participant = await admitted(page, site, api, "Sam")
    await room_frames_in_browser(page, at_least=1)
    await expect(page.locator("#toggle-share")).to_be_disabled()

    # A client that ignores the disabled button asks to share, is refused, and puts its
    # screen on the content channel anyway. The room forwards none of it.
    await page.evaluate('send({type: "share", on: true})')
    await expect(page.locator("#notice")).to_have_text(
        "The host has not allowed you to share your screen."
    )
    await page.evaluate(
        """async () => {
            const stream = await navigator.mediaDevices.getDisplayMedia({video: true});
            await state.pc.getTransceivers()[2].sender.replaceTrack(stream.getVideoTracks()[0]);
        }"""
    )
    peer = site.hub.peers[participant]
    await until(
        lambda: peer.frames_received("content") >= 10,
        "the screen reaches the room",
        MEDIA_TIMEOUT_S,
    )
    assert "content" not in peer.room_taps

    # Once the host allows sharing, the same person shares through the button.
    await api.command("meeting/sharing", allow=True)
    await expect(page.locator("#toggle-share")).to_be_enabled()
    await page.click("#toggle-share")
    await expect(page.locator("#toggle-share")).to_have_text("Stop sharing")
    assert await frames_in_room(site, participant, "content", at_least=5) >= 5
    # The room shows it as content, and sends that to everyone in the meeting, Sam included.
    await expect(page.locator("#tile-content")).to_be_visible()
    await until(
        lambda: page.evaluate("window.roomsystemStats().then((s) => s.contentFrames > 0)"),
        "the room's content reaches the browser",
    )


async def test_two_participants_see_each_other_and_one_joined_by_link(
    site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    assert meeting["join_url"].startswith(f"{site.url}/join?meeting={meeting['id']}&token=")
    assert meeting["passcode"] not in meeting["join_url"]
    ada = await new_page()
    await join(ada, site, meeting, "Ada")
    await admitted(ada, site, api, "Ada")

    bob = await new_page()
    await bob.goto(meeting["join_url"])
    await expect(bob.locator("#passcode-row")).to_be_hidden()
    await bob.fill("#name", "Bob")
    await bob.click("#join-button")
    await admitted(bob, site, api, "Bob")

    for page in (ada, bob):
        await page.click("#toggle-camera")
    await expect(ada.locator("figure[data-participant]:visible figcaption")).to_have_text("Bob")
    await expect(bob.locator("figure[data-participant]:visible figcaption")).to_have_text("Ada")
    for page in (ada, bob):

        async def sees_room_and_other(page: Page = page) -> bool:
            stats = await page.evaluate("window.roomsystemStats()")
            slots = stats["slotFrames"].values()
            return bool(stats["roomVideoFrames"] > 5 and max(slots, default=0) > 5)

        await until(sees_room_and_other, "the room and the other participant decoded", 25)


async def test_chat_raised_hand_and_the_recording_notice(
    site: WebSite, api: Api, new_page: NewPage
) -> None:
    meeting = await api.command("meeting/start")
    page = await new_page()
    await join(page, site, meeting, "Cleo")
    participant = await admitted(page, site, api, "Cleo")

    await api.command("meeting/chat", text="Welcome, everyone")
    await expect(page.locator("#chat-log li").last).to_have_text("Room: Welcome, everyone")
    await page.fill("#chat-text", "Hello room")
    await page.select_option("#chat-to", "host")
    await page.click("#chat-form button")
    await expect(page.locator("#chat-log li").last).to_have_text("You (to the host): Hello room")
    chat = (await api.meeting())["chat"]
    assert (chat[-1]["sender_id"], chat[-1]["to"], chat[-1]["text"]) == (
        participant,
        "host",
        "Hello room",
    )

    await page.click("#toggle-hand")
    await expect(page.locator("#toggle-hand")).to_have_text("Lower hand")
    assert (await api.meeting())["participants"][0]["hand"] is True

    await expect(page.locator("#recording")).to_be_hidden()
    await api.command("meeting/recording", on=True)
    await expect(page.locator("#recording")).to_be_visible()
    await expect(page.locator("#recording")).to_contain_text("This meeting is being recorded.")
    await api.command("meeting/recording", on=False)
    await expect(page.locator("#recording")).to_be_hidden()
