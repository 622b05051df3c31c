"""Egress: every call the arena makes out to a model endpoint, and the rules on where it may call.

- `providers`: streamed, retried calls to OpenAI-compatible endpoints, and the replay of recorded answers;
- `addresses`: which hosts a lab's endpoint may name (no loopback, private or metadata addresses unless the
  operator allows them), checked at registration and again before every call;
- `secrets`: endpoint keys, encrypted at rest with a key derived from the arena's secret.
"""
