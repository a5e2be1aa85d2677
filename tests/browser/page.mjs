// Watches the camgate page in the system's headless Chromium, as a person would: is the video
// actually playing, does the header say what it plays, does it play the camera's sound, and
// does push-to-talk send the microphone?
//
//   node page.mjs <url> [--screenshot PATH] [--reconnect] [--audio] [--talk] [--deny-mic]
//                       [--hold-ms N] [--size WxH] [--timeout-ms N] [--reconnect-timeout-ms N]
//                       [--audio-timeout-ms N] [--chromium PATH]
//
// --size is the resolution the daemon sends (default 640x480, the test daemon's).
//
// Prints `PLAYING {json}` once the video plays, then one JSON line at the end, and exits 0 when
// every check passed, or prints {"ok":false,"error":...} and exits 1. Every wait is bounded;
// nothing polls without a deadline.
//
// --reconnect: after PLAYING, waits for a line `RESTARTED` on stdin (the caller has stopped the
//   daemon and started a new one on the same port) and checks that the page plays again on a new
//   connection.
// --audio: checks that the video starts muted, clicks Unmute, and measures what the browser
//   receives and plays: an inbound-rtp of kind audio whose packets and samples grow and whose
//   energy is above silence (Chromium measures it after the element's volume, so a muted video
//   counts as silence). These figures need the daemon to send audio; when they do not come
//   the run still reports everything else and ends with ok:false and `audio.reason`.
// --talk: Chromium gets a fake microphone (a beep) and grants it. Holds "Hold to talk" with the
//   mouse and checks that the page sends it (outbound-rtp audio grows, the mic is not silent),
//   prints `TALKING {json}`, keeps holding until a line `RELEASE` on stdin (or for --hold-ms),
//   releases, checks that sending stops and the video still plays, prints `RELEASED {json}`
//   and waits for a line `DONE` (or ends at once with --hold-ms) before the final line: the
//   caller can look at the daemon while this viewer is still connected.
// --deny-mic (with --talk): the microphone permission is refused. Pressing the button must
//   show the page's microphone message, send nothing, and leave the video playing.
// --login TOKEN: the daemon wants a token. The page must show its token form; a wrong token
//   is typed first and must be refused with the page's message, then TOKEN is typed and the
//   page must play. The report carries `login` (what the page said at each step).
// A URL ending in #token=... must log straight in and leave no token in the address bar: the
//   report carries `finalUrl`.
//
// Never downloads a browser: it drives the Chromium that is already installed.

import { chromium } from "playwright-core";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const USAGE =
  "usage: node page.mjs <url> [--screenshot PATH] [--reconnect] [--audio] [--talk] [--deny-mic] " +
  "[--hold-ms N] [--size WxH] [--timeout-ms N] [--reconnect-timeout-ms N] [--audio-timeout-ms N] " +
  "[--chromium PATH]";

function parseArgs(argv) {
  const o = {
    url: null,
    screenshot: null,
    reconnect: false,
    audio: false,
    talk: false,
    denyMic: false,
    login: null,
    holdMs: null,
    // How long to wait for sound after Unmute, and for the talk button's effects.
    audioTimeoutMs: 10_000,
    // How long to wait for the caller's RELEASE / DONE.
    callerWaitMs: 30_000,
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
    else if (a === "--audio") o.audio = true;
    else if (a === "--talk") o.talk = true;
    else if (a === "--deny-mic") o.denyMic = true;
    else if (a === "--login") o.login = value();
    else if (a === "--hold-ms") o.holdMs = number(a, value());
    else if (a === "--audio-timeout-ms") o.audioTimeoutMs = number(a, value());
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
  if (o.denyMic && !o.talk) throw new Error("--deny-mic goes with --talk");
  if (o.reconnect && o.talk) throw new Error("--reconnect and --talk both use stdin: one at a time");
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
// of decoding), records every text #state shows, with the time it showed it, and keeps the
// page's newest RTCPeerConnection in __cg.pc so the test can read its stats (the page itself
// has no test hooks).
function instrument() {
  const cg = (window.__cg = { frames: 0, firstFrameAt: null, states: [], streams: 0, pc: null, pcs: 0 });
  const Native = window.RTCPeerConnection;
  if (Native) {
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        cg.pc = this;
        cg.pcs++;
      }
    };
  }
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
    audio: {
      muted: video ? video.muted : null,
      tracks: video && video.srcObject ? video.srcObject.getTracks().map((t) => t.kind).sort().join("+") : "",
      kbps: text("akbps"),
      mic: text("mic"),
      unmute: shown("unmute"),
      talk: shown("talk"),
      noaudio: shown("noaudio"),
      stat: shown("astat"),
    },
  };
  // A control as the user sees it: null when absent or hidden, else its text and state.
  function shown(id) {
    const el = document.getElementById(id);
    if (!el || el.hidden || el.getClientRects().length === 0) return null;
    return { text: el.textContent, disabled: !!el.disabled, cls: el.className };
  }
}

// The WebRTC figures the test needs, from the page's own RTCPeerConnection: the answer's audio
// direction (as the camera sees it), what arrives (inbound-rtp audio), and what the
// microphone sends (media-source / outbound-rtp audio, and the audio sender's track).
async function rtc() {
  const pc = window.__cg.pc;
  if (!pc) return { pc: false };
  const out = { pc: true, connection: pc.connectionState, offerOrder: "", answerAudio: null, inbound: null, outbound: null, mic: null, senderTrack: null };
  // The page's offer: audio must be m-line 0 (as browsers and Echo devices order them).
  out.offerOrder = (pc.localDescription ? pc.localDescription.sdp : "").split(/\r?\n/).filter((l) => l.startsWith("m=")).map((l) => l.slice(2).split(" ")[0]).join(",");
  const sdp = pc.remoteDescription ? pc.remoteDescription.sdp : "";
  const audio = sdp.split(/\r?\n(?=m=)/).find((p) => p.startsWith("m=audio "));
  if (audio) {
    const dir = /^a=(sendrecv|sendonly|recvonly|inactive)\s*$/m.exec(audio);
    const rtpmap = /^a=rtpmap:(\d+) ([^/\s]+)/m.exec(audio);
    out.answerAudio = {
      port: Number(audio.split(" ")[1]),
      direction: dir ? dir[1] : "sendrecv",
      codec: rtpmap ? `${rtpmap[2].toLowerCase()}/${rtpmap[1]}` : null,
    };
  }
  const tx = pc.getTransceivers().find((t) => t.receiver.track && t.receiver.track.kind === "audio");
  const track = tx && tx.sender.track;
  if (track) out.senderTrack = { label: track.label, readyState: track.readyState };
  (await pc.getStats()).forEach((s) => {
    if (s.kind !== "audio") return;
    if (s.type === "inbound-rtp")
      out.inbound = {
        packetsReceived: s.packetsReceived || 0,
        bytesReceived: s.bytesReceived || 0,
        totalSamplesReceived: s.totalSamplesReceived || 0,
        concealedSamples: s.concealedSamples || 0,
        audioLevel: s.audioLevel || 0,
        totalAudioEnergy: s.totalAudioEnergy || 0,
        totalSamplesDuration: s.totalSamplesDuration || 0,
      };
    else if (s.type === "outbound-rtp") out.outbound = { packetsSent: s.packetsSent || 0, bytesSent: s.bytesSent || 0 };
    else if (s.type === "media-source")
      out.mic = { audioLevel: s.audioLevel || 0, totalAudioEnergy: s.totalAudioEnergy || 0, totalSamplesDuration: s.totalSamplesDuration || 0 };
  });
  return out;
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Samples the page (look + rtc) every POLL_MS until `check(sample)` returns null, or throws
/// `${what}: ${last reason}` once `deadline` (ms since the epoch) has passed.
async function until(page, what, deadline, check) {
  for (;;) {
    const sample = { ...(await page.evaluate(look)), rtc: await page.evaluate(rtc) };
    const reason = check(sample);
    if (reason === null) return sample;
    if (Date.now() >= deadline) {
      const e = new Error(`${what}: ${reason}`);
      e.sample = sample;
      throw e;
    }
    await sleep(POLL_MS);
  }
}

const kbit = (text) => (/^\d+ kbit\/s$/.test(text) ? parseInt(text, 10) : null);

/// --audio: the video starts muted, Unmute unmutes it, and then the browser receives and plays
/// sound. Page failures throw; "no sound arrived" is reported in `heard`/`reason`, since only a
/// daemon with a working audio source can make it pass.
async function checkAudio(page, o) {
  const start = await until(page, "audio controls", Date.now() + o.audioTimeoutMs, (s) =>
    s.rtc.answerAudio ? null : "the answer has no audio section",
  );
  const ui = start.audio;
  const report = { answer: start.rtc.answerAudio, startedMuted: ui.muted, tracks: ui.tracks };
  if (!ui.unmute) throw new Error(`no Unmute button (answer audio ${JSON.stringify(start.rtc.answerAudio)}, #noaudio ${JSON.stringify(ui.noaudio)})`);
  if (ui.muted !== true) throw new Error("the video did not start muted: browsers would refuse to autoplay it");
  if (ui.unmute.text !== "Unmute") throw new Error(`the sound button says "${ui.unmute.text}" on a muted video`);
  await page.click("#unmute", { timeout: 5_000 });
  const unmuted = await until(page, "after clicking Unmute", Date.now() + 5_000, (s) =>
    s.audio.muted !== false ? "the video is still muted"
    : !s.audio.unmute || s.audio.unmute.text !== "Mute" ? `the button says ${JSON.stringify(s.audio.unmute)}`
    : null,
  );
  report.button = unmuted.audio.unmute.text;
  report.muted = unmuted.audio.muted;

  // Sound: figures from a first sample after Unmute, against one at least a second later.
  let first = null, maxLevel = 0, last = unmuted;
  const deadline = Date.now() + o.audioTimeoutMs;
  try {
    await until(page, "listening", deadline, (s) => {
      last = s;
      const i = s.rtc.inbound;
      if (!i) return "no inbound-rtp of kind audio: no audio packets have arrived";
      maxLevel = Math.max(maxLevel, i.audioLevel);
      if (!first) first = { t: s.t, ...i };
      if (s.t - first.t < 1000) return "not listened long enough yet";
      if (!(i.packetsReceived > first.packetsReceived)) return `audio packets stuck at ${i.packetsReceived}`;
      if (!(i.totalSamplesReceived > first.totalSamplesReceived)) return `totalSamplesReceived stuck at ${i.totalSamplesReceived}`;
      if (!(i.totalAudioEnergy > first.totalAudioEnergy) || !(maxLevel > 0))
        return `silence: audioLevel ${i.audioLevel}, totalAudioEnergy ${i.totalAudioEnergy}`;
      if (!(kbit(s.audio.kbps) > 0)) return `the header's audio says "${s.audio.kbps}"`;
      return null;
    });
    report.heard = true;
    report.reason = null;
  } catch (e) {
    if (!e.sample) throw e;
    report.heard = false;
    report.reason = e.message;
  }
  const i = last.rtc.inbound;
  Object.assign(report, {
    inbound: i,
    samplesGrew: i && first ? i.totalSamplesReceived - first.totalSamplesReceived : 0,
    packetsGrew: i && first ? i.packetsReceived - first.packetsReceived : 0,
    energyGrew: i && first ? i.totalAudioEnergy - first.totalAudioEnergy : 0,
    maxLevel,
    header: last.audio.kbps,
  });
  return report;
}

/// Presses the talk button with the mouse at its centre (pointerdown, focus).
async function pressTalk(page) {
  const box = await page.locator("#talk").boundingBox({ timeout: 5_000 });
  if (!box) throw new Error("the talk button has no box");
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
}

/// --talk: hold the button, check the page sends the microphone, release, check it stops.
async function checkTalk(page, o, playing) {
  const ready = await until(page, "talk button", Date.now() + o.audioTimeoutMs, (s) =>
    !s.rtc.answerAudio ? "the answer has no audio section"
    : !s.audio.talk ? `no talk button (answer audio ${JSON.stringify(s.rtc.answerAudio)})`
    : s.audio.talk.disabled ? "the talk button is disabled"
    : null,
  );
  const pcs = await page.evaluate(() => window.__cg.pcs);
  const sameConnection = async () => {
    const now = await page.evaluate(() => window.__cg.pcs);
    if (now !== pcs) throw new Error(`the page reconnected while talking (${now - pcs} new connections)`);
  };
  const report = { answer: ready.rtc.answerAudio, button: ready.audio.talk.text };
  const sentBefore = ready.rtc.outbound ? ready.rtc.outbound.packetsSent : 0;
  const pressedAt = Date.now();
  await pressTalk(page);

  if (o.denyMic) {
    const refused = await until(page, "microphone refused", Date.now() + o.audioTimeoutMs, (s) =>
      !s.audio.mic ? "no microphone message on the page"
      : s.audio.talk && /talking/.test(s.audio.talk.cls) ? "the button shows talking without a microphone"
      : null,
    );
    await page.mouse.up();
    const after = await waitPlaying(page, o.size, Date.now() + o.timeoutMs);
    await sameConnection();
    if (after.stream !== playing.stream) throw new Error("the video restarted after the refusal");
    const r = await page.evaluate(rtc);
    const sent = r.outbound ? r.outbound.packetsSent : 0;
    if (r.senderTrack) throw new Error(`the audio sender has a track without permission: ${JSON.stringify(r.senderTrack)}`);
    if (sent !== sentBefore) throw new Error(`${sent - sentBefore} audio packets sent without a microphone`);
    return { ...report, denied: true, mic: refused.audio.mic, buttonAfter: after.audio.talk, packetsSent: sent, stillPlaying: summary(after) };
  }

  // Held: the button says so, the sender carries the microphone, packets go out, not silence.
  const talking = await until(page, "talking", Date.now() + o.audioTimeoutMs, (s) => {
    const b = s.audio.talk;
    if (s.audio.mic) return `the page says "${s.audio.mic}"`;
    if (!b || !/talking/.test(b.cls)) return `the button shows ${JSON.stringify(b)}`;
    if (!s.rtc.senderTrack || s.rtc.senderTrack.readyState !== "live") return `audio sender track ${JSON.stringify(s.rtc.senderTrack)}`;
    const sent = s.rtc.outbound ? s.rtc.outbound.packetsSent : 0;
    if (sent < sentBefore + 25) return `${sent - sentBefore} audio packets sent so far (want 25)`;
    if (!s.rtc.mic || !(s.rtc.mic.totalAudioEnergy > 0)) return `the microphone is silent: ${JSON.stringify(s.rtc.mic)}`;
    return null;
  });
  report.talking = {
    button: talking.audio.talk.text,
    track: talking.rtc.senderTrack.label,
    packetsSent: talking.rtc.outbound.packetsSent - sentBefore,
    micEnergy: talking.rtc.mic.totalAudioEnergy,
    micSeconds: talking.rtc.mic.totalSamplesDuration,
    afterMs: Date.now() - pressedAt,
  };
  process.stdout.write(`TALKING ${JSON.stringify(report.talking)}\n`);
  if (o.holdMs) await sleep(Math.max(0, o.holdMs - (Date.now() - pressedAt)));
  else await waitForLine("RELEASE", o.callerWaitMs);
  const held = { ...(await page.evaluate(look)), rtc: await page.evaluate(rtc) };
  if (!held.audio.talk || !/talking/.test(held.audio.talk.cls)) throw new Error(`stopped talking before the release: ${JSON.stringify(held.audio.talk)}`);
  await page.mouse.up();
  const heldMs = Date.now() - pressedAt;

  // Released: the button is back, the sender has no track, and no more packets leave.
  let still = null;
  const released = await until(page, "released", Date.now() + o.audioTimeoutMs, (s) => {
    const b = s.audio.talk;
    if (!b || b.text !== "Hold to talk" || /talking/.test(b.cls)) return `the button shows ${JSON.stringify(b)}`;
    if (s.rtc.senderTrack) return `the audio sender still has ${JSON.stringify(s.rtc.senderTrack)}`;
    const sent = s.rtc.outbound ? s.rtc.outbound.packetsSent : 0;
    if (!still || still.sent !== sent) still = { t: s.t, sent };
    if (s.t - still.t < 600) return `audio packets still going out (${sent})`;
    return null;
  });
  const after = await waitPlaying(page, o.size, Date.now() + o.timeoutMs);
  await sameConnection();
  if (after.stream !== playing.stream) throw new Error("the video restarted while talking");
  report.released = {
    heldMs,
    packetsSent: released.rtc.outbound.packetsSent - sentBefore,
    whileHeld: held.rtc.outbound.packetsSent - sentBefore,
    button: released.audio.talk.text,
    stillPlaying: summary(after),
  };
  process.stdout.write(`RELEASED ${JSON.stringify(report.released)}\n`);
  if (!o.holdMs) await waitForLine("DONE", o.callerWaitMs);
  return report;
}

// The token form: shown by the page on its own, a wrong token refused, the right one taken.
async function logIn(page, o) {
  const form = page.locator("#login");
  await form.waitFor({ state: "visible", timeout: o.timeoutMs });
  const asked = await page.locator("#msg").textContent();
  await page.fill("#token", "wrong-token-0000000000");
  await page.click("#login button");
  await page.waitForFunction(
    () => !document.getElementById("login").hidden && /not accepted/.test(document.getElementById("msg").textContent),
    null,
    { timeout: o.timeoutMs },
  );
  const refused = await page.locator("#msg").textContent();
  await page.fill("#token", o.login);
  await page.click("#login button");
  await form.waitFor({ state: "hidden", timeout: o.timeoutMs });
  return { asked, refused };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const profile = await mkdtemp(join(tmpdir(), "camgate-chromium-"));
  let context = null;
  const pageErrors = [];
  const console_ = [];
  // A fake microphone (Chromium's beep); its permission granted, or refused with --deny-mic.
  const mediaArgs = o.talk
    ? ["--use-fake-device-for-media-stream", o.denyMic ? "--deny-permission-prompts" : "--use-fake-ui-for-media-stream"]
    : [];
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: o.chromium,
      headless: true,
      args: [...CHROMIUM_ARGS, ...mediaArgs],
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
    const login = o.login ? await logIn(page, o) : null;
    const playing = await waitPlaying(page, o.size, Date.now() + o.timeoutMs);
    const answer = await page.evaluate(rtc);
    const first = {
      ok: true,
      firstFrameMs: Math.round(playing.firstFrameAt ?? playing.t),
      playingMs: Math.round(playing.t),
      ...summary(playing),
      // What the answer says about audio, and which audio controls the page shows for it.
      offerOrder: answer.offerOrder,
      answerAudio: answer.answerAudio,
      audioUi: playing.audio,
      finalUrl: page.url(),
      login,
    };
    process.stdout.write(`PLAYING ${JSON.stringify(first)}\n`);

    let result = first;
    if (o.reconnect) {
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
    if (o.audio) result.audio = await checkAudio(page, o);
    if (o.talk) result.talk = await checkTalk(page, o, playing);
    if (o.screenshot) await page.screenshot({ path: o.screenshot, timeout: 10_000 });
    if (pageErrors.length) throw new Error(`uncaught errors in the page: ${pageErrors.join(" | ")}`);
    if (o.audio && !result.audio.heard) {
      result.ok = false;
      result.error = `no sound after Unmute: ${result.audio.reason}`;
    }
    process.stdout.write(JSON.stringify(result) + "\n");
    return result.ok ? 0 : 1;
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
