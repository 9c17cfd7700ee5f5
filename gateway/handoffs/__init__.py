"""What a handoff is: its states and transitions, and the destinations it can go to."""
