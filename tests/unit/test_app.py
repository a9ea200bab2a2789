"""The gateway application builds (every route registers) and documents its API."""

from __future__ import annotations

from gateway.app import create_app
from services.settings import Settings


def test_app_builds_with_every_route_and_openapi():
    app = create_app(Settings(secret="s", admin_token="t"))
    paths = {route.path for route in app.routes}
    for expected in ("/go/{code:str}", "/api/batches",
                     "/r/{key:str}/init", "/api/studies", "/readyz", "/metrics"):
        assert expected in paths, expected
    schema = app.openapi_schema.to_schema()
    assert "/api/studies/{study_id}/batches" in schema["paths"]
