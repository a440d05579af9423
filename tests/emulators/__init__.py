"""Loopback HTTP emulators of the services the bot talks to, for tests and benchmarks."""
