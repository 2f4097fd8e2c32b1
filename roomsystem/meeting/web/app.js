// The room's meeting client: join, wait, talk. Plain JavaScript, served by the room itself.
//
// The room makes the WebRTC offer with a fixed set of transceivers, in this order:
// 0 audio (room sound / our microphone), 1 video (room camera / our camera),
// 2 video (our screen share, sent only once the room allows it), 3 video (what the room
// shows as content: someone's share), then pairs of audio+video "slots" that carry the
// other participants (a "slots" message says who).
"use strict";

const ROOM_AUDIO = 0;
const ROOM_VIDEO = 1;
const CONTENT = 2;
const ROOM_CONTENT = 3;
const CONTENT_IDLE_MS = 2000;
const GATHER_TIMEOUT_MS = 3000;

const $ = (id) => document.getElementById(id);
const state = {
  ws: null,
  pc: null,
  local: null, // MediaStream from the camera and microphone, if any
  view: null, // what the room says about us (muted, video, hand, roster, ...)
  joined: false,
  ending: null, // the message to show when the connection closes
  screen: null, // MediaStreamTrack of our screen share
  slotTiles: new Map(), // video mid -> tile element
  framesShown: 0,
};

function show(name) {
  for (const screen of document.querySelectorAll(".screen")) {
    screen.hidden = screen.id !== `screen-${name}`;
  }
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(message));
  }
}

function clientKey() {
  let key = localStorage.getItem("roomsystem-client-key");
  if (!key) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    key = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("roomsystem-client-key", key);
  }
  return key;
}

// -- joining

async function startPreview() {
  try {
    state.local = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 640, height: 360 },
    });
    $("preview").srcObject = state.local;
    $("video-self").srcObject = state.local;
  } catch (error) {
    $("preview-note").textContent =
      `No camera or microphone (${error.name}): you can still join to watch and listen.`;
  }
}

function prefill() {
  const params = new URLSearchParams(location.search);
  if (params.get("meeting")) $("meeting-id").value = params.get("meeting");
  if (params.get("token")) {
    $("passcode-row").hidden = true;
    $("link-note").hidden = false;
  }
  $("name").value = localStorage.getItem("roomsystem-name") || "";
}

function join(event) {
  event.preventDefault();
  notice("");
  const params = new URLSearchParams(location.search);
  const name = $("name").value.trim();
  localStorage.setItem("roomsystem-name", name);
  const message = {
    type: "join",
    meeting_id: $("meeting-id").value.trim(),
    name,
    client_key: clientKey(),
  };
  const passcode = $("passcode").value.trim();
  if (params.get("token") && !passcode) message.token = params.get("token");
  else if (passcode) message.passcode = passcode;
  if (params.get("invite")) message.invite = params.get("invite");
  $("join-button").disabled = true;
  state.ending = null;
  const ws = new WebSocket(`wss://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify(message));
  ws.onmessage = (event) => handle(JSON.parse(event.data)).catch(failed);
  ws.onclose = (event) => closed(ws, event);
}

function closed(ws, event) {
  if (ws !== state.ws) return;
  state.ws = null;
  if (state.pc) state.pc.close();
  state.pc = null;
  stopShare();
  $("join-button").disabled = false;
  if (!state.joined) {
    if (!state.ending && !$("notice").textContent) {
      notice(`Could not reach the room (${event.code}). Try again.`);
    }
    show("join");
    return;
  }
  state.joined = false;
  ended(state.ending || `The connection to the room was lost (${event.code}).`);
}

function ended(message) {
  $("ended-title").textContent = "You are no longer in the meeting";
  $("ended-message").textContent = message;
  $("recording").hidden = true;
  show("ended");
}

function failed(error) {
  notice(`Something went wrong: ${error.message || error}`);
}

// -- messages from the room

async function handle(message) {
  switch (message.type) {
    case "joined":
      state.joined = true;
      render(message.view);
      show(message.waiting ? "waiting" : "meeting");
      break;
    case "event":
      onEvent(message);
      break;
    case "view":
      render(message.view);
      break;
    case "offer":
      await answer(message.sdp);
      break;
    case "slots":
      placeSlots(message.slots);
      break;
    case "sharing":
      if (message.on) await sendScreen();
      break;
    case "error":
      onError(message);
      break;
    default:
      break;
  }
}

function onEvent(message) {
  render(message.view);
  switch (message.kind) {
    case "admitted":
      show("meeting");
      break;
    case "removed":
    case "ended":
    case "left":
      state.ending = message.message;
      break;
    case "share_denied":
      stopShare();
      notice(message.message);
      break;
    case "muted":
    case "video_stopped":
    case "ask_unmute":
    case "hand_lowered":
    case "share_allowed":
    case "role_changed":
      notice(message.message);
      break;
    case "chat":
      addChat(message.chat);
      break;
    default:
      break;
  }
}

function onError(message) {
  if (message.code === "share_denied") stopShare();
  if (message.fatal) {
    state.ending = message.message;
    state.joined = false;
  }
  notice(message.message);
}

// -- what the room says about us

function render(view) {
  state.view = view;
  const mic = state.local && state.local.getAudioTracks()[0];
  const cam = state.local && state.local.getVideoTracks()[0];
  if (mic) mic.enabled = !view.muted;
  if (cam) cam.enabled = view.video;
  setPressed("toggle-mic", !view.muted, view.muted ? "Unmute" : "Mute");
  setPressed("toggle-camera", view.video, view.video ? "Stop video" : "Start video");
  setPressed("toggle-hand", view.hand, view.hand ? "Lower hand" : "Raise hand");
  $("toggle-share").disabled = !view.can_share && !state.screen;
  $("recording").hidden = !view.recording;
  const people = view.roster.map(
    (p) => `${p.name}${p.id === view.id ? " (you)" : ""}${p.hand ? " ✋" : ""}${p.muted ? " (muted)" : ""}`
  );
  $("people").textContent = people.length ? `In the meeting: ${people.join(", ")}` : "";
}

function setPressed(id, pressed, label) {
  $(id).setAttribute("aria-pressed", String(pressed));
  $(id).textContent = label;
}

function addChat(chat) {
  const item = document.createElement("li");
  const privately = { everyone: "", host: " (to the host)" }[chat.to] ?? " (privately)";
  item.textContent = `${chat.sender_name}${privately}: ${chat.text}`;
  $("chat-log").append(item);
  item.scrollIntoView({ block: "nearest" });
}

// -- media

async function answer(sdp) {
  if (state.pc) state.pc.close();
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  pc.ontrack = (event) => attachRemote(pc, event.transceiver, event.track);
  await pc.setRemoteDescription({ type: "offer", sdp });
  const transceivers = pc.getTransceivers();
  const mic = state.local ? state.local.getAudioTracks()[0] || null : null;
  const cam = state.local ? state.local.getVideoTracks()[0] || null : null;
  await transceivers[ROOM_AUDIO].sender.replaceTrack(mic);
  transceivers[ROOM_AUDIO].direction = "sendrecv";
  await transceivers[ROOM_VIDEO].sender.replaceTrack(cam);
  transceivers[ROOM_VIDEO].direction = "sendrecv";
  transceivers[CONTENT].direction = "sendonly";
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  send({ type: "answer", sdp: pc.localDescription.sdp });
}

function gathered(pc) {
  // The room does not take trickled candidates: the answer carries them all.
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function attachRemote(pc, transceiver, track) {
  const index = pc.getTransceivers().indexOf(transceiver);
  const stream = new MediaStream([track]);
  if (index === ROOM_VIDEO) {
    const video = $("video-room");
    video.srcObject = stream;
    countFrames(video);
  } else if (index === ROOM_CONTENT) {
    showContent(stream);
  } else if (track.kind === "audio") {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.srcObject = stream;
    $("audio-sinks").append(audio);
  } else if (index > ROOM_CONTENT) {
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.hidden = true;
    tile.dataset.mid = transceiver.mid;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    video.srcObject = stream;
    const caption = document.createElement("figcaption");
    tile.append(video, caption);
    $("gallery").append(tile);
    state.slotTiles.set(transceiver.mid, tile);
  }
}

function showContent(stream) {
  // Shown while frames come: the room sends nothing on this channel while nobody shares.
  const tile = $("tile-content");
  const video = tile.querySelector("video");
  video.srcObject = stream;
  if (!("requestVideoFrameCallback" in video)) return;
  let idle = null;
  const frame = () => {
    tile.hidden = false;
    clearTimeout(idle);
    idle = setTimeout(() => (tile.hidden = true), CONTENT_IDLE_MS);
    video.requestVideoFrameCallback(frame);
  };
  video.requestVideoFrameCallback(frame);
}

function countFrames(video) {
  if (!("requestVideoFrameCallback" in video)) return;
  const counted = () => {
    state.framesShown += 1;
    video.requestVideoFrameCallback(counted);
  };
  video.requestVideoFrameCallback(counted);
}

function placeSlots(slots) {
  for (const slot of slots) {
    const tile = state.slotTiles.get(slot.video_mid);
    if (!tile) continue;
    tile.hidden = !slot.participant_id;
    tile.querySelector("figcaption").textContent = slot.name || "";
    tile.dataset.participant = slot.participant_id || "";
  }
}

async function toggleShare() {
  if (state.screen) {
    stopShare();
    send({ type: "share", on: false });
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    state.screen = stream.getVideoTracks()[0];
  } catch (error) {
    notice(`Screen sharing did not start (${error.name}).`);
    return;
  }
  state.screen.addEventListener("ended", () => {
    stopShare();
    send({ type: "share", on: false });
  });
  setPressed("toggle-share", true, "Stop sharing");
  send({ type: "share", on: true });
}

async function sendScreen() {
  // Only now, with the room's consent, does the screen go out.
  if (state.pc && state.screen) {
    await state.pc.getTransceivers()[CONTENT].sender.replaceTrack(state.screen);
  }
}

function stopShare() {
  if (state.screen) state.screen.stop();
  state.screen = null;
  if (state.pc && state.pc.connectionState !== "closed") {
    state.pc.getTransceivers()[CONTENT].sender.replaceTrack(null).catch(() => {});
  }
  setPressed("toggle-share", false, "Share screen");
  if (state.view) $("toggle-share").disabled = !state.view.can_share;
}

// What tests and the join-time benchmark read: frames decoded from the room.
window.roomsystemStats = async () => {
  const result = {
    joined: state.joined,
    roomVideoFrames: 0,
    contentFrames: 0,
    slotFrames: {},
    framesShown: 0,
  };
  result.framesShown = state.framesShown;
  if (!state.pc) return result;
  const mids = state.pc.getTransceivers().map((t) => t.mid);
  const report = await state.pc.getStats();
  report.forEach((stat) => {
    if (stat.type !== "inbound-rtp" || stat.kind !== "video") return;
    const frames = stat.framesDecoded || 0;
    if (stat.mid === mids[ROOM_VIDEO]) result.roomVideoFrames = frames;
    else if (stat.mid === mids[ROOM_CONTENT]) result.contentFrames = frames;
    else result.slotFrames[stat.mid] = frames;
  });
  return result;
};

// -- wiring

function wire() {
  $("join-form").addEventListener("submit", join);
  $("waiting-leave").addEventListener("click", () => send({ type: "leave" }));
  $("leave").addEventListener("click", () => send({ type: "leave" }));
  $("toggle-mic").addEventListener("click", () => send({ type: "media", mic: state.view.muted }));
  $("toggle-camera").addEventListener("click", () =>
    send({ type: "media", camera: !state.view.video })
  );
  $("toggle-hand").addEventListener("click", () => send({ type: "hand", up: !state.view.hand }));
  $("toggle-share").addEventListener("click", () => toggleShare().catch(failed));
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const chat = { type: "chat", text: $("chat-text").value, to: $("chat-to").value };
    send(chat);
    // The room tells everyone else; our own message is shown from here.
    addChat({ sender_name: "You", to: chat.to, text: chat.text });
    $("chat-text").value = "";
  });
}

wire();
prefill();
show("join");
startPreview();
