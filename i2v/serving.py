"""Serve a Gradio app behind a small guard (what Gradio alone does not do for a public photo app).

- refuses writes (POST/PUT/PATCH/DELETE) whose Origin is another site: a page the user visits
  cannot upload into, or run queries on, their local app (cross-site request forgery);
- caps request bodies before they are read: 1 MB for API calls, MAX_UPLOAD_REQUEST for uploads
  (a 200 MB JSON body is refused with 413, not parsed);
- adds `X-Content-Type-Options: nosniff`, a frame-ancestors policy and `Referrer-Policy`.

A reverse proxy in front should still cap body sizes and request rates (README "Threat model").
"""
import os
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024
MAX_UPLOAD_REQUEST = 100 * 1024 * 1024
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _host_of(origin):
    try:
        parts = urlsplit(origin)
        return (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None, None


def _split_host(host, scheme):
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:7860
        name, _, port = host[1:].partition("]")
        port = port.lstrip(":")
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else {"http": 80, "https": 443}.get(scheme)


class Guard:
    """ASGI middleware: see the module docstring. `allowed_origins`: extra origins allowed to write."""

    def __init__(self, app, *, allowed_origins=(), frame_ancestors="'self'"):
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins}
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                        (b"content-security-policy", f"frame-ancestors {frame_ancestors}".encode())]

    def _same_origin(self, headers, scheme, origin):
        """The Origin names this very server: its Host (host and port), or the host a proxy forwarded."""
        if origin.rstrip("/").lower() in self.allowed:
            return True
        o_host, o_port = _host_of(origin)
        forwarded = headers.get(b"x-forwarded-host")
        if forwarded and o_host == _split_host(forwarded.decode("latin-1").split(",")[0], scheme)[0]:
            return True
        host = headers.get(b"host")
        proto = headers.get(b"x-forwarded-proto", scheme.encode()).decode("latin-1").split(",")[0].strip()
        return bool(host) and (o_host, o_port) == _split_host(host.decode("latin-1"), proto)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["method"] in WRITE_METHODS:
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin and not self._same_origin(headers, scope.get("scheme", "http"), origin):
                return await _refuse(send, 403, "cross-origin request refused")
        limit = MAX_UPLOAD_REQUEST if scope["path"].rstrip("/").endswith("/upload") else MAX_BODY
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _refuse(send, 413, f"request body over {limit // 1024 // 1024} MB")
        seen, started = 0, False

        async def capped_receive():  # bodies without a Content-Length are counted as they arrive
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message, headers=list(message.get("headers", [])) + self.headers)
            await send(message)

        try:
            await self.app(scope, capped_receive, send_with_headers)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, f"request body over {limit // 1024 // 1024} MB")


class _TooLarge(Exception):
    pass


async def _refuse(send, status, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


def serve(demo, *, host, port, allowed_paths, max_file_size="20mb", footer_links=("api",), css=None):
    """Mount `demo` behind `Guard` and run it with uvicorn until interrupted."""
    import fastapi
    import gradio as gr
    import uvicorn

    extra = [o for o in os.environ.get("I2V_ALLOWED_ORIGINS", "").split(",") if o.strip()]
    ancestors = "'self'"
    if os.environ.get("SPACE_ID"):  # a Hugging Face Space shows the app inside huggingface.co
        ancestors += " https://huggingface.co https://*.hf.space"
    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app = gr.mount_gradio_app(app, demo, path="", allowed_paths=allowed_paths, max_file_size=max_file_size,
                              footer_links=list(footer_links), server_name=host, server_port=port, css=css)
    uvicorn.run(Guard(app, allowed_origins=extra, frame_ancestors=ancestors), host=host, port=port,
                log_level="warning")
