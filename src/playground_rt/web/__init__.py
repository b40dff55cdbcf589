"""The edge: Starlette + uvicorn, REST, the WebSocket's admission and client frames."""
