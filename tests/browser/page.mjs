// Watches the camgate page in the system's headless Chromium, as a person would: is the video
// actually playing, and does the header say what it plays?
//
//   node page.mjs <url> [--screenshot PATH] [--reconnect] [--size WxH] [--timeout-ms N]
//                       [--reconnect-timeout-ms N] [--chromium PATH]
//
// --size is the resolution the daemon sends (default 640x480, the test daemon's).
//
// Prints one JSON line and exits 0 when the page plays, or {"ok":false,"error":...} and exits 1.
// With --reconnect it first prints `PLAYING {json}`, then waits for a line `RESTARTED` on stdin
// (the caller has stopped the daemon and started a new one on the same port) and checks that the
// page plays again on a new connection. Every wait is bounded; nothing polls without a deadline.
//
// Never downloads a browser: it drives the Chromium that is already installed.

import { chromium } from "playwright-core";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const USAGE =
  "usage: node page.mjs <url> [--screenshot PATH] [--reconnect] [--size WxH] [--timeout-ms N] " +
  "[--reconnect-timeout-ms N] [--chromium PATH]";

function parseArgs(argv) {
  const o = {
    url: null,
    screenshot: null,
    reconnect: false,
    size: { width: 640, height: 480 },
    timeoutMs: 10_000,
    reconnectTimeoutMs: 15_000,
    // How long to wait for the caller's RESTARTED: it has to stop one daemon and start another.
    restartWaitMs: 60_000,
    chromium: process.env.CAMGATE_CHROMIUM || "/usr/bin/chromium",
  };
  const number = (flag, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--screenshot") o.screenshot = value();
    else if (a === "--reconnect") o.reconnect = true;
    else if (a === "--size") {
      const m = /^(\d+)x(\d+)$/.exec(value());
      if (!m) throw new Error(`--size wants WxH, e.g. 640x480`);
      o.size = { width: Number(m[1]), height: Number(m[2]) };
    } else if (a === "--timeout-ms") o.timeoutMs = number(a, value());
    else if (a === "--reconnect-timeout-ms") o.reconnectTimeoutMs = number(a, value());
    else if (a === "--chromium") o.chromium = value();
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}\n${USAGE}`);
    else if (o.url === null) o.url = a;
    else throw new Error(`unexpected argument ${a}\n${USAGE}`);
  }
  if (!o.url) throw new Error(USAGE);
  return o;
}

// Chromium switches: headless, no sandbox (we run as root in CI), no GPU, and nothing that talks
// to the outside world on its own. Playwright puts its own --disable-features first and Chromium
// keeps only the last one, so ours repeats the network-related ones from Playwright's list.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  // Plain IP host candidates instead of mDNS names: no multicast, and the daemon can use them.
  "--disable-features=" +
    [
      "WebRtcHideLocalIpsWithMdns",
      "OptimizationHints",
      "NetworkTimeServiceQuerying",
      "AimEnabled",
      "PreconnectToSearch",
      "MediaRouter",
      "DestroyProfileOnBrowserClose",
      "HttpsUpgrades",
      "HttpsFirstBalancedModeAutoEnable",
    ].join(","),
];

// Runs in the page before its own script: counts presented video frames (the user-visible proof
// of decoding) and records every text #state shows, with the time it showed it.
function instrument() {
  const cg = (window.__cg = { frames: 0, firstFrameAt: null, states: [], streams: 0 });
  const hook = () => {
    const video = document.querySelector("video");
    const state = document.getElementById("state");
    if (!video || !state) return;
    const onFrame = (now) => {
      cg.frames++;
      if (cg.firstFrameAt === null) cg.firstFrameAt = now;
      video.requestVideoFrameCallback(onFrame);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
    const record = () => cg.states.push({ t: Math.round(performance.now()), s: state.textContent });
    record();
    new MutationObserver(record).observe(state, { childList: true, characterData: true, subtree: true });
  };
  document.addEventListener("DOMContentLoaded", hook, { once: true });
}

// One look at what the user sees. `stream` numbers each MediaStream the video has shown, so a
// sample from a new connection is never compared with one from the old.
function look() {
  const cg = window.__cg;
  const video = document.querySelector("video");
  const text = (id) => (document.getElementById(id) || {}).textContent || "";
  let stream = 0;
  if (video && video.srcObject) {
    if (!video.srcObject.__cgStream) video.srcObject.__cgStream = ++cg.streams;
    stream = video.srcObject.__cgStream;
  }
  const q = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  return {
    t: performance.now(),
    stream,
    paused: video ? video.paused : true,
    readyState: video ? video.readyState : 0,
    currentTime: video ? video.currentTime : 0,
    width: video ? video.videoWidth : 0,
    height: video ? video.videoHeight : 0,
    presented: cg.frames,
    totalVideoFrames: q ? q.totalVideoFrames : 0,
    firstFrameAt: cg.firstFrameAt,
    state: text("state"),
    res: text("res"),
    fps: text("fps"),
    kbps: text("kbps"),
    decoded: text("decoded"),
    msg: text("msg"),
  };
}

/// Why `now` is not yet "playing", compared with `before` (a sample at least `spanMs` older from
/// the same stream); null when it is.
function notPlaying(before, now, size) {
  if (!now.stream) return "the video has no stream";
  if (now.paused) return "the video is paused";
  if (now.readyState < 2) return `video readyState ${now.readyState} < 2 (no current frame)`;
  if (!before) return "not watched long enough yet";
  if (!(now.currentTime > before.currentTime))
    return `currentTime stuck at ${now.currentTime.toFixed(3)}`;
  const framesGrew =
    now.presented > before.presented || now.totalVideoFrames > before.totalVideoFrames;
  if (!framesGrew) return `no new frames (presented ${now.presented}, total ${now.totalVideoFrames})`;
  if (now.state !== "connected") return `#state says "${now.state}"`;
  const res = `${size.width}×${size.height}`;
  if (now.res !== res) return `#res says "${now.res}" (want ${res})`;
  if (now.width !== size.width || now.height !== size.height)
    return `the video is ${now.width}x${now.height} (want ${size.width}x${size.height})`;
  if (!(Number(now.decoded) > 0)) return `#decoded says "${now.decoded}"`;
  if (!(Number(now.fps) > 0)) return `#fps says "${now.fps}"`;
  if (!/^\d+ kbit\/s$/.test(now.kbps) || parseInt(now.kbps, 10) <= 0)
    return `#kbps says "${now.kbps}"`;
  return null;
}

const POLL_MS = 100;
const SPAN_MS = 500; // how far apart the two samples compared for "advancing" are

/// Polls the page until it plays on a stream other than `notStream`, or `deadline` (ms since the
/// epoch) passes. Returns the last sample; throws with the last reason on timeout.
async function waitPlaying(page, size, deadline, notStream = 0) {
  const history = [];
  let reason = "never looked";
  for (;;) {
    const now = await page.evaluate(look);
    if (now.stream === notStream) reason = "the video still shows the old stream";
    else {
      while (history.length && history[0].stream !== now.stream) history.shift();
      history.push(now);
      // The newest sample that is at least SPAN_MS older than this one.
      let before = null;
      for (const h of history) if (now.t - h.t >= SPAN_MS) before = h;
      reason = notPlaying(before, now, size);
      if (reason === null) return now;
      while (history.length > 2 && now.t - history[1].t >= SPAN_MS) history.shift();
    }
    if (Date.now() >= deadline) {
      const e = new Error(`not playing: ${reason}`);
      e.sample = now;
      throw e;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/// Resolves with the first line on stdin equal to `word`; rejects on EOF or after `ms`.
function waitForLine(word, ms) {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    const done = (f) => {
      clearTimeout(timer);
      rl.removeAllListeners();
      rl.close();
      f();
    };
    const timer = setTimeout(
      () => done(() => reject(new Error(`no ${word} on stdin within ${ms} ms`))),
      ms,
    );
    rl.on("line", (l) => {
      if (l.trim() === word) done(resolve);
    });
    rl.on("close", () => done(() => reject(new Error(`stdin closed before ${word}`))));
  });
}

function summary(s) {
  return {
    frames: Math.max(s.presented, s.totalVideoFrames),
    resolution: `${s.width}x${s.height}`,
    header: { state: s.state, res: s.res, fps: Number(s.fps), kbps: s.kbps, decoded: Number(s.decoded) },
  };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const profile = await mkdtemp(join(tmpdir(), "camgate-chromium-"));
  let context = null;
  const pageErrors = [];
  const console_ = [];
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: o.chromium,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1024, height: 640 },
      timeout: 30_000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(String(e.message || e)));
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") console_.push(`${m.type()}: ${m.text()}`);
    });
    await page.addInitScript(instrument);

    const opened = Date.now();
    await page.goto(o.url, { waitUntil: "domcontentloaded", timeout: o.timeoutMs });
    const playing = await waitPlaying(page, o.size, opened + o.timeoutMs);
    const first = {
      ok: true,
      firstFrameMs: Math.round(playing.firstFrameAt ?? playing.t),
      playingMs: Math.round(playing.t),
      ...summary(playing),
    };

    let result = first;
    if (o.reconnect) {
      process.stdout.write(`PLAYING ${JSON.stringify(first)}\n`);
      await waitForLine("RESTARTED", o.restartWaitMs);
      const restarted = await page.evaluate(() => performance.now());
      const again = await waitPlaying(page, o.size, Date.now() + o.reconnectTimeoutMs, playing.stream);
      const states = await page.evaluate(() => window.__cg.states);
      result = {
        ...first,
        reconnectMs: Math.round(again.t - restarted),
        afterRestart: summary(again),
        // What #state showed from the moment the page was playing until it played again.
        states: states.filter((x) => x.t >= playing.t - 1).map((x) => `${x.s}@${x.t}`),
      };
    }
    if (o.screenshot) await page.screenshot({ path: o.screenshot, timeout: 10_000 });
    if (pageErrors.length) throw new Error(`uncaught errors in the page: ${pageErrors.join(" | ")}`);
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } catch (e) {
    const out = { ok: false, error: String(e.message || e) };
    if (e.sample) out.last = e.sample;
    if (pageErrors.length) out.pageErrors = pageErrors;
    if (console_.length) out.console = console_.slice(-20);
    process.stdout.write(JSON.stringify(out) + "\n");
    process.stderr.write(`page.mjs: ${out.error}\n`);
    return 1;
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
}

// A last resort against a wedged browser: never outlive every wait above put together.
const watchdog = setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, error: "page.mjs watchdog: gave up after 150 s" }) + "\n");
  process.exit(1);
}, 150_000);
watchdog.unref();

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e.message || e) }) + "\n");
    process.stderr.write(`page.mjs: ${e.message || e}\n`);
    process.exit(1);
  },
);
