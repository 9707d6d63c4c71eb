"""A book club's members: who they are, which books they love, what they want to hear about."""
