// trionos.js's Positions: the cases shared with the Python client's tests (positions_cases.json), and
// what only the browser's copy has (recent(), gapOpen(), toJSON() and storage).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { MAX_AHEAD, Positions } from "../../trionos/static/trionos.js";
import { run } from "./positions.mjs";

const shared = JSON.parse(readFileSync(new URL("./positions_cases.json", import.meta.url), "utf8"));

/** What a step expects, in the form run() reports it. */
function expected(step) {
  switch (step[0]) {
    case "receive":
      return step[3];
    case "receive_run":
      return Array.from({ length: step[2] - step[1] + 1 }, () => step[4]);
    case "due":
    case "since":
      return step[1];
    default:
      return null;
  }
}

test("MAX_AHEAD is the Python client's bound", () => {
  assert.equal(MAX_AHEAD, shared.max_ahead);
});

for (const { name, steps } of shared.cases) {
  test(`shared case: ${name}`, () => {
    const got = run(steps);
    steps.forEach((step, i) => assert.deepEqual(got[i], expected(step), `step ${i}: ${JSON.stringify(step)}`));
  });
}

test("recent(): the last N follow the welcome, their holes are no gap, live traffic continues the run", () => {
  const p = new Positions();
  p.recent("r", { epoch: "e", offset: 50 }, 10);
  assert.deepEqual(p.since("r"), { epoch: "e", offset: 40 });
  for (const offset of [41, 42, 44, 45]) assert.equal(p.receive("r", offset, "e"), true); // 43 was our own
  assert.equal(p.gapOpen("r"), false);
  assert.equal(p.receive("r", 51, "e"), true);
  assert.deepEqual(p.since("r"), { epoch: "e", offset: 51 });
  assert.equal(p.recoveryDue("r"), null);
  p.recent("r", { epoch: "e", offset: 3 }, 10);
  assert.deepEqual(p.since("r"), { epoch: "e", offset: 0 }, "never below 0");
});

test("gapOpen() says a recovery is due without using it up; nextSeen() what arrived after the hole", () => {
  const p = new Positions();
  p.welcome("r", { epoch: "e", offset: 0 }, null);
  p.receive("r", 2, "e");
  assert.equal(p.gapOpen("r"), true);
  assert.equal(p.gapOpen("r"), true);
  assert.equal(p.nextSeen("r"), 2);
  assert.deepEqual(p.recoveryDue("r"), { epoch: "e", offset: 0 });
  assert.equal(p.gapOpen("r"), false);
  p.receive("r", 1, "e");
  assert.equal(p.nextSeen("r"), null, "the gap is filled");
  assert.equal(p.gapOpen("other"), false);
});

test("toJSON() keeps each room's unbroken position, and a new Positions takes it back, ignoring junk", () => {
  const p = new Positions();
  p.welcome("r", { epoch: "e", offset: 3 }, null);
  p.receive("r", 4, "e");
  p.receive("r", 6, "e"); // beyond a gap: not part of what a reload may skip
  p.welcome("s", { epoch: "f", offset: 9 }, null);
  const saved = JSON.parse(JSON.stringify(p));
  assert.deepEqual(saved, { r: { epoch: "e", offset: 4 }, s: { epoch: "f", offset: 9 } });
  const back = new Positions({ ...saved, bad: { epoch: 1, offset: 2 }, worse: null, neg: { epoch: "e", offset: -1 } });
  assert.deepEqual(back.toJSON(), saved);
  assert.deepEqual(new Positions(null).toJSON(), {});
  const copy = back.since("r");
  copy.offset = 99;
  assert.deepEqual(back.since("r"), { epoch: "e", offset: 4 }, "since() returns a copy");
});

test("every export of trionos.js is declared in trionos.d.ts", async () => {
  const module = await import("../../trionos/static/trionos.js");
  const types = readFileSync(new URL("../../trionos/static/trionos.d.ts", import.meta.url), "utf8");
  const declared = new Set([...types.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]));
  assert.deepEqual(Object.keys(module).sort(), [...declared].sort());
});
