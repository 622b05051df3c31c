// window.arenaChallenge.solve(challenge) -> Promise of the proof string for a battle's vote challenge
// ({"algorithm": "sha256", "salt": "...", "difficulty": bits}, as POST /api/v1/battles returns it).
// Pages call it as soon as the battle is created, so the work is done while the answers stream, and send the
// proof with the vote. Web Workers keep the page responsive; without them the search runs here in short slices.
"use strict";

(function () {
  const script = document.currentScript;
  const workerUrl = new URL("challenge-worker.js", script ? script.src : window.location.href).href;
  // Two workers halve the wait on any phone with two cores; more would only spend more battery per vote.
  const WORKERS = Math.max(1, Math.min(2, (navigator.hardwareConcurrency || 2) - 1));

  function check(challenge) {
    if (!challenge || challenge.algorithm !== "sha256" || typeof challenge.salt !== "string"
        || !Number.isInteger(challenge.difficulty) || challenge.difficulty < 0 || challenge.difficulty > 64) {
      throw new Error("unknown vote challenge");
    }
  }

  function solveInWorkers(challenge) {
    return new Promise(function (resolve, reject) {
      const workers = [];
      const stopAll = function () { workers.forEach(function (w) { w.terminate(); }); };
      try {
        for (let i = 0; i < WORKERS; i++) {
          const worker = new Worker(workerUrl);
          worker.onmessage = function (event) { stopAll(); resolve(event.data.proof); };
          worker.onerror = function (event) { stopAll(); reject(new Error(event.message || "worker failed")); };
          workers.push(worker);
          worker.postMessage({ salt: challenge.salt, difficulty: challenge.difficulty, start: i, step: WORKERS });
        }
      } catch (error) {
        stopAll();
        reject(error);
      }
    });
  }

  let searchLoaded = null;
  function loadSearch() {
    if (window.arenaChallengeSearch) return Promise.resolve(window.arenaChallengeSearch);
    if (!searchLoaded) {
      searchLoaded = new Promise(function (resolve, reject) {
        const tag = document.createElement("script");
        tag.src = workerUrl;
        tag.onload = function () { resolve(window.arenaChallengeSearch); };
        tag.onerror = function () { reject(new Error("could not load the challenge solver")); };
        document.head.appendChild(tag);
      });
    }
    return searchLoaded;
  }

  function solveHere(challenge) {
    return loadSearch().then(function (search) {
      return new Promise(function (resolve) {
        let next = 0;
        const slice = 20000;  // a few milliseconds of hashing between frames
        (function step() {
          const proof = search(challenge.salt, challenge.difficulty, next, 1, slice);
          if (proof !== null) return resolve(proof);
          next += slice;
          setTimeout(step, 0);
        })();
      });
    });
  }

  function solve(challenge) {
    try {
      check(challenge);
    } catch (error) {
      return Promise.reject(error);
    }
    if (typeof Worker === "undefined") return solveHere(challenge);
    return solveInWorkers(challenge).catch(function () { return solveHere(challenge); });
  }

  window.arenaChallenge = { solve: solve };
})();
