"""The web atlas: ``ancestree serve`` runs :func:`create_app` (a read-only JSON API and one page) on uvicorn."""

from ancestree.web.app import create_app

__all__ = ["create_app"]
