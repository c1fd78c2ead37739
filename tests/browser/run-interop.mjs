#!/usr/bin/env node
// Runs one interop scenario in Debian's Chromium: serves page/ on 127.0.0.1 (a secure context),
// loads peerix-lite.js, joins a Peerix room over NATS-over-websocket and runs the scenario.
//
// Output (stdout): one JSON object per line: progress events {"ev": ...}, then the final
// {"result": "ok" | "error", ...}. Exit code 0 on success, 1 on failure, 2 on a setup problem.
//
// Usage: node run-interop.mjs --ws ws://127.0.0.1:PORT --room ROOM [--steps connect,chat,big]
//          [--no-mdns] [--wait-stdin] [--timeout-ms 30000] [--big-size BYTES]
//          [--role polite|impolite --against OTHER_PEER_ID]
// Every option can also be given as an environment variable: PEERIX_WS, PEERIX_ROOM,
// PEERIX_STEPS, PEERIX_NO_MDNS=1, PEERIX_WAIT_STDIN=1, PEERIX_TIMEOUT_MS, PEERIX_BIG_SIZE,
// CHROMIUM_PATH (default /usr/bin/chromium).
import http from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const env = process.env;
  const o = {
    ws: env.PEERIX_WS,
    room: env.PEERIX_ROOM ?? 'interop-room',
    steps: (env.PEERIX_STEPS ?? 'connect').split(','),
    noMdns: env.PEERIX_NO_MDNS === '1',
    waitStdin: env.PEERIX_WAIT_STDIN === '1',
    timeoutMs: Number(env.PEERIX_TIMEOUT_MS ?? 30000),
    bigSize: env.PEERIX_BIG_SIZE ? Number(env.PEERIX_BIG_SIZE) : undefined,
    chromium: env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    text: env.PEERIX_TEXT,
    role: env.PEERIX_ROLE,
    against: env.PEERIX_AGAINST,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === '--ws') o.ws = next();
    else if (a === '--room') o.room = next();
    else if (a === '--steps' || a === '--scenario') o.steps = next().split(',');
    else if (a === '--no-mdns') o.noMdns = true;
    else if (a === '--wait-stdin') o.waitStdin = true;
    else if (a === '--timeout-ms') o.timeoutMs = Number(next());
    else if (a === '--big-size') o.bigSize = Number(next());
    else if (a === '--chromium') o.chromium = next();
    else if (a === '--text') o.text = next();
    else if (a === '--role') o.role = next();
    else if (a === '--against') o.against = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.ws) throw new Error('--ws (NATS websocket URL) is required');
  return o;
}

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const FILES = {
  '/': ['page/index.html', 'text/html'],
  '/favicon.ico': null,
  '/index.html': ['page/index.html', 'text/html'],
  '/peerix-lite.js': ['page/peerix-lite.js', 'text/javascript'],
  '/scenarios.js': ['page/scenarios.js', 'text/javascript'],
  '/nats.js': ['node_modules/nats.ws/esm/nats.js', 'text/javascript'],
};

function serve() {
  const server = http.createServer(async (req, res) => {
    const entry = FILES[new URL(req.url, 'http://x').pathname];
    if (entry === null) {
      res.writeHead(204).end();
      return;
    }
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(path.join(here, entry[0]));
      res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' }).end(body);
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function stdinEnd(maxMs) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, maxMs);
    process.stdin.on('end', () => { clearTimeout(t); resolve(); });
    process.stdin.on('error', () => { clearTimeout(t); resolve(); });
    process.stdin.resume();
  });
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv);
  } catch (err) {
    out({ result: 'error', setup: true, error: String(err.message) });
    return 2;
  }
  if (!existsSync(opts.chromium)) {
    out({ result: 'error', setup: true, error: `chromium not found at ${opts.chromium} (apt-get install -y chromium)` });
    return 2;
  }
  if (!existsSync(path.join(here, FILES['/nats.js'][0]))) {
    out({ result: 'error', setup: true, error: 'node_modules missing: run `npm install` in tests/browser' });
    return 2;
  }
  const { chromium } = await import('playwright-core');
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'peerix-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic',
  ];
  if (opts.noMdns) args.push('--disable-features=WebRtcHideLocalIpsWithMdns');
  let context;
  let code = 1;
  const t0 = Date.now();
  try {
    // launchPersistentContext = our own fresh --user-data-dir (Playwright refuses it in args).
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: opts.chromium, headless: true, args, timeout: 30000,
    });
    const page = context.pages()[0] ?? await context.newPage();
    page.on('console', (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.stack ?? e}\n`));
    const errors = [];
    await page.exposeFunction('__report', (line) => {
      const obj = JSON.parse(line);
      if (obj.ev === 'error') errors.push(obj);
      out(obj);
    });
    await page.goto(`${origin}/index.html`);
    await page.waitForFunction(() => window.pageReady === true, null, { timeout: 10000 });
    out({ ev: 'harness:page-ready', browser: context.browser()?.version() ?? null, t: Date.now() - t0 });
    try {
      const result = await page.evaluate((o) => window.scenarios.run(o), {
        ws: opts.ws, room: opts.room, steps: opts.steps, timeoutMs: opts.timeoutMs, bigSize: opts.bigSize,
        text: opts.text, role: opts.role, against: opts.against,
      });
      result.errors = errors;
      result.wall_ms = Date.now() - t0;
      result.mdns_hiding = !opts.noMdns;
      out({ result: 'ok', ...result });
      code = 0;
    } catch (err) {
      out({ result: 'error', error: String(err.message ?? err).split('\n')[0], errors });
      code = 1;
    }
    if (opts.waitStdin) await stdinEnd(120000);
    await page.evaluate(() => window.scenarios.leave()).catch(() => {});
  } catch (err) {
    out({ result: 'error', setup: true, error: String(err.message ?? err) });
    code = 2;
  } finally {
    await context?.close().catch(() => {});
    server.close();
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
  return code;
}

main().then((code) => process.exit(code), (err) => {
  out({ result: 'error', error: String(err?.stack ?? err) });
  process.exit(1);
});
