// A Node client driven over stdin/stdout by another language's test (the three-language test in
// clients/python/tests/test_three_languages.py). One JSON command per stdin line
// ({id, cmd, ...args}); one JSON line out per reply ({id, ok, result | error}) and per event
// ({event}). Not part of the package.
'use strict';
const readline = require('node:readline');
const { connect } = require('..');

let client = null;
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function pump(stream) {
  for await (const ev of stream) out({ event: ev });
  out({ closed: client && client.closedReason });
}

const commands = {
  async connect({ socket }) {
    client = await connect(socket, { client: 'peerix-node-agent' });
    pump(client.events);
    return { machineId: client.machineId };
  },
  join: ({ room }) => client.join(room),
  leave: ({ room, all }) => client.leave(room, { all }),
  subscribe: async ({ events, room }) => (await client.subscribe(events, { room }), client.lastSubscribe),
  open: ({ room, label }) => client.open(room, label),
  send: ({ room, label, text }) => client.sendText(room, text, { label }),
  status: () => client.status(),
};

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const { id, cmd, ...args } = JSON.parse(line);
  try {
    out({ id, ok: true, result: await commands[cmd](args) });
  } catch (e) {
    out({ id, ok: false, error: { code: e.code, message: e.message } });
  }
}).on('close', () => {
  if (client) client.close();
});
