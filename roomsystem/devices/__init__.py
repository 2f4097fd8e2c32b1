"""Device profiles, discovery, one coordinator per device, and device health."""
