"""Bookings: the Booking model, calendar backends, sync and check-in."""
