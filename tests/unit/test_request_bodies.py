"""Every JSON request body goes through the shared checks of ``quarry.validation.Body``."""

from fastapi import params
from fastapi.routing import APIRoute

from quarry.app import ROUTERS
from quarry.validation import Body


def test_every_json_body_is_a_body() -> None:
    """A body model that is a plain BaseModel lets NUL, lone surrogates and NaN through to
    Postgres (a 500 where a 422 belongs: the echo job's body was one). Form uploads are
    checked where their fields become a document (``Documents.check``)."""
    bodies = {}
    for router in ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute) or route.body_field is None:
                continue
            info = route.body_field.field_info
            if isinstance(info, params.Form):  # multipart (File is a Form)
                continue
            bodies[f"{sorted(route.methods)} {route.path}"] = info.annotation
    assert len(bodies) >= 10
    loose = {where: model for where, model in bodies.items() if not issubclass(model, Body)}
    assert not loose
