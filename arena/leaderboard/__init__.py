"""The leaderboard: which votes count, which pair answers the next battle, and the signed snapshots.

- `builds`: the one function that computes the service's rankings (`build_snapshot`), run by the builder
  process (arena.leaderboard.builder), never by a web worker;
- `reading`: the stored snapshots, as pages, the API and labs read them (never recomputed);
- `integrity`: the counting rules that leave rigged votes out, with their recorded settings;
- `voters`: operators' voter exclusions and the pseudonyms voters have in published files;
- `sampling`: the published rule that draws a battle's pair, fed cheaply from the newest snapshot;
- `signing`, `locks`: the Ed25519 key that signs snapshots; the lock that keeps one build at a time.
"""
