#!/usr/bin/env python3
"""A git smart-HTTP server for the integration tests: `git http-backend` as CGI, over TLS on
127.0.0.1 (or plain HTTP with --plain), behind HTTP basic auth whose password must equal a token.

    https_git_server.py [--plain] ROOT CERT KEY TOKEN_FILE LOG

Serves the repositories under ROOT (`/server.git` is ROOT/server.git), prints the port it
listens on (picked by the OS) on stdout, then serves until killed. Every request is written to
LOG as `METHOD PATH STATUS auth=<none|ok|bad> user=<name>`; the token is never written.
"""

import base64
import hmac
import os
import ssl
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    args = sys.argv[1:]
    plain = args[:1] == ["--plain"]
    if plain:
        args = args[1:]
    root, cert, key, token_file, log_path = args
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()
    log = open(log_path, "a", buffering=1, encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass

        def do_GET(self):
            self.serve()

        def do_POST(self):
            self.serve()

        def body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def reply(self, status, headers, data):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def serve(self):
            data = self.body()
            auth, user = "none", ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                try:
                    decoded = base64.b64decode(header[6:]).decode("utf-8")
                except ValueError:
                    decoded = ""
                user, _, password = decoded.partition(":")
                ok = hmac.compare_digest(password.encode(), token.encode())
                auth = "ok" if ok else "bad"
            path, _, query = self.path.partition("?")
            if auth != "ok":
                log.write(f"{self.command} {path} 401 auth={auth} user={user}\n")
                self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"")
                return
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": root,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_PROJECT_ROOT": root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(data)),
                "REMOTE_USER": user,
                "REMOTE_ADDR": self.client_address[0],
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            out = subprocess.run(
                ["git", "http-backend"], input=data, env=env, capture_output=True
            ).stdout
            head, sep, rest = out.partition(b"\r\n\r\n")
            if not sep:
                head, sep, rest = out.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            log.write(f"{self.command} {path} {status} auth=ok user={user}\n")
            self.reply(status, headers, rest)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if not plain:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
