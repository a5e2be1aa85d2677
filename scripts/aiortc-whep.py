#!/usr/bin/env python3
"""A WHEP master made with aiortc: the baseline that scripts/measure-first-frame.sh compares
camgate with.

    aiortc-whep.py --listen 127.0.0.1:18191 [--width 1280 --height 720]

POST /whep with an SDP offer answers 201 with the SDP answer (non-trickle, as camgate's
WHEP endpoint does) and a Location; DELETE on that Location closes the viewer. Each viewer
gets its own H.264 encoder (aiortc's libx264 through PyAV) fed by a test pattern, a moving
vertical bar at 30 fps, so its first frame is an IDR encoded for it.

Needs aiortc and aiohttp (the measuring script installs both into a venv from PyPI).
"""

import argparse
import asyncio
import uuid

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame


class TestPattern(VideoStreamTrack):
    """A bar moving across a grey field; aiortc's VideoStreamTrack paces it at 30 fps."""

    def __init__(self, width: int, height: int):
        super().__init__()
        self.width = width
        self.height = height
        self.x = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        luma = frame.planes[0]
        bar = max(self.width // 16, 1)
        x = self.x % (self.width - bar)
        self.x += 8
        row = b"\x50" * x + b"\xeb" * bar + b"\x50" * (self.width - x - bar)
        row += b"\x00" * (luma.line_size - self.width)
        luma.update(row * luma.height)
        for chroma in frame.planes[1:]:
            chroma.update(b"\x80" * chroma.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:18191")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    peers: dict[str, RTCPeerConnection] = {}

    async def whep(request: web.Request) -> web.Response:
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        pc = RTCPeerConnection()
        pc.addTrack(TestPattern(args.width, args.height))
        await pc.setRemoteDescription(offer)
        # setLocalDescription waits for gathering, so the answer carries our candidates.
        await pc.setLocalDescription(await pc.createAnswer())
        sid = uuid.uuid4().hex
        peers[sid] = pc
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whep/{sid}"},
        )

    async def bye(request: web.Request) -> web.Response:
        pc = peers.pop(request.match_info["sid"], None)
        if pc is None:
            return web.Response(status=404)
        await pc.close()
        return web.Response(status=200)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def close_all(_app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in peers.values()))
        peers.clear()

    app = web.Application()
    app.router.add_post("/whep", whep)
    app.router.add_delete("/whep/{sid}", bye)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(close_all)
    web.run_app(app, host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
