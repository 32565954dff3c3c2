"""The NATS side shared by the agents and the edge API.

Connect with retry (`connection`), publish contract messages with their headers (`publish`), create the
topology (`topology`), stream uploads into the Object Store (`objects`), read and update document progress
in KV (`progress`), and speak the answer-stream protocol (`answers`). Imports only `contracts` and `telemetry`.
"""
