// Parses a cellos event log with the CloudEvents JavaScript SDK (strict mode: every attribute
// validated), and writes each event back out as the SDK serialises it.
// usage: node parse_log.js LOG OUT      prints {"events": N, "ids": [...], "types": {...}}
// Exit 1 naming the first line the SDK refuses.
'use strict';
const fs = require('fs');
const { CloudEvent } = require('cloudevents');

const [logPath, outPath] = process.argv.slice(2);
const lines = fs.readFileSync(logPath, 'utf8').split('\n');
if (lines[lines.length - 1] === '') lines.pop();
const out = [];
const ids = [];
const types = {};
lines.forEach((line, index) => {
  try {
    const event = new CloudEvent(JSON.parse(line), true);
    event.validate();
    for (const name of ['sequence', 'cellosprev', 'dssematerial']) {
      if (typeof event[name] !== 'string' || event[name].length === 0) {
        throw new Error(`extension ${name} missing`);
      }
    }
    ids.push(event.id);
    types[event.type] = (types[event.type] || 0) + 1;
    out.push(JSON.stringify(event.toJSON()));
  } catch (error) {
    console.error(`line ${index + 1}: ${error.message}`);
    process.exit(1);
  }
});
fs.writeFileSync(outPath, out.map((l) => l + '\n').join(''));
console.log(JSON.stringify({ events: out.length, ids, types }));
