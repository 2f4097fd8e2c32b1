"""ICE host addresses and servers: loopback-only gathering and no default STUN server."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from roomsystem.config import IceServerSettings, WebRTCSettings, parse_settings
from roomsystem.errors import ConfigError
from roomsystem.media.ice import (
    apply_webrtc_settings,
    current_host_addresses,
    host_addresses,
    rtc_configuration,
    use_host_addresses,
)


def test_rtc_configuration_has_no_ice_server_by_default() -> None:
    assert rtc_configuration().iceServers == []
    assert rtc_configuration(WebRTCSettings()).iceServers == []


def test_rtc_configuration_passes_configured_servers() -> None:
    turn = IceServerSettings(urls=("turn:turn.example.org:3478",), username="u", credential="c")
    servers = rtc_configuration(WebRTCSettings(ice_servers=(turn,))).iceServers
    assert servers is not None
    (server,) = servers
    assert server.urls == ["turn:turn.example.org:3478"]
    assert (server.username, server.credential) == ("u", "c")


async def test_a_peer_offers_only_the_configured_host_address() -> None:
    with host_addresses(["127.0.0.1"]):
        pc = RTCPeerConnection(rtc_configuration())
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if "a=candidate" in line
        ]
        await pc.close()
    assert candidates
    assert all(" 127.0.0.1 " in line and "typ host" in line for line in candidates)


def test_the_choice_is_undone_and_empty_means_every_interface() -> None:
    original = aioice.ice.get_host_addresses
    with host_addresses(["127.0.0.1", "::1"]):
        assert current_host_addresses() == ["127.0.0.1", "::1"]
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        undo = use_host_addresses([])
        assert "127.0.0.1" not in current_host_addresses()
        undo()
        assert current_host_addresses() == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses is original


def test_settings_apply_process_wide() -> None:
    undo = apply_webrtc_settings(WebRTCSettings(ice_host_addresses=("127.0.0.1",)))
    try:
        assert current_host_addresses() == ["127.0.0.1"]
        # The default (every interface) leaves an earlier, narrower choice in force.
        apply_webrtc_settings(WebRTCSettings())()
        assert current_host_addresses() == ["127.0.0.1"]
    finally:
        undo()


def test_a_bad_address_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'eth0'"):
        use_host_addresses(["eth0"])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[webrtc]\nice_host_addresses = ["eth0"]', "webrtc.ice_host_addresses"),
        ('[webrtc]\nice_servers = [{urls = ["http://x"]}]', "stun:, stuns:, turn: or turns:"),
        ("[webrtc]\nice_servers = [{urls = []}]", "webrtc.ice_servers"),
        ('[webrtc]\nstun = "stun:x"', "webrtc.stun"),
    ],
)
def test_bad_webrtc_config_names_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(toml)


def test_webrtc_config_reads_servers() -> None:
    settings = parse_settings(
        '[webrtc]\nice_host_addresses = ["127.0.0.1"]\n'
        '[[webrtc.ice_servers]]\nurls = ["stun:stun.example.org"]\n'
    )
    assert settings.webrtc.ice_host_addresses == ("127.0.0.1",)
    assert settings.webrtc.ice_servers[0].urls == ("stun:stun.example.org",)
