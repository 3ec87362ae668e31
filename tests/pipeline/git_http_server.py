#!/usr/bin/env python3
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""A git smart-HTTP server for the pipeline tests: `git http-backend` (CGI)
behind Python's http.server, refusing every request that does not carry
`Authorization: Basic base64(x-access-token:<token>)`, the header GitHub
accepts for installation and personal tokens.

    git_http_server.py --root DIR --token-file FILE --port-file FILE [--log FILE]

Listens on 127.0.0.1 on a free port and writes the port to FILE once it
accepts connections. The token comes from a file so that it is not in this
server's own argv (the tests check every /proc/*/cmdline for it). Every request line, whether it was authorised and
whether it carried an Authorization header at all go to --log, so a test can check that the token never appeared
in a URL and that a server the token is not meant for never received one.
"""

import argparse
import base64
import http.server
import os
import subprocess
import sys
import threading


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", default=None)
    args = parser.parse_args()

    with open(args.token_file) as f:
        token = f.read().strip()
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    log_lock = threading.Lock()
    log_file = open(args.log, "a", buffering=1) if args.log else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *a):  # noqa: A002 - http.server's name
            pass

        def _record(self, authorised: bool) -> None:
            if log_file is not None:
                with log_lock:
                    sent = "Authorization" in self.headers
                    log_file.write(f"{self.command} {self.path} authorised={authorised} authorization_sent={sent}\n")

        def _handle(self) -> None:
            authorised = self.headers.get("Authorization") == expected
            self._record(authorised)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not authorised:
                msg = b"authentication required\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="blacktree-test-git"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": args.root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "x-access-token",
                "REMOTE_ADDR": self.client_address[0],
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["HTTP_GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = proc.stdout.partition(b"\n\n")
            status = 200
            headers = []
            for line in head.decode("latin-1").splitlines():
                if not line.strip():
                    continue
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                else:
                    headers.append((name.strip(), value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, args.port_file)  # atomic: the test never reads half a number
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
