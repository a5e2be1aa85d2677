// A WHEP player that hangs up without a DELETE, in the system's headless Chromium: it plays
// the daemon's stream from a page of the daemon's origin (not the daemon's own page, which
// DELETEs its resource when it leaves), calls RTCPeerConnection.close(), and times how long
// the daemon's /stats still lists a session.
//
//   node hangup.mjs <url> [--chromium PATH]
//
// Prints one JSON line:
//   sessionsBefore  sessions /stats listed while the player played
//   framesDecoded   video frames Chromium decoded before hanging up
//   goneMs          close() → /stats lists no session (-1: still listed after 20 s)
//
// Never downloads a browser: it drives the Chromium that is already installed.

import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const url = args[0];
const i = args.indexOf("--chromium");
const executablePath = i >= 0 ? args[i + 1] : process.env.CAMGATE_CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  timeout: 30_000,
});
try {
  const page = await browser.newPage();
  // Any page of the daemon's origin, so fetch() needs no CORS; /stats is JSON and stays put.
  await page.goto(new URL("/stats", url).href, { timeout: 20_000 });
  const result = await page.evaluate(async () => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const within = async (what, ms, cond) => {
      const t0 = performance.now();
      for (;;) {
        const v = await cond();
        if (v) return v;
        if (performance.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
        await sleep(50);
      }
    };
    const stats = async () => (await fetch("/stats")).json();
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await within("ICE gathering", 5000, () => pc.iceGatheringState === "complete");
    const resp = await fetch("/whep", {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (resp.status !== 201) throw new Error(`WHEP answered ${resp.status}: ${await resp.text()}`);
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    const framesDecoded = await within("a decoded frame", 15000, async () => {
      const report = await pc.getStats();
      let n = 0;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") n = s.framesDecoded || 0;
      });
      return n >= 5 ? n : 0;
    });
    const sessionsBefore = (await stats()).sessions.length;
    pc.close();
    const t0 = performance.now();
    let goneMs = -1;
    try {
      await within("session gone", 20000, async () => (await stats()).sessions.length === 0);
      goneMs = Math.round(performance.now() - t0);
    } catch (_) {}
    return { sessionsBefore, framesDecoded, goneMs };
  });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
