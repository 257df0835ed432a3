// The folding regions of src/folding.ts, from its compiled out/folding.js.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createRequire } from "node:module";

const { foldingRegions } = createRequire(import.meta.url)("../out/folding.js");

test("blocks, nested blocks, maps and lists fold from their opening line", () => {
  const text = [
    'job "a" {', //           0
    "  retry {", //           1
    "    attempts = 3", //    2
    "  }", //                 3
    "  env = {", //           4
    '    A = "1"', //         5
    "  }", //                 6
    "  after = [", //         7
    "    job.b,", //          8
    "  ]", //                 9
    "}", //                   10
  ].join("\n");
  assert.deepEqual(foldingRegions(text), [
    { start: 0, end: 9, comment: false },
    { start: 1, end: 2, comment: false },
    { start: 4, end: 5, comment: false },
    { start: 7, end: 8, comment: false },
  ]);
});

test("braces in strings and comments do not count; block comments fold", () => {
  const text = [
    'job "a" { # {', //                   0
    '  description = "} \\" {"', //       1
    "  // }", //                          2
    "  /* {", //                          3
    "   } */", //                         4
    "  run = \"x:y\"", //                 5
    "}", //                               6
  ].join("\n");
  assert.deepEqual(foldingRegions(text), [
    { start: 0, end: 5, comment: false },
    { start: 3, end: 4, comment: true },
  ]);
});

test("one-line blocks, unclosed and unmatched brackets fold nothing", () => {
  assert.deepEqual(foldingRegions('pool "db" { slots = 4 }\n}\njob "x" {\n  run = "a:b"'), []);
});
