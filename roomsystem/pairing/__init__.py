"""Pairing touch panels with the room: a code on the main display, a token per panel.

A panel that is not paired yet asks the room to pair (`POST /api/v1/pairing/request`, no
token); the room makes a short numeric code and publishes it in the ``pairing`` topic, which
the main display shows. Someone in the room types the code on the panel, the panel sends it
(`POST /api/v1/pairing/complete`) and gets a token of its own, kept hashed in the state
directory and revocable (`panels/revoke`). One request is pending at a time; it expires, it
allows a few wrong codes, and wrong codes across requests lock pairing out for a while.

`codes` is the pure core (clock injected), `panels` the registry of paired panels,
`service` ties both to the room's bus and commands, `state` holds the published models.
"""
