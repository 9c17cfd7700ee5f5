"""Events from the handoff history: the feed, the deliveries, and the deliverer."""
