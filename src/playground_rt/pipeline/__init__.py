"""What a job computes: synchronous, no asyncio, no HTTP."""
