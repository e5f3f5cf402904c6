"""Bluesky plans (generators). Device-agnostic: devices and agents are arguments."""
