"""Cube's control-plane security (docs/security.md): CURVE keys, join tokens, the keyring of who
may speak as what, client credentials, and the ZAP gate that refuses unknown keys at handshake."""
