// The room's share page: getDisplayMedia, one WebRTC offer with the key, nothing else.
"use strict";

const form = document.getElementById("share-form");
const nameInput = document.getElementById("name");
const keyInput = document.getElementById("key");
const startButton = document.getElementById("start");
const stopButton = document.getElementById("stop");
const statusLine = document.getElementById("status");

let current = null; // {pc, stream, token, stopping}

nameInput.value = localStorage.getItem("roomshare-name") || "";

function show(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function sharingUi(on) {
  startButton.hidden = on;
  stopButton.hidden = !on;
  keyInput.disabled = on;
  nameInput.disabled = on;
}

function gatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

async function captureScreen() {
  const stream = await navigator.mediaDevices.getDisplayMedia({
    video: { width: { max: 1920 }, height: { max: 1080 }, frameRate: { max: 30 } },
    audio: true,
  });
  for (const track of stream.getVideoTracks()) {
    track.contentHint = "text"; // slides and code: sharp text over smooth motion
  }
  return stream;
}

async function start(event) {
  event.preventDefault();
  const name = nameInput.value.trim();
  localStorage.setItem("roomshare-name", name);
  let stream;
  try {
    stream = await captureScreen();
  } catch (err) {
    show(`The screen could not be captured: ${err.message}`, true);
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  current = { pc, stream, token: null, stopping: false };
  pc.addEventListener("connectionstatechange", () => {
    const lost = ["failed", "closed"].includes(pc.connectionState);
    if (current && current.pc === pc && !current.stopping && lost) {
      finish("The room ended the share.");
    }
  });
  stream.getVideoTracks()[0].addEventListener("ended", () => stop());
  sharingUi(true);
  show("Connecting to the room…");
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    const reply = await fetch("/share/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, key: keyInput.value, sdp: pc.localDescription.sdp, type: "offer" }),
    });
    const body = await reply.json();
    if (reply.status !== 201) {
      finish(body.message || `The room refused the share (${reply.status}).`, true);
      return;
    }
    current.token = body.token;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    show("You are sharing your screen to the room.");
  } catch (err) {
    finish(`The share could not start: ${err.message}`, true);
  }
}

function finish(message, isError = false) {
  if (current) {
    const { pc, stream } = current;
    current = null;
    for (const track of stream.getTracks()) track.stop();
    pc.close();
  }
  sharingUi(false);
  show(message, isError);
}

async function stop() {
  if (!current) return;
  current.stopping = true;
  const token = current.token;
  if (token) {
    try {
      await fetch(`/share/session/${encodeURIComponent(token)}`, { method: "DELETE" });
    } catch (err) {
      // The room notices the pictures stop within seconds anyway.
    }
  }
  finish("You stopped sharing.");
}

form.addEventListener("submit", start);
stopButton.addEventListener("click", () => stop());
