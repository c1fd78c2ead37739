#!/usr/bin/env node
// Command-driven browser peer for the interop tests: headless Debian Chromium runs the REAL
// Peerix 0.7.0 library (../shared/peerix-0.7.0/peerix.esm.js relative to the repository root,
// served as is, never copied) with the real NATS client (@nats-io/nats-core over the
// nats-server websocket port). page/app.js, bundled with esbuild at start, only orchestrates.
//
// Protocol (one JSON object per line):
//   stdout  {"ev": "ready", ...} once the page is loaded, then
//           {"ev": NAME, "t": ms, "peer": ID, ...} for every Peerix event and page-side event,
//           {"reply": ID, "ok": true, ...result} or {"reply": ID, "ok": false, "error": TEXT}
//           for every command, and {"ev": "setup-error", "error": TEXT} when it cannot start.
//   stdin   {"id": ID, "cmd": NAME, ...args}; commands run concurrently in the page
//           (see `commands` in page/app.js). {"cmd": "quit"} or the end of stdin leaves the room
//           and exits.
// Exit code 0 after quit, 2 on a setup problem.
//
// Options: --chromium PATH (default $CHROMIUM_PATH or /usr/bin/chromium), --no-mdns (disable
// Chromium's mDNS host-candidate hiding), --media (fake camera for getUserMedia; note that
// --use-fake-ui-for-media-stream also turns mDNS hiding off), --peerix DIR (default
// $PEERIX_LIB_DIR or <repo>/../shared/peerix-0.7.0).
import http from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function parseArgs(argv) {
  const env = process.env;
  const o = {
    chromium: env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    noMdns: false,
    media: false,
    peerix: env.PEERIX_LIB_DIR ?? path.resolve(repoRoot, '..', 'shared', 'peerix-0.7.0'),
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--chromium') o.chromium = argv[++i];
    else if (a === '--no-mdns') o.noMdns = true;
    else if (a === '--media') o.media = true;
    else if (a === '--peerix') o.peerix = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

/** Bundles page/app.js with @nats-io/nats-core; Peerix stays an external module served as is. */
async function bundle() {
  const esbuild = await import('esbuild');
  const res = await esbuild.build({
    entryPoints: [path.join(here, 'page', 'app.js')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'chrome120',
    external: ['/peerix/*'],
    write: false,
    logLevel: 'silent',
  });
  return res.outputFiles[0].contents;
}

function serve(files) {
  const server = http.createServer((req, res) => {
    const entry = files[new URL(req.url, 'http://x').pathname];
    if (entry === null) {
      res.writeHead(204).end();
      return;
    }
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': entry[1], 'cache-control': 'no-store' }).end(entry[0]);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function setupError(error) {
  out({ ev: 'setup-error', error });
  return 2;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv);
  } catch (err) {
    return setupError(String(err.message));
  }
  if (!existsSync(opts.chromium)) {
    return setupError(`chromium not found at ${opts.chromium} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  }
  const peerixFile = path.join(opts.peerix, 'peerix.esm.js');
  if (!existsSync(peerixFile)) {
    return setupError(`the real Peerix library is missing: ${peerixFile} not found (expected shared/peerix-0.7.0 next to the repository, or set PEERIX_LIB_DIR)`);
  }
  for (const dep of ['playwright-core', 'esbuild', '@nats-io/nats-core']) {
    if (!existsSync(path.join(here, 'node_modules', dep, 'package.json'))) {
      return setupError(`node_modules/${dep} missing: run \`PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install\` in tests/browser`);
    }
  }
  const peerixJs = readFileSync(peerixFile);
  const peerixSha = createHash('sha256').update(peerixJs).digest('hex');
  let appJs;
  try {
    appJs = await bundle();
  } catch (err) {
    return setupError(`bundling page/app.js failed: ${err.message}`);
  }
  const indexHtml = await readFile(path.join(here, 'page', 'index.html'));
  const server = await serve({
    '/': [indexHtml, 'text/html'],
    '/index.html': [indexHtml, 'text/html'],
    '/favicon.ico': null,
    '/app.js': [appJs, 'text/javascript'],
    '/peerix/peerix.esm.js': [peerixJs, 'text/javascript'],
  });
  const origin = `http://127.0.0.1:${server.address().port}`;
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'peerix-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic',
  ];
  if (opts.noMdns) args.push('--disable-features=WebRtcHideLocalIpsWithMdns');
  if (opts.media) args.push('--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream');
  let context;
  let code = 0;
  const t0 = Date.now();
  try {
    const { chromium } = await import('playwright-core');
    // launchPersistentContext = our own fresh --user-data-dir (Playwright refuses it in args).
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: opts.chromium, headless: true, args, timeout: 30000,
    });
    const page = context.pages()[0] ?? await context.newPage();
    page.on('console', (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.stack ?? e}\n`));
    await page.exposeFunction('__report', (line) => out(JSON.parse(line)));
    await page.goto(`${origin}/index.html`);
    await page.waitForFunction(() => window.pageReady === true, null, { timeout: 10000 });
    out({
      ev: 'ready', browser: context.browser()?.version() ?? null, peerix: peerixFile, peerix_sha256: peerixSha,
      mdns_hiding: !opts.noMdns && !opts.media, media: opts.media, t: Date.now() - t0,
    });

    const pending = new Set();
    const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of rl) {
      if (!line.trim()) continue;
      let c;
      try {
        c = JSON.parse(line);
      } catch (err) {
        out({ ev: 'harness:bad-command', line, error: String(err.message) });
        continue;
      }
      if (c.cmd === 'quit') {
        await Promise.allSettled(pending);
        out({ reply: c.id ?? null, ok: true });
        break;
      }
      const p = page.evaluate((cmd) => window.harness.exec(cmd), c).then(
        (result) => out({ reply: c.id ?? null, ok: true, ...(result ?? {}) }),
        (err) => out({ reply: c.id ?? null, ok: false, error: String(err?.message ?? err).split('\n')[0] }),
      );
      pending.add(p);
      p.finally(() => pending.delete(p));
    }
    await page.evaluate(() => window.harness.exec({ cmd: 'leave' })).catch(() => {});
  } catch (err) {
    code = setupError(String(err?.message ?? err));
  } finally {
    await context?.close().catch(() => {});
    server.close();
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
  return code;
}

main().then((code) => process.exit(code), (err) => {
  out({ ev: 'setup-error', error: String(err?.stack ?? err) });
  process.exit(2);
});
