"""Battles: pairing two models on a prompt, streaming their answers, and taking the one vote.

- `pairing`: which models can answer a prompt (read live for each battle);
- `lifecycle`: create a battle, follow-up turns, the vote (one, in one transaction), the reveal;
- `streaming`: both answers at once as Server-Sent Events, stored whether or not anyone listens;
- `challenge`: the vote's proof of work; `imports` and `exports`: battles from and to battle files.

The side-to-model mapping never leaves the server before the vote: everything a voter receives speaks of
sides "a" and "b" only, and provider failures are reported in words that name neither model.
"""
