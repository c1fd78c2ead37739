// Real peerixd processes for the Node client's tests. They need the workspace binaries
// (`cargo build --workspace --bins`); PEERIX_BIN_DIR overrides the directory. A missing binary
// fails the test (never skips), so CI cannot pass vacuously.
'use strict';
const assert = require('node:assert');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { spawn } = require('node:child_process');

const BIN = process.env.PEERIX_BIN_DIR || path.resolve(__dirname, '../../../target/debug');

/** Daemons sharing one `local` signaling directory; `stop()` kills them and removes the directory. */
class Daemons {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peerix-node-'));
    this.procs = [];
  }
  async start(name) {
    const exe = path.join(BIN, 'peerixd');
    assert.ok(fs.existsSync(exe), `${exe} missing: run cargo build --workspace --bins first`);
    const sock = path.join(this.dir, `${name}.sock`);
    const proc = spawn(exe, ['--socket', sock, '--local-dir', path.join(this.dir, 'local'), '--no-system-config'], {
      stdio: ['ignore', 'ignore', fs.openSync(path.join(this.dir, `${name}.log`), 'w')],
    });
    this.procs.push(proc);
    const deadline = Date.now() + 20000;
    while (!fs.existsSync(sock)) {
      assert.ok(proc.exitCode === null, fs.readFileSync(path.join(this.dir, `${name}.log`), 'utf8'));
      assert.ok(Date.now() < deadline, 'daemon did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    return sock;
  }
  stop() {
    for (const p of this.procs) p.kill('SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The next event called `name` (and matching `where`), skipping others. */
async function nextEvent(stream, name, ms = 15000, where = () => true) {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${name}`);
    const ev = await stream.nextEvent(left).catch((e) => {
      throw new Error(`timed out waiting for ${name} (${e.message})`);
    });
    if (ev === null) throw new Error(`stream ended before ${name}`);
    if (ev.name === name && where(ev)) return ev;
  }
}

module.exports = { Daemons, nextEvent };
