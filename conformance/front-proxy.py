#!/usr/bin/env python3
"""A front proxy that behaves like the kube-apiserver's aggregation layer, for the conformance
suite: it authenticates the client (kubectl) by its client certificate, drops any X-Remote-*
header the client sent, and forwards the request to the API service over TLS with its own
front-proxy client certificate and X-Remote-User / X-Remote-Group naming the client. Responses,
watch streams included, are relayed as they come.

Usage: front-proxy.py PKI_DIR UPSTREAM_URL PORT_FILE
(PKI_DIR is the demo's pki/; the chosen port is written to PORT_FILE once listening.)
"""
import http.client
import http.server
import socketserver
import ssl
import sys
import urllib.parse

PKI, UPSTREAM, PORT_FILE = sys.argv[1], urllib.parse.urlsplit(sys.argv[2]), sys.argv[3]
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}

upstream_tls = ssl.create_default_context(cafile=f"{PKI}/ca.crt")
upstream_tls.load_cert_chain(f"{PKI}/front-proxy-client.crt", f"{PKI}/front-proxy-client.key")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def identity(self):
        cert = self.connection.getpeercert()
        subject = [rdn[0] for rdn in cert.get("subject", ())] if cert else []
        user = next((v for k, v in subject if k == "commonName"), None)
        groups = [v for k, v in subject if k == "organizationName"]
        return user, groups

    def forward(self):
        user, groups = self.identity()
        if not user:
            self.send_error(401)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPSConnection(UPSTREAM.hostname, UPSTREAM.port, context=upstream_tls, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and not k.lower().startswith("x-remote-")}
        headers.pop("Authorization", None)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{UPSTREAM.hostname}:{UPSTREAM.port}")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("X-Remote-User", user)
        for g in groups + ["system:authenticated"]:
            conn.putheader("X-Remote-Group", g)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if resp.status in (204, 304) or self.command == "HEAD":
            # No body may follow (an ETag revalidation of the OpenAPI documents, say).
            self.end_headers()
            conn.close()
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
serving.load_cert_chain(f"{PKI}/api-server.crt", f"{PKI}/api-server.key")
serving.load_verify_locations(f"{PKI}/ca.crt")
serving.verify_mode = ssl.CERT_REQUIRED
server.socket = serving.wrap_socket(server.socket, server_side=True)
with open(PORT_FILE, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
