"""The command builder behind ``POST /api/commands/build``."""
