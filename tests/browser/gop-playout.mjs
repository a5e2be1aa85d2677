// How a browser plays a passed-through camera right after joining: the measurement behind the
// GOP cache's choice of timestamps (src/session/gop.rs). Opens the daemon's page in the
// system's headless Chromium and records every presented frame (requestVideoFrameCallback).
//
//   node gop-playout.mjs <url> [--seconds N] [--chromium PATH]
//
// Prints one JSON line:
//   firstFrameMs   navigation → first presented frame
//   holdMs         median of (expectedDisplayTime − receiveTime) over frames presented 3–5 s
//                  after the first: how long the browser holds a frame it already has, i.e.
//                  how far behind the live edge it plays once the catch-up is over
//   jitterBufferMs the same from getStats (inbound-rtp jitterBufferDelay per emitted frame,
//                  over the same window)
//   frames         frames presented in the whole run
//   perSecond      for each second after the first frame: frames presented (n), their median
//                  hold (ms), and the media time they span (s, from their RTP timestamps)
//
// Never downloads a browser: it drives the Chromium that is already installed.

import { chromium } from "playwright-core";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const seconds = Number(opt("--seconds", "7"));
const executablePath = opt("--chromium", process.env.CAMGATE_CHROMIUM || "/usr/bin/chromium");
if (!url) {
  console.error("usage: node gop-playout.mjs <url> [--seconds N] [--chromium PATH]");
  process.exit(2);
}

function instrument() {
  const cg = (window.__cg = { frames: [], pc: null, stats: [] });
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...a) {
      super(...a);
      cg.pc = this;
    }
  };
  const hook = () => {
    const video = document.querySelector("video");
    if (!video || !video.requestVideoFrameCallback) return;
    const onFrame = (now, m) => {
      cg.frames.push({
        now,
        receiveTime: m.receiveTime ?? null,
        expectedDisplayTime: m.expectedDisplayTime,
        rtpTimestamp: m.rtpTimestamp ?? null,
      });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  document.addEventListener("DOMContentLoaded", hook, { once: true });
  // Jitter-buffer counters every 250 ms.
  setInterval(async () => {
    if (!cg.pc) return;
    const r = await cg.pc.getStats();
    r.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        cg.stats.push({
          t: performance.now(),
          delay: s.jitterBufferDelay ?? 0,
          emitted: s.jitterBufferEmittedCount ?? 0,
        });
      }
    });
  }, 250);
}

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const profile = await mkdtemp(join(tmpdir(), "camgate-gop-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--autoplay-policy=no-user-gesture-required",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
    timeout: 30_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  await page.addInitScript(instrument);
  await page.goto(url);
  await page.waitForTimeout(seconds * 1000);
  const cg = await page.evaluate(() => window.__cg);
  const frames = cg.frames;
  const first = frames[0];
  const window_ = frames.filter(
    (f) => first && f.now >= first.now + 3000 && f.now <= first.now + 5000 && f.receiveTime != null,
  );
  const holds = window_.map((f) => f.expectedDisplayTime - f.receiveTime);
  const inWin = cg.stats.filter((s) => first && s.t >= first.now + 3000 && s.t <= first.now + 5000);
  let jitterBufferMs = null;
  if (inWin.length >= 2) {
    const a = inWin[0];
    const b = inWin[inWin.length - 1];
    if (b.emitted > a.emitted) jitterBufferMs = (1000 * (b.delay - a.delay)) / (b.emitted - a.emitted);
  }
  // Each second after the first frame: frames presented, median hold (ms), and media time
  // advanced (s, from RTP timestamps): a catch-up shows more media time than wall time.
  const perSecond = [];
  for (let i = 0; first && i < seconds - 1; i++) {
    const fs = frames.filter((f) => f.now >= first.now + 1000 * i && f.now < first.now + 1000 * (i + 1));
    const hs = fs.filter((f) => f.receiveTime != null).map((f) => f.expectedDisplayTime - f.receiveTime);
    const ts = fs.filter((f) => f.rtpTimestamp != null).map((f) => f.rtpTimestamp);
    perSecond.push({
      n: fs.length,
      hold: hs.length ? Math.round(median(hs)) : null,
      media: ts.length > 1 ? Math.round(((ts[ts.length - 1] - ts[0]) >>> 0) / 900) / 100 : null,
    });
  }
  console.log(
    JSON.stringify({
      ok: !!first,
      firstFrameMs: first ? Math.round(first.now) : null,
      holdMs: holds.length ? Math.round(median(holds)) : null,
      jitterBufferMs: jitterBufferMs == null ? null : Math.round(jitterBufferMs),
      frames: frames.length,
      perSecond,
    }),
  );
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  await rm(profile, { recursive: true, force: true }).catch(() => {});
}
