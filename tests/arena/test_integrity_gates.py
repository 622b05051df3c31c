"""The request-side gates on voting: the proof-of-work challenge and the rate limits, through the voters' API."""
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arena import challenge
from arena.models import Vote
from tests.arena.conftest import gen_prompt, gen_recorded_model

REPO = Path(__file__).resolve().parents[2]
BITS = 10  # small enough that the Python solver takes a millisecond or so


@pytest.fixture
def gated(app):
    app.config.update(VOTE_CHALLENGE=True, VOTE_CHALLENGE_BITS=BITS)
    return app


@pytest.fixture
def prompt_id(session):
    prompt = gen_prompt(session)
    gen_recorded_model(session, "Alpha Model", "Alpha Org", {prompt.id: "Rayleigh scattering, mostly."})
    gen_recorded_model(session, "Beta Model", "Beta Org", {prompt.id: "Because blue light scatters more."})
    return prompt.id


def ready_battle(client, prompt_id) -> dict:
    created = client.post("/api/v1/battles", json={"prompt_id": prompt_id})
    assert created.status_code == 201, created.get_json()
    stream = client.get(f"/api/v1/battles/{created.get_json()['id']}/stream")
    assert stream.status_code == 200 and b'"state": "ready"' in stream.data  # read to the end: the battle is ready
    return created.get_json()


def votes_stored(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Vote))


# ------------------------------------------------------------------------------------------------ challenge

def test_a_battle_carries_its_challenge_and_a_solved_vote_counts(gated, client, session, prompt_id):
    battle = ready_battle(client, prompt_id)
    issued = battle["challenge"]
    assert issued == {"algorithm": "sha256", "salt": challenge.salt("test-secret", battle["id"]),
                      "difficulty": BITS}
    assert client.get(f"/api/v1/battles/{battle['id']}").get_json()["challenge"] == issued  # a reloaded page

    proof = challenge.solve(issued)
    digest = hashlib.sha256(f"{issued['salt']}:{proof}".encode()).digest()
    assert int.from_bytes(digest, "big") >> (256 - BITS) == 0  # the contract's formula, checked independently

    voted = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "a", "proof": proof})
    assert voted.status_code == 200, voted.get_json()
    assert votes_stored(session) == 1
    assert "challenge" not in client.get(f"/api/v1/battles/{battle['id']}").get_json()  # nothing left to solve


@pytest.mark.parametrize("proof", [None, "", 7, ["0"], "x" * 65])
def test_a_vote_without_a_valid_proof_is_refused_and_not_stored(gated, client, session, prompt_id, proof):
    battle = ready_battle(client, prompt_id)
    body = {"winner": "a"} if proof is None else {"winner": "a", "proof": proof}
    refused = client.post(f"/api/v1/battles/{battle['id']}/vote", json=body)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "challenge_failed"
    assert votes_stored(session) == 0
    # The battle is still open: the same voter can still vote with a proof.
    proof = challenge.solve(battle["challenge"])
    assert client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "a", "proof": proof}).status_code == 200


def test_a_wrong_proof_is_refused(gated, client, session, prompt_id):
    battle = ready_battle(client, prompt_id)
    salt = battle["challenge"]["salt"]
    wrong = next(str(n) for n in range(10**6) if not challenge.solves(salt, str(n), BITS))
    refused = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "b", "proof": wrong})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "challenge_failed"
    assert votes_stored(session) == 0


def test_a_proof_is_good_for_its_own_battle_only_and_only_once(gated, client, session, prompt_id):
    first, second = ready_battle(client, prompt_id), ready_battle(client, prompt_id)
    assert first["challenge"]["salt"] != second["challenge"]["salt"]
    proof = challenge.solve(first["challenge"])
    if not challenge.solves(second["challenge"]["salt"], proof, BITS):  # a 1-in-1024 coincidence otherwise
        moved = client.post(f"/api/v1/battles/{second['id']}/vote", json={"winner": "a", "proof": proof})
        assert moved.status_code == 403
    assert client.post(f"/api/v1/battles/{first['id']}/vote", json={"winner": "a", "proof": proof}).status_code == 200
    replayed = client.post(f"/api/v1/battles/{first['id']}/vote", json={"winner": "b", "proof": proof})
    assert replayed.status_code == 409 and replayed.get_json()["error"]["code"] == "already_voted"
    assert votes_stored(session) == 1


def test_the_salt_depends_on_the_secret_key(gated, client, prompt_id):
    battle = ready_battle(client, prompt_id)
    assert challenge.salt("another-secret", battle["id"]) != battle["challenge"]["salt"]


def test_off_means_no_challenge_and_proof_ignored(app, client, session, prompt_id):
    app.config["VOTE_CHALLENGE"] = False
    battle = ready_battle(client, prompt_id)
    assert "challenge" not in battle
    voted = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"winner": "tie", "proof": "anything"})
    assert voted.status_code == 200


def test_the_default_is_on_and_env_turns_it_off(monkeypatch):
    from arena.config import Config

    monkeypatch.delenv("ARENA_VOTE_CHALLENGE", raising=False)
    assert Config().VOTE_CHALLENGE is True and Config().VOTE_CHALLENGE_BITS == 16
    monkeypatch.setenv("ARENA_VOTE_CHALLENGE", "off")
    monkeypatch.setenv("ARENA_VOTE_CHALLENGE_BITS", "12")
    assert Config().VOTE_CHALLENGE is False and Config().VOTE_CHALLENGE_BITS == 12


def test_an_impossible_difficulty_stops_the_app_at_start(database_url, tmp_path):
    from arena import create_app

    with pytest.raises(ValueError, match="ARENA_VOTE_CHALLENGE_BITS"):
        create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": str(tmp_path), "VOTE_CHALLENGE_BITS": 300})


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_solver_finds_proofs_the_server_accepts(tmp_path):
    """static/js/challenge-worker.js, run by node, solves challenges that arena.challenge accepts, for salts and
    difficulties that cross its 32-bit word boundary."""
    script = tmp_path / "solve.js"
    script.write_text(
        'const fs = require("fs"), vm = require("vm");\n'
        'const scope = {}; scope.self = scope; vm.createContext(scope);\n'
        f'vm.runInContext(fs.readFileSync({str(REPO / "static/js/challenge-worker.js")!r}, "utf8"), scope);\n'
        'const cases = JSON.parse(process.argv[2]);\n'
        'console.log(JSON.stringify(cases.map(([s, d, start, step]) =>'
        ' scope.self.arenaChallengeSearch(s, d, start, step, 1 << 24))));\n')
    salts = [challenge.salt("k", f"battle-{i}") for i in range(6)]
    cases = [[salts[0], 0, 0, 1], [salts[1], 1, 0, 1], [salts[2], 12, 0, 1], [salts[3], 16, 1, 2],
             [salts[4], 8, 0, 1], ["x" * 60, 8, 0, 1]]  # the last message spans two SHA-256 blocks
    import json

    out = subprocess.run(["node", str(script), json.dumps(cases)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    proofs = json.loads(out.stdout)
    for (salt, bits, start, step), proof in zip(cases, proofs):
        assert proof is not None and challenge.solves(salt, proof, bits)
        assert (int(proof) - start) % step == 0
        if bits:  # the first hit: no smaller nonce of its stride solves it
            assert not any(challenge.solves(salt, str(n), bits) for n in range(start, int(proof), step))
