"""What operators configure in the TOML file: numbers, destinations, API keys, event subscriptions."""
