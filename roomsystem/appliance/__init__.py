"""Running the room as an appliance: systemd, device permissions, alerts, metrics, support."""
