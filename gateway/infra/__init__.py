"""Plumbing every layer may use: JSON logs, metrics, text safety, strict JSON, file locks, Twilio's REST client."""
