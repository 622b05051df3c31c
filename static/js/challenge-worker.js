// The vote's proof of work (arena/challenge.py says why it exists): find a nonce such that
// SHA-256(salt + ":" + nonce) begins with `difficulty` zero bits. Plain JavaScript SHA-256 rather than
// crypto.subtle: subtle is missing outside secure contexts (a self-hosted arena on http://LAN-address) and its
// promise per hash is slower than hashing here. Runs as a Web Worker; loaded as a plain script (no worker
// support) it only defines arenaChallengeSearch for challenge.js to call in slices.
"use strict";

(function (scope) {
  const K = new Int32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  const INITIAL = new Int32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);

  // SHA-256 of `length` ASCII bytes in `bytes` (a buffer with room for the padding); the digest's eight words
  // are left in `state`. Int32 arithmetic throughout, so the engine keeps every value a small integer.
  function sha256(bytes, length, words, state) {
    const blocks = ((length + 8) >>> 6) + 1;
    bytes.fill(0, length, blocks * 64);
    bytes[length] = 0x80;
    const bits = length * 8;
    bytes[blocks * 64 - 4] = bits >>> 24;
    bytes[blocks * 64 - 3] = bits >>> 16;
    bytes[blocks * 64 - 2] = bits >>> 8;
    bytes[blocks * 64 - 1] = bits;
    state.set(INITIAL);
    for (let block = 0; block < blocks; block++) {
      const base = block * 64;
      for (let i = 0; i < 16; i++) {
        const j = base + i * 4;
        words[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
      }
      for (let i = 16; i < 64; i++) {
        const w15 = words[i - 15], w2 = words[i - 2];
        const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
        const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
        words[i] = (words[i - 16] + s0 + words[i - 7] + s1) | 0;
      }
      let a = state[0], b = state[1], c = state[2], d = state[3];
      let e = state[4], f = state[5], g = state[6], h = state[7];
      for (let i = 0; i < 64; i++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + words[i]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0;
        d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      state[0] = (state[0] + a) | 0; state[1] = (state[1] + b) | 0;
      state[2] = (state[2] + c) | 0; state[3] = (state[3] + d) | 0;
      state[4] = (state[4] + e) | 0; state[5] = (state[5] + f) | 0;
      state[6] = (state[6] + g) | 0; state[7] = (state[7] + h) | 0;
    }
  }

  function leadingZeroBits(state, difficulty) {
    for (let i = 0; difficulty > 0; i++, difficulty -= 32) {
      const word = state[i] >>> 0;
      if (difficulty >= 32 ? word !== 0 : (word >>> (32 - difficulty)) !== 0) return false;
    }
    return true;
  }

  // Tries nonces start, start + step, ... (at most `count` of them); returns the first that solves the
  // challenge as a string, or null. Workers take interleaved nonces (start = their index, step = their number).
  function search(salt, difficulty, start, step, count) {
    const prefix = salt + ":";
    const bytes = new Uint8Array(prefix.length + 32 + 128);
    for (let i = 0; i < prefix.length; i++) bytes[i] = prefix.charCodeAt(i) & 0xff;
    const words = new Int32Array(64), state = new Int32Array(8);
    for (let n = 0, nonce = start; n < count; n++, nonce += step) {
      const digits = String(nonce);
      let length = prefix.length;
      for (let i = 0; i < digits.length; i++) bytes[length++] = digits.charCodeAt(i);
      sha256(bytes, length, words, state);
      if (leadingZeroBits(state, difficulty)) return digits;
    }
    return null;
  }

  scope.arenaChallengeSearch = search;

  const inWorker = typeof WorkerGlobalScope !== "undefined" && scope instanceof WorkerGlobalScope;
  if (inWorker) {
    // {salt, difficulty, start, step}: search until found, posting {proof}; the page terminates the others.
    scope.onmessage = function (event) {
      const { salt, difficulty, start, step } = event.data;
      const slice = 65536;
      for (let first = start; ; first += slice * step) {
        const proof = search(salt, difficulty, first, step, slice);
        if (proof !== null) {
          scope.postMessage({ proof: proof });
          return;
        }
      }
    };
  }
})(typeof self !== "undefined" ? self : globalThis);
