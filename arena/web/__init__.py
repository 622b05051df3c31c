"""The web layer: blueprints that parse a request, call one domain function and shape the answer.

- `battles`: the voters' JSON API (create, stream, vote, reveal); `pages`, `charts`: the HTML pages;
- `labs`: the labs' API (keys, models, answers, status); `leaderboard`, `board`: read-only public APIs;
- `openapi`: the request and response models and the generated OpenAPI document;
- `security`, `ratelimit`: headers and CSRF checks, and the per-address limits on battles and votes.

No ranking is computed and no domain rule is decided here; errors are domain errors mapped in arena.errors.
"""
