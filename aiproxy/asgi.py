"""ASGI entry: Django behind a lifespan handler, with a lean handler for the proxy's own paths."""

import asyncio
import contextlib
import io
import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiproxy.settings")
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after setup)
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402
from servestatic import ServeStaticASGI  # noqa: E402

from aiproxy import lifecycle  # noqa: E402

logger = logging.getLogger(__name__)

# Paths served by async views only: no sync code runs for them (see ProxyPathHandler).
PROXY_PATH_PREFIXES = ("/v1/", "/chat/completions", "/health", "/ready")
# Their URLconf: without the admin's and the API's, which a /v1-only worker then never imports.
PROXY_URLCONF = "aiproxy.proxy_urls"


class ProxyPathHandler(ASGIHandler):
    """Django's ASGI handler without the per-request ThreadSensitiveContext.

    The stock handler wraps each request in asgiref's ThreadSensitiveContext, so
    the sync receivers of request_started/request_finished start and join a new
    thread per request: two thirds of the throughput of a proxy view (measured in
    ../shared/PERFORMANCE.md). The /v1 views are async end to end, so their sync
    work (those receivers, rare cache misses) can share the process's one sync
    thread instead. /admin and /api keep the stock handler: their sync views need
    the per-request context.

    It also runs its own, shorter middleware chain (PROXY_MIDDLEWARE): sessions,
    CSRF, auth and messages belong to the admin, not to an API authenticated by key.

    The body is also read into memory with a cap, so an oversized upload is cut
    off at MAX_REQUEST_BYTES + 1 instead of spooled whole to disk; the view then
    answers 413.
    """

    def load_middleware(self, is_async=False):
        # BaseHandler reads settings.MIDDLEWARE; swap in the proxy's chain while it loads (once, at startup).
        full_chain = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.PROXY_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full_chain

    async def __call__(self, scope, receive, send):
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """Django's ASGIHandler.handle without its two thread hops per request.

        The stock method sends request_started through ``asend`` and closes the
        response through ``sync_to_async``: each a hop to the sync thread, for
        receivers (database connection housekeeping) that have nothing to do on a
        path that never opens a connection in this thread. request_started is not
        sent; the response is closed inline, so request_finished still fires.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await self.send_response(error_response, send)
            return
        request.urlconf = PROXY_URLCONF
        response = await self.respond_until_disconnect(request, receive, send)
        if response is not None:
            response.close()

    async def respond_until_disconnect(self, request, receive, send):
        """Serve the request in this task; a client that leaves cancels it (and so closes its upstream stream).

        One watcher task, where Django's handler runs two tasks and an asyncio.wait: a task and a
        wait cost a measurable share of a proxied request's CPU (bench/cpu.sh).
        """
        serving = asyncio.current_task()
        watcher = asyncio.create_task(self.cancel_on_disconnect(receive, serving))
        try:
            return await self.serve(request, send)
        except asyncio.CancelledError:
            if not (watcher.done() and not watcher.cancelled() and watcher.result()):
                raise  # not the client leaving: the server is shutting down
            serving.uncancel()
            return None
        finally:
            watcher.cancel()

    async def cancel_on_disconnect(self, receive, serving: asyncio.Task) -> bool:
        """Cancels the serving task when the client disconnects; says whether it did."""
        try:
            await self.listen_for_disconnect(receive)
        except RequestAborted:
            serving.cancel()
            return True
        return False

    async def serve(self, request, send):
        response = await self.run_get_response(request)
        with contextlib.suppress(asyncio.CancelledError):  # the client left while we were sending
            await self.send_response(response, send)
        return response

    async def read_body(self, receive):
        limit = settings.MAX_REQUEST_BYTES
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            chunk = message.get("body", b"")
            if size <= limit:
                chunks.append(chunk)
                size += len(chunk)
            if not message.get("more_body", False):
                break
        return io.BytesIO(b"".join(chunks))


class Application:
    """Routes proxy paths to the lean handler, the rest to Django's own; runs the lifespan."""

    def __init__(self) -> None:
        self.proxy_handler = ProxyPathHandler()
        self.django_handler = django_application
        # The admin's CSS and JS, collected by `manage.py collectstatic`; nothing else pays for it.
        self.static_handler = ServeStaticASGI(
            django_application, root=settings.STATIC_ROOT, prefix=settings.STATIC_URL, autorefresh=settings.DEBUG
        )
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        if scope["type"] == "http" and scope["path"].startswith(PROXY_PATH_PREFIXES):
            return await self.proxy_handler(scope, receive, send)
        if scope["type"] == "http" and scope["path"].startswith(self.static_prefix):
            return await self.static_handler(scope, receive, send)
        return await self.django_handler(scope, receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await lifecycle.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.shield(lifecycle.shutdown())
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Application()
