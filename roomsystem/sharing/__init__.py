"""Wireless screen sharing: zeroconf advertisement, sharing key, share sessions."""
