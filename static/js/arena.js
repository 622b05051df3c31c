// The arena page: create a battle, stream both answers, take the vote, reveal the names.
// It speaks to the voters' API (/api/v1) of sides "a" and "b" only: nothing on this page knows which model
// answered until the vote's response names them. Nothing is written to cookies or storage by this script.
import { renderMarkdown } from "./markdown.js";

const SIDES = ["a", "b"];
const WINNERS = { "1": "a", "2": "b", "3": "tie", "4": "bothbad" };
const MESSAGES = {
  no_models: "Not enough models can answer this prompt right now. Try a prompt from the prompt set, or try again later.",
  prompt_too_long: "That prompt is too long. Please shorten it.",
  battle_void: "This battle cannot be voted on: one of the answers could not be completed. Please start a new battle.",
  already_voted: "This battle already has a vote.",
  battle_not_ready: "Both answers must be complete before the vote.",
  challenge_failed: "Your vote could not be verified by this browser. Please start a new battle and vote again.",
  rate_limited: "Too many requests from here just now. Please wait a moment and try again.",
  battle_not_found: "This battle is no longer available. Please start a new one.",
};
const FAILED_SIDE = "This answer could not be completed, so this battle cannot be voted on. Please start a new one.";

const el = (id) => document.getElementById(id);
const page = {
  askForm: el("ask-form"), prompt: el("prompt"), setForm: el("set-form"), promptSet: el("prompt-set"),
  status: el("status"), battle: el("battle"), votes: el("votes"), followUp: el("follow-up"),
  followUpText: el("follow-up-text"), reveal: el("reveal"), revealList: el("reveal-list"),
  newBattle: el("new-battle"),
};

let battle = null;  // the current battle: {id, sides: {a: {...}, b: {...}}, ready, voted, proof}

class ApiFailure extends Error {
  constructor(status, error) {
    const code = (error && error.code) || (status === 429 ? "rate_limited" : "error");
    super(MESSAGES[code] || (error && error.message) || "Something went wrong. Please try again.");
    this.status = status;
    this.code = code;
  }
}

async function callApi(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method, credentials: "same-origin",
      headers: body === undefined ? { Accept: "application/json" }
        : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiFailure(0, { code: "network", message: "The arena cannot be reached. Check your connection and try again." });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiFailure(response.status, data && data.error);
  return data;
}

function say(text, kind = "") {
  page.status.textContent = text;
  page.status.className = "status" + (kind ? " " + kind : "");
}

// ------------------------------------------------------------------------------------------- answers

function newTurn(prompt) {
  for (const side of SIDES) {
    const turn = document.createElement("div");
    turn.className = "turn";
    const asked = document.createElement("p");
    asked.className = "asked";
    asked.textContent = prompt;
    const answer = document.createElement("div");
    answer.className = "answer";
    answer.setAttribute("aria-busy", "true");
    turn.append(asked, answer);
    el(`turns-${side}`).append(turn);
    Object.assign(battle.sides[side], { text: "", element: answer, done: false, failed: false, pending: false });
    setSideState(side, "Answering…");
  }
}

function setSideState(side, text) {
  el(`state-${side}`).textContent = text;
}

function paint(side) {
  const state = battle.sides[side];
  state.pending = false;
  state.element.replaceChildren(renderMarkdown(state.text, { highlight: state.done }));
  if (state.failed) {
    const note = document.createElement("p");
    note.className = "failure";
    note.textContent = state.failure || FAILED_SIDE;
    state.element.append(note);
  }
}

function schedulePaint(side) {
  const state = battle.sides[side];
  if (state.pending) return;
  state.pending = true;
  requestAnimationFrame(() => paint(side));
}

function onEvent(current, name, data) {
  if (current !== battle) return;  // a stream of a battle the visitor has left
  const state = data.side ? battle.sides[data.side] : null;
  if (name === "delta" && state) {
    state.text += data.text;
    schedulePaint(data.side);
  } else if (name === "done" && state) {
    state.done = true;
    state.element.removeAttribute("aria-busy");
    setSideState(data.side, "Done");
    paint(data.side);
  } else if (name === "error" && state) {
    Object.assign(state, { done: true, failed: true, failure: data.message || FAILED_SIDE });
    state.element.removeAttribute("aria-busy");
    setSideState(data.side, "Failed");
    paint(data.side);
  } else if (name === "end") {
    finishTurn(data.state);
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return [name, JSON.parse(data.join("\n"))];
  } catch (err) {
    return null;
  }
}

async function stream(current, url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/event-stream" } });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiFailure(response.status, data && data.error);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let ended = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (parsed) {
        if (parsed[0] === "end") ended = true;
        onEvent(current, parsed[0], parsed[1]);
      }
    }
  }
  if (!ended && current === battle) {
    throw new ApiFailure(0, { code: "network", message: "The answers stopped arriving. Please start a new battle." });
  }
}

async function runTurn(current, url) {
  setVoting(false);
  try {
    await stream(current, url);
  } catch (err) {
    if (current !== battle) return;
    for (const side of SIDES) {
      const state = battle.sides[side];
      if (!state.done) {
        Object.assign(state, { done: true, failed: true, failure: err.message });
        state.element.removeAttribute("aria-busy");
        setSideState(side, "Stopped");
        paint(side);
      }
    }
    say(err.message, "error");
    showNewBattle();
  }
}

async function finishTurn(state) {
  const current = battle;
  if (state === "ready") {
    current.ready = true;
    setVoting(true);
    say("Both answers are complete. Which is better?");
    page.votes.querySelector("button").focus({ preventScroll: true });
    try {
      const details = await callApi("GET", `/api/v1/battles/${encodeURIComponent(current.id)}`);
      if (current === battle && details.follow_up && !current.voted) page.followUp.hidden = false;
    } catch (err) {
      // Without the details the battle can still be voted on; only the follow-up box stays hidden.
    }
  } else {
    say(MESSAGES.battle_void, "error");
    showNewBattle();
  }
}

// ------------------------------------------------------------------------------------------- the battle

function reset() {
  battle = null;
  for (const side of SIDES) {
    el(`turns-${side}`).replaceChildren();
    setSideState(side, "");
    el(`label-${side}`).textContent = `Model ${side.toUpperCase()}`;
  }
  setVoting(false);
  page.followUp.hidden = true;
  page.reveal.hidden = true;
  page.revealList.replaceChildren();
  page.newBattle.hidden = true;
  page.battle.hidden = true;
}

function solveChallenge(challenge) {
  // Solving starts now, while the answers stream, so the vote seldom waits for it (contracts §1).
  if (!challenge) return Promise.resolve({ proof: null });
  if (!window.arenaChallenge) return Promise.resolve({ error: new ApiFailure(403, { code: "challenge_failed" }) });
  return Promise.resolve()
    .then(() => window.arenaChallenge.solve(challenge))
    .then((proof) => ({ proof }), (error) => ({ error }));
}

async function startBattle(body) {
  reset();
  say("Starting a battle…");
  setForms(false);
  let created;
  try {
    created = await callApi("POST", "/api/v1/battles", body);
  } catch (err) {
    say(err.message, "error");
    setForms(true);
    return;
  }
  battle = { id: created.id, ready: false, voted: false, sides: { a: {}, b: {} },
             proof: solveChallenge(created.challenge) };
  page.battle.hidden = false;
  newTurn(created.prompt);
  say("Two models are answering…");
  setForms(true);
  await runTurn(battle, created.stream);
}

function setForms(enabled) {
  for (const form of [page.askForm, page.setForm]) {
    if (!form) continue;
    for (const control of form.querySelectorAll("button, textarea, select")) control.disabled = !enabled;
  }
}

function setVoting(enabled) {
  for (const button of page.votes.querySelectorAll("button")) button.disabled = !enabled;
}

function showNewBattle() {
  page.newBattle.hidden = false;
}

async function castVote(winner) {
  const current = battle;
  if (!current || !current.ready || current.voted || current.voting) return;
  current.voting = true;
  setVoting(false);
  page.followUp.hidden = true;
  say("Sending your vote…");
  try {
    const solved = await current.proof;
    if (solved.error) throw solved.error instanceof ApiFailure ? solved.error : new ApiFailure(403, { code: "challenge_failed" });
    const body = { winner };
    if (solved.proof !== null && solved.proof !== undefined) body.proof = String(solved.proof);
    const result = await callApi("POST", `/api/v1/battles/${encodeURIComponent(current.id)}/vote`, body);
    current.voted = true;
    await reveal(current, result.models);
  } catch (err) {
    current.voting = false;
    say(err.message, "error");
    if (["already_voted", "battle_void", "challenge_failed", "battle_not_found"].includes(err.code)) showNewBattle();
    else setVoting(true);
  }
}

async function currentRanks() {
  try {
    const board = await callApi("GET", "/api/v1/leaderboard");
    const ranks = new Map(board.models.map((row) => [row.model, row]));
    return { ranks, version: board.version };
  } catch (err) {
    return { ranks: new Map(), version: null };  // no snapshot published yet
  }
}

async function reveal(current, models) {
  const { ranks, version } = await currentRanks();
  if (current !== battle) return;
  for (const side of SIDES) {
    const who = models[side];
    el(`label-${side}`).textContent = `Model ${side.toUpperCase()}: ${who.model}`;
    const term = document.createElement("dt");
    term.textContent = `Model ${side.toUpperCase()}`;
    const detail = document.createElement("dd");
    const link = document.createElement("a");
    link.href = `/models/${encodeURIComponent(who.model)}`;
    link.textContent = who.model;
    detail.append(link, who.organization ? ` (${who.organization})` : "");
    const row = ranks.get(who.model);
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = row
      ? ` · rank ${row.rank_ub}, rating ${row.rating.toFixed(0)}${row.provisional ? " (provisional)" : ""} in snapshot ${version}`
      : " · not ranked yet";
    detail.append(rank);
    page.revealList.append(term, detail);
  }
  page.reveal.hidden = false;
  say("Vote recorded. The names are below.");
  showNewBattle();
  page.newBattle.focus({ preventScroll: true });
}

async function sendFollowUp(text) {
  const current = battle;
  if (!current || !current.ready || current.voted) return;
  page.followUp.hidden = true;
  setVoting(false);
  current.ready = false;
  try {
    const created = await callApi("POST", `/api/v1/battles/${encodeURIComponent(current.id)}/turns`, { prompt: text });
    page.followUpText.value = "";
    newTurn(text);
    say("Both models are answering your follow-up…");
    await runTurn(current, created.stream);
  } catch (err) {
    current.ready = true;
    setVoting(true);
    page.followUp.hidden = false;
    say(err.message, "error");
  }
}

// ------------------------------------------------------------------------------------------- wiring

page.askForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = page.prompt.value.trim();
  if (!text) {
    say("Write a prompt first, or pick one from the prompt set.", "error");
    page.prompt.focus();
    return;
  }
  startBattle({ prompt: text });
});

if (page.setForm) {
  page.setForm.addEventListener("submit", (event) => {
    event.preventDefault();
    startBattle({ prompt_id: Number(page.promptSet.value) });
  });
}

page.votes.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-winner]");
  if (button && !button.disabled) castVote(button.dataset.winner);
});

page.followUp.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = page.followUpText.value.trim();
  if (text) sendFollowUp(text);
});

page.newBattle.addEventListener("click", () => {
  reset();
  say("");
  page.prompt.focus();
});

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("textarea, input, select, [contenteditable]")) return;
  const key = event.key.toLowerCase();
  if (WINNERS[key] && battle && battle.ready && !battle.voted) {
    event.preventDefault();
    castVote(WINNERS[key]);
  } else if (key === "n" && !page.newBattle.hidden) {
    event.preventDefault();
    page.newBattle.click();
  }
});

document.documentElement.dataset.arenaReady = "1";  // for tests: the page's script has run
