"""Meeting policy, WebRTC signalling and peers."""
