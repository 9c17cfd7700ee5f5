"""Calls: the decision core that answers Twilio, where its records go (database or spool), the TwiML."""
