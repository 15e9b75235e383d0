"""Transport: frames, envelopes, schemas, sockets and the actor loop.

Nothing here knows what a task is; `cube/wire` never imports from `cube/actors`.
"""
