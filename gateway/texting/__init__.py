"""SMS and web chat: the 10DLC and opt-out policy, sending, chat conversations."""
