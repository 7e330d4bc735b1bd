"""The memory search service: a versioned, authenticated HTTP API on Ray Serve.

``app.create_app`` builds the FastAPI app over one query stage (in-process for tests);
``serve.run_service`` runs it as a Ray Serve deployment whose replicas each hold one.
"""
