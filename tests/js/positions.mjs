// Runs position bookkeeping steps (the format of positions_cases.json) against trionos.js's Positions.
// Imported by positions.test.mjs; run as a script by tests/test_browser_positions.py, which feeds it
// sequences on stdin (a JSON list of step lists) and compares what it prints with trionos.Positions.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Positions } from "../../trionos/static/trionos.js";

const ROOM = "r";
const pair = (p) => (p === null ? null : [p.epoch, p.offset]);

/**
 * Run `steps` on a fresh Positions; returns what each step observed (null for welcome, own, forget).
 * A step's expectation, when it has one, is left out: "receive" and "receive_run" observe whether
 * each offset was new, "due" and "since" the position as [epoch, offset] or null.
 */
export function run(steps) {
  const positions = new Positions();
  return steps.map((step) => {
    const [op, ...args] = step;
    switch (op) {
      case "welcome":
        positions.welcome(ROOM, { epoch: args[0], offset: args[1] }, args[2]);
        return null;
      case "own":
        positions.own(ROOM, args[0]);
        return null;
      case "forget":
        positions.forget(ROOM);
        return null;
      case "receive":
        return positions.receive(ROOM, args[0], args[1]);
      case "receive_run": {
        const seen = [];
        for (let offset = args[0]; offset <= args[1]; offset++) seen.push(positions.receive(ROOM, offset, args[2]));
        return seen;
      }
      case "due":
        return pair(positions.recoveryDue(ROOM));
      case "since":
        return pair(positions.since(ROOM));
      default:
        throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const sequences = JSON.parse(readFileSync(0, "utf8"));
  process.stdout.write(JSON.stringify(sequences.map(run)));
}
