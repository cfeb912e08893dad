"""A live-stream stand-in: serve a video file over HTTP, looped for ever, at its own pace.

For trying ``metasr-stream`` on a live source without a camera or an RTSP server (pip's OpenCV
has no GStreamer, and FFmpeg serves RTSP only as a client). The file should be MPEG-TS (``.ts``:
any player can join it mid-way); it is sent again and again, about ``--rate`` bytes per second.

    python bench/serve_loop.py clip.ts --port 8554 &
    metasr-stream -i http://127.0.0.1:8554/live.ts -s 2 -o live.mp4 --duration 10
"""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from pathlib import Path


def make_server(path: Path, port: int = 0, rate: float = 2_000_000.0) -> http.server.ThreadingHTTPServer:
    """An HTTP server (not started) sending ``path`` in a loop to every client, ``rate`` bytes/s."""
    data = Path(path).read_bytes()

    class Loop(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            chunk = 188 * 64  # whole MPEG-TS packets
            try:
                while True:
                    for i in range(0, len(data), chunk):
                        self.wfile.write(data[i : i + chunk])
                        time.sleep(chunk / rate)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Loop)
    server.daemon_threads = True
    return server


def serve_in_thread(path: Path, rate: float = 2_000_000.0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start :func:`make_server` on a free port in a daemon thread; return it and the URL."""
    server = make_server(path, 0, rate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/live.ts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="an MPEG-TS file (.ts)")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--rate", type=float, default=2_000_000.0, help="bytes per second")
    args = parser.parse_args()
    server = make_server(args.file, args.port, args.rate)
    print(f"serving {args.file} looped at http://127.0.0.1:{args.port}/live.ts (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
