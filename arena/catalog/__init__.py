"""The catalog: labs, their keys, the models they put in the arena, the prompts and recorded answers.

One path for each action, used by the labs' API and the operator's commands alike (an `Actor` says who acts):
- `labs`: labs and their API keys (a key is stored only as its SHA-256);
- `registry`: registering a model (an endpoint, checked with one real request, or recorded answers), changing,
  pausing, retiring and deleting it;
- `answers`: a recorded model's answers, uploaded all or nothing;
- `identity`: what names a model (name, organisation, aliases, families) and the check that an answer does;
- `status`: what a lab reads of its model (battles, votes, endpoint health, its line on the leaderboard);
- `audit`: the append-only log of every action and refusal, written in the action's own transaction;
- `demo`: the embedded LLMFAO data set.
"""
